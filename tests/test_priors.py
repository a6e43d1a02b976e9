"""Tests for the Monte-Carlo and closed-form KL divergences of `tfp_realnvp.priors`."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import perturb
from tfp_realnvp import RealNVP, priors

tfd = tfp.distributions


def _gaussians():
  q = tfd.MultivariateNormalDiag(
    loc=[[0.5, -1.0, 0.3], [0.0, 0.2, -0.4]], scale_diag=[[0.7, 1.3, 0.9], [1.0, 0.5, 2.0]]
  )
  p = tfd.MultivariateNormalDiag(loc=[-0.2, 0.4, 0.0], scale_diag=[1.1, 0.8, 1.5])
  return q, p


class MonteCarloKLDivergenceTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(("eager", False), ("tf_function", True))
  def test_agrees_with_the_closed_form_between_gaussians_within_its_standard_error(self, use_tf_function):
    q, p = _gaussians()

    def estimate_fn(seed):
      return priors.monte_carlo_kl_divergence(q, p, num_samples=4000, seed=seed)

    if use_tf_function:
      estimate_fn = tf.function(estimate_fn)
    estimate = estimate_fn(tf.constant([1, 2]))
    exact = tfd.kl_divergence(q, p)
    self.assertEqual(estimate.value.shape, [2])
    # Standard errors of ~0.05 and ~0.013 nats on KLs of ~2.4 and ~0.36: the comparison is informative.
    self.assertAllLess(estimate.standard_error / exact, 0.1)
    self.assertAllLess(tf.abs(estimate.value - exact) / estimate.standard_error, 4.0)

  def test_standard_error_matches_the_spread_of_independent_estimates(self):
    q, p = _gaussians()
    estimates = [
      priors.monte_carlo_kl_divergence(q, p, num_samples=200, seed=tf.constant([7, i])) for i in range(60)
    ]
    spread = np.std([e.value.numpy() for e in estimates], axis=0, ddof=1)
    mean_standard_error = np.mean([e.standard_error.numpy() for e in estimates], axis=0)
    # With 60 replicates the sample standard deviation is within ~20% of the truth.
    self.assertAllClose(mean_standard_error, spread, rtol=0.3)

  def test_same_stateless_seed_gives_the_same_estimate(self):
    q, p = _gaussians()
    first = priors.monte_carlo_kl_divergence(q, p, 10, seed=tf.constant([3, 4]))
    second = priors.monte_carlo_kl_divergence(q, p, 10, seed=tf.constant([3, 4]))
    self.assertAllEqual(first.value, second.value)

  def test_flow_prior_at_initialization_is_a_standard_normal(self):
    # Zero-initialized couplings make the flow the identity: KL(q || flow) = KL(q || N(0, I)) exactly.
    q, _ = _gaussians()
    flow = RealNVP(event_shape=(3,), num_couplings=2, hidden_units=(8,))
    estimate = priors.monte_carlo_kl_divergence(q, flow, num_samples=4000, seed=tf.constant([5, 6]))
    exact = tfd.kl_divergence(q, tfd.MultivariateNormalDiag(loc=tf.zeros(3), scale_diag=tf.ones(3)))
    self.assertAllLess(tf.abs(estimate.value - exact) / estimate.standard_error, 4.0)

  def test_flow_against_itself_is_exactly_zero_and_gradients_reach_both_sides(self):
    tf.random.set_seed(0)
    flow = RealNVP(event_shape=(4,), num_couplings=2, hidden_units=(8,))
    for variable in flow.trainable_variables:
      variable.assign(variable + 0.3 * tf.random.normal(variable.shape))
    estimate = priors.monte_carlo_kl_divergence(flow, flow, num_samples=50, seed=tf.constant([1, 1]))
    self.assertAllClose(estimate.value, 0.0, atol=1e-5)
    self.assertAllClose(estimate.standard_error, 0.0, atol=1e-5)

    q = tfd.MultivariateNormalDiag(loc=tf.Variable([0.3, -0.2, 0.1, 0.5]), scale_diag=tf.ones(4))
    with tf.GradientTape() as tape:
      kl = priors.monte_carlo_kl_divergence(q, flow, num_samples=50, seed=tf.constant([2, 2])).value
    gradients = tape.gradient(kl, q.trainable_variables + flow.trainable_variables)
    self.assertNotIn(None, gradients)
    for gradient in gradients:
      self.assertTrue(np.all(np.isfinite(gradient.numpy())))
    self.assertGreater(float(tf.norm(gradients[0])), 0.0)

  def test_one_sample_has_nan_standard_error(self):
    q, p = _gaussians()
    estimate = priors.monte_carlo_kl_divergence(q, p, num_samples=1, seed=tf.constant([1, 2]))
    self.assertTrue(np.all(np.isfinite(estimate.value.numpy())))
    self.assertTrue(np.all(np.isnan(estimate.standard_error.numpy())))

  @parameterized.named_parameters(("zero", 0), ("float", 2.0), ("bool", True), ("tensor", tf.constant(3)))
  def test_rejects_num_samples_that_is_not_a_positive_int(self, num_samples):
    q, p = _gaussians()
    with self.assertRaisesRegex(ValueError, "`num_samples` must be a positive Python int"):
      priors.monte_carlo_kl_divergence(q, p, num_samples)


class KLDivergenceTest(tf.test.TestCase):
  def test_uses_the_closed_form_when_tfp_has_one(self):
    q, p = _gaussians()
    self.assertAllEqual(priors.kl_divergence(q, p, seed=tf.constant([1, 2])), tfd.kl_divergence(q, p))

  def test_falls_back_to_monte_carlo_with_a_flow(self):
    q, _ = _gaussians()
    flow = RealNVP(event_shape=(3,), num_couplings=2, hidden_units=(8,))
    with self.assertRaises(NotImplementedError):
      tfd.kl_divergence(q, flow)
    seed = tf.constant([8, 9])
    self.assertAllEqual(
      priors.kl_divergence(q, flow, num_samples=7, seed=seed),
      priors.monte_carlo_kl_divergence(q, flow, 7, seed=seed).value,
    )

  def test_standard_normal_kl_has_the_textbook_value(self):
    q = tfd.MultivariateNormalDiag(loc=[1.0, 0.0], scale_diag=[1.0, 2.0])
    p = tfd.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[1.0, 1.0])
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1) / 2 - log s, summed over dimensions.
    expected = 0.5 * (1.0 + 1.0 - 1.0) + 0.5 * (4.0 - 1.0) - math.log(2.0)
    self.assertAllClose(priors.kl_divergence(q, p), expected, rtol=1e-6)


class ConditionalPriorKLDivergenceTest(tf.test.TestCase):
  """`KL(q || p(. | c))` for a RealNVP prior conditioned on a context `c`."""

  def setUp(self):
    super().setUp()
    tf.random.set_seed(0)
    self.q, _ = _gaussians()  # batch shape [2]
    self.flow = RealNVP(event_shape=(3,), num_couplings=2, hidden_units=(8,), conditional_event_shape=(2,))
    self.contexts = tf.constant([[1.0, 0.0], [0.0, 1.0]])  # one per element of q's batch

  def test_at_initialization_the_conditional_flow_is_a_standard_normal_for_every_context(self):
    estimate = priors.monte_carlo_kl_divergence(
      self.q, self.flow, 4000, seed=tf.constant([1, 2]), conditional_input=self.contexts
    )
    exact = tfd.kl_divergence(self.q, tfd.MultivariateNormalDiag(loc=tf.zeros(3), scale_diag=tf.ones(3)))
    self.assertAllLess(tf.abs(estimate.value - exact) / estimate.standard_error, 4.0)

  def test_scores_each_sample_under_its_context(self):
    perturb(self.flow, stddev=0.5, seed=1)
    seed = tf.constant([3, 4])
    estimate = priors.monte_carlo_kl_divergence(
      self.q, self.flow, 50, seed=seed, conditional_input=self.contexts
    )
    samples, log_q = self.q.experimental_sample_and_log_prob(50, seed=seed)  # [50, 2, 3]
    for i in range(2):
      log_p = self.flow.log_prob(samples[:, i], conditional_input=self.contexts[i])
      self.assertAllClose(estimate.value[i], tf.reduce_mean(log_q[:, i] - log_p), atol=1e-5)
    swapped = priors.monte_carlo_kl_divergence(
      self.q, self.flow, 50, seed=seed, conditional_input=self.contexts[::-1]
    )
    self.assertGreater(float(tf.reduce_max(tf.abs(swapped.value - estimate.value))), 1e-2)
    self.assertAllEqual(
      priors.kl_divergence(self.q, self.flow, num_samples=50, seed=seed, conditional_input=self.contexts),
      estimate.value,
    )


if __name__ == "__main__":
  tf.test.main()
