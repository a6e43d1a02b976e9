"""Masked affine coupling, the core of RealNVP."""

import functools
import inspect
import types

import tensorflow as tf

from tfp_realnvp.bijectors.joint_log_det import JointLogDetBijector
from tfp_realnvp.bijectors.masks import make_mask
from tfp_realnvp.internal import contexts
from tfp_realnvp.internal.checks import positive_ints

__all__ = ["AffineCoupling"]


class AffineCoupling(JointLogDetBijector):
  """Masked affine coupling `y = b*x + (1-b)*(x*exp(log_scale) + shift)`.

  `(shift, raw) = conditioner(b*x)` and `log_scale = tanh_scale * tanh(raw)`, with a learned per-channel
  `tanh_scale` (initialized to 1) that bounds the log-scale, so `exp` never overflows. The Jacobian is
  triangular:

  `log|det dy/dx| = sum((1-b) * log_scale)`,  and the inverse is  `x = b*y + (1-b)*((y - shift)*exp(-log_scale))`

  with the conditioner evaluated on `b*y = b*x`. The conditioner runs once per transform: the transform and
  its log-det are computed together and cached (the log-det lookup that follows costs nothing).

  The conditioner maps `[N, *event_shape]` to `[N, *event_shape[:-1], 2 * channels]` (shift first, then the
  raw log-scale). It must be a `tf.Module` or a `tf_keras` layer, passed as the object itself, so that its
  variables are tracked; if its `__call__` takes `training`, the bijector's `training` keyword (default
  `False`) is passed on, for batch norm and dropout.

  A conditional coupling, `y = b*x + (1-b)*(x*exp(log_scale(b*x; c)) + shift(b*x; c))`, has a conditioner
  whose `__call__` (a `tf_keras` layer's `call`) names `conditional_input` (e.g. `networks.ConditionalResNet`):
  the bijector's `conditional_input` keyword, the context `c` of shape `[*batch_shape, *context_shape]`
  (batch dimensions those of `x`, or 1 to broadcast), reaches it flattened to `[N, *context_shape]` like `x`.
  The context enters only the conditioner, so the log-det and inverse keep their form. A context given to a
  coupling whose conditioner takes none, or none given where the conditioner's `conditional_input` has no
  default, is a `ValueError` naming `conditional_input`.

  `call_keywords` declares `training`, and `conditional_input` when the conditioner takes it, so a
  `KeywordChain` delivers them (see `keyword_chain.py`), and rejects a context no coupling takes.

  #### Examples

  ```python
  conditioner = tfp_realnvp.networks.ResNet(in_channels=2, out_channels=4, num_blocks=1, num_filters=8)
  coupling = AffineCoupling(conditioner, event_shape=(4, 4, 2), mask_type='checkerboard', parity=0)
  y = coupling.forward(tf.random.normal([16, 4, 4, 2]), training=True)
  ```

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density estimation using Real NVP. In
       _International Conference on Learning Representations_, 2017. https://arxiv.org/abs/1605.08803
  """

  def __init__(
    self,
    conditioner,
    event_shape,
    mask_type,
    parity=0,
    validate_args=False,
    dtype=tf.float32,
    name="affine_coupling",
  ):
    """Builds the coupling.

    Args:
      conditioner: `tf.Module` or `tf_keras` layer mapping `b*x` to `concat([shift, raw_log_scale], -1)`.
      event_shape: `[height, width, channels]` for `'checkerboard'`/`'channel'` masks, `[dims]` for `'half'`.
      mask_type: `'checkerboard'`, `'channel'` or `'half'`.
      parity: 0 or 1; selects which units pass through (see `masks.make_mask`).
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      dtype: float dtype of the events and of `tanh_scale`.
      name: Python `str` name.
    """
    parameters = dict(locals())
    _check_conditioner(conditioner)
    mask = make_mask(mask_type, parity, event_shape)
    with tf.name_scope(name) as name:
      self._conditioner = conditioner
      self._conditioner_takes_training = _takes_training(conditioner)
      self._conditioner_context = _context_parameter(conditioner)
      self._event_shape = positive_ints("event_shape", event_shape)
      self._mask_type = mask_type
      self._parity = parity
      self._mask = tf.constant(mask, dtype=dtype)
      self._tanh_scale = tf.Variable(tf.ones(self._event_shape[-1:], dtype), name="tanh_scale")
      super().__init__(
        forward_min_event_ndims=len(self._event_shape),
        validate_args=validate_args,
        dtype=dtype,
        parameters=parameters,
        name=name,
      )

  @property
  def call_keywords(self):
    """`training`, and `conditional_input` when the conditioner takes a context."""
    return frozenset({"training"} | ({"conditional_input"} if self._conditioner_context else set()))

  @property
  def conditioner(self):
    return self._conditioner

  @property
  def mask(self):
    return self._mask

  @property
  def tanh_scale(self):
    return self._tanh_scale

  def _shift_and_log_scale(self, masked_input, training, conditional_input):
    event_rank = len(self._event_shape)
    batch_shape = tf.shape(masked_input)[:-event_rank]
    flat = tf.reshape(masked_input, [-1, *self._event_shape])
    kwargs = {"training": training} if self._conditioner_takes_training else {}
    if conditional_input is not None:
      kwargs["conditional_input"] = self._flat_context(conditional_input, batch_shape)
    elif (
      self._conditioner_context is not None and self._conditioner_context.default is inspect.Parameter.empty
    ):
      raise ValueError(
        f"`{self.name}` got no `conditional_input`, but its conditioner ({type(self._conditioner).__name__}) "
        "requires one: pass the context as `conditional_input=`."
      )
    raw = self._conditioner(flat, **kwargs)
    raw = tf.reshape(raw, tf.concat([batch_shape, self._event_shape[:-1], [2 * self._event_shape[-1]]], 0))
    shift, raw_log_scale = tf.split(raw, 2, axis=-1)
    unmasked = 1.0 - self._mask
    return unmasked * shift, unmasked * self._tanh_scale * tf.tanh(raw_log_scale)

  def _flat_context(self, conditional_input, batch_shape):
    """The context `[*batch_shape, *context_shape]`, broadcast to the batch of `x`, as `[N, *context_shape]`."""
    if self._conditioner_context is None:
      raise ValueError(
        f"`{self.name}` got `conditional_input`, but its conditioner ({type(self._conditioner).__name__}) "
        "takes no `conditional_input`: give it a conditioner that does (e.g. `networks.ConditionalResNet`), "
        "or call the coupling without one."
      )
    context = contexts.as_tensor(conditional_input, self.dtype)
    batch_rank = int(batch_shape.shape[0])
    if context.shape.rank is None or context.shape.rank < batch_rank:
      raise ValueError(
        f"`conditional_input` of `{self.name}` must have shape `[*batch_shape, *context_shape]`, with the "
        f"{batch_rank} batch dimension(s) of `x` first; got shape {context.shape}."
      )
    context_shape = context.shape[batch_rank:].as_list()
    context_rank = len(context_shape)
    context = contexts.broadcast_to_batch(
      context,
      tf.broadcast_dynamic_shape(contexts.batch_shape(context, context_rank)[0], batch_shape),
      context_rank,
    )
    return tf.reshape(context, [-1, *[-1 if d is None else d for d in context_shape]])

  def _event_sum(self, log_scale):
    return tf.reduce_sum(log_scale, axis=list(range(-len(self._event_shape), 0)))

  def _augmented_forward(self, x, training=False, conditional_input=None):
    shift, log_scale = self._shift_and_log_scale(self._mask * x, training, conditional_input)
    fldj = self._event_sum(log_scale)
    return x * tf.exp(log_scale) + shift, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, training=False, conditional_input=None):
    shift, log_scale = self._shift_and_log_scale(self._mask * y, training, conditional_input)
    ildj = -self._event_sum(log_scale)
    return (y - shift) * tf.exp(-log_scale), {"ildj": ildj, "fldj": -ildj}


