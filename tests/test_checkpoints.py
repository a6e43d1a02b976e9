"""`checkpoints.restore` and `restore_flow`: what a checkpoint restores, and one-line errors when it does not fit."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tests.bijector_testing import perturb
from tests.training_testing import REPO_ROOT, TINY_MODEL, script_environment, tiny_config
from tests.workdir_testing import assert_checkpoint_does_not_fit, truncate, write_workdir
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import checkpoints, configs, flow_builder, train_lib


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

  def test_a_checkpoint_of_a_larger_flow_is_a_one_line_config_error(self):
    # Every variable of the one-block flow is in the two-block checkpoint, but the second block is left over.
    path = tf.train.Checkpoint(flow=tiny_flow(num_blocks=2)).save(os.path.join(self.get_temp_dir(), "larger"))
    with self.assertRaisesRegex(
      configs.ConfigError,
      r"^Not this flow: the checkpoint holds \d+ variable\(s\) of a larger flow than this one, ",
    ) as raised:
      checkpoints.restore(tf.train.Checkpoint(flow=tiny_flow()), path, "Not this flow")
    self.assertNotIn("\n", str(raised.exception))

  def test_the_optimizer_slots_of_a_trainer_checkpoint_are_not_left_over_flow_variables(self):
    trainer = train_lib.build_trainer(tiny_config())  # Adam's slots are built for every flow variable
    path = trainer.checkpoint.save(os.path.join(self.get_temp_dir(), "trainer"))
    checkpoints.restore(tf.train.Checkpoint(flow=tiny_flow()), path, "unused")

  def test_a_missing_checkpoint_is_a_one_line_config_error(self):
    path = os.path.join(self.get_temp_dir(), "no_such_ckpt-1")
    with self.assertRaisesRegex(configs.ConfigError, r"^No checkpoint at the path: \S") as raised:
      checkpoints.restore(tf.train.Checkpoint(flow=tiny_flow()), path, "No checkpoint at the path")
    self.assertNotIn("\n", str(raised.exception))


class ReadErrorTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(("index", ".index"), ("data", ".data-00000-of-00001"))
  def test_a_truncated_file_is_named(self, suffix):
    path = tf.train.Checkpoint(flow=tiny_flow()).save(os.path.join(self.get_temp_dir(), "ckpt"))
    self.assertIsNone(checkpoints.read_error(path))
    truncate(path + suffix)
    error = checkpoints.read_error(path)
    self.assertRegex(error, rf"^{path}{suffix} cannot be read: \S")
    self.assertNotIn("\n", error)
    with self.assertRaisesRegex(configs.ConfigError, rf"^The checkpoint {path} is corrupt: {path}{suffix} "):
      checkpoints.restore(tf.train.Checkpoint(flow=tiny_flow()), path, "unused")

  def test_newest_intact_skips_the_corrupt_newer_ones(self):
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(flow=tiny_flow()), self.get_temp_dir(), 3)
    first, second, third = manager.save(1), manager.save(2), manager.save(3)
    self.assertEqual(checkpoints.newest_intact(self.get_temp_dir()), (third, []))
    truncate(third + ".index")
    truncate(second + ".data-00000-of-00001")
    path, skipped = checkpoints.newest_intact(self.get_temp_dir())
    self.assertEqual(path, first)
    self.assertEqual([skipped_path for skipped_path, _ in skipped], [third, second])
    self.assertEqual(checkpoints.newest_intact(os.path.join(self.get_temp_dir(), "none")), (None, []))


class RestoreFlowTest(tf.test.TestCase, parameterized.TestCase):
  def write_workdir(self, name, config, flow, num_checkpoints=1):
    workdir = os.path.join(self.get_temp_dir(), name)
    # A flow-only checkpoint: no EMA, no learned dequantizer.
    config = dataclasses.replace(config, ema_decay=0.0, dequantization="uniform")
    saved = write_workdir(workdir, config, steps=range(3, 3 + num_checkpoints), flow=flow)
    return workdir, saved

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

  def test_an_export_from_a_workdir_whose_config_no_longer_matches_its_checkpoint_fails(self):
    # config.json says one residual block, the checkpoint holds two: no silent export of a smaller model.
    workdir, saved = self.write_workdir("edited_config", tiny_config(), tiny_flow(num_blocks=2))
    assert_checkpoint_does_not_fit(
      self, checkpoints.restore_flow, workdir, saved, r": the checkpoint holds \d+ "
    )

  @parameterized.named_parameters(
    ("unknown", lambda values: {**values, "num_layers": 3}, r"unknown key\(s\) num_layers"),
    (
      "missing",
      lambda values: {k: v for k, v in values.items() if k != "num_samples"},
      r"missing key\(s\) num_samples",
    ),
  )
  def test_a_config_json_with_an_unknown_or_missing_key_is_a_config_error_naming_it(self, edit, named):
    workdir, _ = self.write_workdir("edited_keys", tiny_config(), tiny_flow())
    path = checkpoints.config_path(workdir)
    with open(path) as file:
      values = json.load(file)
    with open(path, "w") as file:
      json.dump(edit(values), file)
    with self.assertRaisesRegex(
      configs.ConfigError, rf"^{path} must hold exactly the fields of TrainConfig; it has {named}\.$"
    ):
      checkpoints.restore_flow(workdir)

  def test_a_corrupt_latest_checkpoint_is_refused_naming_the_newest_intact_one(self):
    workdir, saved = self.write_workdir("corrupt", tiny_config(), tiny_flow(), num_checkpoints=2)
    truncate(saved + ".data-00000-of-00001")
    previous = os.path.join(checkpoints.checkpoint_dir(workdir), "ckpt-3")
    with self.assertRaisesRegex(
      configs.ConfigError,
      rf"^The latest checkpoint is corrupt: {saved}\.data-00000-of-00001 cannot be read: .*; pass "
      rf"checkpoint={previous}, the newest intact one\.$",
    ):
      checkpoints.restore_flow(workdir)
    flow, checkpoint = checkpoints.restore_flow(workdir, previous)
    self.assertEqual(checkpoint, previous)


@pytest.mark.slow
class ExportCommandLineTest(tf.test.TestCase):
  def test_a_config_json_with_an_unknown_key_is_one_error_line_and_status_2(self):
    workdir = os.path.join(self.get_temp_dir(), "unknown_key")
    os.makedirs(workdir)
    with open(checkpoints.config_path(workdir), "w") as file:
      json.dump({**json.loads(configs.to_json(tiny_config())), "num_layers": 3}, file)
    completed = subprocess.run(
      [
        sys.executable,
        os.path.join(REPO_ROOT, "export", "export_model.py"),
        f"--workdir={workdir}",
        f"--export_base={self.get_temp_dir()}/exports",
      ],
      env=script_environment(),
      capture_output=True,
      text=True,
      timeout=180,
    )
    self.assertEqual(completed.returncode, 2, completed.stderr)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    self.assertLen(errors, 1)
    self.assertRegex(
      errors[0],
      r"^error: .*config\.json must hold exactly the fields of TrainConfig; it has unknown key\(s\) num_layers\.$",
    )
    self.assertNotIn("Traceback", completed.stderr)


if __name__ == "__main__":
  tf.test.main()
