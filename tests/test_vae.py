"""Tests for the VAE building blocks of `tfp_realnvp.vae`, with a standard normal, a RealNVP and a class-conditional
RealNVP prior."""

import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as tfk
from absl.testing import parameterized

from tests.bijector_testing import perturb
from tfp_realnvp import RealNVP, networks
from tfp_realnvp.vae import DiscretizedLogisticDecoder, GaussianEncoder, VariationalAutoencoder

tfd = tfp.distributions

EVENT_SHAPE = (4, 4, 1)
NUM_LEVELS = 16
LATENT_SIZE = 4
NUM_CLASSES = 3
LOG_LABEL_PRIOR = tf.math.log(tf.constant([0.2, 0.3, 0.5]))
PRIOR_NAMES = (
  ("standard_normal", "standard_normal"),
  ("realnvp", "realnvp"),
  ("conditional_realnvp", "conditional_realnvp"),
)


def _tiny_vae(prior_name, seed=0, latent_size=LATENT_SIZE):
  tf.random.set_seed(seed)
  if prior_name in ("realnvp", "conditional_realnvp"):
    conditional_event_shape = (NUM_CLASSES,) if prior_name == "conditional_realnvp" else None
    prior = RealNVP(
      event_shape=(latent_size,),
      num_couplings=2,
      hidden_units=(16,),
      conditional_event_shape=conditional_event_shape,
    )
  else:
    prior = tfd.MultivariateNormalDiag(loc=tf.zeros([latent_size]), scale_diag=tf.ones([latent_size]))
  encoder = GaussianEncoder(EVENT_SHAPE, latent_size, NUM_LEVELS, hidden_units=(32,))
  decoder = DiscretizedLogisticDecoder(latent_size, EVENT_SHAPE, NUM_LEVELS, hidden_units=(32,), dropout=0.2)
  return VariationalAutoencoder(encoder, decoder, prior)


def _labels(prior_name, num_images, seed=0):
  """One-hot labels `[num_images, NUM_CLASSES]` for a class-conditional prior, None for the others."""
  if prior_name != "conditional_realnvp":
    return None
  return tf.one_hot(np.random.default_rng(seed).integers(0, NUM_CLASSES, num_images), NUM_CLASSES)


def _images(num_images, seed=0):
  # Bars of random brightness on a dark background: structure for the latent code to capture.
  rng = np.random.default_rng(seed)
  images = np.zeros([num_images, *EVENT_SHAPE], np.float32)
  rows = rng.integers(0, EVENT_SHAPE[0], num_images)
  images[np.arange(num_images), rows] = rng.integers(8, NUM_LEVELS, num_images)[:, None, None]
  return images


