"""Batch moments that are exact under `tf.distribute`: N replicas see the statistics of the global batch."""

import tensorflow as tf

__all__ = ["batch_moments", "moments_for_mode", "moving_average_variable"]


def batch_moments(x, axes):
  """Returns `(mean, variance)` of `x` over `axes` (all axes but the last), pooled across replicas.

  With one replica this is `tf.nn.moments`. With several, the count, sum and centred sum of squares are
  all-reduced so every replica computes what one device computes on the global batch (two passes, so the
  variance is as exact as the single-device one; `E[x**2] - E[x]**2` would cancel badly in float32).
  """
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return tf.nn.moments(x, axes)
  count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
  count, total = context.all_reduce(tf.distribute.ReduceOp.SUM, [count, tf.reduce_sum(x, axes)])
  mean = total / count
  centred = tf.reduce_sum(tf.square(x - mean), axes)
  centred = context.all_reduce(tf.distribute.ReduceOp.SUM, centred)
  return mean, centred / count


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


def moments_for_mode(x, moving_mean, moving_variance, momentum, training):
  """Batch moments (updating the running averages) in training, else the running averages."""
  if not training:
    return tf.convert_to_tensor(moving_mean), tf.convert_to_tensor(moving_variance)
  mean, variance = batch_moments(x, list(range(x.shape.rank - 1)))
  moving_mean.assign(momentum * moving_mean + (1.0 - momentum) * tf.stop_gradient(mean))
  moving_variance.assign(momentum * moving_variance + (1.0 - momentum) * tf.stop_gradient(variance))
  return mean, variance
