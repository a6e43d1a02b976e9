"""Checkpoints written before the architecture change (commit 968b41f) still restore and export the same flow.

`tests/data/digits_workdir_968b41f` was written by that commit's code: a `digits` run trained 40 steps (its
`config.json`), the flow's checkpoint in the Trainer's layout (`root.flow`), the flow's `log_prob`/`encode`
of eight fixed images in memory and through its SavedModel export (`reference.npz`), and the variable keys of
the full Trainer checkpoint (flow, optimizer, step) that commit wrote (`trainer_checkpoint_keys.txt`).
"""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from tests.workdir_testing import OLD_DIGITS_WORKDIR
from tfp_realnvp.serving import export
from tfp_realnvp.training import checkpoints, configs, train_lib

FIXTURE = OLD_DIGITS_WORKDIR


class CheckpointCompatibilityTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.reference = np.load(os.path.join(FIXTURE, "reference.npz"))

  def test_old_checkpoint_restores_the_same_flow(self):
    flow, _ = checkpoints.restore_flow(FIXTURE)
    x = self.reference["x"]
    np.testing.assert_allclose(flow.log_prob(x).numpy(), self.reference["log_prob"], rtol=1e-6)
    np.testing.assert_allclose(flow.encode(x).numpy(), self.reference["z"], rtol=1e-5, atol=1e-5)

  @pytest.mark.slow
  def test_export_from_old_checkpoint_matches_old_export(self):
    export_base = tempfile.mkdtemp(dir=self.get_temp_dir())
    path = export.export_workdir(FIXTURE, export_base).path
    loaded = tf.saved_model.load(path)
    log_prob = loaded.signatures["log_prob"](x=tf.constant(self.reference["x"]))["log_prob"].numpy()
    np.testing.assert_allclose(log_prob, self.reference["export_log_prob"], rtol=1e-6)

  def test_trainer_writes_the_old_checkpoint_keys(self):
    with open(os.path.join(FIXTURE, "config.json")) as file:
      config = configs.from_json(file.read())
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    trainer = train_lib.build_trainer(config)  # the flow of `flow_builder.build_flow`, as in training
    path = trainer.checkpoint.save(os.path.join(workdir, "ckpt"))
    keys = sorted(name for name, _ in tf.train.list_variables(path))
    with open(os.path.join(FIXTURE, "trainer_checkpoint_keys.txt")) as file:
      old_keys = file.read().split()
    self.assertEqual(keys, old_keys)


if __name__ == "__main__":
  tf.test.main()
