"""Tests for the VAE building blocks of `tfp_realnvp.vae`, with a standard normal and a RealNVP prior."""

import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as tfk
from absl.testing import parameterized

from tfp_realnvp import RealNVP
from tfp_realnvp.vae import DiscretizedLogisticDecoder, GaussianEncoder, VariationalAutoencoder

tfd = tfp.distributions

EVENT_SHAPE = (4, 4, 1)
NUM_LEVELS = 16
LATENT_SIZE = 4


def _tiny_vae(prior_name, seed=0):
  tf.random.set_seed(seed)
  if prior_name == "realnvp":
    prior = RealNVP(event_shape=(LATENT_SIZE,), num_couplings=2, hidden_units=(16,))
  else:
    prior = tfd.MultivariateNormalDiag(loc=tf.zeros([LATENT_SIZE]), scale_diag=tf.ones([LATENT_SIZE]))
  encoder = GaussianEncoder(EVENT_SHAPE, LATENT_SIZE, NUM_LEVELS, hidden_units=(32,))
  decoder = DiscretizedLogisticDecoder(LATENT_SIZE, EVENT_SHAPE, NUM_LEVELS, hidden_units=(32,), dropout=0.2)
  return VariationalAutoencoder(encoder, decoder, prior)


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

  @parameterized.named_parameters(("standard_normal", "standard_normal"), ("realnvp", "realnvp"))
  def test_importance_weighted_bound_is_never_below_the_elbo(self, prior_name):
    vae = _tiny_vae(prior_name)
    bounds = vae.log_likelihood_bounds(_images(10), num_samples=50, seed=tf.constant([1, 2]))
    self.assertEqual(bounds.elbo.shape, [10])
    self.assertAllGreaterEqual(bounds.importance_weighted - bounds.elbo, -1e-4)
    single = vae.log_likelihood_bounds(_images(10), num_samples=1, seed=tf.constant([1, 2]))
    self.assertAllClose(single.importance_weighted, single.elbo, atol=1e-4)

  @parameterized.named_parameters(("standard_normal", "standard_normal"), ("realnvp", "realnvp"))
  def test_negative_elbo_estimates_minus_the_elbo_of_the_importance_weights(self, prior_name):
    # Two estimators of the same ELBO: one sample each with the KL separated (closed form for the standard
    # normal), against the mean log importance weight. One image repeated makes many independent draws.
    vae = _tiny_vae(prior_name)
    for variable in vae.prior.trainable_variables:
      variable.assign(variable + 0.2 * tf.random.normal(variable.shape))
    image = _images(1)
    repeated = np.repeat(image, 4000, axis=0)
    losses = vae.negative_elbo(repeated, seed=tf.constant([3, 4])).numpy()
    log_weights = vae.log_importance_weights(image, num_samples=4000, seed=tf.constant([5, 6]))[:, 0].numpy()
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

  def test_rejects_mismatched_latent_sizes(self):
    encoder = GaussianEncoder(EVENT_SHAPE, LATENT_SIZE, NUM_LEVELS, hidden_units=(8,))
    decoder = DiscretizedLogisticDecoder(LATENT_SIZE, EVENT_SHAPE, NUM_LEVELS, hidden_units=(8,))
    prior = RealNVP(event_shape=(6,), num_couplings=1, hidden_units=(8,))
    with self.assertRaisesRegex(ValueError, "must agree; got \\(6,\\), 4 and 4"):
      VariationalAutoencoder(encoder, decoder, prior)


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
