"""The context in the base only (`context_enters='base'`): `ContextShift`, the flow, one-pass classes, the loss."""

from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks, perturb
from tfp_realnvp import RealNVP, classifier, networks
from tfp_realnvp.bijectors import ContextShift, KeywordChain
from tfp_realnvp.training import losses

tfd = tfp.distributions

IMAGE = dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=8, num_bits=4)
VECTOR = dict(event_shape=(4,), num_couplings=4, hidden_units=(16,))


def base_flow(seed=0, num_classes=4, settings=IMAGE):
  tf.random.set_seed(seed)
  flow = RealNVP(**settings, conditional_event_shape=(num_classes,), context_enters="base")
  perturb(flow, stddev=0.2, seed=seed)  # couplings and class means away from the identity and from 0
  return flow


def pixels(shape, seed):
  return tf.random.stateless_uniform(shape, seed=[seed, 0], maxval=16.0)


class ContextShiftTest(tf.test.TestCase, BijectorChecks):
  def setUp(self):
    super().setUp()
    self.shift = ContextShift(3, (2, 2, 2))
    perturb(self.shift, stddev=1.0)
    self.x = tf.random.stateless_normal([5, 2, 2, 2], seed=[1, 2])
    self.c = tf.random.stateless_normal([5, 3], seed=[3, 4])

  def test_shifts_by_a_linear_map_of_the_context_with_log_det_zero(self):
    expected = self.x - tf.reshape(self.c @ self.shift.weights, [5, 2, 2, 2])
    self.assertAllClose(self.shift.forward(self.x, conditional_input=self.c), expected)
    self.assertGreater(float(tf.reduce_max(tf.abs(expected - self.x))), 0.5)
    self.assert_round_trips(self.shift, self.x, conditional_input=self.c)
    self.assert_log_dets_consistent(self.shift, self.x, 3, conditional_input=self.c)
    self.assert_log_det_matches_autodiff(self.shift, self.x, 3, conditional_input=self.c)
    # The all-zeros context shifts nothing; one context broadcasts over the batch.
    self.assertAllEqual(self.shift.forward(self.x, conditional_input=tf.zeros([5, 3])), self.x)
    self.assertAllClose(
      self.shift.forward(self.x, conditional_input=self.c[0]),
      self.shift.forward(self.x, conditional_input=tf.stack([self.c[0]] * 5)),
    )

  def test_starts_as_the_identity_and_reaches_its_context_through_a_keyword_chain(self):
    self.assertAllEqual(ContextShift(3, (2, 2, 2)).weights, tf.zeros([3, 8]))
    chain = KeywordChain([self.shift, ContextShift(3, (2, 2, 2))])
    self.assertEqual(chain.call_keywords, {"conditional_input"})
    self.assertAllClose(
      chain.forward(self.x, conditional_input=self.c), self.shift.forward(self.x, conditional_input=self.c)
    )

  def test_a_missing_or_misshaped_context_is_an_error_naming_conditional_input(self):
    with self.assertRaisesRegex(ValueError, r"needs a context: pass it as `conditional_input=`"):
      self.shift.forward(self.x)
    with self.assertRaisesRegex(
      ValueError, r"`conditional_input` of `context_shift` must have shape `\[\*batch_shape, 3\]`; got shape"
    ):
      self.shift.forward(self.x, conditional_input=tf.zeros([5, 4]))


