"""FactorOut: half the channels are final, the other half go through the inner bijector."""

import tensorflow as tf
import tensorflow_probability as tfp

from tests.bijector_testing import BijectorChecks, perturb
from tfp_realnvp import networks
from tfp_realnvp.bijectors import AffineCoupling, FactorOut

tfb = tfp.bijectors


def make_factor_out():
  tf.random.set_seed(2)
  inner = AffineCoupling(networks.ResNet(1, 2, num_blocks=1, num_filters=4), (4, 4, 1), "checkerboard")
  perturb(inner)
  return FactorOut(inner)


class FactorOutTest(tf.test.TestCase, BijectorChecks):
  def test_inverse_and_log_det_are_exact(self):
    factor_out = make_factor_out()
    x = tf.random.stateless_normal([3, 4, 4, 2], seed=[1, 1])
    self.assert_round_trips(factor_out, x)
    self.assert_log_dets_consistent(factor_out, x, 3)
    self.assert_log_det_matches_autodiff(factor_out, x, 3, rtol=1e-4, min_abs_log_det=0.05)

  def test_factored_half_is_untouched_and_the_rest_is_the_inner_transform(self):
    factor_out = make_factor_out()
    x = tf.random.stateless_normal([3, 4, 4, 2], seed=[2, 2])
    y = factor_out.forward(x)
    self.assertAllEqual(x[..., :1], y[..., :1])
    self.assertAllClose(factor_out.inner.forward(tf.identity(x[..., 1:])), y[..., 1:])

  def test_keyword_arguments_reach_the_inner_bijector(self):
    factor_out = make_factor_out()
    x = tf.random.stateless_normal([8, 4, 4, 2], seed=[3, 3])
    moving_mean = factor_out.inner.conditioner.norm_out.moving_mean
    factor_out.forward(x)
    self.assertAllEqual(moving_mean, tf.zeros_like(moving_mean))
    factor_out.forward(x, training=True)
    self.assertNotAllClose(moving_mean, tf.zeros_like(moving_mean))

  def test_inner_must_be_a_bijector(self):
    with self.assertRaisesRegex(TypeError, "`inner` must be a `tfb.Bijector`"):
      FactorOut(lambda x: x)


if __name__ == "__main__":
  tf.test.main()