class VariationalAutoencoderTest(tf.test.TestCase, parameterized.TestCase):
  def test_trains_jointly_with_a_realnvp_prior(self):
    vae = _tiny_vae("realnvp")
    variables = vae.trainable_variables
    prior_variables = vae.prior.trainable_variables
    initial = [v.numpy() for v in prior_variables]
    optimizer = tfk.optimizers.Adam(1e-2)
    images = tf.constant(_images(64))

    @tf.function
    def train_step(seed):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(vae.negative_elbo(images, seed=seed, training=True))
      gradients = tape.gradient(loss, variables)
      gradient_of = dict(zip(map(id, variables), gradients))
      optimizer.apply_gradients(zip(gradients, variables))
      return loss, [gradient_of[id(variable)] for variable in prior_variables]

    losses = []
    for step in range(8):
      loss, prior_gradients = train_step(tf.constant([0, step]))
      for variable, gradient in zip(prior_variables, prior_gradients):
        self.assertIsNotNone(gradient, variable.name)
        self.assertTrue(np.all(np.isfinite(gradient.numpy())), variable.name)
      losses.append(float(loss))
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertLess(np.mean(losses[-2:]), losses[0])
    for variable, before in zip(prior_variables, initial):
      self.assertNotAllClose(variable.numpy(), before, msg=f"{variable.name} never moved")

  def test_trainable_variables_include_the_flow_prior(self):
    vae = _tiny_vae("realnvp")
    expected = {id(v) for part in (vae.encoder, vae.decoder, vae.prior) for v in part.trainable_variables}
    self.assertNotEmpty(vae.prior.trainable_variables)
    self.assertEqual({id(v) for v in vae.trainable_variables}, expected)
    self.assertLen(vae.trainable_variables, len(expected))

  def test_checkpoint_restores_the_flow_prior(self):
    trained, fresh = _tiny_vae("realnvp", seed=0), _tiny_vae("realnvp", seed=1)
    for variable in trained.prior.trainable_variables:
      variable.assign(variable + 0.3)
    path = tf.train.Checkpoint(vae=trained).save(os.path.join(self.get_temp_dir(), "vae"))
    tf.train.Checkpoint(vae=fresh).restore(path).assert_consumed()
    latents = tf.random.normal([5, LATENT_SIZE])
    self.assertAllEqual(fresh.prior.log_prob(latents), trained.prior.log_prob(latents))
    self.assertAllEqual(fresh.encoder(_images(2)).mean(), trained.encoder(_images(2)).mean())

  @parameterized.named_parameters(*PRIOR_NAMES)
  def test_importance_weighted_bound_is_never_below_the_elbo(self, prior_name):
    vae = _tiny_vae(prior_name)
    labels = _labels(prior_name, 10)
    bounds = vae.log_likelihood_bounds(
      _images(10), num_samples=50, seed=tf.constant([1, 2]), conditional_input=labels
    )
    self.assertEqual(bounds.elbo.shape, [10])
    self.assertAllGreaterEqual(bounds.importance_weighted - bounds.elbo, -1e-4)
    single = vae.log_likelihood_bounds(
      _images(10), num_samples=1, seed=tf.constant([1, 2]), conditional_input=labels
    )
    self.assertAllClose(single.importance_weighted, single.elbo, atol=1e-4)

  @parameterized.named_parameters(*PRIOR_NAMES)
  def test_negative_elbo_estimates_minus_the_elbo_of_the_importance_weights(self, prior_name):
    # Two estimators of the same ELBO: one sample each with the KL separated (closed form for the standard
    # normal), against the mean log importance weight. One image repeated makes many independent draws.
    vae = _tiny_vae(prior_name)
    for variable in vae.prior.trainable_variables:
      variable.assign(variable + 0.2 * tf.random.normal(variable.shape))
    image = _images(1)
    repeated = np.repeat(image, 4000, axis=0)
    label = _labels(prior_name, 1)
    repeated_label = None if label is None else tf.repeat(label, 4000, axis=0)
    losses = vae.negative_elbo(repeated, seed=tf.constant([3, 4]), conditional_input=repeated_label).numpy()
    log_weights = vae.log_importance_weights(
      image, num_samples=4000, seed=tf.constant([5, 6]), conditional_input=label
    )[:, 0].numpy()
    standard_error = math.sqrt(np.var(losses) / len(losses) + np.var(log_weights) / len(log_weights))
    self.assertLess(abs(np.mean(losses) + np.mean(log_weights)), 4.0 * standard_error)

  def test_generative_model_scores_prior_plus_likelihood(self):
    vae = _tiny_vae("realnvp")
    joint = vae.generative_model()
    latents, images = joint.sample(5, seed=tf.constant([1, 2]))
    self.assertEqual(latents.shape, [5, LATENT_SIZE])
    self.assertEqual(images.shape, [5, *EVENT_SHAPE])
    self.assertAllInSet(images, np.arange(NUM_LEVELS, dtype=np.float32))
    expected = vae.prior.log_prob(latents) + vae.decoder(latents).log_prob(images)
    self.assertAllClose(joint.log_prob((latents, images)), expected)

  def test_generative_model_of_a_conditional_prior_takes_the_context(self):
    vae = _tiny_vae("conditional_realnvp")
    labels = tf.one_hot([0, 1, 2], NUM_CLASSES)
    joint = vae.generative_model(conditional_input=labels)
    latents, images = joint.sample(2, seed=tf.constant([1, 2]))
    self.assertEqual(latents.shape, [2, 3, LATENT_SIZE])
    self.assertEqual(images.shape, [2, 3, *EVENT_SHAPE])
    expected = vae.prior.log_prob(latents, conditional_input=labels) + vae.decoder(latents).log_prob(images)
    self.assertAllClose(joint.log_prob((latents, images)), expected)

  def test_rejects_mismatched_latent_sizes(self):
    encoder = GaussianEncoder(EVENT_SHAPE, LATENT_SIZE, NUM_LEVELS, hidden_units=(8,))
    decoder = DiscretizedLogisticDecoder(LATENT_SIZE, EVENT_SHAPE, NUM_LEVELS, hidden_units=(8,))
    prior = RealNVP(event_shape=(6,), num_couplings=1, hidden_units=(8,))
    with self.assertRaisesRegex(ValueError, "must agree; got \\(6,\\), 4 and 4"):
      VariationalAutoencoder(encoder, decoder, prior)


