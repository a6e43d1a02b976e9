"""Binary coupling masks `b`: units where `b = 1` pass through a coupling unchanged and condition the rest."""

import numpy as np

from tfp_realnvp.internal.checks import positive_ints

__all__ = ["IMAGE_MASKS", "MASK_TYPES", "VECTOR_MASKS", "make_mask"]

IMAGE_MASKS = ("checkerboard", "channel")
VECTOR_MASKS = ("half",)
MASK_TYPES = IMAGE_MASKS + VECTOR_MASKS


def make_mask(mask_type, parity, event_shape):
  """Returns the mask `b` for an event, as a float32 numpy array of `event_shape`.

  - `'checkerboard'` on `[H, W, C]`: `b[i, j, :] = 1` where `(i + j) % 2 == parity`.
  - `'channel'` on `[H, W, C]` (`C` even): `b = 1` on the first `C/2` channels for parity 0, the last `C/2`
    for parity 1.
  - `'half'` on `[D]` (`D >= 2`): `b = 1` on the first `D // 2` units for parity 0, the others for parity 1.
  """
  if mask_type not in MASK_TYPES:
    raise ValueError(f"`mask_type` must be one of {MASK_TYPES}; got {mask_type!r}.")
  if parity not in (0, 1) or isinstance(parity, bool):
    raise ValueError(f"`parity` must be 0 or 1; got {parity!r}.")
  event_shape = positive_ints("event_shape", event_shape)
  if mask_type in IMAGE_MASKS and len(event_shape) != 3:
    raise ValueError(
      f"`mask_type={mask_type!r}` needs an image event `[height, width, channels]`; "
      f"got `event_shape={event_shape}`."
    )
  if mask_type in VECTOR_MASKS and len(event_shape) != 1:
    raise ValueError(
      f"`mask_type={mask_type!r}` needs a vector event `[dims]`; got `event_shape={event_shape}`."
    )
  if mask_type == "checkerboard":
    height, width, channels = event_shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pattern = ((rows + cols) % 2 == parity).astype(np.float32)
    return np.repeat(pattern[:, :, None], channels, axis=2)
  if mask_type == "channel":
    channels = event_shape[-1]
    if channels % 2:
      raise ValueError(
        f"`mask_type='channel'` needs an even number of channels; got `event_shape={event_shape}`."
      )
    first_half = (np.arange(channels) < channels // 2).astype(np.float32)
    return np.broadcast_to(first_half if parity == 0 else 1.0 - first_half, event_shape).copy()
  (dims,) = event_shape
  if dims < 2:
    raise ValueError(f"`mask_type='half'` needs at least 2 dimensions; got `event_shape={event_shape}`.")
  first_half = (np.arange(dims) < dims // 2).astype(np.float32)
  return first_half if parity == 0 else 1.0 - first_half
