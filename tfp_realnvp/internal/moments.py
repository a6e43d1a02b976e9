"""Batch moments that are exact under `tf.distribute`: N replicas see the statistics of the global batch; the
running averages every batch norm of the package keeps, and how they move."""

import contextlib

import tensorflow as tf

__all__ = [
  "assign_moving_averages",
  "batch_moments",
  "moments_for_mode",
  "moving_average_variable",
  "replacing_momentum",
]

# The momentum every running-average update traced inside `replacing_momentum` takes instead of its layer's
# (a module global, not a thread local: `tf.distribute` traces each replica's function in its own thread).
_momentum_override = []


def batch_moments(x, axes):
  """Returns `(mean, variance)` of `x` over `axes` (all axes but the last), pooled across replicas.

  With one replica this is `tf.nn.moments`. With several, the count, sum and centred sum of squares are
  all-reduced so every replica computes what one device computes on the global batch (two passes, so the
  variance is as exact as the single-device one; `E[x**2] - E[x]**2` would cancel badly in float32). An
  empty (global) batch has no moments: NaN, as `tf.nn.moments` gives.
  """
  mean, variance, _ = _moments_and_count(x, axes)
  return mean, variance


def _moments_and_count(x, axes):
  """`(mean, variance, count)` over `axes`, pooled across replicas; `count` is the global number of rows."""
  count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return (*tf.nn.moments(x, axes), count)
  count, total = context.all_reduce(tf.distribute.ReduceOp.SUM, [count, tf.reduce_sum(x, axes)])
  mean = total / count
  centred = tf.reduce_sum(tf.square(x - mean), axes)
  centred = context.all_reduce(tf.distribute.ReduceOp.SUM, centred)
  return mean, centred / count, count


def moving_average_variable(initial_value, name):
  """A non-trainable running-average variable."""
  # ON_READ + MEAN, like Keras: each replica updates its own copy, reads and checkpoints see the mean.
  return tf.Variable(
    initial_value,
    trainable=False,
    name=name,
    synchronization=tf.VariableSynchronization.ON_READ,
    aggregation=tf.VariableAggregation.MEAN,
  )


def assign_moving_averages(moving_mean, moving_variance, mean, variance, momentum, count):
  """`avg <- momentum * avg + (1 - momentum) * batch_stat` for both averages, unless `count` is 0.

  `count` is the number of rows the batch statistics come from (pooled across replicas): an empty batch has
  no statistics (`tf.nn.moments` gives NaN), so it leaves both averages exactly as they are.
  """
  has_rows = count > 0
  if _momentum_override:
    momentum = _momentum_override[-1]
  for average, statistic in ((moving_mean, mean), (moving_variance, variance)):
    momentum = tf.cast(momentum, average.dtype) if tf.is_tensor(momentum) else momentum
    updated = momentum * average + (1.0 - momentum) * tf.stop_gradient(tf.cast(statistic, average.dtype))
    average.assign(tf.where(has_rows, updated, average))


@contextlib.contextmanager
def replacing_momentum(momentum):
  """A context in which every running-average update traced (`assign_moving_averages`, so every batch norm of
  this package in training mode) uses `momentum`, a float or a scalar tensor of the graph being traced, instead
  of its layer's: `1 - 1 / k` at the `k`-th of several passes makes the running averages the exact mean of
  their batch statistics (`batch_norm_statistics`). It acts when a function is traced, so a `tf.function`
  traced inside keeps the momentum it saw; call such a function only for this purpose.
  """
  _momentum_override.append(momentum)
  try:
    yield
  finally:
    _momentum_override.pop()


def moments_for_mode(x, moving_mean, moving_variance, momentum, training):
  """Batch moments (updating the running averages) in training, else the running averages.

  An empty batch in training keeps the running averages and normalizes with them (its output is empty).
  """
  if not training:
    return tf.convert_to_tensor(moving_mean), tf.convert_to_tensor(moving_variance)
  mean, variance, count = _moments_and_count(x, list(range(x.shape.rank - 1)))
  assign_moving_averages(moving_mean, moving_variance, mean, variance, momentum, count)
  has_rows = count > 0
  return tf.where(has_rows, mean, moving_mean), tf.where(has_rows, variance, moving_variance)
