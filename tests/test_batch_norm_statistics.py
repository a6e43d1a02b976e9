"""Batch-norm running averages re-estimated for the evaluated weights: exact means of batch statistics, used by
evaluation, samples, checkpoints and exports, with the training's own running averages left alone."""

import dataclasses
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as tfk

from tests.training_testing import TINY_MODEL, run_program, tiny_config
from tfp_realnvp.bijectors import BatchNorm
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.serving import export
from tfp_realnvp.training import batch_norm_statistics, checkpoints, train_lib


def images(seed, count=16, size=8):
  return np.random.default_rng(seed).uniform(0, 16, size=[count, size, size, 1]).astype(np.float32)


def trained_trainer(**kwargs):
  """A tiny digits trainer after 12 SGD steps at a high learning rate with momentum 0.99: the running averages
  lag the weights."""
  trainer = train_lib.Trainer(
    tf.distribute.get_strategy(),
    lambda: RealNVP.from_preset("digits", **TINY_MODEL),
    global_batch_size=16,
    make_optimizer=lambda: tfk.optimizers.SGD(0.5, global_clipnorm=10.0),
    batch_norm_batches=4,
    **kwargs,
  )
  for step in range(12):
    trainer.train_step(tf.constant(images(step)))
  return trainer


def repeated(batch):
  while True:
    yield tf.nest.map_structure(tf.constant, batch)


def log_prob(flow, x, training=False):
  return flow.log_prob(x, training=training).numpy()


class BatchNormStatisticsTest(tf.test.TestCase):
  def test_values_are_the_exact_mean_of_the_batch_statistics(self):
    layer = BatchNorm(3, momentum=0.99)
    statistics = batch_norm_statistics.BatchNormStatistics([layer.moving_mean, layer.moving_variance])
    before = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    batches = [np.random.default_rng(i).normal(i, 1 + i, size=[32, 3]).astype(np.float32) for i in range(3)]
    statistics_pass = batch_norm_statistics.pass_function(
      tf.distribute.get_strategy(), lambda x: layer.forward(x, training=True)
    )
    self.assertTrue(statistics.estimate(statistics_pass, iter(batches), num_batches=3, step=7))
    self.assertAllClose(statistics.values[0], np.mean([b.mean(0) for b in batches], 0), rtol=1e-6)
    self.assertAllClose(statistics.values[1], np.mean([b.var(0) for b in batches], 0), rtol=1e-5)
    self.assertAllEqual(layer.moving_mean, before[0])  # left as they were
    self.assertAllEqual(layer.moving_variance, before[1])
    self.assertTrue(statistics.is_for(7))
    with statistics.applied():
      self.assertAllEqual(layer.moving_mean, statistics.values[0])
    self.assertAllEqual(layer.moving_mean, before[0])
    with self.assertRaisesRegex(ValueError, "ran out after 3 of 4"):
      statistics.estimate(statistics_pass, iter(batches), num_batches=4, step=8)

  def test_estimate_that_is_not_finite_is_not_kept(self):
    layer = BatchNorm(2)
    statistics = batch_norm_statistics.BatchNormStatistics([layer.moving_mean, layer.moving_variance])
    statistics_pass = batch_norm_statistics.pass_function(
      tf.distribute.get_strategy(), lambda x: layer.forward(x, training=True)
    )
    batch = np.full([4, 2], np.nan, np.float32)
    self.assertFalse(statistics.estimate(statistics_pass, iter([batch]), num_batches=1, step=3))
    self.assertFalse(statistics.is_for(3))