class BaseFlowTest(tf.test.TestCase, parameterized.TestCase):
  def test_the_density_is_a_gaussian_centred_on_the_contexts_mean(self):
    flow = base_flow()
    self.assertEqual(flow.context_enters, "base")
    x, c = pixels([3, 8, 8, 1], seed=1), tf.one_hot([0, 2, 3], 4)
    # `g(x)`: the latent under the all-zeros context, which shifts nothing.
    zeros = tf.zeros([3, 4])
    self.assertAllEqual(flow.base_mean(zeros), tf.zeros([3, 8, 8, 1]))
    g = flow.encode(x, zeros)
    means = flow.base_mean(c)
    self.assertGreater(float(tf.reduce_max(tf.abs(means))), 0.1)
    self.assertAllClose(flow.encode(x, c), g - means, atol=1e-5)
    log_det = flow.log_prob(x, conditional_input=zeros) - tfd.Sample(
      tfd.Normal(0.0, 1.0), [8, 8, 1]
    ).log_prob(g)
    expected = tfd.Independent(tfd.Normal(means, 1.0), 3).log_prob(g) + log_det
    self.assertAllClose(flow.log_prob(x, conditional_input=c), expected, rtol=1e-5)
    # The mean is linear in the context, and a copy keeps the means and where the context enters.
    self.assertAllClose(
      flow.base_mean(2.0 * c - tf.one_hot([1, 1, 1], 4)),
      2.0 * means - flow.base_mean(tf.one_hot([1, 1, 1], 4)),
      atol=1e-5,
    )
    copy = flow.copy()
    self.assertEqual(copy.context_enters, "base")
    self.assertAllClose(copy.log_prob(x, conditional_input=c), flow.log_prob(x, conditional_input=c))

  def test_samples_of_a_class_lie_around_its_mean(self):
    flow = base_flow(settings=VECTOR)
    c = tf.constant([0.0, 1.0, 0.0, 0.0])
    samples = flow.sample(4000, seed=[5, 6], conditional_input=c)
    self.assertTrue(np.all(np.isfinite(flow.log_prob(samples, conditional_input=c))))
    g = flow.encode(samples, tf.zeros([4]))
    self.assertAllClose(tf.reduce_mean(g, 0), flow.base_mean(c), atol=0.1)
    self.assertAllClose(tf.math.reduce_std(g, 0), tf.ones([4]), atol=0.1)

  @parameterized.parameters(False, True)
  def test_one_pass_scores_every_class_as_a_loop_over_the_classes_does(self, training):
    flow = base_flow()
    x = pixels([3, 8, 8, 1], seed=2)
    loop = tf.stack(
      [flow.log_prob(x, training=training, conditional_input=tf.one_hot([k] * 3, 4)) for k in range(4)], -1
    )
    calls = []
    call = networks.ResNet.__call__

    def counting_call(resnet, inputs, training=False):
      calls.append(inputs.shape[0])
      return call(resnet, inputs, training)

    with mock.patch.object(networks.ResNet, "__call__", counting_call):
      one_pass = classifier.class_conditional_log_probs(flow, x, 4, training=training)
    self.assertAllClose(one_pass, loop, rtol=1e-5)
    self.assertGreater(float(tf.reduce_max(loop) - tf.reduce_min(loop)), 0.1)  # the classes differ
    self.assertEqual(calls, [3] * 10)  # each of the 10 couplings once, on the batch alone
    if not training:
      log_prior = tf.math.log(tf.constant([0.1, 0.2, 0.3, 0.4]))
      joint = loop + log_prior
      self.assertAllClose(
        classifier.class_log_probs(flow, x, 4, log_prior),
        joint - tf.reduce_logsumexp(joint, -1, keepdims=True),
        atol=1e-3,  # differences of float32 log-densities near -230
      )

  def test_rows_outside_the_support_score_minus_infinity_and_nan_rows_nan_for_every_class(self):
    flow = base_flow()
    x = pixels([3, 8, 8, 1], seed=3).numpy()
    x[0, 1, 1, 0] = -50.0  # outside the support (past the logit preprocessing's domain)
    x[1, 2, 2, 0] = np.nan
    log_probs = classifier.class_conditional_log_probs(flow, x, 4)
    self.assertAllEqual(log_probs[0], [-np.inf] * 4)
    self.assertTrue(np.all(np.isnan(log_probs[1])))
    self.assertTrue(np.all(np.isfinite(log_probs[2])))

  @parameterized.named_parameters(
    ("unconditional", dict()),
    ("context_in_the_couplings", dict(conditional_event_shape=(4,))),
    ("context_in_the_base", dict(conditional_event_shape=(4,), context_enters="base")),
  )
  def test_log_prob_and_latent_are_log_prob_and_encode_in_one_pass(self, arguments):
    tf.random.set_seed(0)
    flow = RealNVP(**IMAGE, **arguments)
    perturb(flow, stddev=0.2)
    x = pixels([3, 8, 8, 1], seed=4).numpy()
    x[0, 0, 0, 0] = -1.0
    c = {"conditional_input": tf.one_hot([1, 2, 3], 4)} if arguments else {}
    log_prob, z = flow.log_prob_and_latent(x, **c)
    self.assertAllClose(log_prob, flow.log_prob(x, **c))
    self.assertAllClose(z, flow.encode(x, c.get("conditional_input")))
    self.assertEqual(float(log_prob[0]), -np.inf)
    self.assertTrue(np.all(np.isnan(z[0])))
    training_log_prob, _ = flow.log_prob_and_latent(x[1:], training=True, **{k: v[1:] for k, v in c.items()})
    self.assertAllClose(
      training_log_prob, flow.log_prob(x[1:], training=True, **{k: v[1:] for k, v in c.items()})
    )

  def test_where_the_context_enters_is_checked(self):
    with self.assertRaisesRegex(
      ValueError, r"`context_enters` must be one of \('couplings', 'base'\); got 'prior'"
    ):
      RealNVP(**IMAGE, conditional_event_shape=(4,), context_enters="prior")
    with self.assertRaisesRegex(
      ValueError, r"`context_enters='base'`.*needs `conditional_event_shape=\(features,\)`"
    ):
      RealNVP(**IMAGE, conditional_event_shape=(8, 8, 2), context_enters="base")
    with self.assertRaisesRegex(ValueError, r"`context_enters='base'`.*got conditional_event_shape=None"):
      RealNVP(**VECTOR, context_enters="base")
    self.assertIsNone(RealNVP(**VECTOR).context_enters)
    couplings = RealNVP(**VECTOR, conditional_event_shape=(4,))
    self.assertEqual(couplings.context_enters, "couplings")
    with self.assertRaisesRegex(ValueError, r"`base_mean` is for flows whose context enters only the base"):
      couplings.base_mean(tf.zeros([4]))


