"""The RealNVP distribution: the paper's multi-scale flow as a `tfd.TransformedDistribution`."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TFP turns every subclass of the public `tfd.TransformedDistribution` into a CompositeTensor, and containers
# (`tf.Module`, joint distributions) flatten a CompositeTensor through its constructor arguments, so they would
# list none of the flow's variables. `tfd.TransformedDistribution(...)` itself returns this class whenever its
# parts hold variables; RealNVP subclasses it for the same reason.
from tensorflow_probability.python.distributions.transformed_distribution import _TransformedDistribution

from tfp_realnvp import networks
from tfp_realnvp.bijectors import AffineCoupling, BatchNorm, FactorOut, LogitTransform, Squeeze

__all__ = ["PRESETS", "RealNVP"]

tfb = tfp.bijectors
tfd = tfp.distributions

# The paper's settings (section 4.1 and appendix), and small presets for the bundled data.
PRESETS = {
  "cifar10": dict(event_shape=(32, 32, 3), num_scales=2, num_blocks=8, num_filters=64),
  "imagenet32": dict(event_shape=(32, 32, 3), num_scales=4, num_blocks=4, num_filters=32),
  "imagenet64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  "celeba64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  "lsun64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  # 28 = 4 * 7: two scales fit MNIST as it is (the last at 14x14x2); padding to 32x32 would add constant
  # pixels that change `D` and make bits/dim incomparable with the literature.
  "mnist": dict(event_shape=(28, 28, 1), num_scales=2, num_blocks=4, num_filters=32),
  # Dropout 0.4 keeps the 1500 training digits from being memorized (chosen on the digits protocol).
  "digits": dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=2, num_filters=32, num_bits=4, dropout=0.4),
}

_IMAGE_ARGS = ("num_scales", "num_blocks", "num_filters", "num_bits")
_VECTOR_ARGS = ("num_couplings", "hidden_units")


class RealNVP(_TransformedDistribution):
  """RealNVP (Dinh et al., 2016): `log p(x) = log N(f(x); 0, I) + log|det df/dx|`.

  **Image events** `(H, W, C)`: the data are dequantized pixel values in `[0, 2**num_bits)`, and `f` is the
  paper's multi-scale architecture: a `LogitTransform`, then per scale 3 alternating checkerboard couplings, a
  squeeze, 3 alternating channel couplings and a factor-out of half the channels; the last scale has 4
  checkerboard couplings. Every coupling is followed by a `BatchNorm` flow layer, and its conditioner is a
  weight-normalized `networks.ResNet` whose width doubles at each coarser scale. The latent `z = f(x)` has the
  shape of `x` (each scale un-squeezes what it squeezed), and `bits_per_dim(x) = -log_prob(x) / (D ln 2)` is
  the figure the paper reports.

  **Vector events** `(D,)`: `num_couplings` alternating half-mask couplings with `networks.MLP` conditioners,
  a flow over `R^D` for tabular data and learned priors.

  `log_prob(x, training=True)` uses batch statistics in every batch norm and moves their running averages
  (and enables dropout); the default `training=False` is for evaluation. `sample(n, seed, temperature)`
  scales the base standard deviation by `temperature`.

  #### Examples

  ```python
  flow = RealNVP.from_preset('digits')
  x = tf.random.uniform([16, 8, 8, 1], 0., 16.)
  loss = tf.reduce_mean(flow.bits_per_dim(x, training=True))
  images = flow.sample(16, seed=tf.constant([1, 2]), temperature=0.7)
  ```

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density estimation using Real NVP. In
       _International Conference on Learning Representations_, 2017. https://arxiv.org/abs/1605.08803
  """

  def __init__(
    self,
    event_shape,
    num_scales=None,
    num_blocks=None,
    num_filters=None,
    num_bits=None,
    num_couplings=None,
    hidden_units=None,
    dropout=0.0,
    batch_norm=None,
    batch_norm_momentum=0.99,
    dtype=tf.float32,
    compute_dtype=None,
    validate_args=False,
    name="real_nvp",
  ):
    """Builds the flow.

    Args:
      event_shape: `(height, width, channels)` for images, `(dims,)` for vectors.
      num_scales: images: number of scales (default 2). Height and width must be divisible by
        `2**(num_scales - 1)`.
      num_blocks: images: residual blocks per conditioner (default 4).
      num_filters: images: conditioner features at the finest scale, doubled at each coarser one (default 32).
      num_bits: images: bits per pixel; data lie in `[0, 2**num_bits)` (default 8).
      num_couplings: vectors: number of couplings (default 4).
      hidden_units: vectors: MLP conditioner widths (default `(64, 64)`).
      dropout: dropout rate inside the conditioners, active only with `training=True`.
      batch_norm: whether a `BatchNorm` flow layer follows each coupling; default True for images, False for
        vectors.
      batch_norm_momentum: running-average momentum of every batch norm.
      dtype: float dtype of data and variables.
      compute_dtype: dtype the conditioner networks compute in (default: `dtype`). `tf.bfloat16` is mixed
        precision for CPUs with bfloat16 instructions and TPUs (`tf.float16` for GPUs, with loss scaling):
        convolutions, their batch norms and activations run in it, while the variables, the log-scales,
        log-determinants, prior and loss stay in `dtype`.
      validate_args: Python `bool`, passed to `tfd.TransformedDistribution`.
      name: Python `str` name.
    """
    parameters = dict(locals())
    event_shape = tuple(int(d) for d in event_shape)
    kind = {3: "image", 1: "vector"}.get(len(event_shape))
    if kind is None or min(event_shape) <= 0:
      raise ValueError(
        "`event_shape` must be `(height, width, channels)` for images or `(dims,)` for vectors, with "
        f"positive sizes; got {event_shape}."
      )
    own_args, other_args = (_IMAGE_ARGS, _VECTOR_ARGS) if kind == "image" else (_VECTOR_ARGS, _IMAGE_ARGS)
    misplaced = [arg for arg in other_args if parameters[arg] is not None]
    if misplaced:
      raise ValueError(
        f"{', '.join(f'`{arg}`' for arg in misplaced)} only apply to "
        f"{'vector' if kind == 'image' else 'image'} flows; this is a {kind} flow with "
        f"`event_shape={event_shape}`, which takes {', '.join(f'`{arg}`' for arg in own_args)}."
      )
    self._event_shape_tuple = event_shape
    self._num_bits = None
    with tf.name_scope(name) as name:
      if kind == "image":
        self._num_bits = 8 if num_bits is None else num_bits
        data_to_latent = _image_flow(
          event_shape,
          num_scales=2 if num_scales is None else num_scales,
          num_blocks=4 if num_blocks is None else num_blocks,
          num_filters=32 if num_filters is None else num_filters,
          num_bits=self._num_bits,
          dropout=dropout,
          batch_norm=True if batch_norm is None else batch_norm,
          batch_norm_momentum=batch_norm_momentum,
          dtype=dtype,
          compute_dtype=compute_dtype,
        )
      else:
        data_to_latent = _vector_flow(
          event_shape[0],
          num_couplings=4 if num_couplings is None else num_couplings,
          hidden_units=(64, 64) if hidden_units is None else tuple(hidden_units),
          dropout=dropout,
          batch_norm=False if batch_norm is None else batch_norm,
          batch_norm_momentum=batch_norm_momentum,
          dtype=dtype,
          compute_dtype=compute_dtype,
        )
      self._data_to_latent = data_to_latent
      base = tfd.Sample(
        tfd.Normal(loc=tf.constant(0.0, dtype), scale=tf.constant(1.0, dtype)), sample_shape=event_shape
      )
      super().__init__(
        distribution=base,
        bijector=tfb.Invert(data_to_latent),  # TFP's bijectors map latent to data.
        kwargs_split_fn=self._split_kwargs,
        validate_args=validate_args,
        parameters=parameters,
        name=name,
      )
    self._parameters = parameters  # RealNVP's own arguments, not the base class's.

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}  # No tensor-valued parameters: everything learned lives in the bijector's variables.

  @classmethod
  def from_preset(cls, name, **overrides):
    """Builds a flow with a preset's settings (see `PRESETS`); keyword arguments override them."""
    if name not in PRESETS:
      raise ValueError(f"Unknown preset `name={name!r}`; choose one of {sorted(PRESETS)}.")
    return cls(**{**PRESETS[name], **overrides})

  @property
  def is_image(self):
    return len(self._event_shape_tuple) == 3

  @property
  def num_bits(self):
    """Bits per pixel of image data (data lie in `[0, 2**num_bits)`); None for vector flows."""
    return self._num_bits

  @property
  def num_dims(self):
    """`D`, the number of dimensions of one event."""
    return int(np.prod(self._event_shape_tuple))

  @property
  def regularized_variables(self):
    """The variables the paper's L2 penalty applies to: weight-norm scales and coupling tanh scales."""
    return tuple(v for v in self.trainable_variables if networks.is_regularized(v))

  def _split_kwargs(self, kwargs):
    unknown = set(kwargs) - {"training"}
    if unknown:
      raise TypeError(f"Unexpected keyword arguments {sorted(unknown)}; RealNVP methods take `training`.")
    return {}, _route_training(self._data_to_latent, bool(kwargs.get("training", False)))

  def _check_event_shape(self, x, arg_name="x"):
    shape = x.shape
    rank = len(self._event_shape_tuple)
    if shape.rank is not None and (
      shape.rank < rank or not shape[-rank:].is_compatible_with(self._event_shape_tuple)
    ):
      raise ValueError(
        f"`{arg_name}` must have shape `[..., {', '.join(map(str, self._event_shape_tuple))}]` "
        f"(batch dimensions, then the event shape); got shape {shape.as_list()}."
      )

  def _log_prob(self, x, **kwargs):
    self._check_event_shape(x)
    if not self.is_image:
      return super()._log_prob(x, **kwargs)
    # Pixel data live in [0, 2**num_bits): zero density outside, NaN for NaN. Out-of-range values are
    # replaced before the transform so that they can produce neither NaNs nor NaN gradients.
    event_axes = [-3, -2, -1]
    in_range = (x >= 0.0) & (x < 2.0**self._num_bits)
    safe_x = tf.where(in_range, x, tf.constant(2.0 ** (self._num_bits - 1), x.dtype))
    log_prob = super()._log_prob(safe_x, **kwargs)
    log_prob = tf.where(tf.reduce_all(in_range, event_axes), log_prob, tf.constant(-np.inf, log_prob.dtype))
    return tf.where(
      tf.reduce_any(tf.math.is_nan(x), event_axes), tf.constant(np.nan, log_prob.dtype), log_prob
    )

  def _prob(self, x, **kwargs):
    return tf.exp(self._log_prob(x, **kwargs))

  def _call_sample_n(self, sample_shape, seed, temperature=1.0, **kwargs):
    distribution_kwargs, bijector_kwargs = self._split_kwargs(kwargs)
    z = self.distribution.sample(sample_shape, seed=seed, **distribution_kwargs)
    return self.bijector.forward(z * tf.cast(temperature, z.dtype), **bijector_kwargs)

  def bits_per_dim(self, x, training=False):
    """`-log_prob(x) / (D ln 2)` for pixel-valued `x`: the paper's bits/dim (a uniform model gets `num_bits`)."""
    if not self.is_image:
      raise ValueError("`bits_per_dim` is defined for image flows over pixel values; this is a vector flow.")
    x = tf.convert_to_tensor(x, self.dtype)
    return -self.log_prob(x, training=training) / (self.num_dims * math.log(2.0))

  def encode(self, x):
    """The latent `z = f(x)` (inference mode), shaped like `x`."""
    x = tf.convert_to_tensor(x, self.dtype)
    self._check_event_shape(x)
    return self._data_to_latent.forward(x, **_route_training(self._data_to_latent, False))

  def decode(self, z):
    """The data point `x = f^{-1}(z)` (inference mode), shaped like `z`."""
    z = tf.convert_to_tensor(z, self.dtype)
    self._check_event_shape(z, "z")
    return self._data_to_latent.inverse(z, **_route_training(self._data_to_latent, False))

  def interpolate(self, x_start, x_end, num_steps=8):
    """Decodes `cos(a) * z_start + sin(a) * z_end` for `a` from 0 to `pi/2` in `num_steps` steps.

    The paper's latent interpolation: unlike a straight line, this path keeps the latent's Gaussian norm.
    Returns `[num_steps, *x_start.shape]`, starting at `x_start` and ending at `x_end` (up to round-off).
    """
    if int(num_steps) < 2:
      raise ValueError(f"`num_steps` must be at least 2; got {num_steps!r}.")
    z_start, z_end = self.encode(x_start), self.encode(x_end)
    angles = tf.cast(tf.linspace(0.0, math.pi / 2, int(num_steps)), self.dtype)
    angles = tf.reshape(angles, [-1] + [1] * z_start.shape.rank)
    return self.decode(tf.cos(angles) * z_start + tf.sin(angles) * z_end)