class TrainerStatisticsTest(tf.test.TestCase):
  def test_inference_mode_scores_what_batch_statistics_score_and_training_state_is_untouched(self):
    trainer = trained_trainer()
    flow, batch = trainer.flow, images(99)
    training_state = [v.numpy() for v in trainer.flow.variables]
    saved = [v.numpy() for v in trainer.flow.variables if not v.trainable]
    batch_log_prob = log_prob(flow, batch, training=True)  # moves the running averages: put them back
    for variable, value in zip([v for v in flow.variables if not v.trainable], saved):
      variable.assign(value)
    stale = log_prob(flow, batch)
    self.assertGreater(np.max(np.abs(stale - batch_log_prob)), 1.0)  # the running averages lag
    self.assertTrue(trainer.estimate_batch_norm_statistics(lambda: repeated(batch)))
    with trainer.evaluation_weights():
      reestimated = log_prob(flow, batch)
    np.testing.assert_allclose(reestimated, batch_log_prob, rtol=1e-5)
    for variable, value in zip(trainer.flow.variables, training_state):
      self.assertAllEqual(variable, value)
    # Estimated for this step: a second call does nothing; after a step they are not used until re-estimated.
    self.assertIsNone(trainer.estimate_batch_norm_statistics(lambda: self.fail("re-estimated")))
    trainer.train_step(tf.constant(images(100)))
    with trainer.evaluation_weights():
      after_step = log_prob(flow, batch)
    np.testing.assert_array_equal(after_step, log_prob(flow, batch))

  def test_statistics_are_estimated_with_the_averaged_weights(self):
    trainer = trained_trainer(ema_decay=0.5)
    batch = images(98)
    trainer.estimate_batch_norm_statistics(lambda: repeated(batch))
    with trainer.evaluation_weights():
      reestimated = log_prob(trainer.flow, batch)
    with trainer.weight_average.applied():
      batch_log_prob = log_prob(trainer.flow, batch, training=True)
    np.testing.assert_allclose(reestimated, batch_log_prob, rtol=1e-5)

  def test_class_conditional_statistics(self):
    trainer = train_lib.Trainer(
      tf.distribute.get_strategy(),
      lambda: RealNVP.from_preset("digits", conditional_event_shape=(3,), **TINY_MODEL),
      global_batch_size=16,
      make_optimizer=lambda: tfk.optimizers.SGD(0.5, global_clipnorm=10.0),
      label_counts=[5, 5, 6],
      batch_norm_batches=2,
    )
    labels = np.arange(16) % 3
    for step in range(6):
      trainer.train_step((tf.constant(images(step)), tf.constant(labels)))
    batch = images(97)
    context = tf.one_hot(labels, 3)
    self.assertTrue(trainer.estimate_batch_norm_statistics(lambda: repeated((batch, labels))))
    with trainer.evaluation_weights():
      reestimated = trainer.flow.log_prob(batch, conditional_input=context).numpy()
    saved = [v.numpy() for v in trainer.flow.variables if not v.trainable]
    batch_log_prob = trainer.flow.log_prob(batch, conditional_input=context, training=True).numpy()
    np.testing.assert_allclose(reestimated, batch_log_prob, rtol=1e-5)
    for variable, value in zip([v for v in trainer.flow.variables if not v.trainable], saved):
      variable.assign(value)


@pytest.mark.slow
class RunStatisticsTest(tf.test.TestCase):
  def run_and_export(self, **changes):
    config = tiny_config(batch_norm_batches=3, ema_decay=0.5, **changes)
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    result = train_lib.train_and_evaluate(config, workdir)
    path = export.export_workdir(workdir, os.path.join(workdir, "exports")).path
    return config, workdir, result, tf.saved_model.load(path)

  def assert_export_holds_the_reestimated_flow(self, result, workdir, loaded, **context):
    x = images(5)
    expected = result.flow.log_prob(x, **context).numpy()
    exported = loaded.signatures["log_prob"](x=tf.constant(x), **context)["log_prob"].numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-5)
    # The checkpoint's own running averages score otherwise: the export did not take them.
    latest = tf.train.latest_checkpoint(checkpoints.checkpoint_dir(workdir))
    self.assertTrue(checkpoints.holds(latest, checkpoints.BATCH_NORM_STATISTICS))
    return x, expected

  def test_run_evaluates_checkpoints_and_exports_the_reestimated_statistics(self):
    config, workdir, result, loaded = self.run_and_export()
    x, expected = self.assert_export_holds_the_reestimated_flow(result, workdir, loaded)
    trainer = train_lib.build_trainer(config)
    trainer.restore(tf.train.latest_checkpoint(checkpoints.checkpoint_dir(workdir)))
    with trainer.weight_average.applied():
      stale = trainer.flow.log_prob(x).numpy()
    self.assertGreater(np.max(np.abs(stale - expected)), 1e-3)
    with trainer.evaluation_weights():  # restored for the checkpoint's step
      np.testing.assert_allclose(trainer.flow.log_prob(x).numpy(), expected, rtol=1e-5)
    # Resuming with the statistics off, then on, from a checkpoint with them and one without.
    again = train_lib.train_and_evaluate(
      dataclasses.replace(config, batch_norm_batches=0, num_train_steps=7), workdir
    )
    self.assertEqual(again.step, 7)
    resumed = train_lib.train_and_evaluate(dataclasses.replace(config, num_train_steps=8), workdir)
    self.assertEqual(resumed.step, 8)

  def test_class_conditional_variational_run(self):
    _, workdir, result, loaded = self.run_and_export(condition="label", dequantization="variational")
    context = {"conditional_input": tf.one_hot(np.arange(16) % 10, 10)}
    self.assert_export_holds_the_reestimated_flow(result, workdir, loaded, **context)


@pytest.mark.slow
class MirroredStatisticsTest(tf.test.TestCase):
  def test_two_mirrored_replicas_estimate_what_one_device_does(self):
    report = run_program("batch_norm_statistics_mirrored", os.path.join(self.get_temp_dir(), "report.json"))
    self.assertEqual(report["replica_copies"], [1, 2])
    self.assertLess(report["replica_difference"], 1e-6)
    # Relative; the weights they are estimated for already differ by the replicas' reduction order.
    self.assertLess(report["strategy_difference"], 1e-3)
    self.assertGreater(report["change"], 1e-3)
    self.assertAllClose(report["bits_per_dim"][0], report["bits_per_dim"][1], rtol=1e-5)
    self.assertLess(report["training_state_change"], 1e-7)


if __name__ == "__main__":
  tf.test.main()
