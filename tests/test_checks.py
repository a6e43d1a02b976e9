"""`checks.positive_int` and `checks.positive_ints`, the library's one check of counts and of shapes or widths,
`checks.boolean` for switches, and call sites that used to let a fractional size through (truncated, or failing
later with an error that did not name it)."""

import re

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp import bijectors, dequantization, networks, vae
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.internal import checks
from tfp_realnvp.training import optimization


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


class PositiveIntsTest(tf.test.TestCase, parameterized.TestCase):
  def test_a_sequence_of_integers_comes_back_as_a_tuple_of_python_ints(self):
    numbers = checks.positive_ints("sizes", [np.int64(8), 8, 3])
    self.assertEqual(numbers, (8, 8, 3))
    self.assertEqual({type(number) for number in numbers}, {int})
    self.assertEqual(checks.positive_ints("sizes", tf.TensorShape([4, 2])), (4, 2))
    with self.assertRaisesRegex(ValueError, r"`sizes` must be a non-empty sequence of positive integers"):
      checks.positive_ints("sizes", tf.TensorShape(None))

  @parameterized.parameters(*[(values,) for values in ((), [8, 0], [8, 2.5], [8, None], "abc", 3, None)])
  def test_anything_else_is_refused_naming_the_argument(self, values):
    with self.assertRaisesRegex(
      ValueError,
      rf"^`sizes` must be a non-empty sequence of positive integers; got {re.escape(repr(values))}\.$",
    ):
      checks.positive_ints("sizes", values)


class BooleanTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(True, False, np.bool_(True))
  def test_a_bool_comes_back_as_a_python_bool(self, value):
    self.assertIs(checks.boolean("switch", value), bool(value))

  @parameterized.parameters(0, 1, "False", None, 0.0)
  def test_anything_else_is_refused_naming_the_argument(self, value):
    with self.assertRaisesRegex(
      ValueError, rf"^`switch` must be True or False; got {re.escape(repr(value))}\.$"
    ):
      checks.boolean("switch", value)

  @parameterized.named_parameters(
    ("resnet", lambda: networks.ResNet(2, 4, full_precision_output="no")),
    ("mlp", lambda: networks.MLP(3, 6, full_precision_output=1)),
    ("image_flow", lambda: RealNVP(event_shape=(4, 4, 1), num_scales=1, full_precision_output=None)),
  )
  def test_full_precision_output_must_be_a_bool(self, build):
    with self.assertRaisesRegex(ValueError, "`full_precision_output` must be True or False"):
      build()


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

  @parameterized.named_parameters(
    ("mlp_widths", lambda: networks.MLP(3, 6, hidden_units=(16, 2.5)), "hidden_units"),
    ("vector_flow_widths", lambda: RealNVP(event_shape=(4,), hidden_units=(16, 2.5)), "hidden_units"),
    ("image_flow_shape", lambda: RealNVP(event_shape=(8, 8.5, 1)), "event_shape"),
    ("vae_shape", lambda: vae.GaussianEncoder((8, 8.0, 1), latent_size=2, num_levels=16), "event_shape"),
    ("dequantizer_shape", lambda: dequantization.UniformDequantizer((8, 8.5, 1)), "event_shape"),
    (
      "context_shape",
      lambda: RealNVP(event_shape=(4,), conditional_event_shape=(2.5,)),
      "conditional_event_shape",
    ),
  )
  def test_a_fractional_size_in_a_sequence_is_refused_naming_it(self, build, name):
    with self.assertRaisesRegex(ValueError, rf"`{name}` must be a non-empty sequence of positive integers"):
      build()


if __name__ == "__main__":
  tf.test.main()
