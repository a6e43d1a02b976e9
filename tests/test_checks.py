"""`checks.positive_int`, the library's one check of count-like arguments, and call sites that used to let a
fractional count through (truncated, or failing later with an error that did not name it)."""

import re

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp import bijectors, checks, networks, optimization, vae


class PositiveIntTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(1, 3, np.int32(3), np.int64(7))
  def test_an_integer_comes_back_as_a_python_int(self, value):
    number = checks.positive_int("count", value)
    self.assertIs(type(number), int)
    self.assertEqual(number, int(value))

  @parameterized.parameters(0, -1, 2.5, 2.0, True, False, "3", None, np.float32(2.0))
  def test_anything_else_is_refused_naming_the_argument(self, value):
    with self.assertRaisesRegex(
      ValueError, rf"^`count` must be a positive integer; got {re.escape(repr(value))}\.$"
    ):
      checks.positive_int("count", value)


class FractionalCountsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("resnet_blocks", lambda: networks.ResNet(2, 4, num_blocks=2.5), "num_blocks"),
    ("mlp_features", lambda: networks.MLP(3.5, 6), "in_features"),
    ("loss_scale_interval", lambda: optimization.DynamicLossScale(growth_interval=2.5), "growth_interval"),
    ("batch_norm_features", lambda: bijectors.BatchNorm(num_features=2.5), "num_features"),
    ("multi_scale_scales", lambda: bijectors.MultiScale((8, 8, 3), 2.0, make_coupling=None), "num_scales"),
    ("vae_latent", lambda: vae.GaussianEncoder((8, 8, 1), latent_size=2.0, num_levels=16), "latent_size"),
  )
  def test_a_fractional_count_is_refused_naming_it(self, build, name):
    with self.assertRaisesRegex(ValueError, rf"`{name}` must be a positive integer; got \d\.\d"):
      build()


if __name__ == "__main__":
  tf.test.main()