class HybridLossTest(tf.test.TestCase):
  def test_is_the_bits_per_dim_loss_plus_the_weighted_class_log_loss(self):
    flow = base_flow()
    images = pixels([6, 8, 8, 1], seed=5)
    labels = tf.constant([0, 1, 2, 3, 0, 1])
    log_prior = tf.math.log(tf.constant([0.1, 0.2, 0.3, 0.4], tf.float64))
    loss = losses.hybrid_loss(flow, images, labels, log_prior, 2.0, 1e-2)
    plain = losses.bits_per_dim_loss(flow, images, 1e-2, conditional_input=tf.one_hot(labels, 4))
    self.assertAllClose(loss.bits_per_dim, plain.bits_per_dim, rtol=1e-5)
    self.assertAllClose(loss.mean_bits_per_dim, plain.mean_bits_per_dim, rtol=1e-5)
    joint = classifier.class_conditional_log_probs(flow, images, 4, training=True) + tf.cast(
      log_prior, tf.float32
    )
    class_log_loss = tf.reduce_logsumexp(joint, -1) - tf.gather(joint, labels, batch_dims=1)
    self.assertGreater(float(tf.reduce_mean(class_log_loss)), 0.1)
    self.assertAllClose(loss.total, plain.total + 2.0 * tf.reduce_mean(class_log_loss), rtol=1e-5)

  def test_the_class_term_trains_the_class_means_and_the_couplings(self):
    flow = base_flow()
    images = pixels([6, 8, 8, 1], seed=6)
    labels = tf.constant([0, 1, 2, 3, 0, 1])
    log_prior = tf.fill([4], tf.constant(-np.log(4.0), tf.float64))
    with tf.GradientTape(persistent=True) as tape:
      with_class = losses.hybrid_loss(flow, images, labels, log_prior, 1.0, 0.0).total
      without = losses.hybrid_loss(flow, images, labels, log_prior, 0.0, 0.0).total
    variables = flow.trainable_variables
    # One backward pass of each loss for all variables (a pass per variable took a minute).
    gradients = zip(tape.gradient(with_class, variables), tape.gradient(without, variables))
    for variable, (with_gradient, without_gradient) in zip(variables, gradients):
      difference = with_gradient - without_gradient
      if "base_shift" in variable.name or "out" in variable.name:
        self.assertGreater(float(tf.reduce_max(tf.abs(difference))), 0.0, variable.name)


if __name__ == "__main__":
  tf.test.main()
