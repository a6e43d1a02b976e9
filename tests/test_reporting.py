"""What a run shows a person: log lines, the progress bar, sample grids and their PNG, TensorBoard summaries."""

import io
import os

import numpy as np
import tensorflow as tf

from tfp_realnvp.training import reporting

SEPARATOR_UINT8 = np.round(np.array(reporting.SEPARATOR_RGB) * 255).astype(np.uint8)


def _read_summaries(logdir):
  """`{tag: (step, plugin name, value as a NumPy array)}` of every summary under `logdir`."""
  values = {}
  for path in tf.io.gfile.glob(os.path.join(logdir, "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values[value.tag] = (
          event.step,
          value.metadata.plugin_data.plugin_name,
          tf.make_ndarray(value.tensor),
        )
  return values


class ReporterTest(tf.test.TestCase):
  def test_log_line(self):
    stream = io.StringIO()
    reporting.Reporter(100, stream=stream).log("train", step=1200, steps_per_sec=3.14159, bits_per_dim=1.9)
    self.assertEqual(stream.getvalue(), "train | step: 1200 | steps/sec: 3.14 | bits_per_dim: 1.9000\n")

  def test_progress_bar_only_on_a_terminal(self):
    plain = io.StringIO()
    reporter = reporting.Reporter(10, stream=plain)
    reporter.progress(5, bits_per_dim=2.0)
    self.assertEqual(plain.getvalue(), "")

    class Terminal(io.StringIO):
      def isatty(self):
        return True

    terminal = Terminal()
    reporter = reporting.Reporter(10, stream=terminal, width=10)
    reporter.progress(5, bits_per_dim=2.0)
    self.assertEqual(terminal.getvalue(), "\r[=====>    ] 5/10 bits_per_dim: 2.0000\033[K")
    reporter.log("eval", step=5)
    self.assertTrue(terminal.getvalue().endswith("\r\033[Keval | step: 5\n"))  # the bar is cleared first


class ImageGridTest(tf.test.TestCase):
  def test_image_grid_places_images_row_by_row(self):
    images = np.stack([np.full([2, 3, 1], value, np.float32) for value in (0.0, 4.0, 8.0)])
    grid = reporting.image_grid(images, num_bits=4, columns=2, padding=1, padding_value=0.5)
    self.assertEqual(grid.shape, (5, 7, 1))
    self.assertAllEqual(grid[:2, :3], np.zeros([2, 3, 1]))
    self.assertAllEqual(grid[:2, 4:], np.full([2, 3, 1], 0.25))
    self.assertAllEqual(grid[3:, :3], np.full([2, 3, 1], 0.5))
    self.assertAllEqual(grid[3:, 4:], np.zeros([2, 3, 1]))  # the missing fourth image is black
    self.assertAllEqual(grid[2, :], np.full([7, 1], 0.5))  # the padding between rows
    self.assertAllEqual(grid[:, 3], np.full([5, 1], 0.5))  # and between columns
    unpadded = reporting.image_grid(images, num_bits=4, columns=3, padding=0)
    self.assertAllEqual(unpadded, np.concatenate(list(images / 16.0), axis=1))

  def test_default_padding_is_a_colour_no_grey_pixel_has(self):
    # Every level of a 4-bit grey image, black and the brightest included.
    images = np.random.default_rng(0).integers(0, 16, [64, 8, 8, 1]).astype(np.float32)
    images[0], images[1] = 0.0, 15.0
    grid = reporting.image_grid(images, num_bits=4)
    self.assertEqual(grid.shape, (71, 71, 3))  # 8 x 8 tiles of 8 x 8 pixels, 1 pixel between them
    separator = np.zeros([71, 71], bool)
    separator[8::9, :] = separator[:, 8::9] = True
    self.assertAllEqual(grid[separator], np.tile(np.float32(reporting.SEPARATOR_RGB), [separator.sum(), 1]))
    tiles = grid[~separator]
    self.assertAllEqual(tiles[:, 0], tiles[:, 1])  # tiles stay grey: R == G == B
    self.assertAllEqual(tiles[:, 1], tiles[:, 2])
    self.assertAllEqual(np.unique(tiles[:, 0]), np.arange(16) / 16.0)
    red, green, blue = reporting.SEPARATOR_RGB
    self.assertNotEqual(red, green)  # so no grey pixel has the separator's colour
    self.assertNotEqual(green, blue)

  def test_colour_images_keep_their_channels(self):
    images = np.random.default_rng(1).uniform(0, 256, [3, 4, 4, 3])
    grid = reporting.image_grid(images, num_bits=8, columns=3)
    self.assertEqual(grid.shape, (4, 14, 3))
    self.assertAllClose(grid[:, 5:9], images[1] / 256.0)
    self.assertAllEqual(grid[:, 4], np.tile(np.float32(reporting.SEPARATOR_RGB), [4, 1]))


class SampleGridsPngTest(tf.test.TestCase):
  def test_panels_show_the_separator_and_a_headline_adds_a_strip(self):
    grid = reporting.image_grid(np.random.default_rng(0).integers(0, 16, [64, 8, 8, 1]), num_bits=4)
    plain = tf.io.decode_png(reporting.sample_grids_png({"temperature 1.0": grid, "temperature 0.7": grid}))
    titled = tf.io.decode_png(
      reporting.sample_grids_png({"temperature 1.0": grid}, step=2000, bits_per_dim=1.939)
    )
    self.assertEqual(plain.shape, (450, 800, 4))  # 4 x 4.5 inches per panel at 100 dpi
    self.assertEqual(titled.shape, (480, 400, 4))  # 0.3 inch more for the headline
    for png in (plain.numpy(), titled.numpy()):
      is_separator = np.all(png[..., :3] == SEPARATOR_UINT8, axis=-1)
      # Nearest-neighbour drawing keeps the separator's exact colour: 14 lines about 5 pixels wide per panel.
      self.assertGreater(is_separator.sum(), 14 * 5 * 300 * (png.shape[1] // 400) * 0.8)

  def test_todays_call_still_works(self):
    grid = reporting.image_grid(np.random.default_rng(0).uniform(0, 16, [4, 8, 8, 1]), num_bits=4)
    png = reporting.sample_grids_png({"temperature 1.0": grid, "temperature 0.7": grid})
    self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")


class SummariesTest(tf.test.TestCase):
  def test_scalar_image_and_text_read_back_from_the_event_file(self):
    grid = reporting.image_grid(np.random.default_rng(0).uniform(0, 16, [4, 8, 8, 1]), num_bits=4)
    logdir = self.get_temp_dir()
    with tf.summary.create_file_writer(logdir).as_default():
      reporting.summary_scalar("train/bits_per_dim", 1.5, step=3)
      reporting.summary_image("samples/t", grid, step=3)
      reporting.summary_text("config", '    {"dataset": "digits"}', step=0)
    values = _read_summaries(logdir)
    step, plugin, scalar = values["train/bits_per_dim"]
    self.assertEqual((step, plugin, float(scalar)), (3, "scalars", 1.5))
    step, plugin, image = values["samples/t"]
    # 71 x 8 pixels enlarged 5 times (the smallest whole factor reaching 320 pixels), each pixel a 5 x 5 block.
    self.assertEqual((step, plugin, image[0], image[1]), (3, "images", b"355", b"40"))
    decoded = tf.io.decode_png(image[2]).numpy()
    expected = np.repeat(np.repeat(np.round(grid * 255).astype(np.uint8), 5, axis=0), 5, axis=1)
    self.assertAllEqual(decoded, expected)
    step, plugin, text = values["config"]
    self.assertEqual((step, plugin, text.item()), (0, "text", b'    {"dataset": "digits"}'))

  def test_a_64_sample_grid_is_at_least_300_pixels_wide(self):
    grid = reporting.image_grid(np.zeros([64, 8, 8, 1]), num_bits=4)
    logdir = self.get_temp_dir()
    with tf.summary.create_file_writer(logdir).as_default():
      reporting.summary_image("samples/64", grid, step=1)
    _, _, image = _read_summaries(logdir)["samples/64"]
    self.assertEqual((image[0], image[1]), (b"355", b"355"))
    self.assertEqual(tf.io.decode_png(image[2]).shape, (355, 355, 3))


if __name__ == "__main__":
  tf.test.main()
