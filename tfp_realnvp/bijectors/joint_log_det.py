"""A base for bijectors whose transform and log-det come from one computation."""

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ["JointLogDetBijector"]

tfb = tfp.bijectors


class JointLogDetBijector(tfb.Bijector):
  """Subclasses implement `_augmented_forward(x, **kwargs) -> (y, {'fldj': ..., 'ildj': ...})` and its inverse.

  TFP's greedy-attribute cache stores the log-det with the transform, so `log_prob`'s transform and log-det
  calls cost one computation (one conditioner call, one set of batch moments).
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
    forward_name="_augmented_forward", inverse_name="_augmented_inverse"
  )

  def _forward(self, x, **kwargs):
    return self._augmented_forward(x, **kwargs)[0]

  def _inverse(self, y, **kwargs):
    return self._augmented_inverse(y, **kwargs)[0]

  def _forward_log_det_jacobian(self, x, **kwargs):
    return self._augmented_forward(x, **kwargs)[1]["fldj"]

  def _inverse_log_det_jacobian(self, y, **kwargs):
    return self._augmented_inverse(y, **kwargs)[1]["ildj"]
