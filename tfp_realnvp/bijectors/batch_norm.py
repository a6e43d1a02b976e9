"""Batch normalization as a flow layer (RealNVP, eqs. 17-18), with the mode chosen at call time."""

import tensorflow as tf

from tfp_realnvp.bijectors.joint_log_det import JointLogDetBijector
from tfp_realnvp.bijectors.own_variables import OwnVariablesBijector
from tfp_realnvp.internal.checks import positive_int
from tfp_realnvp.internal.moments import moments_for_mode, moving_average_variable

__all__ = ["BatchNorm"]


class BatchNorm(OwnVariablesBijector, JointLogDetBijector):
  """`y = (x - mean) / sqrt(var + epsilon) * exp(log_scale) + shift`, per feature (the last axis).

  `log|det dy/dx| = sum_features(log_scale - 0.5 * log(var + epsilon))` for each position; on an image event
  `[H, W, C]` this is counted at each of the `H*W` positions.

  Pass `training=True` to `forward` (the normalizing direction, data to latent) to use the statistics of the
  batch (pooled across replicas under `tf.distribute`) and to move the running averages
  `avg <- momentum * avg + (1 - momentum) * batch_stat`. Otherwise, the default, the running averages are used
  and nothing changes, as for evaluation and sampling. Unlike `tfb.BatchNormalization`, whose mode is fixed at
  construction, the same object serves training and evaluation. The inverse always uses the running
  averages: the batch statistics of the unknown `x` do not exist there. `call_keywords` declares `training`,
  so a `KeywordChain` delivers it.
  """

  call_keywords = frozenset({"training"})

  def __init__(
    self, num_features, momentum=0.99, epsilon=1e-4, validate_args=False, dtype=tf.float32, name="batch_norm"
  ):
    parameters = dict(locals())
    positive_int("num_features", num_features)
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"`momentum` must be in [0, 1); got {momentum!r}.")
    if not epsilon > 0.0:
      raise ValueError(f"`epsilon` must be positive; got {epsilon!r}.")
    with tf.name_scope(name) as name:
      self._momentum = momentum
      self._epsilon = epsilon
      self.log_scale = tf.Variable(tf.zeros([num_features], dtype), name="log_scale")
      self.shift = tf.Variable(tf.zeros([num_features], dtype), name="shift")
      self.moving_mean = moving_average_variable(tf.zeros([num_features], dtype), "moving_mean")
      self.moving_variance = moving_average_variable(tf.ones([num_features], dtype), "moving_variance")
      super().__init__(
        forward_min_event_ndims=1, validate_args=validate_args, dtype=dtype, parameters=parameters, name=name
      )

  def _log_det_per_position(self, variance, like):
    ldj = tf.reduce_sum(self.log_scale - 0.5 * tf.math.log(variance + self._epsilon))
    return tf.fill(tf.shape(like)[:-1], ldj)

  def _augmented_forward(self, x, training=False):
    mean, variance = moments_for_mode(x, self.moving_mean, self.moving_variance, self._momentum, training)
    y = (x - mean) * tf.math.rsqrt(variance + self._epsilon) * tf.exp(self.log_scale) + self.shift
    fldj = self._log_det_per_position(variance, x)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, training=False):
    if training:
      raise ValueError(
        "`BatchNorm.inverse` got `training=True`: batch statistics exist only in the normalizing "
        "(forward) direction; the inverse always uses the running averages."
      )
    mean, variance = self.moving_mean, self.moving_variance
    x = (y - self.shift) * tf.exp(-self.log_scale) * tf.sqrt(variance + self._epsilon) + mean
    ildj = -self._log_det_per_position(variance, y)
    return x, {"ildj": ildj, "fldj": -ildj}
