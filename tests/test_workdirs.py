"""`workdirs`: a workdir that is a file, the lock of a run, and which config fields a resumed run may change."""

import dataclasses
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
from unittest import mock

import pytest
import tensorflow as tf
from absl.testing import parameterized

from tests.training_testing import TINY_MODEL, tiny_config
from tfp_realnvp.training import checkpoints, configs, workdirs


def dead_pid():
  """The pid of a process of this host that has ended."""
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def write_lock(workdir, pid, host=None):
  with open(workdirs.lock_path(workdir), "w") as file:
    json.dump({"pid": pid, "host": host or socket.gethostname()}, file)


class CreateTest(tf.test.TestCase):
  def test_a_workdir_that_is_a_file_is_a_one_line_config_error(self):
    path = os.path.join(self.get_temp_dir(), "a_file")
    open(path, "w").close()
    with self.assertRaisesRegex(configs.ConfigError, rf"^`workdir` must be a directory; {path} is a file\.$"):
      workdirs.create(path)

  def test_a_workdir_that_cannot_be_created_is_a_one_line_config_error(self):
    # Root may write anywhere, so "unwritable" is a path under a file.
    parent = os.path.join(self.get_temp_dir(), "parent_file")
    open(parent, "w").close()
    with self.assertRaisesRegex(
      configs.ConfigError, r"^`workdir` .*/parent_file/run cannot be created: \S"
    ) as raised:
      workdirs.create(os.path.join(parent, "run"))
    self.assertNotIn("\n", str(raised.exception))


class LockTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.get_temp_dir(), self.id().rsplit(".", 1)[1])
    os.makedirs(self.workdir)

  def test_the_lock_names_its_holder_and_is_removed_on_exit_and_on_exceptions(self):
    with workdirs.lock(self.workdir) as stale:
      self.assertIsNone(stale)
      with open(workdirs.lock_path(self.workdir)) as file:
        self.assertEqual(json.load(file), {"pid": os.getpid(), "host": socket.gethostname()})
    self.assertFalse(os.path.exists(workdirs.lock_path(self.workdir)))
    with self.assertRaisesRegex(RuntimeError, "inside"):
      with workdirs.lock(self.workdir):
        raise RuntimeError("inside")
    self.assertFalse(os.path.exists(workdirs.lock_path(self.workdir)))

  def test_a_lock_held_by_a_live_process_is_refused_naming_it(self):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
      write_lock(self.workdir, holder.pid)
      with self.assertRaisesRegex(
        configs.ConfigError,
        rf"^`workdir` {self.workdir} is in use by process {holder.pid} on host {socket.gethostname()} ",
      ) as raised:
        with workdirs.lock(self.workdir):
          self.fail("entered a held lock")
    finally:
      holder.kill()
      holder.wait()
    self.assertNotIn("\n", str(raised.exception))
    with open(workdirs.lock_path(self.workdir)) as file:
      self.assertEqual(json.load(file)["pid"], holder.pid)  # the holder's lock is left alone

  def test_a_lock_of_another_host_is_refused(self):
    write_lock(self.workdir, dead_pid(), host="another-host.example")
    with self.assertRaisesRegex(configs.ConfigError, r"in use by process \d+ on host another-host\.example"):
      with workdirs.lock(self.workdir):
        pass

  def test_a_stale_lock_of_a_dead_process_is_taken_over(self):
    pid = dead_pid()
    write_lock(self.workdir, pid)
    with workdirs.lock(self.workdir) as stale:
      self.assertEqual(stale, {"pid": pid, "host": socket.gethostname()})
      with open(workdirs.lock_path(self.workdir)) as file:
        self.assertEqual(json.load(file)["pid"], os.getpid())
    self.assertFalse(os.path.exists(workdirs.lock_path(self.workdir)))

  def test_an_unreadable_lock_is_refused(self):
    with open(workdirs.lock_path(self.workdir), "w") as file:
      file.write("{")
    with self.assertRaisesRegex(configs.ConfigError, r"^The lock file .*lock\.json is not a run's"):
      with workdirs.lock(self.workdir):
        pass


def _race_for_the_lock(workdir, barrier, result_path, seed):
  """A forked run: waits for the others, then takes the lock of `workdir` (its stale-lock check slowed by a
  random 0-20 ms, which widens every window between reading the lock and taking it over) and holds it 0.3 s;
  writes `[pid, acquired, released, error]` to `result_path` (monotonic seconds, the same clock in every
  process)."""
  rng = random.Random(seed)
  is_stale = workdirs._is_stale

  def slow_is_stale(holder):
    stale = is_stale(holder)
    time.sleep(rng.uniform(0.0, 0.02))
    return stale

  def report(*outcome):
    with open(result_path, "w") as file:
      json.dump([os.getpid(), *outcome], file)

  try:
    barrier.wait(timeout=30)
    with mock.patch.object(workdirs, "_is_stale", slow_is_stale):
      with workdirs.lock(workdir):
        acquired = time.monotonic()
        time.sleep(0.3)
        with open(workdirs.lock_path(workdir)) as file:
          still_mine = json.load(file)["pid"] == os.getpid()
        released = time.monotonic()
    report(acquired, released, None if still_mine else "lock file replaced while held")
  except configs.ConfigError as error:
    report(None, None, str(error))
  except BaseException as error:  # noqa: BLE001 - reported to the test
    report(None, None, f"crash: {type(error).__name__}: {error}")
  finally:
    os._exit(0)