def _perturbed_conditional_vae(seed=0, latent_size=LATENT_SIZE, stddev=0.3):
  vae = _tiny_vae("conditional_realnvp", seed=seed, latent_size=latent_size)
  perturb(vae.prior, stddev=stddev, seed=seed)
  return vae


class ConditionalPriorTest(tf.test.TestCase):
  """The model `p(y) p(z | y) p(x | z)` with a RealNVP prior conditioned on the one-hot label."""

  def test_the_label_changes_the_prior_and_the_weights_are_prior_plus_likelihood_minus_posterior(self):
    vae = _perturbed_conditional_vae()
    images, seed = _images(4), tf.constant([1, 2])
    latents, log_posterior = vae.encoder(images).experimental_sample_and_log_prob(6, seed=seed)
    log_likelihood = vae.decoder(latents).log_prob(images)
    by_class = []
    for label in range(NUM_CLASSES):
      context = tf.one_hot([label] * 4, NUM_CLASSES)
      log_prior = vae.prior.log_prob(latents, conditional_input=context)  # [6, 4]
      log_weights = vae.log_importance_weights(images, 6, seed, conditional_input=context)
      self.assertAllClose(log_weights, log_prior + log_likelihood - log_posterior, atol=1e-5)
      by_class.append(log_prior)
    for label in range(1, NUM_CLASSES):
      self.assertGreater(float(tf.reduce_max(tf.abs(by_class[label] - by_class[0]))), 0.1)

  def test_marginal_bounds_combine_the_classes_like_a_per_class_loop(self):
    vae = _perturbed_conditional_vae()
    images, seed = _images(5), tf.constant([3, 4])
    # Brute force: the weights given each label from the same latents, then `sum_y p(y) ...` in numpy.
    given = np.stack(
      [
        vae.log_importance_weights(
          images, 7, seed, conditional_input=tf.one_hot([y] * 5, NUM_CLASSES)
        ).numpy()
        for y in range(NUM_CLASSES)
      ],
      axis=-1,
    )  # [7, 5, classes]
    log_label_prior = LOG_LABEL_PRIOR.numpy()
    class_log_weights = vae.class_log_importance_weights(images, 7, seed, LOG_LABEL_PRIOR)
    self.assertEqual(class_log_weights.shape, [7, 5, NUM_CLASSES])
    self.assertAllClose(class_log_weights, given + log_label_prior, atol=1e-5)
    weights = np.exp(given.astype(np.float64))
    p_x_given_y = weights.mean(axis=0)  # the per-class importance-weighted estimates, [5, classes]
    expected_importance_weighted = np.log(p_x_given_y @ np.exp(log_label_prior))
    expected_elbo = np.log(weights @ np.exp(log_label_prior)).mean(axis=0)
    bounds = vae.marginal_log_likelihood_bounds(images, 7, seed, LOG_LABEL_PRIOR)
    self.assertAllClose(bounds.importance_weighted, expected_importance_weighted, atol=1e-4)
    self.assertAllClose(bounds.elbo, expected_elbo, atol=1e-4)
    # With the same latents, summing out `y` can only add mass to the true label's term.
    labels = np.arange(5) % NUM_CLASSES
    given_label = vae.log_likelihood_bounds(
      images, 7, seed, conditional_input=tf.one_hot(labels, NUM_CLASSES)
    )
    for marginal, conditional in zip(bounds, given_label):
      self.assertAllGreaterEqual(marginal - (conditional + log_label_prior[labels]), -1e-5)

  def test_marginal_bounds_are_below_log_p_x_by_quadrature_and_tighten_with_more_samples(self):
    # Two latent dimensions: `p(x) = sum_y p(y) int p(z | y) p(x | z) dz` on a grid. The encoder keeps its
    # zero-initialized output, `q(z | x) = N(0, I)`, a broad proposal whose large-K estimate converges quickly.
    vae = _perturbed_conditional_vae(latent_size=2)
    perturb(vae.decoder, stddev=0.05, seed=1)
    images = _images(2)
    axis = np.linspace(-7.0, 7.0, 281, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    cell = float((axis[1] - axis[0]) ** 2)
    class_log_probs = np.stack(
      [
        vae.prior.log_prob(grid, conditional_input=tf.one_hot(y, NUM_CLASSES)).numpy()
        for y in range(NUM_CLASSES)
      ],
      axis=-1,
    ).astype(np.float64)
    # Each `p(z | y)` integrates to 1 on the grid, so it holds the mass.
    self.assertAllClose(np.exp(class_log_probs).sum(axis=0) * cell, np.ones(NUM_CLASSES), atol=2e-3)
    log_mixture = np.logaddexp.reduce(class_log_probs + LOG_LABEL_PRIOR.numpy(), axis=-1)  # [grid]
    log_likelihood = vae.decoder(grid[:, None]).log_prob(images).numpy()  # [grid, 2]
    log_p_x = np.logaddexp.reduce(log_mixture[:, None] + log_likelihood, axis=0) + np.log(cell)

    many = vae.marginal_log_likelihood_bounds(images, 20000, tf.constant([5, 0]), LOG_LABEL_PRIOR)
    self.assertAllClose(many.importance_weighted, log_p_x, atol=0.05)
    self.assertAllGreater(log_p_x - many.elbo, 0.0)
    # 1000 independent estimates from K = 5 and from K = 50 samples each: each image repeated, in one call.
    repeated = np.tile(images, [1000, 1, 1, 1])
    means = {}
    for num_samples in (5, 50):
      bounds = vae.marginal_log_likelihood_bounds(repeated, num_samples, tf.constant([6, 7]), LOG_LABEL_PRIOR)
      estimates = bounds.importance_weighted.numpy().reshape(1000, 2)
      means[num_samples] = estimates.mean(axis=0)
      standard_error = estimates.std(axis=0) / np.sqrt(len(estimates))
      # `-log mean_k w_k` is an upper bound on `-log p(x)` in expectation: its mean is not below it beyond noise,
      # and the ELBO, `mean_k log w_k`, is looser still.
      self.assertAllGreater(log_p_x + 3.0 * standard_error - means[num_samples], 0.0)
      self.assertAllGreater(means[num_samples] - bounds.elbo.numpy().reshape(1000, 2).mean(axis=0), 0.0)
    # More samples tighten it (0.6 and 0.05 nats below `log p(x)` for the first image).
    self.assertAllGreater(means[50] - means[5], 0.0)

  def test_gradients_reach_the_prior_context_path(self):
    vae = _perturbed_conditional_vae()
    images, labels = _images(8), _labels("conditional_realnvp", 8)
    with tf.GradientTape() as tape:
      tape.watch(labels)
      loss = tf.reduce_mean(vae.negative_elbo(images, seed=tf.constant([7, 8]), conditional_input=labels))
    variables = vae.prior.trainable_variables
    gradients = tape.gradient(loss, [*variables, labels])
    for variable, gradient in zip([*variables, labels], gradients):
      name = getattr(variable, "name", "conditional_input")
      self.assertIsNotNone(gradient, name)
      self.assertGreater(float(tf.reduce_max(tf.abs(gradient))), 0.0, name)
    gradient_of = {id(variable): gradient for variable, gradient in zip(variables, gradients)}
    conditioners = [m for m in vae.prior.submodules if isinstance(m, networks.ConditionalMLP)]
    self.assertLen(conditioners, 2)
    for conditioner in conditioners:
      # The rows of the first layer that read the one-hot label.
      context_rows = gradient_of[id(conditioner.kernels[0])][-NUM_CLASSES:]
      self.assertGreater(float(tf.reduce_max(tf.abs(context_rows))), 0.0, conditioner.name)

  def test_trains_with_the_label(self):
    vae = _tiny_vae("conditional_realnvp")
    variables = vae.trainable_variables
    optimizer = tfk.optimizers.Adam(1e-2)
    images, labels = tf.constant(_images(64)), _labels("conditional_realnvp", 64)

    @tf.function
    def train_step(seed):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(vae.negative_elbo(images, seed=seed, training=True, conditional_input=labels))
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    losses = [float(train_step(tf.constant([0, step]))) for step in range(8)]
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertLess(np.mean(losses[-2:]), losses[0])

  def test_context_errors_name_conditional_input(self):
    images, labels = _images(2), tf.one_hot([0, 1], NUM_CLASSES)
    seed = tf.constant([1, 2])
    for prior_name in ("standard_normal", "realnvp"):
      vae = _tiny_vae(prior_name)
      with self.assertRaisesRegex(
        ValueError, "unconditional: it takes no `conditional_input`; got one of shape"
      ):
        vae.negative_elbo(images, seed, conditional_input=labels)
      with self.assertRaisesRegex(ValueError, "unconditional: it takes no `conditional_input`"):
        vae.log_likelihood_bounds(images, 3, seed, conditional_input=labels)
      with self.assertRaisesRegex(
        ValueError, r"prior conditioned on one-hot labels.*`conditional_event_shape=None`"
      ):
        vae.marginal_log_likelihood_bounds(images, 3, seed, LOG_LABEL_PRIOR)
    vae = _tiny_vae("conditional_realnvp")
    with self.assertRaisesRegex(ValueError, "pass the context as `conditional_input`"):
      vae.negative_elbo(images, seed)
    with self.assertRaisesRegex(ValueError, "pass the context as `conditional_input`"):
      vae.log_importance_weights(images, 3, seed)
    with self.assertRaisesRegex(ValueError, "`conditional_input` must have shape"):
      vae.log_importance_weights(images, 3, seed, conditional_input=tf.one_hot([0, 1], 4))
    with self.assertRaisesRegex(
      TypeError, "`conditional_input` must have dtype float32, the data's; got float64"
    ):
      vae.negative_elbo(images, seed, conditional_input=tf.one_hot([0, 1], NUM_CLASSES, dtype=tf.float64))
    with self.assertRaisesRegex(ValueError, r"`log_prior` must have shape \[3\]"):
      vae.marginal_log_likelihood_bounds(images, 3, seed, tf.zeros([4]))
    with self.assertRaisesRegex(ValueError, "pass the context as `conditional_input`"):
      vae.generative_model()


class DecoderAndEncoderTest(tf.test.TestCase, parameterized.TestCase):
  def test_decoder_probabilities_over_the_levels_sum_to_one(self):
    tf.random.set_seed(1)
    decoder = DiscretizedLogisticDecoder(2, (3,), NUM_LEVELS, hidden_units=(8,))
    for variable in decoder.trainable_variables:
      variable.assign(variable + tf.random.normal(variable.shape))
    latents = tf.random.normal([6, 2])
    levels = tf.range(NUM_LEVELS, dtype=tf.float32)[:, None, None] * tf.ones([1, 6, 3])
    pixel_probabilities = tf.exp(decoder(latents).distribution.log_prob(levels))  # [levels, 6, 3]
    self.assertAllClose(tf.reduce_sum(pixel_probabilities, axis=0), tf.ones([6, 3]), atol=1e-5)

  def test_decoder_puts_most_mass_on_the_level_at_its_location(self):
    decoder = DiscretizedLogisticDecoder(2, (1,), NUM_LEVELS, hidden_units=(8,), min_scale=0.0)
    decoder.network.output_bias.assign([2.5, -8.0])  # loc = 7.5 + 2.5 = 10, scale = softplus(-8 + 0.54)
    probabilities = tf.exp(
      decoder(tf.zeros([1, 2])).log_prob(tf.range(NUM_LEVELS, dtype=tf.float32)[:, None])
    )
    self.assertEqual(int(tf.argmax(probabilities)), 10)
    self.assertGreater(float(probabilities[10]), 0.99)

  def test_encoder_starts_at_the_standard_normal(self):
    encoder = GaussianEncoder(EVENT_SHAPE, LATENT_SIZE, NUM_LEVELS, hidden_units=(8,))
    posterior = encoder(_images(3))
    self.assertEqual(posterior.batch_shape, [3])
    self.assertAllClose(posterior.mean(), tf.zeros([3, LATENT_SIZE]))
    self.assertAllClose(posterior.stddev(), tf.ones([3, LATENT_SIZE]), atol=2e-4)

  @parameterized.named_parameters(
    ("levels", dict(num_levels=1), "`num_levels` must be an integer of at least 2"),
    ("latent", dict(latent_size=0), "`latent_size` must be a positive integer"),
    ("shape", dict(event_shape=(4, 0)), "`event_shape` must be a non-empty"),
  )
  def test_rejects_bad_arguments(self, overrides, message):
    arguments = dict(event_shape=EVENT_SHAPE, latent_size=LATENT_SIZE, num_levels=NUM_LEVELS)
    with self.assertRaisesRegex(ValueError, message):
      GaussianEncoder(**{**arguments, **overrides})


if __name__ == "__main__":
  tf.test.main()
