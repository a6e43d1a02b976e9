"""A finished workdir evaluated once on another split: K = 1 over every image, importance-weighted over every
image or the first N, from Python and from `train.py --evaluate_only`."""

import json
import os
import tempfile

import pytest
import tensorflow as tf

from tests.training_testing import run_script, tiny_config
from tfp_realnvp.training import configs, train_lib, workdir_evaluation


class WorkdirEvaluationTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp()
    # Validated on train[1200:]; the test split is evaluated only afterwards.
    config = tiny_config(train_split="train[:1200]", eval_split="test", batch_norm_batches=2, ema_decay=0.5)
    cls.metrics = train_lib.train_and_evaluate(config, cls.workdir).metrics

  def test_test_split_figures_are_the_runs_own_and_the_cap_is_stated(self):
    report = workdir_evaluation.evaluate_workdir(self.workdir, "test", 2)
    self.assertEqual((report["split"], report["step"]), ("test", 6))
    self.assertIn("re-estimated", report["batch_norm"])
    k1, k2 = report["figures"]
    self.assertEqual((k1["num_importance_samples"], k2["num_importance_samples"]), (1, 2))
    self.assertEqual(k1["num_examples"], self.metrics["num_test_examples"])
    self.assertAllClose(k1["bits_per_dim"], self.metrics["test_bits_per_dim"], rtol=1e-6)
    self.assertAllClose(k2["bits_per_dim"], self.metrics["test_bits_per_dim_k2"], rtol=1e-6)
    self.assertIn("K = 1", k1["bound"])
    self.assertIn("importance-weighted", k2["bound"])
    self.assertTrue(k2["all_images"])
    self.assertGreater(k1["images_per_sec"], 0)

    capped = workdir_evaluation.evaluate_workdir(self.workdir, "test", 2, max_importance_images=20)
    k1_capped, k2_capped = capped["figures"]
    self.assertEqual(k1_capped["num_examples"], k1["num_examples"])  # K = 1 is always over every image
    self.assertEqual(k2_capped["num_examples"], 20)
    self.assertFalse(k2_capped["all_images"])

  def test_bad_arguments_are_config_errors(self):
    with self.assertRaisesRegex(configs.ConfigError, "num_importance_samples"):
      workdir_evaluation.evaluate_workdir(self.workdir, "test", 0)
    with self.assertRaisesRegex(configs.ConfigError, "max_importance_images"):
      workdir_evaluation.evaluate_workdir(self.workdir, "test", 2, max_importance_images=0)
    with self.assertRaises(FileNotFoundError):
      workdir_evaluation.evaluate_workdir(os.path.join(self.workdir, "none"), "test")

  @pytest.mark.slow
  def test_train_py_evaluate_only_prints_the_report(self):
    result = run_script(
      "train.py",
      f"--workdir={self.workdir}",
      "--evaluate_only",
      "--eval_split=test[:30]",
      "--num_importance_samples=2",
      "--max_importance_images=10",
      timeout=240,
    )
    self.assertEqual(result.returncode, 0, result.stderr)
    report = json.loads(result.stdout)
    self.assertEqual(report["split"], "test[:30]")
    self.assertEqual([f["num_examples"] for f in report["figures"]], [30, 10])
    missing = run_script("train.py", f"--workdir={self.workdir}", "--evaluate_only", timeout=240)
    self.assertEqual(missing.returncode, 2)
    self.assertIn("--eval_split", missing.stderr)


@pytest.mark.slow
class StatisticsForOldRunsTest(tf.test.TestCase):
  def test_a_run_without_statistics_is_evaluated_as_one_that_kept_them(self):
    # Training does not depend on `batch_norm_batches`: the two runs have the same weights and running
    # averages, and only the second keeps statistics re-estimated for its evaluated (EMA) weights.
    common = dict(train_split="train[:1200]", eval_split="test[:40]", ema_decay=0.5)
    without, kept = tempfile.mkdtemp(), tempfile.mkdtemp()
    train_lib.train_and_evaluate(tiny_config(batch_norm_batches=0, **common), without)
    train_lib.train_and_evaluate(tiny_config(batch_norm_batches=2, **common), kept)
    reference = workdir_evaluation.evaluate_workdir(kept, "test[:40]")
    stale = workdir_evaluation.evaluate_workdir(without, "test[:40]")
    estimated = workdir_evaluation.evaluate_workdir(without, "test[:40]", batch_norm_batches=2)
    self.assertEqual(stale["batch_norm"], "training running averages")
    self.assertIn(
      "re-estimated for the evaluated weights (now, from 2 training batches)", estimated["batch_norm"]
    )
    self.assertAllClose(
      estimated["figures"][0]["bits_per_dim"], reference["figures"][0]["bits_per_dim"], rtol=1e-6
    )
    self.assertNotAllClose(
      stale["figures"][0]["bits_per_dim"], reference["figures"][0]["bits_per_dim"], rtol=1e-4
    )
    with self.assertRaisesRegex(configs.ConfigError, "batch_norm_batches"):
      workdir_evaluation.evaluate_workdir(without, "test[:40]", batch_norm_batches=-1)


if __name__ == "__main__":
  tf.test.main()
