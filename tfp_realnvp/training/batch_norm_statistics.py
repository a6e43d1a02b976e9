"""`BatchNormStatistics`: every batch norm's running averages re-estimated for the weights a run evaluates with.

The running averages a batch norm keeps while training (`avg <- 0.99 avg + 0.01 batch_stat`) average the batch
statistics of the last ~100 steps' weights, not of the weights evaluated: on Fashion-MNIST that cost 0.05-0.13
bits/dim after step 1000 and 1.5 early (docs/results/quality.md), and the averaged (EMA) weights never had
statistics of their own. Re-estimated as the exact mean of the batch statistics of `num_batches` training-mode
passes with the evaluated weights (no weight update), inference mode scores what batch statistics score.

```python
with strategy.scope():
  statistics = batch_norm_statistics.BatchNormStatistics(running_averages)
statistics.estimate(statistics_pass, batches, num_batches=50, step=step)  # the training's own averages kept
with statistics.applied():          # inside, the batch norms hold the re-estimated averages
  bits_per_dim = evaluate(flow)
```

The training's own running averages are left as they were (training goes on from them); the re-estimated ones
are kept beside them in their own variables, checkpointed with the run (`batch_norm_statistics`) with the
training step they were estimated at, so an export of that checkpoint (`checkpoints.restore_run`) carries them.
"""

import contextlib

import tensorflow as tf

from tfp_realnvp.internal import moments

__all__ = ["BatchNormStatistics", "pass_function"]


class BatchNormStatistics(tf.Module):
  """Copies of `running_averages` (every batch norm's running mean and variance, the non-trainable variables of
  a flow and its dequantizer), re-estimated by `estimate` and swapped in by `applied`.

  `step` is the training step they were estimated at (-1: never, or the estimate was not finite). Build it in
  the `tf.distribute` strategy's scope of the running averages: the copies are then per replica like them, and
  every copy is read and written replica by replica without a collective.
  """

  def __init__(self, running_averages, name="batch_norm_statistics"):
    super().__init__(name=name)
    running_averages = tuple(running_averages)
    if not running_averages:
      raise ValueError("`running_averages` must hold at least one variable; got none.")
    self._strategy = tf.distribute.get_strategy()
    # References, so that this module's checkpoint and `variables` hold only its own variables.
    self._running_refs = tuple(variable.ref() for variable in running_averages)
    with self.name_scope:
      self.values = [
        moments.moving_average_variable(tf.zeros(variable.shape, variable.dtype), "value")
        for variable in running_averages
      ]
      self.step = tf.Variable(
        -1,
        dtype=tf.int64,
        trainable=False,
        name="step",
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
      )

  @property
  def running_averages(self):
    """The batch norms' own running averages, in the order of `values`."""
    return tuple(ref.deref() for ref in self._running_refs)

  def is_for(self, step):
    """Whether the values were estimated at training step `step` (an int)."""
    return int(self.step.numpy()) == int(step)

  def estimate(self, statistics_pass, batches, num_batches, step):
    """Re-estimates every running average as the mean of the batch statistics of `num_batches` batches of the
    iterator `batches`; returns whether they are finite (if not, the values are not kept and `step` is -1).

    `statistics_pass(batch, momentum)` must run one training-mode forward pass of the batch (no weight update)
    inside `moments.replacing_momentum(momentum)` (see `pass_function`): with `momentum = 1 - 1/k` at the
    `k`-th pass, the running averages end as the exact mean. Call it with the weights to estimate for in place
    (`WeightAverage.applied()`). The running averages get their own values back afterwards.
    """
    saved = _local_values(self._strategy, self.running_averages)
    try:
      passes = 0
      for passes, batch in zip(range(1, num_batches + 1), batches):
        statistics_pass(batch, tf.constant(1.0 - 1.0 / passes, tf.float32))
      if passes < num_batches:
        raise ValueError(f"`batches` ran out after {passes} of {num_batches} batches.")
      finite = all(
        bool(tf.reduce_all(tf.math.is_finite(copy)))
        for variable in self.running_averages
        for copy in self._strategy.experimental_local_results(variable)
      )
      if finite:
        _copy(self._strategy, self.running_averages, self.values)
      self.step.assign(step if finite else -1)
      return finite
    finally:
      _assign_local_values(self._strategy, self.running_averages, saved)

  @contextlib.contextmanager
  def applied(self):
    """A context in which the running averages hold the re-estimated values; on leaving it they get their own
    values back."""
    saved = _local_values(self._strategy, self.running_averages)
    self.assign_to_running_averages()
    try:
      yield
    finally:
      _assign_local_values(self._strategy, self.running_averages, saved)

  def assign_to_running_averages(self):
    """Copies the re-estimated values into the running averages for good (a restored model to export)."""
    _copy(self._strategy, self.values, self.running_averages)


def pass_function(strategy, replica_forward):
  """`statistics_pass(batch, momentum)` for `BatchNormStatistics.estimate`: a `tf.function` running
  `replica_forward(per_replica_batch)` (a training-mode forward pass, its result ignored) on every replica of
  `strategy` with every running-average update at `momentum`."""

  def statistics_pass(batch, momentum):
    with moments.replacing_momentum(momentum):
      strategy.run(replica_forward, args=(batch,))

  return tf.function(statistics_pass)


def _local_values(strategy, variables):
  """The value of every local copy of every variable (a replica's copy, without a collective)."""
  return [[tf.identity(copy) for copy in strategy.experimental_local_results(v)] for v in variables]


def _assign_local_values(strategy, variables, values):
  for variable, copies in zip(variables, values):
    for copy, value in zip(strategy.experimental_local_results(variable), copies):
      copy.assign(value)


def _copy(strategy, sources, targets):
  """Every local copy of each target gets the value of the same replica's copy of its source."""
  _assign_local_values(strategy, targets, _local_values(strategy, sources))
