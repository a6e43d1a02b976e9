"""Dequantizers `q(u | v)` and the importance-weighted bound on the discrete likelihood."""

import contextlib
import dataclasses
import io
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks, perturb
from tests.training_testing import run_program, tiny_config
from tfp_realnvp import RealNVP, data, dequantization
from tfp_realnvp.training import configs, train_lib

tfd = tfp.distributions


def levels(shape, seed, num_bits=4):
  return tf.floor(tf.random.stateless_uniform(shape, seed=[seed, 0], maxval=2.0**num_bits))


def noise(shape, seed):
  return tf.random.stateless_uniform(shape, seed=[seed, 1])


def perturbed_dequantizer(event_shape=(2, 2, 1), stddev=0.1, seed=0, dtype=tf.float32, num_couplings=4):
  dequantizer = dequantization.VariationalDequantizer(
    event_shape, num_bits=4, num_couplings=num_couplings, hidden_units=(16,), dtype=dtype
  )
  perturb(dequantizer, stddev=stddev, seed=seed, stateless=True)
  return dequantizer


def tiny_flow():
  tf.random.set_seed(0)
  flow = RealNVP(
    event_shape=(2, 2, 1), num_scales=1, num_blocks=1, num_filters=4, num_bits=2, batch_norm=False
  )
  perturb(flow, stddev=0.1, seed=1, stateless=True)
  return flow


