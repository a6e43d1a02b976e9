"""What a training run shows a person: log lines, a terminal progress bar and sample grids.

```python
reporter = reporting.Reporter(num_train_steps=3000)
reporter.log("train", step=250, steps_per_sec=3.1, bits_per_dim=1.92)
# train | step: 250 | steps/sec: 3.10 | bits_per_dim: 1.9200
```
"""

import io
import sys

import numpy as np
import tensorflow as tf
from matplotlib import figure
from matplotlib.backends import backend_agg
from tensorflow.core.framework import summary_pb2

__all__ = ["Reporter", "image_grid", "sample_grids_png", "summary_image", "summary_scalar"]

_LABELS = {"steps_per_sec": "steps/sec"}


class Reporter:
  """Prints one stable line per event, and a progress bar in between when `stream` is a terminal.

  Lines look like `train | step: 1200 | steps/sec: 3.10 | bits_per_dim: 1.9200`: the keys never change,
  so the log can be parsed with `grep` and `split('|')`.
  """

  def __init__(self, num_train_steps, stream=None, progress_bar=None, width=30):
    self._stream = stream or sys.stdout
    self._num_train_steps = num_train_steps
    self._progress_bar = self._stream.isatty() if progress_bar is None else progress_bar
    self._width = width
    self._bar_shown = False

  def log(self, kind, **values):
    """Prints `kind | key: value | ...`, floats with 4 significant decimals (2 for rates)."""
    fields = [kind] + [f"{_LABELS.get(key, key)}: {_format(key, value)}" for key, value in values.items()]
    self._clear_bar()
    print(" | ".join(fields), file=self._stream, flush=True)

  def progress(self, step, **values):
    """Redraws the progress bar (terminals only) at `step` of `num_train_steps`."""
    if not self._progress_bar:
      return
    done = int(self._width * min(step / self._num_train_steps, 1.0))
    bar = "=" * done + (">" if done < self._width else "") + " " * (self._width - done - 1)
    details = " ".join(f"{key}: {_format(key, value)}" for key, value in values.items())
    self._stream.write(f"\r[{bar}] {step}/{self._num_train_steps} {details}\033[K")
    self._stream.flush()
    self._bar_shown = True

  def _clear_bar(self):
    if self._bar_shown:
      self._stream.write("\r\033[K")
      self._bar_shown = False


def _format(key, value):
  if isinstance(value, float):
    return f"{value:.2f}" if "per_sec" in key else f"{value:.4f}"
  return str(value)


def image_grid(images, num_bits, columns=8, padding=1, padding_value=0.5):
  """Tiles `images` `[N, H, W, C]` (pixel values in `[0, 2**num_bits)`) into one float array in `[0, 1]`.

  Tiles are separated by `padding` pixels of `padding_value` (grey: digits touch the edges of their 8x8
  frame) and filled row by row; missing tiles are black. The result has shape
  `[rows * (H + padding) - padding, columns * (W + padding) - padding, C]`.
  """
  images = np.clip(np.asarray(images, np.float32) / 2**num_bits, 0.0, 1.0)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.full(
    [rows * (height + padding) - padding, columns * (width + padding) - padding, channels],
    padding_value,
    np.float32,
  )
  for index in range(rows * columns):
    row, column = divmod(index, columns)
    top, left = row * (height + padding), column * (width + padding)
    grid[top : top + height, left : left + width] = images[index] if index < count else 0.0
  return grid


def sample_grids_png(grids_by_title):
  """PNG bytes of one titled panel per `{title: grid}` (grids from `image_grid`), side by side."""
  panel_inches = 4.0
  fig = figure.Figure(figsize=(panel_inches * len(grids_by_title), panel_inches + 0.4), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  for index, (title, grid) in enumerate(grids_by_title.items()):
    axes = fig.add_subplot(1, len(grids_by_title), index + 1)
    if grid.shape[-1] == 1:
      axes.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
      axes.imshow(grid, interpolation="nearest")
    axes.set_title(title)
    axes.axis("off")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


# TensorBoard reads these plugin names; writing through `tf.summary.write` needs no `tensorboard` package.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
  plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
  plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
)


def summary_scalar(tag, value, step):
  """Writes a TensorBoard scalar to the default `tf.summary` writer."""
  tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def summary_image(tag, grid, step):
  """Writes a `[H, W, C]` image in `[0, 1]` (e.g. from `image_grid`) as a TensorBoard image."""
  height, width = grid.shape[:2]
  png = tf.image.encode_png(tf.convert_to_tensor(np.round(grid * 255.0).astype(np.uint8)))
  tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), png])
  tf.summary.write(tag, tensor, step=step, metadata=_IMAGE_METADATA)
