"""Multi-scale factor-out: half the channels leave the flow as final latents, the rest go deeper."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.bijectors.joint_log_det import JointLogDetBijector
from tfp_realnvp.bijectors.keyword_chain import call_keywords_of

__all__ = ["FactorOut"]

tfb = tfp.bijectors


class FactorOut(JointLogDetBijector):
  """`y = concat([x_out, inner(x_in)], axis=-1)` with `[x_out, x_in] = split(x, 2, axis=-1)`.

  The first half of the channels is factored out (RealNVP eqs. 13-16): it is final, and only the second half
  is transformed further, by `inner`, which must keep its input shape (the next scale, ending with the
  inverse of its squeeze). `log|det J| = log|det J_inner(x_in)|`. Call-time keyword arguments (e.g.
  `training`) are passed to `inner` as they are; `call_keywords` are those of `inner`, so a `KeywordChain`
  delivers them.
  """

  def __init__(self, inner, event_ndims=3, validate_args=False, name="factor_out"):
    parameters = dict(locals())
    if not isinstance(inner, tfb.Bijector):
      raise TypeError(f"`inner` must be a `tfb.Bijector`; got {type(inner).__name__}.")
    if inner.forward_min_event_ndims > event_ndims:
      raise ValueError(
        f"`inner` needs events of rank {inner.forward_min_event_ndims}, more than `event_ndims={event_ndims}`."
      )
    with tf.name_scope(name) as name:
      self._inner = inner
      super().__init__(
        forward_min_event_ndims=event_ndims, validate_args=validate_args, parameters=parameters, name=name
      )

  @property
  def inner(self):
    return self._inner

  @property
  def call_keywords(self):
    return call_keywords_of(self._inner)

  def _augmented_forward(self, x, **kwargs):
    x_out, x_in = tf.split(x, 2, axis=-1)
    y_in = self._inner.forward(x_in, **kwargs)
    fldj = self._inner.forward_log_det_jacobian(x_in, event_ndims=self.forward_min_event_ndims, **kwargs)
    return tf.concat([x_out, y_in], axis=-1), {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, **kwargs):
    y_out, y_in = tf.split(y, 2, axis=-1)
    x_in = self._inner.inverse(y_in, **kwargs)
    ildj = self._inner.inverse_log_det_jacobian(y_in, event_ndims=self.forward_min_event_ndims, **kwargs)
    return tf.concat([y_out, x_in], axis=-1), {"ildj": ildj, "fldj": -ildj}