def _image_flow(
  event_shape,
  num_scales,
  num_blocks,
  num_filters,
  num_bits,
  dropout,
  batch_norm,
  batch_norm_momentum,
  dtype,
  compute_dtype,
):
  """The data-to-latent map `f` of the multi-scale architecture, a `tfb.Chain`."""
  height, width, _ = event_shape
  if isinstance(num_scales, bool) or int(num_scales) != num_scales or num_scales < 1:
    raise ValueError(f"`num_scales` must be a positive integer; got {num_scales!r}.")
  factor = 2 ** (num_scales - 1)
  if height % factor or width % factor:
    raise ValueError(
      f"`num_scales={num_scales}` squeezes {num_scales - 1} time(s), so height and width must be divisible "
      f"by {factor}; got `event_shape={event_shape}`."
    )

  def coupling_and_norm(scale, mask_type, index, shape):
    """An affine coupling with a ResNet conditioner (features doubled per scale) and, with `batch_norm`, a
    batch norm."""
    name = f"scale{scale}_{mask_type}{index}"
    conditioner = networks.ResNet(
      shape[-1],
      2 * shape[-1],
      num_blocks=num_blocks,
      num_filters=num_filters * 2**scale,
      dropout=dropout,
      batch_norm_momentum=batch_norm_momentum,
      dtype=dtype,
      compute_dtype=compute_dtype,
      name=f"{name}_resnet",
    )
    layers = [AffineCoupling(conditioner, shape, mask_type, parity=index % 2, dtype=dtype, name=name)]
    if batch_norm:
      layers.append(
        BatchNorm(shape[-1], momentum=batch_norm_momentum, dtype=dtype, name=f"{name}_batch_norm")
      )
    return layers

  layers = _scale(event_shape, 0, num_scales, coupling_and_norm)
  return _chain([LogitTransform(num_bits)] + layers, name="data_to_latent")