class VariationalDequantizerTest(tf.test.TestCase, BijectorChecks):
  def setUp(self):
    super().setUp()
    self.dequantizer = perturbed_dequantizer()
    self.kwargs = dict(
      training=False, conditional_input=self.dequantizer.context(levels([5, 2, 2, 1], seed=1))
    )
    # The flattened noise, in the interior of (0, 1)^4.
    self.noise = 0.05 + 0.9 * noise([5, 4], seed=2)

  def test_noise_to_offsets_round_trips_and_its_log_dets_agree_with_each_other_and_autodiff(self):
    bijector = self.dequantizer.noise_to_offsets
    self.assert_round_trips(bijector, self.noise, atol=1e-4, **self.kwargs)
    self.assert_log_dets_consistent(bijector, self.noise, event_ndims=1, atol=1e-4, **self.kwargs)
    self.assert_log_det_matches_autodiff(
      bijector, self.noise, event_ndims=1, rtol=1e-4, min_abs_log_det=0.5, **self.kwargs
    )

  def test_log_prob_of_the_offsets_is_the_log_q_their_draw_returned(self):
    v = levels([5, 2, 2, 1], seed=1)
    u, log_q = self.dequantizer.offsets_and_log_prob(v, tf.reshape(self.noise, [5, 2, 2, 1]))
    self.assertAllClose(log_q, self.dequantizer.log_prob(u, v), atol=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(log_q))), 0.2)  # not the uniform q

  def test_q_integrates_to_one_on_the_unit_square_for_each_of_three_two_pixel_images(self):
    # Two couplings: each pixel is scaled once, by at most `exp(tanh_scale)`, so the logit-space tails are light.
    dequantizer = perturbed_dequantizer(
      event_shape=(1, 2, 1), stddev=0.3, seed=3, dtype=tf.float64, num_couplings=2
    )
    # `u = sigmoid(t)` on a midpoint grid of `t`: `int q(u) du = int q(sigmoid(t)) sigmoid'(t) dt`, with the
    # tails beyond |t| = 30 holding (far) less than the tolerance.
    num_points, limit = 600, 30.0
    t = np.linspace(-limit, limit, num_points + 1)
    t = (t[:-1] + t[1:]) / 2.0
    step = t[1] - t[0]
    grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2, 1)
    log_jacobian = np.sum(-np.logaddexp(0.0, grid) - np.logaddexp(0.0, -grid), axis=(1, 2, 3))
    u = tf.sigmoid(tf.constant(grid))
    masses = []
    for image in ([[0.0, 15.0]], [[7.0, 7.0]], [[15.0, 3.0]]):
      v = tf.broadcast_to(tf.reshape(tf.constant(image, tf.float64), [1, 1, 2, 1]), u.shape)
      log_q = dequantizer.log_prob(u, v).numpy()
      masses.append(np.sum(np.exp(log_q + log_jacobian)) * step**2)
      self.assertGreater(np.max(np.abs(log_q)), 0.5)  # a non-uniform q
    self.assertAllClose(masses, [1.0, 1.0, 1.0], rtol=0.01)

  def test_offsets_lie_in_the_unit_box_and_dequantized_values_in_their_bins_even_for_extreme_noise(self):
    v = levels([4, 2, 2, 1], seed=3)
    extreme = tf.reshape(tf.constant([0.0, 1e-30, 1.0 - 2.0**-24, 0.5] * 4), [4, 2, 2, 1])
    for e in (extreme, noise([4, 2, 2, 1], seed=4)):
      u, log_q = self.dequantizer.offsets_and_log_prob(v, e)
      self.assertTrue(np.all((u.numpy() >= 0.0) & (u.numpy() <= 1.0)))
      self.assertAllEqual(tf.floor(dequantization.data.dequantize(v, u)), v)
      self.assertTrue(np.all(np.isfinite(log_q.numpy())))

  def test_samples_are_reproducible_per_seed_and_depend_on_the_context(self):
    v = levels([3, 2, 2, 1], seed=5)
    first, log_q = self.dequantizer.sample_and_log_prob(v, seed=[1, 2])
    again, log_q_again = self.dequantizer.sample_and_log_prob(v, seed=[1, 2])
    other, _ = self.dequantizer.sample_and_log_prob(v, seed=[1, 3])
    self.assertAllEqual(first, again)
    self.assertAllEqual(log_q, log_q_again)
    self.assertGreater(float(tf.reduce_max(tf.abs(first - other))), 0.1)
    # The same noise under another image gives other offsets and densities.
    shifted, log_q_shifted = self.dequantizer.sample_and_log_prob(15.0 - v, seed=[1, 2])
    self.assertGreater(float(tf.reduce_max(tf.abs(first - shifted))), 0.01)
    self.assertGreater(float(tf.reduce_max(tf.abs(log_q - log_q_shifted))), 0.01)

  def test_an_untrained_dequantizer_is_the_uniform_one(self):
    dequantizer = dequantization.VariationalDequantizer((2, 2, 1), num_bits=4, hidden_units=(16,))
    e = noise([6, 2, 2, 1], seed=6)
    u, log_q = dequantizer.offsets_and_log_prob(levels([6, 2, 2, 1], seed=7), e)
    self.assertAllClose(u, e, atol=1e-6)
    self.assertAllClose(log_q, tf.zeros([6]), atol=1e-5)

  def test_bad_arguments_name_themselves(self):
    with self.assertRaisesRegex(ValueError, r"`levels` must have shape `\[\.\.\., 2, 2, 1\]`"):
      self.dequantizer.sample_and_log_prob(tf.zeros([3, 4]), seed=[1, 2])
    with self.assertRaisesRegex(ValueError, "`num_bits` must be a positive integer; got 0"):
      dequantization.VariationalDequantizer((2, 2, 1), num_bits=0)
    with self.assertRaisesRegex(ValueError, "`dequantization` must be one of uniform, variational; got 'x'"):
      dequantization.make_dequantizer("x", (2, 2, 1), 4)


