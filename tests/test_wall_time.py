"""The training's wall time across the runs of a workdir: the budget (`max_train_minutes`), the record that a
resumed run continues, and the validation curve against it."""

import dataclasses
import glob
import json
import os
import tempfile

import pytest
import tensorflow as tf

from tests.training_testing import tiny_config
from tfp_realnvp.training import configs, train_lib, wall_time


class RecordTest(tf.test.TestCase):
  def test_record_resumes_from_the_step_and_drops_later_entries(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    self.assertEqual(wall_time.seconds_at(workdir, 5), 0.0)  # a workdir older than the record
    wall_time.record(workdir, 3, 10.0)
    wall_time.record(workdir, 6, 25.5)
    self.assertEqual(wall_time.seconds_at(workdir, 6), 25.5)
    self.assertEqual(wall_time.seconds_at(workdir, 5), 10.0)  # resumed from an older checkpoint
    wall_time.record(workdir, 4, 12.0)
    self.assertEqual(wall_time.read_record(workdir), {3: 10.0, 4: 12.0})

  def test_truncate_keeps_the_steps_a_resumed_run_does_not_repeat(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    for step, final in ((2, False), (4, False), (4, True), (6, False)):
      wall_time.append_validation(workdir, dict(step=step, train_seconds=step, bits_per_dim=1.0, final=final))
    wall_time.truncate_validation(workdir, 4)
    self.assertEqual(
      [(c["step"], c["final"]) for c in wall_time.validation_curve(workdir)], [(2, False), (4, False)]
    )
    with self.assertRaisesRegex(FileNotFoundError, "has not evaluated yet"):
      wall_time.validation_curve(os.path.join(workdir, "none"))

  def test_clock_adds_the_earlier_runs_and_stops(self):
    clock = wall_time.Clock(100.0)
    self.assertEqual(clock.seconds(), 100.0)
    clock.start()
    self.assertGreater(clock.seconds(), 100.0)
    clock.stop()
    self.assertEqual(clock.seconds(), clock.seconds())


class BudgetTest(tf.test.TestCase):
  @pytest.mark.slow
  def test_budget_stops_the_run_which_ends_as_usual_and_resumes_within_the_total(self):
    workdir = tempfile.mkdtemp(dir=self.get_temp_dir())
    config = tiny_config(num_train_steps=50, max_train_minutes=1e-9, eval_every_steps=1)
    result = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(result.step, 1)  # the first step is past the budget
    self.assertTrue(os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-1.index")))
    self.assertTrue(os.path.exists(os.path.join(workdir, "samples.png")))
    spent = result.metrics["train_seconds"]
    self.assertGreater(spent, 0.0)
    self.assertEqual(wall_time.read_record(workdir), {1: spent})
    curve = wall_time.validation_curve(workdir)
    self.assertEqual([(c["step"], c["final"]) for c in curve], [(1, True)])
    self.assertEqual(curve[0]["bits_per_dim"], result.metrics["test_bits_per_dim"])
    self.assertEqual(curve[0]["train_seconds"], spent)

    # The same command again: the budget is spent, so it only evaluates, with the same figures.
    again = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(again.step, 1)
    self.assertEqual(again.metrics, result.metrics)

    # A larger budget (a FREE change) goes on, the clock continuing from the recorded seconds.
    longer = dataclasses.replace(config, max_train_minutes=None, num_train_steps=3)
    resumed = train_lib.train_and_evaluate(longer, workdir)
    self.assertEqual(resumed.step, 3)
    curve = wall_time.validation_curve(workdir)
    self.assertEqual([(c["step"], c["final"]) for c in curve], [(2, False), (3, True)])
    seconds = [c["train_seconds"] for c in curve]
    self.assertGreater(seconds[0], spent)
    self.assertLessEqual(seconds[0], seconds[1])
    self.assertEqual(resumed.metrics["train_seconds"], seconds[1])
    events = glob.glob(os.path.join(workdir, "tensorboard", "eval", "events.*"))
    tags = {
      value.tag
      for path in events
      for event in tf.compat.v1.train.summary_iterator(path)
      for value in event.summary.value
    }
    self.assertIn("train_seconds", tags)

  def test_budget_must_be_positive(self):
    with self.assertRaisesRegex(configs.ConfigError, "max_train_minutes"):
      tiny_config(max_train_minutes=0).validate()
    self.assertEqual(json.loads(configs.to_json(tiny_config()))["max_train_minutes"], None)


if __name__ == "__main__":
  tf.test.main()
