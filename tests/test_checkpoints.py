"""`checkpoints.restore` and `restore_flow`: what a checkpoint restores, and one-line errors when it does not fit."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tests.bijector_testing import perturb
from tests.fixtures import TINY_MODEL, tiny_config
from tfp_realnvp import checkpoints, configs, flow_builder
from tfp_realnvp.flows import RealNVP


def tiny_flow(**overrides):
  return RealNVP.from_preset("digits", **{**TINY_MODEL, **overrides})


class RestoreTest(tf.test.TestCase):
  def test_restores_every_variable_and_skips_values_it_does_not_hold(self):
    saved = tiny_flow()
    saved.log_prob(np.random.default_rng(0).uniform(0, 16, [8, 8, 8, 1]).astype(np.float32), training=True)
    perturb(saved, stddev=0.1)
    # A Trainer-like checkpoint: the flow and a step, of which only the flow is restored.
    step = tf.Variable(7, dtype=tf.int64)
    path = tf.train.Checkpoint(flow=saved, step=step).save(os.path.join(self.get_temp_dir(), "ckpt"))
    restored = tiny_flow()
    checkpoints.restore(tf.train.Checkpoint(flow=restored), path, "unused")
    for original, copy in zip(saved.variables, restored.variables):  # running averages included
      self.assertAllEqual(original, copy)

  def test_a_checkpoint_of_another_model_is_a_one_line_config_error(self):
    path = tf.train.Checkpoint(flow=tiny_flow(num_filters=4)).save(os.path.join(self.get_temp_dir(), "other"))
    with self.assertRaisesRegex(configs.ConfigError, r"^The checkpoint .* is not this flow's: \S") as raised:
      checkpoints.restore(
        tf.train.Checkpoint(flow=tiny_flow()), path, f"The checkpoint {path} is not this flow's"
      )
    self.assertNotIn("\n", str(raised.exception))

  def test_a_missing_checkpoint_is_a_one_line_config_error(self):
    path = os.path.join(self.get_temp_dir(), "no_such_ckpt-1")
    with self.assertRaisesRegex(configs.ConfigError, r"^No checkpoint at the path: \S") as raised:
      checkpoints.restore(tf.train.Checkpoint(flow=tiny_flow()), path, "No checkpoint at the path")
    self.assertNotIn("\n", str(raised.exception))


class RestoreFlowTest(tf.test.TestCase):
  def write_workdir(self, name, config, flow):
    workdir = os.path.join(self.get_temp_dir(), name)
    os.makedirs(workdir)
    with open(checkpoints.config_path(workdir), "w") as file:
      file.write(configs.to_json(config))
    manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(flow=flow), checkpoints.checkpoint_dir(workdir), 1
    )
    return workdir, manager.save(3)

  def test_the_flow_is_built_as_training_builds_it(self):
    config = tiny_config(compute_dtype="bfloat16")
    flow = flow_builder.build_flow(config)
    perturb(flow, stddev=0.1)
    workdir, saved = self.write_workdir("bfloat16", config, flow)
    restored, checkpoint = checkpoints.restore_flow(workdir)
    self.assertEqual(checkpoint, saved)
    self.assertEqual(tf.as_dtype(restored.compute_dtype), tf.bfloat16)  # the config's compute dtype
    x = np.random.default_rng(1).uniform(0, 16, [4, 8, 8, 1]).astype(np.float32)
    self.assertAllEqual(restored.log_prob(x), flow.log_prob(x))

  def test_a_config_whose_flow_does_not_fit_the_data_is_a_config_error(self):
    config = dataclasses.replace(tiny_config(), model_overrides={**TINY_MODEL, "num_bits": 5})
    workdir, _ = self.write_workdir("five_bits", config, tiny_flow(num_bits=5))
    with self.assertRaisesRegex(configs.ConfigError, r"models 5-bit images .* gives 4-bit images"):
      checkpoints.restore_flow(workdir)


if __name__ == "__main__":
  tf.test.main()