class UniformDequantizerTest(tf.test.TestCase):
  def test_the_one_draw_bound_is_exactly_the_flows_bits_per_dim(self):
    flow = tiny_flow()
    images = levels([7, 2, 2, 1], seed=8, num_bits=2) + noise([7, 2, 2, 1], seed=9)
    uniform = dequantization.UniformDequantizer((2, 2, 1))
    self.assertAllEqual(
      dequantization.variational_bits_per_dim(flow, uniform, images), flow.bits_per_dim(images)
    )

  def test_log_q_is_zero_inside_the_box(self):
    uniform = dequantization.UniformDequantizer((2, 2, 1))
    u, log_q = uniform.sample_and_log_prob(levels([3, 2, 2, 1], seed=1), seed=[0, 1])
    self.assertAllEqual(log_q, tf.zeros([3]))
    self.assertAllEqual(uniform.log_prob(u, None), tf.zeros([3]))
    self.assertAllEqual(uniform.log_prob(u + 1.0, None), tf.fill([3], -np.inf))


def logistic_log_prob(x):
  """A known density on `R^4`: independent logistics with means `mean`, so `P(v) = prod_i F(v_i + 1) - F(v_i)`."""
  return tf.reduce_sum(tfd.Logistic(MEAN, 0.7).log_prob(tf.reshape(x, [-1, 4])), -1)


MEAN = tf.constant([0.3, 1.5, 2.2, 3.9])


class ImportanceWeightedBoundTest(tf.test.TestCase, parameterized.TestCase):
  def test_matches_a_brute_force_computation_with_the_same_draws(self):
    flow, dequantizer = tiny_flow(), perturbed_dequantizer()
    v = levels([3, 2, 2, 1], seed=10, num_bits=2)
    num_samples, seed = 5, tf.constant([4, 5])
    bits = dequantization.importance_weighted_bits_per_dim(flow, dequantizer, v, num_samples, seed)
    noises = tf.random.stateless_uniform([num_samples, 3, 2, 2, 1], seed)
    weights = []
    for e in noises:
      u, _ = dequantizer.offsets_and_log_prob(v, e)
      weights.append(flow.log_prob(v + u).numpy() - dequantizer.log_prob(u, v).numpy())
    weights = np.asarray(weights, np.float64)
    top = weights.max(0)
    expected = -(top + np.log(np.mean(np.exp(weights - top), 0))) / (4 * math.log(2.0))
    self.assertEqual(bits.dtype, tf.float64)
    self.assertAllClose(bits, expected, rtol=1e-4)

  def test_one_uniform_draw_is_the_flows_bits_per_dim(self):
    flow = tiny_flow()
    v = levels([4, 2, 2, 1], seed=11, num_bits=2)
    seed = tf.constant([6, 7])
    bits = dequantization.importance_weighted_bits_per_dim(
      flow, dequantization.UniformDequantizer((2, 2, 1)), v, 1, seed
    )
    e = tf.random.stateless_uniform([1, 4, 2, 2, 1], seed)[0]
    self.assertAllClose(bits, flow.bits_per_dim(v + e), rtol=1e-6)

  def test_more_draws_are_tighter_on_average_and_all_bound_the_exact_discrete_likelihood(self):
    # With the closed-form `P(v)` of `logistic_log_prob` and the uniform q (then a perturbed variational q).
    v = tf.reshape(tf.constant([[0.0, 1.0, 2.0, 4.0], [1.0, 0.0, 3.0, 3.0]]), [2, 2, 2, 1])
    cdf = tfd.Logistic(MEAN, 0.7).cdf
    flat = tf.reshape(v, [2, 4])
    exact = -tf.reduce_sum(tf.math.log(cdf(flat + 1.0) - cdf(flat)), -1).numpy() / (4 * math.log(2.0))
    for dequantizer in (dequantization.UniformDequantizer((2, 2, 1)), perturbed_dequantizer()):
      means = []
      # Nested draws (the first `k` of 64), so the figures for different `k` differ by less noise.
      all_noises = tf.random.stateless_uniform([200, 64, 2, 2, 2, 1], seed=[3, 0])
      # In a function: eagerly, the nested `map_fn`s run op by op (over 20 minutes on 2 cores).
      bounds_of = tf.function(
        lambda noises, dq=dequantizer: tf.map_fn(
          lambda e: dequantization.importance_weighted_log_prob(logistic_log_prob, dq, v, e),
          noises,
          fn_output_signature=tf.float64,
        )
      )
      for k in (1, 4, 16, 64):
        bounds = bounds_of(all_noises[:, :k])
        means.append(-tf.reduce_mean(bounds, 0).numpy() / (4 * math.log(2.0)))
      means = np.asarray(means)
      self.assertTrue(np.all(np.diff(means, axis=0) < 0), means)  # each larger K is better on average
      self.assertTrue(np.all(means > exact - 1e-3), (means, exact))  # and never below the true value
      self.assertAllClose(means[-1], exact, atol=0.02)

  def test_rotated_noises_keep_the_first_draw_and_do_not_depend_on_the_batch(self):
    e = noise([6, 2, 2, 1], seed=12)
    rotated = dequantization.rotated_noise(e, 5, seed=[1, 2])
    self.assertEqual(rotated.shape, [5, 6, 2, 2, 1])
    self.assertAllEqual(rotated[0], e)
    self.assertAllEqual(dequantization.rotated_noise(e[3:], 5, seed=[1, 2]), rotated[:, 3:])
    self.assertTrue(np.all((rotated.numpy() >= 0.0) & (rotated.numpy() < 1.0)))
    self.assertGreater(float(tf.reduce_min(tf.reduce_max(tf.abs(rotated[1:] - e), axis=[1, 2, 3, 4]))), 0.1)
    self.assertAllEqual(dequantization.rotated_noise(e, 1, seed=[1, 2]), e[tf.newaxis])  # K = 1: the noise

  def test_class_scores_get_the_same_log_q_each(self):
    dequantizer = perturbed_dequantizer()
    v, e = levels([3, 2, 2, 1], seed=13), noise([3, 2, 2, 1], seed=14)
    per_class = dequantization.log_weights(
      lambda x: tf.stack([logistic_log_prob(x), 2.0 * logistic_log_prob(x)], -1), dequantizer, v, e
    )
    single = dequantization.log_weights(logistic_log_prob, dequantizer, v, e)
    u, log_q = dequantizer.offsets_and_log_prob(v, e)
    self.assertAllClose(per_class[:, 0], single)
    self.assertAllClose(per_class[:, 1], 2.0 * logistic_log_prob(v + u) - log_q, rtol=1e-5)


