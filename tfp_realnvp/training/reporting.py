"""What a training run shows a person: log lines, a terminal progress bar, sample grids and TensorBoard summaries.

```python
reporter = reporting.Reporter(num_train_steps=3000)
reporter.log("train", step=250, steps_per_sec=3.1, bits_per_dim=1.92)
# train | step: 250 | steps/sec: 3.10 | bits_per_dim: 1.9200
```
"""

import io
import math
import sys

import numpy as np
import tensorflow as tf
from matplotlib import figure
from matplotlib.backends import backend_agg

__all__ = [
  "SEPARATOR_RGB",
  "Reporter",
  "image_grid",
  "sample_grids_png",
  "summary_image",
  "summary_scalar",
  "summary_text",
]

_LABELS = {"steps_per_sec": "steps/sec"}


# Not tf_keras.utils.Progbar: seen in 2.21, it draws its bar into pipes and log files too, and glues the next line on.
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


# A mid-blue: no grey pixel of a one-channel image has this colour, so tiles cannot be mistaken for padding.
SEPARATOR_RGB = (0.2, 0.4, 0.8)


def image_grid(images, num_bits, columns=8, padding=1, padding_value=SEPARATOR_RGB):
  """Tiles `images` `[N, H, W, C]` (pixel values in `[0, 2**num_bits)`) into one float array in `[0, 1]`.

  Tiles are filled row by row and separated by `padding` pixels of `padding_value`: a scalar (the grid keeps
  the images' `C` channels) or an RGB triple, the default, for which one-channel images are repeated into RGB
  so that the separator is a colour and not a grey a pixel could take (with `padding=0` there is no separator
  and the channels are kept). Missing tiles are black. The result has shape
  `[rows * (H + padding) - padding, columns * (W + padding) - padding, channels]`.
  """
  images = np.clip(np.asarray(images, np.float32) / 2**num_bits, 0.0, 1.0)
  padding_value = np.asarray(padding_value, np.float32)
  if padding and padding_value.size == 3 and images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.zeros(
    [rows * (height + padding) - padding, columns * (width + padding) - padding, channels], np.float32
  )
  if padding:
    grid[...] = padding_value
  for index in range(rows * columns):
    row, column = divmod(index, columns)
    top, left = row * (height + padding), column * (width + padding)
    grid[top : top + height, left : left + width] = images[index] if index < count else 0.0
  return grid


def sample_grids_png(grids_by_title, step=None, bits_per_dim=None, split="test"):
  """PNG bytes of one titled panel per `{title: grid}` (grids from `image_grid`), side by side, under a
  headline `step 2000 | test bits/dim: 1.9390` giving whichever of `step` and `bits_per_dim` are set, the
  latter named by the `split` it was scored on (`train[50000:] bits/dim: ...`)."""
  panel_inches = 4.0
  headline = []
  if step is not None:
    headline.append(f"step {step}")
  if bits_per_dim is not None:
    headline.append(f"{split} bits/dim: {bits_per_dim:.4f}")
  height = panel_inches + (0.8 if headline else 0.5)
  fig = figure.Figure(figsize=(panel_inches * len(grids_by_title), height), dpi=100, layout="constrained")
  fig.get_layout_engine().set(h_pad=0.1)  # inches between the titles and the edge
  backend_agg.FigureCanvasAgg(fig)
  for index, (title, grid) in enumerate(grids_by_title.items()):
    axes = fig.add_subplot(1, len(grids_by_title), index + 1)
    if grid.shape[-1] == 1:
      axes.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
      axes.imshow(grid, interpolation="nearest")
    axes.set_title(title)
    axes.axis("off")
  if headline:
    fig.suptitle(" | ".join(headline))
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


def summary_scalar(tag, value, step):
  """Writes a TensorBoard scalar (`tf.summary.scalar`) to the default `tf.summary` writer."""
  tf.summary.scalar(tag, value, step=step)


def summary_image(tag, grid, step, min_width=320):
  """Writes a `[H, W, C]` image in `[0, 1]` (e.g. from `image_grid`) with `tf.summary.image`, enlarged by the
  smallest whole factor that makes it `min_width` pixels wide or more (each pixel a square block, so 8x8
  digits stay sharp)."""
  factor = max(1, math.ceil(min_width / grid.shape[1]))
  enlarged = np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)
  pixels = np.round(np.clip(enlarged, 0.0, 1.0) * 255.0).astype(np.uint8)
  tf.summary.image(tag, pixels[np.newaxis], step=step, max_outputs=1)


def summary_text(tag, text, step):
  """Writes `text` with `tf.summary.text`; TensorBoard renders it as Markdown (indent lines by four spaces,
  e.g. a JSON config, to show them verbatim)."""
  tf.summary.text(tag, text, step=step)
