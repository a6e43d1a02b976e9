"""LogitTransform: pixel values to logits, with the exact log-det in pixel units."""

import math

import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks
from tfp_realnvp.bijectors import LogitTransform

tfb = tfp.bijectors
tfd = tfp.distributions


class LogitTransformTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  @parameterized.product(num_bits=(4, 8), dtype=(tf.float32, tf.float64))
  def test_inverse_and_log_det_are_exact(self, num_bits, dtype):
    bijector = LogitTransform(num_bits)
    x = tf.random.stateless_uniform([3, 4, 4, 2], seed=[1, num_bits], maxval=2.0**num_bits, dtype=dtype)
    self.assert_round_trips(bijector, x, atol=1e-4 if dtype == tf.float32 else 1e-10)
    self.assert_log_dets_consistent(bijector, x, 3, atol=1e-3 if dtype == tf.float32 else 1e-9)
    self.assert_log_det_matches_autodiff(bijector, x, 3, rtol=1e-4)

  def test_matches_the_released_codes_formula(self):
    x = tf.constant([0.0, 100.5, 255.9])
    p = 0.05 + 0.9 * x / 256.0
    self.assertAllClose(LogitTransform(8).forward(x), tf.math.log(p / (1 - p)))

  @parameterized.parameters(4, 8)
  def test_logistic_latent_gives_the_uniform_density_in_pixel_units(self, num_bits):
    # A standard logistic in logit space is uniform in p; on [alpha, 1 - alpha) that leaves mass 1 - 2*alpha
    # spread over 2**num_bits pixel values per dimension: bits/dim = num_bits - log2(1 - 2*alpha).
    dims = 5
    model = tfd.TransformedDistribution(
      tfd.Sample(tfd.Logistic(0.0, 1.0), [dims]), tfb.Invert(LogitTransform(num_bits))
    )
    x = tf.random.stateless_uniform([7, dims], seed=[2, 3], maxval=2.0**num_bits)
    bits_per_dim = -model.log_prob(x) / (dims * math.log(2.0))
    self.assertAllClose(bits_per_dim, tf.fill([7], num_bits - math.log2(0.9)), rtol=1e-5)

  @parameterized.parameters(4, 8)
  def test_domain_is_the_open_interval_the_inverse_maps_the_real_line_onto(self, num_bits):
    bijector = LogitTransform(num_bits)
    low, high = bijector.domain
    self.assertAllClose((low, high), (-0.05 / 0.9 * 2**num_bits, 0.95 / 0.9 * 2**num_bits))
    self.assertAllClose(
      bijector.domain, (-0.8889, 16.8889) if num_bits == 4 else (-14.2222, 270.2222), atol=1e-4
    )
    # The ends are the limits of the inverse at -inf and +inf, reached by no real logit.
    y = tf.constant([-40.0, -1.0, 0.0, 3.0, 40.0], tf.float64)
    x = bijector.inverse(y).numpy()
    self.assertAllClose([x[0], x[-1]], [low, high], atol=1e-12)
    self.assertTrue(all(low < value < high for value in x[1:-1]))
    self.assertAllEqual(
      tf.math.is_finite(bijector.forward(tf.constant([low + 1e-3, high - 1e-3]))), [True] * 2
    )

  @parameterized.parameters(
    (dict(num_bits=0), r"`num_bits` must be an integer in \[1, 16\]; got 0"),
    (dict(num_bits=2.5), r"`num_bits`.*got 2.5"),
    (dict(alpha=0.5), r"`alpha` must be in \(0, 0.5\); got 0.5"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      LogitTransform(**kwargs)


if __name__ == "__main__":
  tf.test.main()
