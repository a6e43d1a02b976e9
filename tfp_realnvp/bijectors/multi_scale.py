"""RealNVP's multi-scale architecture, with the couplings supplied by a factory."""

import tensorflow_probability as tfp

from tfp_realnvp.bijectors.factor_out import FactorOut
from tfp_realnvp.bijectors.keyword_chain import KeywordChain
from tfp_realnvp.bijectors.squeeze import Squeeze
from tfp_realnvp.internal.checks import positive_int, positive_ints

__all__ = ["MultiScale"]

tfb = tfp.bijectors


class MultiScale(KeywordChain):
  """The multi-scale architecture of RealNVP (Dinh et al., 2016, section 3.6), mapping data to latent.

  On an image event `[H, W, C]`, in data-to-latent order (here `num_scales=3`; `cb` is
  `make_coupling(scale, 'checkerboard', index, shape)`, `ch` the same with `'channel'`):

  ```none
  preprocessing                                    (optional, e.g. LogitTransform)
  scale 0   cb 0, cb 1, cb 2                       [H, W, C]
            Squeeze                                 -> [H/2, W/2, 4C]
            ch 0, ch 1, ch 2                        [H/2, W/2, 4C]
            FactorOut: channels [0, 2C) are final; channels [2C, 4C) go through
              scale 1   cb 0, cb 1, cb 2                 [H/2, W/2, 2C]
                        Squeeze, ch 0, ch 1, ch 2        [H/4, W/4, 8C]
                        FactorOut: [0, 4C) final; [4C, 8C) through
                          scale 2 (the last)  cb 0, cb 1, cb 2, cb 3   [H/4, W/4, 4C]
                        Invert(Squeeze)                  -> [H/2, W/2, 2C]
            Invert(Squeeze)                         -> [H, W, C]
  postprocessing                                   (optional, e.g. ContextShift)
  ```

  The latent has the shape of the data: each scale un-squeezes what it squeezed, so the factored-out
  channels of every scale sit at the positions they came from, and `log|det J|` is the sum of the layers'.
  Each `FactorOut` holds the coarser scales as a `KeywordChain`, so call-time keywords such as `training`
  reach every coupling (see `KeywordChain`).

  `make_coupling(scale, mask_type, index, event_shape)` returns one bijector, or a list of them in
  data-to-latent order (e.g. a coupling and the batch norm that follows it), acting on events of
  `event_shape`; `mask_type` is `'checkerboard'` or `'channel'`, and `index` counts the couplings of that
  mask type within the scale, so `parity=index % 2` alternates the masks as the paper does. The factory is
  called in the caller's name scope, in data-to-latent order. As in `tfb.Glow`, this keeps the layout and
  lets a user choose the coupling: another conditioner, another coupling bijector, or no batch norm.

  #### Examples

  ```python
  from tfp_realnvp import networks

  def make_coupling(scale, mask_type, index, event_shape):
    channels = event_shape[-1]
    conditioner = networks.ResNet(channels, 2 * channels, num_blocks=2, num_filters=16)
    return AffineCoupling(conditioner, event_shape, mask_type, parity=index % 2)

  data_to_latent = MultiScale((32, 32, 3), num_scales=2, make_coupling=make_coupling,
                              preprocessing=LogitTransform(num_bits=8))
  z = data_to_latent.forward(x, training=True)
  ```

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density estimation using Real NVP. In
       _International Conference on Learning Representations_, 2017. https://arxiv.org/abs/1605.08803
  """

  def __init__(
    self,
    event_shape,
    num_scales,
    make_coupling,
    preprocessing=None,
    postprocessing=None,
    validate_args=False,
    name="multi_scale",
  ):
    """Builds the layers.

    Args:
      event_shape: `(height, width, channels)`; height and width divisible by `2**(num_scales - 1)`.
      num_scales: number of scales; all but the last squeeze and factor out half their channels.
      make_coupling: `make_coupling(scale, mask_type, index, event_shape)` -> a `tfb.Bijector` or a list of
        them in data-to-latent order.
      preprocessing: optional `tfb.Bijector` applied to the data before the first scale.
      postprocessing: optional `tfb.Bijector` applied to the latent after the last scale (e.g. a
        `ContextShift`).
      validate_args: Python `bool`, passed to `tfb.Composition`.
      name: Python `str` name.
    """
    parameters = dict(locals())
    event_shape = positive_ints("event_shape", event_shape)
    if len(event_shape) != 3:
      raise ValueError(
        f"`event_shape` must be `(height, width, channels)` with positive sizes; got {event_shape}."
      )
    num_scales = positive_int("num_scales", num_scales)
    factor = 2 ** (num_scales - 1)
    if event_shape[0] % factor or event_shape[1] % factor:
      raise ValueError(
        f"`num_scales={num_scales}` squeezes {num_scales - 1} time(s), so height and width must be divisible "
        f"by {factor}; got `event_shape={event_shape}`."
      )
    if not callable(make_coupling):
      raise TypeError(f"`make_coupling` must be callable; got {type(make_coupling).__name__}.")
    for arg_name, bijector in (("preprocessing", preprocessing), ("postprocessing", postprocessing)):
      if bijector is not None and not isinstance(bijector, tfb.Bijector):
        raise TypeError(f"`{arg_name}` must be None or a `tfb.Bijector`; got {type(bijector).__name__}.")
    layers = _scale_layers(event_shape, 0, num_scales, make_coupling)
    if preprocessing is not None:
      layers.insert(0, preprocessing)
    if postprocessing is not None:
      layers.append(postprocessing)
    # `KeywordChain`, like `tfb.Chain`, applies its list right to left.
    super().__init__(list(reversed(layers)), validate_args=validate_args, parameters=parameters, name=name)

  @property
  def preprocessing(self):
    """The bijector applied to the data before the first scale, or None."""
    return self.parameters["preprocessing"]

  @property
  def postprocessing(self):
    """The bijector applied to the latent after the last scale, or None."""
    return self.parameters["postprocessing"]


def _scale_layers(shape, scale, num_scales, make_coupling):
  """The layers of scale `scale` and, inside its `FactorOut`, of the coarser ones, in data-to-latent order."""
  height, width, channels = shape

  def couplings(mask_type, count, event_shape):
    return [
      layer
      for index in range(count)
      for layer in _as_list(make_coupling(scale, mask_type, index, event_shape))
    ]

  if scale == num_scales - 1:
    return couplings("checkerboard", 4, shape)
  layers = couplings("checkerboard", 3, shape)
  layers.append(Squeeze(name=f"scale{scale}_squeeze"))
  layers += couplings("channel", 3, (height // 2, width // 2, 4 * channels))
  coarser = _scale_layers((height // 2, width // 2, 2 * channels), scale + 1, num_scales, make_coupling)
  layers.append(
    FactorOut(
      KeywordChain(list(reversed(coarser)), name=f"scale{scale + 1}"), name=f"scale{scale}_factor_out"
    )
  )
  layers.append(tfb.Invert(Squeeze(), name=f"scale{scale}_unsqueeze"))
  return layers


def _as_list(layers):
  """`make_coupling`'s result as a list of bijectors."""
  layers = [layers] if isinstance(layers, tfb.Bijector) else list(layers)
  for layer in layers:
    if not isinstance(layer, tfb.Bijector):
      raise TypeError(
        f"`make_coupling` must return a `tfb.Bijector` or a list of them; got a {type(layer).__name__}."
      )
  return layers
