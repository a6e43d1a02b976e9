"""Pixel preprocessing: dequantized pixel values to logit space."""

import math
import numbers

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["LogitTransform"]

tfb = tfp.bijectors


class LogitTransform(tfb.Bijector):
  """Maps pixel values `x` to `y = logit(p)`, `p = alpha + (1 - 2*alpha) * x / 2**num_bits`.

  Elementwise, with `log|dy/dx| = log((1 - 2*alpha) / 2**num_bits) - log(p) - log(1 - p)`. The bijection is
  between the interval `domain = [-alpha, 1 - alpha) * 2**num_bits / (1 - 2*alpha)` (where `p` runs over
  `[0, 1)`) and the real line: the inverse maps `R` onto `domain`, so a flow that starts with this bijector
  has positive density exactly on `domain**D`. Pixel data lie in `[0, 2**num_bits)`. What `alpha` costs:

  - `alpha = 0` (box-exact, as in Flow++): `domain` is the pixel box `[0, 2**num_bits)` itself, so all of the
    flow's mass lies where pixel levels are and every sample is a valid image. The box edges map to `-inf`
    and `+inf`, so a pixel at level 0 or `2**num_bits - 1` is scored on a tail of the logit.
  - `alpha > 0` (the paper's 0.05): the logit's tails are cut off, the box edges map to `logit(alpha)` and
    `-logit(alpha)` (+-2.94), and `domain` is wider than the box (`[-0.889, 16.889)` for 4 bits, `[-14.2,
    270.2)` for 8). The flow's mass outside `[0, 2**num_bits)**D` counts in no pixel level, so for dequantized
    discrete data it is given away (`log2(1 / mass inside) / D` bits/dim), and samples can lie there.

  Numerical guard (the only departure from the formula, on a float-edge set): `forward` uses
  `max(p, tiny)`, `tiny` the dtype's smallest normal number, so that `x = domain[0]` exactly (a pixel at level
  0 with zero dequantization noise, for `alpha = 0`) gets a finite logit (-87.3 in float32) and log-det
  rather than `-inf`; `inverse` clips `x` to `[low, high)` (`high`'s largest float below it) where `sigmoid(y)`
  rounds to 1 (`y > 16.6` in float32) or to 0, so samples stay inside `domain`. Neither changes a value
  anywhere else.

  This is the released code's symmetric form: `p` lies in `[alpha, 1 - alpha)`, so both tails of the logit are
  cut off equally. The paper prints `p = alpha + (1 - alpha) * x / 256`, which keeps `p` in `[alpha, 1)` and
  leaves the upper tail unbounded. Because the `1 / 2**num_bits` scaling is part of the log-det, a flow that
  starts with this bijector has its density in pixel units, and `-log_prob / (D ln 2)` is the paper's bits/dim.
  `num_bits` 8 for ordinary images, fewer for e.g. 5-bit CelebA-HQ (Glow) or the bundled 4-bit digits.
  """

  def __init__(self, num_bits=8, alpha=0.05, validate_args=False, name="logit_transform"):
    parameters = dict(locals())
    # None, NaN, a string or a bool is refused by name (not a `TypeError` from `int`).
    if not (_is_real(num_bits) and float(num_bits).is_integer() and 1 <= num_bits <= 16):
      raise ValueError(f"`num_bits` must be an integer in [1, 16]; got {num_bits!r}.")
    if not (_is_real(alpha) and 0.0 <= alpha < 0.5):
      raise ValueError(f"`alpha` must be in [0, 0.5) (0: box-exact, the paper's 0.05); got {alpha!r}.")
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
    """`(low, high)`, Python floats: the half-open interval `[low, high)` that `inverse` maps the real line
    onto; `(0, 2**num_bits)` for `alpha = 0`."""
    scale = 2.0**self._num_bits / (1.0 - 2.0 * self._alpha)
    return -self._alpha * scale, (1.0 - self._alpha) * scale

  def in_domain(self, x):
    """Elementwise: whether `x` lies in `[low, high)`, the `domain`."""
    x = tf.convert_to_tensor(x)
    low, high = self.domain
    return (x >= low) & (x < high)

  def _log_slope(self, dtype):
    """`log((1 - 2*alpha) / 2**num_bits)`, the log-derivative of the affine part."""
    return tf.constant(math.log1p(-2.0 * self._alpha) - self._num_bits * math.log(2.0), dtype)

  def _p(self, x):
    """`p`, guarded below by the dtype's smallest normal number (see the class docstring)."""
    p = self._alpha + (1.0 - 2.0 * self._alpha) * x / 2.0**self._num_bits
    return tf.maximum(p, np.finfo(x.dtype.as_numpy_dtype).tiny)

  def _forward(self, x):
    p = self._p(x)
    return tf.math.log(p) - tf.math.log1p(-p)

  def _inverse(self, y):
    x = (tf.sigmoid(y) - self._alpha) * 2.0**self._num_bits / (1.0 - 2.0 * self._alpha)
    low, high = (tf.constant(end, y.dtype) for end in self.domain)
    return tf.clip_by_value(x, low, tf.math.nextafter(high, low))

  def _forward_log_det_jacobian(self, x):
    p = self._p(x)
    return self._log_slope(x.dtype) - tf.math.log(p) - tf.math.log1p(-p)

  def _inverse_log_det_jacobian(self, y):
    # log(p) = -softplus(-y) and log(1 - p) = -softplus(y): stable for any y.
    return -self._log_slope(y.dtype) - tf.math.softplus(-y) - tf.math.softplus(y)


def _is_real(value):
  """A finite real number, not a bool."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
