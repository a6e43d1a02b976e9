"""Speed options of training: dynamic loss scaling (float16), XLA train steps, and their config and flags."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as tfk
from absl.testing import parameterized

from tests.training_testing import TINY_MODEL, tiny_config
from tfp_realnvp import networks
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import configs, optimization, train_lib

IMAGES = np.random.default_rng(3).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)


def make_trainer(seed=0, compute_dtype=None, **kwargs):
  """A tiny digits trainer whose initial weights depend only on `seed`."""
  tf.random.set_seed(seed)
  return train_lib.Trainer(
    tf.distribute.get_strategy(),
    lambda: RealNVP.from_preset("digits", **TINY_MODEL, compute_dtype=compute_dtype),
    global_batch_size=8,
    **kwargs,
  )


def train(trainer, num_steps):
  """`num_steps` steps on `IMAGES`; the losses and whether each step was applied."""
  results = [trainer.train_step(tf.constant(IMAGES)) for _ in range(num_steps)]
  return [float(loss) for loss, _ in results], [bool(applied) for _, applied in results]


def values(variables):
  return [variable.numpy() for variable in variables]


class DynamicLossScaleTest(tf.test.TestCase):
  def test_halves_after_a_non_finite_step_and_doubles_after_growth_interval_finite_steps(self):
    loss_scale = optimization.DynamicLossScale(initial_scale=8.0, growth_interval=2)
    scales = []
    for is_finite in (False, True, True, True, False, False, False, False):
      loss_scale.update(tf.constant(is_finite))
      scales.append(float(loss_scale.scale))
    # 8 -> 4 (overflow), 4 (1 finite), 8 (2 finite: grow, count resets), 8, then halving down to the floor of 1.
    self.assertEqual(scales, [4.0, 4.0, 8.0, 8.0, 4.0, 2.0, 1.0, 1.0])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"`initial_scale` must be >= 1; got 0\.5"):
      optimization.DynamicLossScale(initial_scale=0.5)
    with self.assertRaisesRegex(ValueError, r"`growth_interval` must be a positive integer; got 0"):
      optimization.DynamicLossScale(growth_interval=0)
    with self.assertRaisesRegex(TypeError, r"`loss_scale` must be 'auto', None or an optimization"):
      make_trainer(loss_scale=1024.0)


class LossScaledTrainingTest(tf.test.TestCase):
  @pytest.mark.slow
  def test_a_power_of_two_scale_gives_the_unscaled_updates(self):
    plain = make_trainer(seed=5, loss_scale=None)
    scaled = make_trainer(seed=5, loss_scale=optimization.DynamicLossScale(initial_scale=2.0**20))
    self.assertAllEqual(values(plain.flow.variables)[0], values(scaled.flow.variables)[0])
    plain_losses, _ = train(plain, 3)
    scaled_losses, applied = train(scaled, 3)
    self.assertEqual(applied, [True] * 3)
    self.assertAllClose(plain_losses, scaled_losses, rtol=1e-6)
    initial = values(make_trainer(seed=5).flow.variables)
    moved = [np.max(np.abs(a - b)) for a, b in zip(values(plain.flow.variables), initial)]
    self.assertGreater(max(moved), 1e-3)  # the steps did move the weights
    for a, b in zip(values(plain.flow.variables), values(scaled.flow.variables)):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  @pytest.mark.slow
  def test_an_overflowing_float16_gradient_skips_the_step_and_halves_the_scale_until_steps_apply(self):
    trainer = make_trainer(seed=6, compute_dtype="float16")
    # The conditioners' zero-initialized output layers pass no gradient into them at first: train a little.
    _, applied = train(trainer, 2)
    self.assertEqual(applied, [True, True])
    trainer.loss_scale.scale.assign(2.0**40)  # float16 gradients overflow (max 65504)
    before = values(trainer.flow.variables)
    losses, applied = train(trainer, 1)
    self.assertEqual(applied, [False])
    self.assertTrue(np.isfinite(losses[0]))  # the loss itself is finite: only the scaled gradient overflowed
    self.assertEqual(float(trainer.loss_scale.scale), 2.0**39)
    for old, new in zip(before, values(trainer.flow.variables)):
      self.assertAllEqual(old, new)
    _, applied = train(trainer, 40)
    self.assertTrue(applied[-1])
    self.assertLess(float(trainer.loss_scale.scale), 2.0**39)

  def test_an_infinite_loss_with_finite_gradients_is_skipped_under_loss_scaling(self):
    # What tf_keras' LossScaleOptimizer would apply (it looks at the gradients only): see DynamicLossScale.
    trainer = make_trainer(seed=6, compute_dtype="float16")
    train(trainer, 2)
    outside = IMAGES.copy()
    outside[0, 0, 0, 0] = (
      17.0  # past the support (-0.889, 16.889): log p = -inf for that row, finite gradients
    )
    before = values(trainer.flow.variables)
    loss, applied = trainer.train_step(tf.constant(outside))
    self.assertEqual(float(loss), float("inf"))
    self.assertFalse(bool(applied))
    for old, new in zip(before, values(trainer.flow.variables)):
      self.assertAllEqual(old, new)  # batch-norm running averages included

  @pytest.mark.slow
  def test_float16_conditioners_get_dynamic_loss_scaling_and_match_float32(self):
    half = make_trainer(seed=7, compute_dtype="float16")
    full = make_trainer(seed=7)
    self.assertIsInstance(half.loss_scale, optimization.DynamicLossScale)
    self.assertIsNone(full.loss_scale)
    self.assertIsNone(
      make_trainer(seed=7, compute_dtype="bfloat16").loss_scale
    )  # bfloat16 has float32's range
    # The first step's conditioners output exactly zero (zero-initialized output layers); later ones do not.
    half_losses, applied = train(half, 4)
    full_losses, _ = train(full, 4)
    self.assertEqual(applied, [True] * 4)
    self.assertNotAllClose(full_losses[0], full_losses[-1], rtol=1e-4)
    self.assertAllClose(half_losses, full_losses, rtol=2e-3)
    saved = tf.train.list_variables(half.checkpoint.write(os.path.join(self.get_temp_dir(), "half")))
    self.assertTrue(any(name.startswith("loss_scale/scale") for name, _ in saved), saved)


@pytest.mark.slow
class JitCompileTest(tf.test.TestCase):
  def test_an_xla_train_step_matches_the_default_step(self):
    # SGD, so every update is proportional to its gradient (Adam's first steps are +-learning_rate whatever
    # the gradient, which turns round-off differences in near-zero gradients into opposite steps).
    sgd = lambda: tfk.optimizers.SGD(0.05)  # noqa: E731
    default = make_trainer(seed=8, make_optimizer=sgd)
    compiled = make_trainer(seed=8, make_optimizer=sgd, jit_compile=True)
    default_losses, _ = train(default, 2)
    compiled_losses, applied = train(compiled, 2)
    self.assertEqual(applied, [True, True])
    self.assertAllClose(default_losses, compiled_losses, rtol=1e-4)
    for a, b in zip(values(default.flow.variables), values(compiled.flow.variables)):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)


class ConfigAndFlagsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    (
      "compute_dtype",
      dict(compute_dtype="int8"),
      r"`compute_dtype` must be one of None, float32, bfloat16, float16; got 'int8'",
    ),
    ("jit_compile", dict(jit_compile="yes"), r"`jit_compile` must be True or False; got 'yes'"),
  )
  def test_bad_values_name_the_setting(self, changes, message):
    with self.assertRaisesRegex(configs.ConfigError, message):
      dataclasses.replace(configs.get_config(), **changes).validate()

  @pytest.mark.slow
  def test_a_bfloat16_run_builds_bfloat16_conditioners(self):
    config = tiny_config(compute_dtype="bfloat16", num_train_steps=2, eval_every_steps=0)
    result = train_lib.train_and_evaluate(config, os.path.join(self.get_temp_dir(), "bf16"))
    conditioners = [module for module in result.flow.submodules if isinstance(module, networks.ResNet)]
    self.assertNotEmpty(conditioners)
    self.assertEqual({conditioner.compute_dtype for conditioner in conditioners}, {tf.bfloat16})
    self.assertTrue(np.isfinite(result.metrics["test_bits_per_dim"]))


if __name__ == "__main__":
  tf.test.main()
