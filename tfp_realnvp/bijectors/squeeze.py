"""Squeeze: 2x2 space-to-depth, RealNVP's way of trading spatial size for channels."""

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["Squeeze"]

tfb = tfp.bijectors


class Squeeze(tfb.Bijector):
  """Reshapes each `2 x 2 x C` sub-square into `1 x 1 x 4C`: `[H, W, C] -> [H/2, W/2, 4C]`.

  Output channel `(2*dy + dx)*C + c` holds input pixel `(2i + dy, 2j + dx, c)` (`tf.nn.space_to_depth`
  order), so a following `'channel'` mask is not redundant with a checkerboard. A permutation:
  `log|det J| = 0`. `H` and `W` must be even.
  """

  def __init__(self, validate_args=False, name="squeeze"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      super().__init__(
        forward_min_event_ndims=3,
        is_constant_jacobian=True,
        validate_args=validate_args,
        parameters=parameters,
        name=name,
      )

  def _forward(self, x):
    _check_even_spatial(x.shape[-3:])
    batch_shape = tf.shape(x)[:-3]
    height, width, channels = tf.unstack(tf.shape(x)[-3:])
    y = tf.nn.space_to_depth(tf.reshape(x, [-1, height, width, channels]), 2)
    return tf.reshape(y, tf.concat([batch_shape, [height // 2, width // 2, 4 * channels]], 0))

  def _inverse(self, y):
    _check_channels_divisible(y.shape[-1:])
    batch_shape = tf.shape(y)[:-3]
    height, width, channels = tf.unstack(tf.shape(y)[-3:])
    x = tf.nn.depth_to_space(tf.reshape(y, [-1, height, width, channels]), 2)
    return tf.reshape(x, tf.concat([batch_shape, [2 * height, 2 * width, channels // 4]], 0))

  def _forward_log_det_jacobian(self, x):
    return tf.zeros(tf.shape(x)[:-3], dtype=x.dtype)

  def _inverse_log_det_jacobian(self, y):
    return tf.zeros(tf.shape(y)[:-3], dtype=y.dtype)

  def _forward_event_shape(self, input_shape):
    _check_even_spatial(input_shape[-3:])
    height, width, channels = input_shape[-3:]
    return input_shape[:-3].concatenate([_scaled(height, 0.5), _scaled(width, 0.5), _scaled(channels, 4)])

  def _inverse_event_shape(self, output_shape):
    _check_channels_divisible(output_shape[-1:])
    height, width, channels = output_shape[-3:]
    return output_shape[:-3].concatenate([_scaled(height, 2), _scaled(width, 2), _scaled(channels, 0.25)])

  def _forward_event_shape_tensor(self, input_shape):
    return tf.concat([input_shape[:-3], input_shape[-3:-1] // 2, 4 * input_shape[-1:]], 0)

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.concat([output_shape[:-3], 2 * output_shape[-3:-1], output_shape[-1:] // 4], 0)


def _scaled(dim, factor):
  return None if dim is None else int(dim * factor)


def _check_even_spatial(event_shape):
  event_shape = tf.TensorShape(event_shape)
  if event_shape.rank is not None and event_shape.rank < 3:
    raise ValueError(f"`Squeeze` needs image events `[height, width, channels]`; got shape {event_shape}.")
  for axis, dim in zip(("height", "width"), list(event_shape)[:2]):
    if dim is not None and dim % 2:
      raise ValueError(f"`Squeeze` needs an even {axis}; got event shape {list(event_shape)} ({axis} {dim}).")


def _check_channels_divisible(channel_shape):
  (channels,) = tf.TensorShape(channel_shape)
  if channels is not None and channels % 4:
    raise ValueError(f"`Squeeze` inverse needs channels divisible by 4; got {channels}.")
