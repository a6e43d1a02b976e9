"""LogitTransform: pixel values to logits, with the exact log-det in pixel units, for the paper's alpha and the
box-exact `alpha = 0`."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks
from tfp_realnvp.bijectors import LogitTransform

tfb = tfp.bijectors
tfd = tfp.distributions


class LogitTransformTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  @parameterized.product(num_bits=(4, 8), dtype=(tf.float32, tf.float64), alpha=(0.05, 0.0))
  def test_inverse_and_log_det_are_exact(self, num_bits, dtype, alpha):
    bijector = LogitTransform(num_bits, alpha)
    x = tf.random.stateless_uniform([3, 4, 4, 2], seed=[1, num_bits], maxval=2.0**num_bits, dtype=dtype)
    self.assert_round_trips(bijector, x, atol=1e-4 if dtype == tf.float32 else 1e-10)
    self.assert_log_dets_consistent(bijector, x, 3, atol=1e-3 if dtype == tf.float32 else 1e-9)
    self.assert_log_det_matches_autodiff(bijector, x, 3, rtol=1e-4)

  def test_matches_the_released_codes_formula(self):
    x = tf.constant([0.0, 100.5, 255.9])
    p = 0.05 + 0.9 * x / 256.0
    self.assertAllClose(LogitTransform(8).forward(x), tf.math.log(p / (1 - p)))

  def test_box_exact_is_the_logit_of_the_scaled_pixel_value_with_a_guard_only_at_zero(self):
    bijector = LogitTransform(4, alpha=0.0)
    x = tf.random.stateless_uniform([1000], seed=[4, 5], minval=1e-30, maxval=16.0, dtype=tf.float64)
    p = x / 16.0
    self.assertAllEqual(bijector.forward(x), tf.math.log(p) - tf.math.log1p(-p))
    self.assertAllEqual(
      bijector.forward_log_det_jacobian(x, 0), -math.log(16.0) - tf.math.log(p) - tf.math.log1p(-p)
    )
    # x = 0 (level 0, zero noise): the logit of the smallest normal float, finite; so is its log-det.
    zero = tf.zeros([], tf.float32)
    self.assertAllClose(bijector.forward(zero), math.log(np.finfo(np.float32).tiny))
    self.assertTrue(np.isfinite(bijector.forward_log_det_jacobian(zero, 0).numpy()))

  @parameterized.product(num_bits=(4, 8), dtype=(tf.float32, tf.float64), alpha=(0.05, 0.0))
  def test_inverse_maps_the_real_line_into_the_domain(self, num_bits, dtype, alpha):
    bijector = LogitTransform(num_bits, alpha)
    low, high = bijector.domain
    y = tf.constant([-1e4, -800.0, -100.0, -17.0, 0.0, 17.0, 40.0, 100.0, 800.0, 1e4], dtype)
    x = bijector.inverse(y).numpy()
    self.assertTrue(np.all((x >= np.asarray(low, x.dtype)) & (x < np.asarray(high, x.dtype))), x)
    self.assertAllEqual(bijector.in_domain(x), [True] * len(x))
    self.assertTrue(np.all(np.diff(x) >= 0))
    self.assertTrue(np.all(np.isfinite(bijector.forward(x).numpy())))

  @parameterized.product(num_bits=(4, 8), alpha=(0.05, 0.0))
  def test_logistic_latent_gives_the_uniform_density_in_pixel_units(self, num_bits, alpha):
    # A standard logistic in logit space is uniform in p; on [alpha, 1 - alpha) that leaves mass 1 - 2*alpha
    # spread over 2**num_bits pixel values per dimension: bits/dim = num_bits - log2(1 - 2*alpha) (the
    # uniform density on the box, `num_bits`, for alpha = 0).
    dims = 5
    model = tfd.TransformedDistribution(
      tfd.Sample(tfd.Logistic(0.0, 1.0), [dims]), tfb.Invert(LogitTransform(num_bits, alpha))
    )
    x = tf.random.stateless_uniform([7, dims], seed=[2, 3], maxval=2.0**num_bits)
    bits_per_dim = -model.log_prob(x) / (dims * math.log(2.0))
    self.assertAllClose(bits_per_dim, tf.fill([7], num_bits - math.log2(1 - 2 * alpha)), rtol=1e-5)

  @parameterized.parameters(4, 8)
  def test_domain_is_the_interval_the_inverse_maps_the_real_line_onto(self, num_bits):
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

  @parameterized.parameters(4, 8)
  def test_box_exact_domain_is_the_pixel_box(self, num_bits):
    bijector = LogitTransform(num_bits, alpha=0.0)
    self.assertEqual(bijector.domain, (0.0, 2.0**num_bits))
    top = np.nextafter(np.float32(2**num_bits), np.float32(0))
    self.assertAllEqual(
      bijector.in_domain(tf.constant([-1e-6, 0.0, 1.0, top, 2.0**num_bits])), [False, True, True, True, False]
    )

  @parameterized.parameters(
    (dict(num_bits=0), r"`num_bits` must be an integer in \[1, 16\]; got 0"),
    (dict(num_bits=2.5), r"`num_bits`.*got 2.5"),
    (dict(alpha=0.5), r"`alpha` must be in \[0, 0.5\) \(0: box-exact, the paper's 0.05\); got 0.5"),
    (dict(alpha=-0.1), r"`alpha` must be in \[0, 0.5\).*got -0.1"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      LogitTransform(**kwargs)


if __name__ == "__main__":
  tf.test.main()
