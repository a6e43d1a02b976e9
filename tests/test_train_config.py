"""The pieces around the training loop: config, optimizer and schedule, log lines, sample grids, summaries."""

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp import configs, optimization, reporting


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
  def test_json_round_trip(self):
    config = dataclasses.replace(configs.get_config(), strategy="mirrored", model_overrides={"num_blocks": 3})
    self.assertEqual(configs.from_json(configs.to_json(config)), config)

  def test_defaults_are_the_paper_recipe(self):
    for config in (configs.get_config(), configs.get_config("cifar10")):
      config.validate()
      self.assertEqual(config.learning_rate, 1e-3)
      self.assertEqual(config.l2_coefficient, 5e-5)
      self.assertEqual(config.clip_global_norm, 100.0)
      self.assertEqual(config.batch_size, 64)
      self.assertEqual(config.sample_temperatures, (1.0, 0.7))
    self.assertEqual(configs.get_config().dataset, "digits")
    cifar10 = configs.get_config("cifar10")
    self.assertEqual(
      (cifar10.dataset, cifar10.model_overrides, cifar10.learning_rate_decay), ("cifar10", {}, "constant")
    )

  @parameterized.named_parameters(
    ("batch_size", dict(batch_size=0), r"`batch_size` must be an integer >= 1; got 0\."),
    ("num_train_steps", dict(num_train_steps=2.5), r"`num_train_steps` must be an integer >= 1; got 2\.5\."),
    ("eval_every_steps", dict(eval_every_steps=-1), r"`eval_every_steps` must be an integer >= 0; got -1\."),
    ("image_size", dict(image_size=0), r"`image_size` must be a positive integer or None; got 0\."),
    ("learning_rate", dict(learning_rate=0.0), r"`learning_rate` must be > 0; got 0\.0\."),
    ("decay", dict(learning_rate_decay="linear"), r"`learning_rate_decay` must be one of cosine, constant"),
    ("temperatures", dict(sample_temperatures=()), r"`sample_temperatures` must be one or more positive"),
    ("model_overrides", dict(model_overrides=["dropout"]), r"`model_overrides` must be a dict"),
  )
  def test_validate_names_the_setting(self, changes, message):
    with self.assertRaisesRegex(configs.ConfigError, message):
      dataclasses.replace(configs.get_config(), **changes).validate()


class OptimizationTest(tf.test.TestCase):
  def test_warmup_then_cosine_to_zero(self):
    schedule = optimization.learning_rate_schedule(1e-3, 1000, warmup_steps=100, decay="cosine")
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    self.assertAllClose(rates, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)

  def test_warmup_longer_than_the_run_only_warms_up(self):
    schedule = optimization.learning_rate_schedule(1e-3, 40, warmup_steps=100, decay="cosine")
    self.assertAllClose([float(schedule(step)) for step in (0, 20, 40)], [0.0, 2e-4, 4e-4])

  def test_constant(self):
    self.assertEqual(optimization.learning_rate_schedule(1e-3, 1000), 1e-3)
    schedule = optimization.learning_rate_schedule(1e-3, 1000, warmup_steps=10)
    self.assertAllClose([float(schedule(step)) for step in (5, 10, 500, 10**6)], [5e-4, 1e-3, 1e-3, 1e-3])

  def test_adam_clips_by_global_norm(self):
    variable = tf.Variable([0.0, 0.0])
    optimizer = optimization.adam(learning_rate=0.1, clip_global_norm=100.0)
    self.assertEqual(optimizer.global_clipnorm, 100.0)
    optimizer.apply_gradients([(tf.constant([1.0, -1.0]), variable)])
    self.assertAllClose(variable, [-0.1, 0.1])  # Adam's first step is `learning_rate` times the sign

  def test_l2_penalty(self):
    variables = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    self.assertAllClose(optimization.l2_penalty(variables, 5e-5), 5e-5 * 14.0)
    self.assertEqual(float(optimization.l2_penalty([], 5e-5)), 0.0)


class ReportingTest(tf.test.TestCase):
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

  def test_png_and_summaries(self):
    grid = reporting.image_grid(np.random.default_rng(0).uniform(0, 16, [4, 8, 8, 1]), num_bits=4)
    png = reporting.sample_grids_png({"temperature 1.0": grid, "temperature 0.7": grid})
    self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
    logdir = self.get_temp_dir()
    with tf.summary.create_file_writer(logdir).as_default():
      reporting.summary_scalar("train/bits_per_dim", 1.5, step=3)
      reporting.summary_image("samples/t", grid, step=3)
    values = {}
    for path in tf.io.gfile.glob(os.path.join(logdir, "events.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          values[value.tag] = (
            event.step,
            value.metadata.plugin_data.plugin_name,
            tf.make_ndarray(value.tensor),
          )
    step, plugin, scalar = values["train/bits_per_dim"]
    self.assertEqual((step, plugin, float(scalar)), (3, "scalars", 1.5))
    step, plugin, image = values["samples/t"]
    self.assertEqual((step, plugin, image[0], image[1]), (3, "images", b"71", b"8"))
    decoded = tf.io.decode_png(image[2]).numpy()
    self.assertAllEqual(decoded, np.round(grid * 255).astype(np.uint8))


if __name__ == "__main__":
  tf.test.main()