def _scale(shape, scale, num_scales, coupling_and_norm):
  """The layers of one scale and, recursively, of the coarser ones, in data-to-latent order.

  `coupling_and_norm(scale, mask_type, index, shape)` makes one coupling and its batch norm.
  """
  height, width, channels = shape

  def couplings(mask_type, count, event_shape):
    return [layer for i in range(count) for layer in coupling_and_norm(scale, mask_type, i, event_shape)]

  if scale == num_scales - 1:
    return couplings("checkerboard", 4, shape)
  layers = couplings("checkerboard", 3, shape)
  layers.append(Squeeze(name=f"scale{scale}_squeeze"))
  layers += couplings("channel", 3, (height // 2, width // 2, 4 * channels))
  coarser = _scale((height // 2, width // 2, 2 * channels), scale + 1, num_scales, coupling_and_norm)
  layers.append(FactorOut(_chain(coarser, name=f"scale{scale + 1}"), name=f"scale{scale}_factor_out"))
  layers.append(tfb.Invert(Squeeze(), name=f"scale{scale}_unsqueeze"))
  return layers


def _vector_flow(
  dims, num_couplings, hidden_units, dropout, batch_norm, batch_norm_momentum, dtype, compute_dtype
):
  if isinstance(num_couplings, bool) or int(num_couplings) != num_couplings or num_couplings < 1:
    raise ValueError(f"`num_couplings` must be a positive integer; got {num_couplings!r}.")
  layers = []
  for i in range(num_couplings):
    conditioner = networks.MLP(
      dims,
      2 * dims,
      hidden_units,
      dropout=dropout,
      dtype=dtype,
      compute_dtype=compute_dtype,
      name=f"coupling{i}_mlp",
    )
    layers.append(
      AffineCoupling(conditioner, (dims,), "half", parity=i % 2, dtype=dtype, name=f"coupling{i}")
    )
    if batch_norm:
      layers.append(
        BatchNorm(dims, momentum=batch_norm_momentum, dtype=dtype, name=f"coupling{i}_batch_norm")
      )
  return _chain(layers, name="data_to_latent")


def _chain(layers_in_data_order, name):
  # tfb.Chain applies its list right to left.
  return tfb.Chain(list(reversed(layers_in_data_order)), name=name)


def _route_training(bijector, training):
  """The nested keyword arguments that deliver `training` to every coupling and batch norm in `bijector`.

  `tfb.Chain` hands each member `kwargs[member.name]`; `Invert` and `FactorOut` pass theirs on unchanged.
  """
  if isinstance(bijector, (AffineCoupling, BatchNorm)):
    return {"training": training}
  if isinstance(bijector, tfb.Composition):  # `tfb.Chain(...)` builds a private subclass of it.
    return {member.name: _route_training(member, training) for member in bijector.bijectors}
  if isinstance(getattr(bijector, "bijector", None), tfb.Bijector):  # `tfb.Invert`, likewise.
    return _route_training(bijector.bijector, training)
  if isinstance(bijector, FactorOut):
    return _route_training(bijector.inner, training)
  return {}
