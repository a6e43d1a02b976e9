"""`WeightAverage`: an exponential moving average of a model's weights, to evaluate with (Polyak averaging).

```python
with strategy.scope():
  average = weight_averaging.WeightAverage(flow.trainable_variables, decay=0.999)
average.update()                   # after every applied training step, in cross-replica context
with average.applied():            # inside, the weights hold the averages
  bits_per_dim = evaluate(flow)
```
"""

import contextlib

import tensorflow as tf

__all__ = ["WeightAverage"]


class WeightAverage(tf.Module):
  """An exponential moving average of `weights` (a model's trainable variables), kept beside them.

  `update()` sets every `average <- d * average + (1 - d) * weight` with `d = min(decay, (1 + n) / (10 + n))`
  after `n` updates (`num_updates`): `tf.train.ExponentialMovingAverage` with `num_updates`. Its warm-up
  keeps the random initial weights out of the average (with `d = 0.999` from the start they would still
  weigh `0.999**2000 = 13.5%` after 2000 steps); for fewer than `(10 * decay - 1) / (1 - decay)` updates
  (8,990 for 0.999) `d` is the warm-up's, about the last tenth of training. The averages start equal to the
  weights. Inside `with average.applied():` the weights hold the averages, and afterwards their own values
  again; `assign_to_weights()` copies the averages into them for good (a restored model to export).

  Build it in the `tf.distribute` strategy's scope of the weights: the averages are then mirrored like them,
  and `update()`, called in cross-replica context, updates each device's copy from that device's weights
  (`strategy.extended.update`), so the copies stay identical. Checkpoint it beside the model
  (`tf.train.Checkpoint(flow=..., weight_average=average)`): it saves the averages and `num_updates`, so a
  resumed run continues the average exactly. Only trainable weights are averaged: batch-norm running
  averages are non-trainable, already averages over training, and used as they are.
  """

  def __init__(self, weights, decay, name="weight_average"):
    """Averages `weights`, a sequence of float `tf.Variable`s, with `decay` in `(0, 1)`."""
    super().__init__(name=name)
    if isinstance(decay, bool) or not 0.0 < decay < 1.0:
      raise ValueError(f"`decay` must be in (0, 1); got {decay!r}.")
    weights = tuple(weights)
    if not weights:
      raise ValueError("`weights` must hold at least one variable; got none.")
    self.decay = float(decay)
    self._strategy = tf.distribute.get_strategy()
    # References, so that this module's checkpoint and `variables` hold only its own variables.
    self._weight_refs = tuple(weight.ref() for weight in weights)
    self.num_updates = tf.Variable(
      0,
      dtype=tf.int64,
      trainable=False,
      name="num_updates",
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )
    self._moving_average = tf.train.ExponentialMovingAverage(self.decay, num_updates=self.num_updates)
    # The first `apply` creates the averages as copies of the weights (its update leaves them so).
    self._moving_average.apply(weights)
    self.averages = [self._moving_average.average(weight) for weight in weights]

  @property
  def weights(self):
    """The averaged variables, in the order of `averages`."""
    return tuple(ref.deref() for ref in self._weight_refs)

  def update(self):
    """Moves every average towards its weight (see the class docstring) and counts the update."""
    # In the weights' strategy scope, `apply` is in cross-replica context and updates each device's copy;
    # outside it (a train step's `tf.function`) it would take the default replica context and fail.
    with self._strategy.scope():
      updated = self._moving_average.apply(self.weights)
      with tf.control_dependencies([updated]):
        self.num_updates.assign_add(1)

  def assign_to_weights(self):
    """Copies every average into its weight."""
    for weight, average in zip(self.weights, self.averages):
      weight.assign(average)

  @contextlib.contextmanager
  def applied(self):
    """A context in which the weights hold the averages; on leaving it they get their own values back."""
    saved = [tf.identity(weight) for weight in self.weights]
    self.assign_to_weights()
    try:
      yield
    finally:
      for weight, value in zip(self.weights, saved):
        weight.assign(value)
