"""A learned shift of the latent by the context: a flow's base mean that depends on `c`."""

import numpy as np
import tensorflow as tf

from tfp_realnvp.bijectors.own_variables import OwnVariablesBijector
from tfp_realnvp.internal import contexts
from tfp_realnvp.internal.checks import positive_int, positive_ints

__all__ = ["ContextShift"]


class ContextShift(OwnVariablesBijector):
  """`y = x - mu(c)`, `mu(c) = reshape(c @ weights, event_shape)`: a shift by a learned linear map of the context.

  Last in a flow's data-to-latent map `f`, it turns the standard normal base into `N(mu(c), I)` for the
  latent before the shift: `p(x | c) = N(g(x); mu(c), I) |det dg/dx|`, `g` the rest of `f`. The log-det is 0
  (zeros of the batch shape). With a one-hot label `c = e_y`, `mu(e_y)` is the class mean `weights[y]`, and Bayes' rule over the base is a
  linear classifier on `z = g(x)`: `log p(x | y) = log N(z; 0, I) + z . mu_y - |mu_y|^2 / 2 + log|det dg/dx|`,
  one pass of `g` for every class (Nalisnick et al. 2019's hybrid model). The all-zeros context leaves `x`
  unchanged.

  `weights`, `[context_features, prod(event_shape)]`, start at 0 (the identity). `conditional_input`, the
  context `[*batch_shape, context_features]` (batch dimensions broadcasting against those of `x`), is the one
  call-time keyword (`call_keywords`), so a `KeywordChain` delivers it.
  """

  call_keywords = frozenset({"conditional_input"})

  def __init__(
    self, context_features, event_shape, dtype=tf.float32, validate_args=False, name="context_shift"
  ):
    """Builds the shift.

    Args:
      context_features: the length of one context vector `c`.
      event_shape: the shape of one `x`, a tuple of Python ints.
      dtype: float dtype of `x`, the context and the weights.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: Python `str` name.
    """
    parameters = dict(locals())
    self._context_features = positive_int("context_features", context_features)
    self._event_shape = positive_ints("event_shape", event_shape)
    with tf.name_scope(name) as name:
      self.weights = tf.Variable(
        tf.zeros([self._context_features, int(np.prod(self._event_shape))], dtype), name="weights"
      )
      super().__init__(
        forward_min_event_ndims=len(self._event_shape),
        validate_args=validate_args,
        dtype=dtype,
        parameters=parameters,
        name=name,
      )

  def shift(self, conditional_input):
    """`mu(c) = reshape(c @ weights, event_shape)`, `[*batch_shape, *event_shape]` for `c` `[*batch_shape,
    context_features]`.

    Raises:
      ValueError: `conditional_input` is None or does not end with `context_features`.
    """
    context = self._checked_context(conditional_input)
    flat = tf.tensordot(context, self.weights, [[-1], [0]])
    return tf.reshape(flat, tf.concat([tf.shape(context)[:-1], self._event_shape], 0))

  def _checked_context(self, conditional_input):
    if conditional_input is None:
      raise ValueError(f"`{self.name}` needs a context: pass it as `conditional_input=`.")
    context = contexts.as_tensor(conditional_input, self.dtype)
    if context.shape.rank is None or context.shape.rank < 1 or context.shape[-1] != self._context_features:
      raise ValueError(
        f"`conditional_input` of `{self.name}` must have shape `[*batch_shape, {self._context_features}]`; got "
        f"shape {context.shape}."
      )
    return context

  def _forward(self, x, conditional_input=None):
    return x - self.shift(conditional_input)

  def _inverse(self, y, conditional_input=None):
    return y + self.shift(conditional_input)

  def _forward_log_det_jacobian(self, x, conditional_input=None):
    # 0 for every event of the batch that `x` and the context broadcast to (the context's shape, not `mu(c)`).
    batch_shape = tf.broadcast_dynamic_shape(
      tf.shape(x)[: tf.rank(x) - len(self._event_shape)],
      tf.shape(self._checked_context(conditional_input))[:-1],
    )
    return tf.zeros(batch_shape, self.dtype)
