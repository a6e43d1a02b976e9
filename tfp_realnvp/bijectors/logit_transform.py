"""Pixel preprocessing: dequantized pixel values to logit space."""

import math

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["LogitTransform"]

tfb = tfp.bijectors


class LogitTransform(tfb.Bijector):
  """Maps pixel values `x` to `y = logit(p)`, `p = alpha + (1 - 2*alpha) * x / 2**num_bits`.

  Elementwise, with `log|dy/dx| = log((1 - 2*alpha) / 2**num_bits) - log(p) - log(1 - p)`. The bijection is
  between the open interval `domain = (-alpha, 1 - alpha) * 2**num_bits / (1 - 2*alpha)` (where `p` runs
  over `(0, 1)`; `(-0.889, 16.889)` for 4 bits, `(-14.2, 270.2)` for 8) and the real line: the inverse maps
  `R` onto `domain`, so a flow that starts with this bijector has positive density exactly on `domain**D`.
  Pixel data lie in the smaller `[0, 2**num_bits)`; for dequantized discrete data the flow's mass outside
  `[0, 2**num_bits)**D` is wasted (it counts in no pixel level), and its samples can lie there.

  This is the released code's symmetric form: `p` lies in `[alpha, 1 - alpha)`, so both tails of the logit are
  cut off equally. The paper prints `p = alpha + (1 - alpha) * x / 256`, which keeps `p` in `[alpha, 1)` and
  leaves the upper tail unbounded. Because the `1 / 2**num_bits` scaling is part of the log-det, a flow that
  starts with this bijector has its density in pixel units, and `-log_prob / (D ln 2)` is the paper's bits/dim.
  `alpha = 0.05` as in the paper; `num_bits` 8 for ordinary images, fewer for e.g. 5-bit CelebA-HQ (Glow) or
  the bundled 4-bit digits.
  """

  def __init__(self, num_bits=8, alpha=0.05, validate_args=False, name="logit_transform"):
    parameters = dict(locals())
    if isinstance(num_bits, bool) or int(num_bits) != num_bits or not 1 <= num_bits <= 16:
      raise ValueError(f"`num_bits` must be an integer in [1, 16]; got {num_bits!r}.")
    if not 0.0 < alpha < 0.5:
      raise ValueError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    with tf.name_scope(name) as name:
      self._num_bits = int(num_bits)
      self._alpha = float(alpha)
      super().__init__(
        forward_min_event_ndims=0, validate_args=validate_args, parameters=parameters, name=name
      )

  @property
  def num_bits(self):
    return self._num_bits

  @property
  def alpha(self):
    return self._alpha

  @property
  def domain(self):
    """`(low, high)`, Python floats: the open interval of `x` that `inverse` maps the real line onto."""
    scale = 2.0**self._num_bits / (1.0 - 2.0 * self._alpha)
    return -self._alpha * scale, (1.0 - self._alpha) * scale

  def _log_slope(self, dtype):
    """`log((1 - 2*alpha) / 2**num_bits)`, the log-derivative of the affine part."""
    return tf.constant(math.log1p(-2.0 * self._alpha) - self._num_bits * math.log(2.0), dtype)

  def _forward(self, x):
    p = self._alpha + (1.0 - 2.0 * self._alpha) * x / 2.0**self._num_bits
    return tf.math.log(p) - tf.math.log1p(-p)

  def _inverse(self, y):
    return (tf.sigmoid(y) - self._alpha) * 2.0**self._num_bits / (1.0 - 2.0 * self._alpha)

  def _forward_log_det_jacobian(self, x):
    p = self._alpha + (1.0 - 2.0 * self._alpha) * x / 2.0**self._num_bits
    return self._log_slope(x.dtype) - tf.math.log(p) - tf.math.log1p(-p)

  def _inverse_log_det_jacobian(self, y):
    # log(p) = -softplus(-y) and log(1 - p) = -softplus(y): stable for any y.
    return -self._log_slope(y.dtype) - tf.math.softplus(-y) - tf.math.softplus(y)
