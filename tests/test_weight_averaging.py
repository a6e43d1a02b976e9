"""WeightAverage and the trainer's EMA of the weights: the update, skipped steps, evaluation with the averages,
checkpoints and resume, and the flow that `restore_flow` (and so the export) gives."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from tests.training_testing import TINY_MODEL, tiny_config
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.serving import export
from tfp_realnvp.training import checkpoints, flow_builder, train_lib
from tfp_realnvp.training.weight_averaging import WeightAverage


def expected_averages(initial, weights_after_each_update, decay):
  """The EMA with `tf.train.ExponentialMovingAverage`'s warm-up, in NumPy."""
  average = np.array(initial, np.float64)
  for n, weights in enumerate(weights_after_each_update):
    d = min(decay, (1.0 + n) / (10.0 + n))
    average = d * average + (1.0 - d) * np.asarray(weights, np.float64)
  return average


class WeightAverageTest(tf.test.TestCase):
  def test_update_is_the_warmed_up_moving_average_and_counts(self):
    weight = tf.Variable([1.0, -2.0, 3.0])
    average = WeightAverage([weight], decay=0.5)
    self.assertAllEqual(average.averages[0], weight)  # starts at the weights
    history = []
    for step in range(1, 6):
      weight.assign(weight * 1.5 + step)
      history.append(weight.numpy())
      average.update()
    self.assertAllClose(average.averages[0], expected_averages([1.0, -2.0, 3.0], history, 0.5), rtol=1e-6)
    self.assertEqual(int(average.num_updates), 5)
    self.assertAllEqual(weight, history[-1])  # the weights are left alone

  def test_applied_swaps_the_averages_in_and_back_and_assign_copies_them(self):
    weight = tf.Variable([1.0, 2.0])
    average = WeightAverage([weight], decay=0.9)
    weight.assign([5.0, 6.0])
    average.update()
    expected = expected_averages([1.0, 2.0], [[5.0, 6.0]], 0.9)
    with average.applied():
      self.assertAllClose(weight, expected)
    self.assertAllEqual(weight, [5.0, 6.0])
    average.assign_to_weights()
    self.assertAllClose(weight, expected)

  def test_checkpoint_holds_only_the_averages_and_count_and_resumes_exactly(self):
    weight = tf.Variable([1.0, 2.0])
    average = WeightAverage([weight], decay=0.99)
    for value in ([3.0, 1.0], [4.0, 0.0]):
      weight.assign(value)
      average.update()
    path = tf.train.Checkpoint(weight=weight, weight_average=average).save(
      os.path.join(self.get_temp_dir(), "ckpt")
    )
    self.assertEqual(
      sorted(name for name, _ in tf.train.list_variables(path) if name.startswith("weight_average")),
      [
        "weight_average/averages/0/.ATTRIBUTES/VARIABLE_VALUE",
        "weight_average/num_updates/.ATTRIBUTES/VARIABLE_VALUE",
      ],
    )
    restored_weight = tf.Variable([0.0, 0.0])
    restored = WeightAverage([restored_weight], decay=0.99)
    tf.train.Checkpoint(weight=restored_weight, weight_average=restored).restore(path).assert_consumed()
    for weights, averaging in ((weight, average), (restored_weight, restored)):
      weights.assign([7.0, -1.0])
      averaging.update()
    self.assertAllEqual(restored.averages[0], average.averages[0])
    self.assertEqual(int(restored.num_updates), 3)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"`decay` must be in \(0, 1\); got 1.0"):
      WeightAverage([tf.Variable(1.0)], 1.0)
    with self.assertRaisesRegex(ValueError, r"`weights` must hold at least one variable"):
      WeightAverage([], 0.9)


def tiny_trainer(ema_decay):
  return train_lib.Trainer(
    tf.distribute.get_strategy(),
    lambda: RealNVP.from_preset("digits", **TINY_MODEL),
    global_batch_size=8,
    ema_decay=ema_decay,
  )


class TrainerAverageTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    tf.random.set_seed(0)
    self.images = np.random.default_rng(1).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)

  def test_applied_steps_update_the_average_and_skipped_ones_do_not(self):
    trainer = tiny_trainer(ema_decay=0.9)
    weights = trainer.flow.trainable_variables
    history, initial = [], [w.numpy() for w in weights]
    for _ in range(3):
      _, applied = trainer.train_step(tf.constant(self.images))
      self.assertTrue(applied)
      history.append([w.numpy() for w in weights])
    for index in (0, len(weights) - 1):
      self.assertAllClose(
        trainer.weight_average.averages[index],
        expected_averages(initial[index], [h[index] for h in history], 0.9),
        rtol=1e-5,
        atol=1e-7,
      )
    before = [a.numpy() for a in trainer.weight_average.averages]
    poisoned = self.images.copy()
    poisoned[3, 4, 4, 0] = np.nan
    _, applied = trainer.train_step(tf.constant(poisoned))
    self.assertFalse(applied)
    self.assertEqual(int(trainer.weight_average.num_updates), 3)
    for old, new in zip(before, trainer.weight_average.averages):
      self.assertAllEqual(old, new)

  def test_evaluation_and_samples_use_the_averages_and_training_keeps_its_weights(self):
    trainer = tiny_trainer(ema_decay=0.9)
    for _ in range(3):
      trainer.train_step(tf.constant(self.images))
    raw = [w.numpy() for w in trainer.flow.trainable_variables]
    dataset = tf.data.Dataset.from_tensor_slices(self.images).batch(4)
    metrics = trainer.evaluate_metrics(dataset)
    grid = trainer.sample_grid(1.0, 8)
    for weight, value in zip(trainer.flow.trainable_variables, raw):
      self.assertAllEqual(weight, value)  # back to the training weights
    raw_bits_per_dim = float(tf.reduce_mean(trainer.flow.bits_per_dim(self.images)))
    trainer.weight_average.assign_to_weights()
    self.assertAllClose(
      metrics["bits_per_dim"], float(tf.reduce_mean(trainer.flow.bits_per_dim(self.images)))
    )
    self.assertNotAllClose(metrics["bits_per_dim"], raw_bits_per_dim)
    self.assertAllEqual(grid, trainer.sample_grid(1.0, 8))  # the averages again (now also the weights)

  def test_off_keeps_no_average_and_the_old_checkpoint_keys(self):
    trainer = tiny_trainer(ema_decay=0.0)
    self.assertIsNone(trainer.weight_average)
    path = trainer.checkpoint.save(os.path.join(self.get_temp_dir(), "ckpt"))
    self.assertFalse(any("weight_average" in name for name, _ in tf.train.list_variables(path)))


@pytest.mark.slow
class RunAverageTest(tf.test.TestCase):
  """A tiny training run with EMA: its restored and exported flow holds the averages."""

  def test_restore_flow_and_the_export_hold_the_averaged_weights(self):
    workdir = os.path.join(self.get_temp_dir(), "ema_run")
    config = tiny_config(ema_decay=0.9, eval_every_steps=0)
    result = train_lib.train_and_evaluate(config, workdir)
    path = tf.train.latest_checkpoint(checkpoints.checkpoint_dir(workdir))
    reader = tf.train.load_checkpoint(path)
    self.assertEqual(reader.get_tensor("weight_average/num_updates/.ATTRIBUTES/VARIABLE_VALUE"), 6)
    flow, _ = checkpoints.restore_flow(workdir)
    for index, weight in enumerate(flow.trainable_variables):
      self.assertAllEqual(
        weight, reader.get_tensor(f"weight_average/averages/{index}/.ATTRIBUTES/VARIABLE_VALUE")
      )
    # The checkpoint's flow holds the training weights, which differ from the averages.
    trained = flow_builder.build_flow(config)
    tf.train.Checkpoint(flow=trained).restore(path).expect_partial()
    self.assertNotAllClose(trained.trainable_variables[0], flow.trainable_variables[0])
    for restored, returned in zip(flow.variables, result.flow.variables):
      self.assertAllEqual(restored, returned)
    x = tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2], maxval=16.0)
    export_path = export.export_workdir(workdir, tempfile.mkdtemp(dir=self.get_temp_dir())).path
    exported = tf.saved_model.load(export_path).signatures["log_prob"](x=x)["log_prob"]
    self.assertAllClose(exported, flow.log_prob(x), rtol=1e-6)
    self.assertNotAllClose(exported, trained.log_prob(x))