def _check_conditioner(conditioner):
  if any(cls.__module__.split(".")[0] == "keras" for cls in type(conditioner).__mro__):
    raise TypeError(
      "`conditioner` is a Keras 3 object "
      f"({type(conditioner).__module__}.{type(conditioner).__name__}). TensorFlow Probability cannot see "
      "Keras 3 variables: the bijector would list no trainable variables and training would silently do "
      "nothing. Use a `tf.Module` (e.g. `tfp_realnvp.networks.ResNet`) or a `tf_keras` (Keras 2) layer."
    )
  if isinstance(
    conditioner, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)
  ):
    raise TypeError(
      f"`conditioner` must be a `tf.Module` or `tf_keras` layer object; got the function {conditioner!r}. "
      "A closure hides the network's variables from TFP, so they would never train: pass the module itself."
    )
  if not callable(conditioner):
    raise TypeError(f"`conditioner` must be callable; got {type(conditioner).__name__}.")


def _takes_training(conditioner):
  try:
    parameters = inspect.signature(conditioner.__call__).parameters
  except (TypeError, ValueError):
    return False
  return "training" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def _context_parameter(conditioner):
  """The `inspect.Parameter` `conditional_input` of the conditioner's `__call__` (or `call`), or None.

  A `tf_keras` layer's `__call__` takes `*args, **kwargs` and hands them to its `call`, so `call` is inspected
  when `__call__` does not name the keyword. A bare `**kwargs` does not count: a context is passed only to a
  conditioner that names it.
  """
  for method in (conditioner.__call__, getattr(conditioner, "call", None)):
    try:
      parameter = inspect.signature(method).parameters.get("conditional_input")
    except (TypeError, ValueError):
      continue
    if parameter is not None:
      return parameter
  return None