@pytest.mark.slow
class VariationalTrainingTest(tf.test.TestCase):
  """One tiny digits run with the variational dequantizer, 3 importance-weighted draws at the end."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(tf.compat.v1.test.get_temp_dir(), "variational")
    cls.config = tiny_config(dequantization="variational", num_importance_samples=3, eval_every_steps=0)
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      cls.result = train_lib.train_and_evaluate(cls.config, cls.workdir)
    cls.lines = stdout.getvalue().splitlines()

  def restored_trainer(self):
    trainer = train_lib.build_trainer(self.config)
    trainer.restore(tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints")))
    return trainer

  def test_the_dequantizer_trained_and_is_checkpointed_with_the_flow(self):
    fresh, trained = train_lib.build_trainer(self.config), self.restored_trainer()
    self.assertIsInstance(trained.dequantizer, dequantization.VariationalDequantizer)
    self.assertLen(
      trained.trainable_variables,
      len(fresh.flow.trainable_variables) + len(fresh.dequantizer.trainable_variables),
    )
    # The output layers start at zero; after 6 steps they are not, and the checkpoint holds them.
    output_kernels = [v for v in trained.dequantizer.trainable_variables if "output_kernel" in v.name]
    self.assertNotEmpty(output_kernels)
    self.assertGreater(max(float(tf.reduce_max(tf.abs(v))) for v in output_kernels), 1e-4)
    names = [
      name
      for name, _ in tf.train.list_variables(
        tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints"))
      )
    ]
    self.assertTrue(any(name.startswith("dequantizer/") for name in names))
    # Adam's two slots per trained variable, the dequantizer's included.
    slots = [name for name in names if name.startswith("optimizer/_variables/")]
    self.assertLen(slots, 2 * len(trained.trainable_variables))
    self.assertLess(2 * len(fresh.flow.trainable_variables), len(slots))

  def test_metrics_are_the_bounds_at_one_and_at_three_draws_with_the_models_dequantizer(self):
    with open(os.path.join(self.workdir, "metrics.json")) as file:
      metrics = json.load(file)
    self.assertEqual(metrics, self.result.metrics)
    self.assertEqual((metrics["dequantization"], metrics["num_importance_samples"]), ("variational", 3))
    trainer = self.restored_trainer()
    with trainer.evaluation_weights():  # the metrics use the averaged weights (`ema_decay`)
      bits = [
        dequantization.variational_bits_per_dim(trainer.flow, trainer.dequantizer, batch).numpy()
        for batch in data.load("digits", "test", batch_size=100, training=False)
      ]
    self.assertAllClose(metrics["test_bits_per_dim"], np.concatenate(bits).mean(), rtol=1e-6)
    self.assertLess(metrics["test_bits_per_dim_k3"], metrics["test_bits_per_dim"])
    self.assertRegex(
      "\n".join(self.lines), r"(?m)^test \| step: 6 \| split: test \| draws: 3 \| bits_per_dim: \d+\.\d{4}$"
    )


class DequantizationSettingTest(tf.test.TestCase):
  """The config's `dequantization` and `num_importance_samples`: the trainer they build, old config files and
  bad values."""

  def test_a_uniform_run_checkpoints_no_dequantizer(self):
    trainer = train_lib.build_trainer(tiny_config(dequantization="uniform"))
    self.assertIsInstance(trainer.dequantizer, dequantization.UniformDequantizer)
    self.assertNotIn("dequantizer", tf.train.TrackableView(trainer.checkpoint).children(trainer.checkpoint))

  def test_a_config_json_without_the_fields_is_a_uniform_run_with_one_draw(self):
    values = json.loads(configs.to_json(tiny_config()))
    del values["dequantization"], values["num_importance_samples"]
    config = configs.from_json(json.dumps(values))
    self.assertEqual((config.dequantization, config.num_importance_samples), ("uniform", 1))

  def test_bad_settings_name_themselves(self):
    for changes, message in (
      (
        dict(dequantization="learned"),
        r"^`dequantization` must be one of uniform, variational; got 'learned'\.$",
      ),
      (dict(num_importance_samples=0), r"^`num_importance_samples` must be an integer >= 1; got 0\.$"),
    ):
      with self.assertRaisesRegex(configs.ConfigError, message):
        dataclasses.replace(tiny_config(), **changes).validate()


@pytest.mark.slow
class VariationalMirroredTest(tf.test.TestCase):
  def test_mirrored_on_two_cpus_matches_one_device(self):
    report = run_program(
      "variational_mirrored", os.path.join(self.get_temp_dir(), "variational_mirrored.json")
    )
    for kind in ("conditional",):
      result = report[kind]
      self.assertEqual(result["replicas"], [1, 2])
      self.assertEqual(result["checkpointed"], [True, True])
      self.assertLess(result["loss_difference"], 1e-5)
      self.assertGreater(result["dequantizer_change"], 1e-3)  # the dequantizer trained...
      self.assertLess(result["weight_difference"], 1e-5)  # ... to the same weights on 2 replicas
      one, two = result["metrics"]
      for draws in (0, 1):
        self.assertEqual((one[draws]["num_examples"], two[draws]["num_examples"]), (45, 45))
        for name, value in one[draws].items():
          self.assertAllClose(value, two[draws][name], rtol=1e-5, msg=(kind, draws, name))


if __name__ == "__main__":
  tf.test.main()