@pytest.mark.slow  # runs in fresh processes
class LockRaceTest(tf.test.TestCase):
  def test_four_runs_started_together_on_a_stale_lock_have_exactly_one_holder(self):
    # Forked: no TensorFlow start-up per run; the lock itself uses only the os module for local paths.
    context = multiprocessing.get_context("fork")
    trials, holders_per_trial = 20, []
    for trial in range(trials):
      workdir = os.path.join(self.get_temp_dir(), f"race_{trial}")
      os.makedirs(workdir)
      write_lock(workdir, dead_pid())
      barrier = context.Barrier(4)
      result_paths = [os.path.join(self.get_temp_dir(), f"race_{trial}_{index}.json") for index in range(4)]
      processes = [
        context.Process(target=_race_for_the_lock, args=(workdir, barrier, path, 100 * trial + index))
        for index, path in enumerate(result_paths)
      ]
      for process in processes:
        process.start()
      for process in processes:
        process.join(timeout=60)
      outcomes = []
      for path in result_paths:
        with open(path) as file:
          outcomes.append(json.load(file))
      holders = [outcome for outcome in outcomes if outcome[1] is not None]
      errors = [outcome[3] for outcome in outcomes if outcome[1] is None]
      for message in errors:
        self.assertRegex(message, r"^`workdir` .* is in use by process \d+", (trial, outcomes))
      for outcome in holders:
        self.assertIsNone(outcome[3], (trial, outcomes))
      holders_per_trial.append(len(holders))
      # Held one after the other, never at once.
      intervals = sorted((outcome[1], outcome[2]) for outcome in holders)
      for (_, released), (acquired, _) in zip(intervals, intervals[1:]):
        self.assertLess(released, acquired, (trial, outcomes))
      self.assertFalse(os.path.exists(workdirs.lock_path(workdir)))  # released, no stale lock left
      self.assertEqual(sorted(os.listdir(workdir)), [])  # nor private files
    self.assertEqual(holders_per_trial, [1] * trials)

  def test_a_lock_naming_an_impossible_pid_is_one_error_line(self):
    workdir = os.path.join(self.get_temp_dir(), "huge_pid")
    os.makedirs(workdir)
    write_lock(workdir, 2**40)
    with self.assertRaisesRegex(
      configs.ConfigError, r"^The lock file .*lock\.json is not a run's .*a pid in \[1, 2147483647\]\); got"
    ):
      with workdirs.lock(workdir):
        pass


class CheckConfigTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.get_temp_dir(), self.id().rsplit(".", 1)[1])
    os.makedirs(self.workdir)
    self.config = tiny_config()
    with open(checkpoints.config_path(self.workdir), "w") as file:
      file.write(configs.to_json(self.config))

  def test_only_data_and_model_fields_are_fixed_and_only_optimization_fields_need_the_flag(self):
    by_kind = {}
    for field in dataclasses.fields(configs.TrainConfig):
      by_kind.setdefault(field.metadata["on_resume"], set()).add(field.name)
    self.assertEqual(
      by_kind[configs.FIXED],
      {
        "dataset",
        "data_dir",
        "image_size",
        "train_split",
        "eval_split",
        "preset",
        "model_overrides",
        "compute_dtype",
        "condition",
        "context_enters",
        "logit_alpha",
        "ema_decay",
        "dequantization",
      },
    )
    self.assertEqual(
      by_kind[configs.WITH_FLAG],
      {
        "batch_size",
        "learning_rate",
        "warmup_steps",
        "learning_rate_decay",
        "l2_coefficient",
        "label_dropout",
        "class_loss_weight",
        "clip_global_norm",
        "seed",
      },
    )

  def test_no_config_json_or_the_same_config(self):
    self.assertTrue(workdirs.check_config(self.config, os.path.join(self.get_temp_dir(), "new")))
    self.assertFalse(workdirs.check_config(self.config, self.workdir))

  def test_loop_and_output_settings_and_the_number_of_steps_may_change(self):
    changed = dataclasses.replace(
      self.config, num_train_steps=60, eval_every_steps=0, sample_temperatures=(1.0,)
    )
    self.assertTrue(workdirs.check_config(changed, self.workdir))

  def test_optimization_settings_change_only_when_allowed(self):
    changed = dataclasses.replace(self.config, learning_rate=0.01, batch_size=32)
    with self.assertRaisesRegex(
      configs.ConfigError,
      r"^The config differs from the run in .*config\.json: batch_size 16 -> 32, learning_rate 0\.001 -> 0\.01 "
      r"would change the optimization \(allow it with --allow_config_change=batch_size,learning_rate\)\.$",
    ):
      workdirs.check_config(changed, self.workdir)
    self.assertTrue(workdirs.check_config(changed, self.workdir, ("learning_rate", "batch_size")))

  @parameterized.named_parameters(
    ("model", dict(model_overrides={**TINY_MODEL, "num_blocks": 2}), r"model_overrides \{.*\} -> \{.*\}"),
    ("data", dict(dataset="mnist"), r"dataset 'digits' -> 'mnist'"),
    ("compute_dtype", dict(compute_dtype="bfloat16"), r"compute_dtype None -> 'bfloat16'"),
  )
  def test_model_and_data_never_change(self, changes, named):
    with self.assertRaisesRegex(
      configs.ConfigError, rf"differs from the run in .*: {named} would change the model or the data"
    ):
      workdirs.check_config(dataclasses.replace(self.config, **changes), self.workdir, ("learning_rate",))

  @parameterized.named_parameters(("fixed", "model_overrides"), ("unknown", "no_such_field"))
  def test_allow_config_change_names_only_optimization_fields(self, name):
    with self.assertRaisesRegex(
      configs.ConfigError, rf"^`allow_config_change` must name fields among batch_size, .*; got '{name}'\.$"
    ):
      workdirs.check_config(self.config, self.workdir, (name,))


if __name__ == "__main__":
  tf.test.main()
