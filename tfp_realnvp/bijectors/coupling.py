"""Masked affine coupling, the core of RealNVP."""

import functools
import inspect
import types

import tensorflow as tf

from tfp_realnvp.bijectors.joint_log_det import JointLogDetBijector
from tfp_realnvp.bijectors.masks import make_mask

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
  `False`) is passed on, for batch norm and dropout. `call_keywords` declares that keyword, so a
  `KeywordChain` delivers it (see `keyword_chain.py`).

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

  call_keywords = frozenset({"training"})

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
      self._event_shape = tuple(int(d) for d in event_shape)
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
  def conditioner(self):
    return self._conditioner

  @property
  def mask(self):
    return self._mask

  @property
  def tanh_scale(self):
    return self._tanh_scale

  def _shift_and_log_scale(self, masked_input, training):
    event_rank = len(self._event_shape)
    batch_shape = tf.shape(masked_input)[:-event_rank]
    flat = tf.reshape(masked_input, [-1, *self._event_shape])
    if self._conditioner_takes_training:
      raw = self._conditioner(flat, training=training)
    else:
      raw = self._conditioner(flat)
    raw = tf.reshape(raw, tf.concat([batch_shape, self._event_shape[:-1], [2 * self._event_shape[-1]]], 0))
    shift, raw_log_scale = tf.split(raw, 2, axis=-1)
    unmasked = 1.0 - self._mask
    return unmasked * shift, unmasked * self._tanh_scale * tf.tanh(raw_log_scale)

  def _event_sum(self, log_scale):
    return tf.reduce_sum(log_scale, axis=list(range(-len(self._event_shape), 0)))

  def _augmented_forward(self, x, training=False):
    shift, log_scale = self._shift_and_log_scale(self._mask * x, training)
    fldj = self._event_sum(log_scale)
    return x * tf.exp(log_scale) + shift, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, training=False):
    shift, log_scale = self._shift_and_log_scale(self._mask * y, training)
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
