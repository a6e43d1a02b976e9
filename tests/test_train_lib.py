"""`train_and_evaluate` end to end on tiny flows: outputs, evaluation, resuming, non-finite steps, tfds mocks."""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized
from PIL import Image

from tests import idx_testing, training_testing
from tests.training_testing import TINY_MODEL, run_script, short_config, short_run, tiny_config
from tests.workdir_testing import checkpoint_values_by_name, run, truncate
from tfp_realnvp import data, dequantization
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import configs, reporting, train_lib, workdirs


def file_hashes(directory):
  """`{relative path: sha256}` of every file under `directory`."""
  hashes = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(parent, name), "rb") as file:
        hashes[os.path.relpath(os.path.join(parent, name), directory)] = hashlib.sha256(
          file.read()
        ).hexdigest()
  return hashes


def summary_values(workdir, run):
  """`{tag: [(step, plugin name, tensor proto)]}` of the TensorBoard run `run` (`''`: the top directory)."""
  values = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, "tensorboard", run, "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values.setdefault(value.tag, []).append(
          (event.step, value.metadata.plugin_data.plugin_name, value.tensor)
        )
  return values


def summary_tags(workdir, run):
  """`{tag: [(step, plugin name)]}` of the TensorBoard run `run`."""
  return {
    tag: [(step, plugin) for step, plugin, _ in events]
    for tag, events in summary_values(workdir, run).items()
  }


@pytest.mark.slow
class DigitsRunTest(tf.test.TestCase, parameterized.TestCase):
  """One tiny digits run of 6 steps, shared by the tests below, then a rerun of the same command."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(tf.compat.v1.test.get_temp_dir(), "digits")
    cls.config = tiny_config()
    cls.result, cls.lines = run(cls.config, cls.workdir)

  def test_log_lines_are_stable(self):
    train_lines = [line for line in self.lines if line.startswith("train |")]
    self.assertLen(train_lines, 3)  # steps 2, 4, 6
    for step, line in zip((2, 4, 6), train_lines):
      self.assertRegex(
        line, rf"^train \| step: {step} \| steps/sec: \d+\.\d\d \| bits_per_dim: \d+\.\d{{4}}$"
      )
    self.assertRegex(
      "\n".join(self.lines),
      r"(?m)^eval \| step: 4 \| bits_per_dim: \d+\.\d{4} \| examples: 297 \| train_seconds: \d+\.\d+$",
    )
    self.assertRegex(
      "\n".join(self.lines),
      r"(?m)^test \| step: 6 \| split: test \| bits_per_dim: \d+\.\d{4} \| examples: 297$",
    )
    self.assertNotIn("\r", "\n".join(self.lines))  # no progress bar when stdout is not a terminal

  def test_workdir_holds_config_metrics_samples_and_checkpoints(self):
    with open(os.path.join(self.workdir, "config.json")) as file:
      self.assertEqual(configs.from_json(file.read()), self.config)
    with open(os.path.join(self.workdir, "metrics.json")) as file:
      metrics = json.load(file)
    self.assertEqual(metrics, self.result.metrics)
    self.assertEqual(
      set(metrics),
      {
        "dataset",
        "split",
        "step",
        "train_seconds",
        "test_bits_per_dim",
        "num_test_examples",
        "dequantization",
        "num_importance_samples",
        "test_bits_per_dim_k2",
      },
    )
    self.assertEqual(metrics["step"], 6)
    self.assertEqual(metrics["num_test_examples"], 297)
    self.assertEqual((metrics["dequantization"], metrics["num_importance_samples"]), ("variational", 2))
    self.assertLess(metrics["test_bits_per_dim_k2"], metrics["test_bits_per_dim"])
    with Image.open(os.path.join(self.workdir, "samples.png")) as png:
      self.assertEqual(png.format, "PNG")
      self.assertGreater(png.width, png.height)  # two panels side by side: temperatures 1.0 and 0.7
      self.assertEqual(png.height, 480)  # 450 for the panels, 30 for the `step | test bits/dim` headline
    checkpoints = tf.train.get_checkpoint_state(os.path.join(self.workdir, "checkpoints"))
    self.assertEqual(
      [os.path.basename(path) for path in checkpoints.all_model_checkpoint_paths], ["ckpt-3", "ckpt-6"]
    )

  def test_tensorboard_has_train_and_eval_runs_with_the_same_scalar_tags(self):
    # One run per phase with the same tags, so TensorBoard overlays the train and eval bits/dim curves.
    self.assertEqual(summary_tags(self.workdir, ""), {})
    train, evaluation = summary_tags(self.workdir, "train"), summary_tags(self.workdir, "eval")
    self.assertEqual(train["bits_per_dim"], [(2, "scalars"), (4, "scalars"), (6, "scalars")])
    self.assertEqual([step for step, _ in train["steps_per_sec"]], [2, 4, 6])
    self.assertEqual([step for step, _ in train["learning_rate"]], [2, 4, 6])
    self.assertEqual(evaluation["bits_per_dim"], [(4, "scalars"), (6, "scalars")])

  def test_tensorboard_has_sample_images_by_step_and_the_config_once(self):
    evaluation = summary_values(self.workdir, "eval")
    images = {tag: [(step, plugin) for step, plugin, _ in events] for tag, events in evaluation.items()}
    self.assertEqual(images["samples/temperature_1.0/step_4"], [(4, "images")])
    self.assertEqual(images["samples/temperature_1.0/step_6"], [(6, "images")])
    self.assertEqual(images["samples/temperature_0.7/step_6"], [(6, "images")])
    width, height, png = evaluation["samples/temperature_1.0/step_6"][0][2].string_val
    self.assertGreaterEqual(int(width), 320)  # 8x8 digits enlarged to be seen
    self.assertEqual(tf.image.decode_png(png).shape[:2], (int(height), int(width)))
    [(step, plugin, text)] = summary_values(self.workdir, "train")["config"]
    self.assertEqual((step, plugin), (0, "text"))
    self.assertIn('"num_train_steps": 6', text.string_val[0].decode())

  def test_test_bits_per_dim_is_the_inference_mode_mean_over_the_whole_split(self):
    # The default dequantizer is variational: the figure is its bound, with the checkpoint's `q(u | v)`.
    self.assertEqual(self.result.metrics["dequantization"], "variational")
    flow = self.result.flow
    dequantizer = train_lib.build_trainer(self.config).dequantizer
    tf.train.Checkpoint(dequantizer=dequantizer).restore(
      tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints"))
    ).expect_partial().assert_existing_objects_matched()
    averages = [variable.numpy() for variable in flow.variables if not variable.trainable]
    bits_per_dim = [
      dequantization.variational_bits_per_dim(flow, dequantizer, batch, training=False).numpy()
      for batch in data.load("digits", "test", batch_size=100, training=False)
    ]
    bits_per_dim = np.concatenate(bits_per_dim)
    self.assertLen(bits_per_dim, 297)
    self.assertAllClose(self.result.metrics["test_bits_per_dim"], bits_per_dim.mean(), rtol=1e-6)
    # Evaluation left the batch-norm running averages alone.
    for before, variable in zip(
      averages, [variable for variable in flow.variables if not variable.trainable]
    ):
      self.assertAllEqual(before, variable)

  def test_rerunning_the_same_command_resumes_with_the_same_step_and_weights(self):
    workdir = os.path.join(self.get_temp_dir(), "rerun")
    shutil.copytree(self.workdir, workdir)  # the other tests read the original
    result, lines = run(self.config, workdir)
    self.assertRegex(lines[0], r"^resume \| step: 6 \| checkpoint: .*ckpt-6$")
    self.assertEmpty([line for line in lines if line.startswith("train |")])  # nothing left to train
    self.assertEqual(result.step, 6)
    for before, after in zip(self.result.flow.variables, result.flow.variables):
      self.assertAllEqual(before, after)
    self.assertEqual(result.metrics, self.result.metrics)

  def copy_of_the_run(self, name):
    workdir = os.path.join(self.get_temp_dir(), name)
    shutil.copytree(self.workdir, workdir)  # the other tests read the original
    return workdir

  @parameterized.named_parameters(
    (
      "model",
      dict(model_overrides={**TINY_MODEL, "num_filters": 4}),
      (),
      r"model_overrides .* would change the model",
    ),
    (
      "optimization",
      dict(learning_rate=0.01, batch_size=32),
      (),
      r"batch_size 16 -> 32, learning_rate 0\.001 -> 0\.01 would change the optimization \(allow it with "
      r"--allow_config_change=batch_size,learning_rate\)",
    ),
    (
      "data_with_a_flag",
      dict(image_size=16, learning_rate=0.01),
      ("learning_rate",),
      r"image_size None -> 16 ",
    ),
  )
  def test_a_changed_config_is_one_error_and_leaves_the_workdir_byte_identical(
    self, changes, allowed, message
  ):
    workdir = self.copy_of_the_run("changed")
    before = file_hashes(workdir)
    with self.assertRaisesRegex(
      configs.ConfigError, rf"^The config differs from the run in .*: {message}"
    ) as raised:
      config = dataclasses.replace(self.config, **changes)
      run(config, workdir, allowed)
    self.assertNotIn("\n", str(raised.exception))
    self.assertEqual(
      file_hashes(workdir), before
    )  # config.json, checkpoints, metrics: untouched; no lock left

  def test_allowed_changes_resume_and_rewrite_config_json(self):
    workdir = self.copy_of_the_run("allowed")
    config = dataclasses.replace(self.config, learning_rate=0.01, num_train_steps=8, eval_every_steps=0)
    result, lines = run(config, workdir, ("learning_rate",))
    self.assertRegex(lines[0], r"^resume \| step: 6 \| checkpoint: .*ckpt-6$")
    self.assertEqual(result.step, 8)
    with open(os.path.join(workdir, "config.json")) as file:
      self.assertEqual(configs.from_json(file.read()), config)

  def test_a_second_run_is_refused_while_the_first_holds_the_lock(self):
    workdir = self.copy_of_the_run("locked")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
      with open(workdirs.lock_path(workdir), "w") as file:
        json.dump({"pid": holder.pid, "host": socket.gethostname()}, file)
      before = file_hashes(workdir)
      with self.assertRaisesRegex(
        configs.ConfigError, rf"^`workdir` {workdir} is in use by process {holder.pid} on host "
      ):
        run(self.config, workdir)
    finally:
      holder.kill()
      holder.wait()
    self.assertEqual(file_hashes(workdir), before)

  def test_a_stale_lock_is_taken_over_with_a_message_and_removed_at_the_end(self):
    workdir = self.copy_of_the_run("stale")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(workdirs.lock_path(workdir), "w") as file:
      json.dump({"pid": dead.pid, "host": socket.gethostname()}, file)
    result, lines = run(self.config, workdir)
    self.assertEqual(lines[0], f"lock | took_over: stale lock of process {dead.pid} (no longer running)")
    self.assertEqual(result.step, 6)
    self.assertFalse(os.path.exists(workdirs.lock_path(workdir)))

  @parameterized.named_parameters(("index", ".index"), ("data", ".data-00000-of-00001"))
  def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(self, suffix):
    workdir = self.copy_of_the_run(f"truncated{suffix}")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    latest, previous = (os.path.join(checkpoint_dir, name) for name in ("ckpt-6", "ckpt-3"))
    truncate(latest + suffix)
    result, lines = run(self.config, workdir)
    self.assertRegex(
      lines[0],
      rf"^corrupt \| checkpoint: {latest} \| error: {latest}{re.escape(suffix)} cannot be read: .* \| "
      rf"using: {previous}$",
    )
    self.assertEqual(lines[1], f"resume | step: 3 | checkpoint: {previous}")
    self.assertRegex("\n".join(lines), r"(?m)^train \| step: 6 \|")  # trained again from step 3
    self.assertEqual(result.step, 6)

  def test_no_intact_checkpoint_is_refused_with_the_command_to_start_over(self):
    workdir = self.copy_of_the_run("all_truncated")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    truncate(os.path.join(checkpoint_dir, "ckpt-6.index"))
    truncate(os.path.join(checkpoint_dir, "ckpt-3.data-00000-of-00001"))
    before = file_hashes(workdir)
    with self.assertRaisesRegex(
      configs.ConfigError,
      rf"^No checkpoint in {checkpoint_dir} is intact \(.*ckpt-6\.index cannot be read: .*\); to train from "
      rf"scratch in this workdir, move them aside: mv {checkpoint_dir} {checkpoint_dir}\.corrupt$",
    ):
      run(self.config, workdir)
    self.assertEqual(file_hashes(workdir), before)


@pytest.mark.slow
class SeedTest(tf.test.TestCase):
  def test_the_same_seed_trains_the_same_model_and_another_seed_another(self):
    config = short_config(2, num_importance_samples=1)
    results = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
      tf.random.set_seed(1234 + len(results))  # whatever the process did before must not matter
      result, _ = run(dataclasses.replace(config, seed=seed), os.path.join(self.get_temp_dir(), name))
      results[name] = result
    first, again, other = (results[name] for name in ("first", "again", "other"))
    # The initial weights, dropout masks and batches all follow `seed`: the weights after 2 steps are equal.
    for a, b, c in zip(first.flow.variables, again.flow.variables, other.flow.variables):
      self.assertAllEqual(a, b, msg=a.name)
    self.assertEqual(first.metrics["test_bits_per_dim"], again.metrics["test_bits_per_dim"])
    self.assertNotAllClose(
      [v.numpy().sum() for v in first.flow.trainable_variables],
      [v.numpy().sum() for v in other.flow.trainable_variables],
    )


class NonFiniteTest(tf.test.TestCase):
  def test_a_non_finite_step_changes_nothing(self):
    trainer = train_lib.Trainer(
      tf.distribute.get_strategy(), lambda: RealNVP.from_preset("digits", **TINY_MODEL), global_batch_size=8
    )
    images = np.random.default_rng(1).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)
    trainer.train_step(tf.constant(images))  # creates the optimizer's slots
    before = [
      variable.numpy() for variable in list(trainer.flow.variables) + list(trainer.optimizer.variables)
    ]
    poisoned = images.copy()
    poisoned[3, 4, 4, 0] = np.nan
    bits_per_dim, applied = trainer.train_step(tf.constant(poisoned))
    self.assertFalse(applied)
    self.assertTrue(np.isnan(bits_per_dim))
    after = [
      variable.numpy() for variable in list(trainer.flow.variables) + list(trainer.optimizer.variables)
    ]
    for old, new in zip(before, after):  # weights, batch-norm running averages, Adam moments and iterations
      self.assertAllEqual(old, new)
    self.assertEqual(int(trainer.step), 2)  # the step still counts: its batch was consumed
    self.assertTrue(trainer.variables_are_finite())
    _, applied = trainer.train_step(tf.constant(images))
    self.assertTrue(applied)

  @pytest.mark.slow
  def test_a_persistently_non_finite_loss_stops_with_the_step_and_keeps_checkpoints_finite(self):
    workdir = os.path.join(self.get_temp_dir(), "non_finite")
    config = tiny_config(max_consecutive_non_finite=3, checkpoint_every_steps=2, num_train_steps=9)
    run(dataclasses.replace(config, num_train_steps=2), workdir)  # a finite checkpoint at step 2
    # An infinite L2 coefficient makes every loss infinite (the config refuses it: the trainer gets it here).
    build_trainer = train_lib.build_trainer

    def infinite_l2(*args, **kwargs):
      trainer = build_trainer(*args, **kwargs)
      trainer.l2_coefficient = float("inf")
      return trainer

    with mock.patch.object(train_lib, "build_trainer", infinite_l2):
      with self.assertRaisesRegex(
        train_lib.NonFiniteLossError,
        r"Training stopped at step 5: the loss or gradient was not finite for 3 "
        r"consecutive steps\. The last checkpoint \(step 2, .*ckpt-2\) was written after an applied step",
      ):
        run(config, workdir)
    # The checkpoint due at step 4 followed a skipped step: it was not written.
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), 2)
    for name in reader.get_variable_to_shape_map():
      value = reader.get_tensor(name)
      if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        self.assertTrue(np.all(np.isfinite(value)), name)


@pytest.mark.slow
class KilledRunTest(tf.test.TestCase):
  def test_a_killed_run_resumes_from_its_last_checkpoint(self):
    workdir = os.path.join(self.get_temp_dir(), "killed")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    process = subprocess.Popen(
      [sys.executable, training_testing.PROGRAMS, "train", workdir, "100000"],
      env=training_testing.program_environment(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
    try:
      deadline = time.monotonic() + 200
      while time.monotonic() < deadline and process.poll() is None:
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest and int(latest.rsplit("-", 1)[1]) >= 4:
          break
        time.sleep(0.2)
      self.assertIsNone(process.poll(), "the training run ended before it was killed")
      os.kill(process.pid, signal.SIGKILL)
    finally:
      if process.poll() is None:
        process.kill()
      process.wait()
    self.assertEqual(process.returncode, -signal.SIGKILL)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    saved_step = int(latest.rsplit("-", 1)[1])
    self.assertGreaterEqual(saved_step, 4)
    reader = tf.train.load_checkpoint(latest)
    self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), saved_step)

    # The same config with `num_train_steps` at the saved step restores and only evaluates: same weights.
    config = dataclasses.replace(
      tiny_config(),
      log_every_steps=1,
      checkpoint_every_steps=2,
      eval_every_steps=0,
      num_train_steps=saved_step,
    )
    restored, lines = run(config, workdir)
    # The killed run's lock is stale: taken over, with a line naming it.
    self.assertEqual(lines[0], f"lock | took_over: stale lock of process {process.pid} (no longer running)")
    self.assertRegex(lines[1], rf"^resume \| step: {saved_step} \| checkpoint: ")
    self.assertEqual(restored.step, saved_step)
    saved = checkpoint_values_by_name(latest)
    for variable in restored.flow.variables:
      name = variable.name.split(":")[0]
      # With `ema_decay` the run's flow holds the averages of its trainable weights, saved beside them.
      averaged = variable.trainable and config.ema_decay
      self.assertAllEqual(variable, saved[f"{name}/ExponentialMovingAverage" if averaged else name])

    resumed, lines = run(dataclasses.replace(config, num_train_steps=saved_step + 2), workdir)
    self.assertEqual(resumed.step, saved_step + 2)
    self.assertRegex("\n".join(lines), rf"(?m)^train \| step: {saved_step + 1} \|")


# A smaller model, for the tfds mocks' larger images.
MOCK_DATA_MODEL = {**TINY_MODEL, "num_filters": 4}


@pytest.mark.slow
class TfdsMockDataTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("mnist", "mnist", "mnist", (28, 28, 1)),
    ("cifar10", "cifar10", "cifar10", (32, 32, 3)),
    ("fashion_mnist", "fashion_mnist", "mnist", (28, 28, 1)),
  )
  def test_a_few_steps_on_mock_data(self, dataset, preset, image_shape):
    config = short_config(2, dataset=dataset, batch_size=4, num_samples=2, model_overrides=MOCK_DATA_MODEL)
    self.assertIsNone(config.preset)  # the dataset's own preset
    with tfds.testing.mock_data(num_examples=10):
      result, lines = run(config, os.path.join(self.get_temp_dir(), dataset))
    self.assertEqual(tuple(result.flow.event_shape), image_shape)
    self.assertEqual(result.step, 2)
    self.assertEqual(result.metrics["num_test_examples"], 10)
    self.assertTrue(np.isfinite(result.metrics["test_bits_per_dim"]))
    self.assertRegex("\n".join(lines), r"(?m)^train \| step: 2 \| steps/sec: ")

  def test_the_cifar10_config_checkpoints_its_dequantizer_and_average_and_resumes_on_mock_data(self):
    # `get_config("cifar10")` as it is (box-exact, variational, EMA 0.999, K = 100) with a tiny model.
    config = dataclasses.replace(
      configs.get_config("cifar10"),
      **short_run(2),
      batch_size=4,
      log_every_steps=2,
      num_samples=2,
      model_overrides=MOCK_DATA_MODEL,
    )
    draws = config.num_importance_samples
    self.assertEqual(
      (config.logit_alpha, config.dequantization, config.ema_decay, draws), (0.0, "variational", 0.999, 100)
    )
    workdir = os.path.join(self.get_temp_dir(), "cifar10_config")
    with tfds.testing.mock_data(num_examples=10):
      result, _ = run(config, workdir)
      self.assertEqual(result.flow.parameters["logit_alpha"], 0.0)  # box-exact, not the preset's 0.05
      with open(os.path.join(workdir, "metrics.json")) as file:
        metrics = json.load(file)
      self.assertEqual(metrics, result.metrics)
      self.assertEqual((metrics["dequantization"], metrics["num_importance_samples"]), ("variational", draws))
      self.assertEqual(metrics["num_test_examples"], 10)
      self.assertLess(metrics[f"test_bits_per_dim_k{draws}"], metrics["test_bits_per_dim"])
      latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
      names = [name for name, _ in tf.train.list_variables(latest)]
      self.assertTrue(any(name.startswith("dequantizer/") for name in names))
      self.assertTrue(any(name.startswith("weight_average/") for name in names))
      # Rerunning resumes from the checkpoint and evaluates the same figures: the trained dequantizer and the
      # averages came back with the flow (a fresh `q` would be the uniform one, the training weights others).
      resumed, lines = run(config, workdir)
    self.assertRegex(lines[0], r"^resume \| step: 2 \| checkpoint: .*ckpt-2$")
    self.assertEqual(resumed.metrics, metrics)


@pytest.mark.slow
class IdxFolderRunTest(tf.test.TestCase):
  def test_a_class_conditional_run_on_a_28x28_idx_folder_takes_the_mnist_preset_and_its_labels(self):
    folder = os.path.join(self.get_temp_dir(), "idx")
    splits = idx_testing.write_folder(
      folder, num_train=20, num_test=6, image_hw=(28, 28), num_classes=4, gzipped=True
    )
    config = tiny_config(
      dataset=data.IDX_PREFIX + folder,
      condition="label",
      train_split="train[:16]",
      eval_split="train[16:]",
      batch_size=4,
      num_train_steps=2,
      checkpoint_every_steps=2,
      eval_every_steps=0,
      num_samples=4,
      model_overrides={**TINY_MODEL, "num_filters": 4},
    )
    with mock.patch.object(reporting, "sample_grids_png", wraps=reporting.sample_grids_png) as grids_png:
      result, lines = run(config, os.path.join(self.get_temp_dir(), "run"))
    self.assertEqual(
      (tuple(result.flow.event_shape), result.flow.conditional_event_shape), ((28, 28, 1), (4,))
    )
    self.assertEqual(result.flow.num_bits, 8)
    self.assertEqual((result.metrics["split"], result.metrics["num_test_examples"]), ("train[16:]", 4))
    self.assertBetween(result.metrics["test_accuracy"], 0.0, 1.0)
    self.assertTrue(np.isfinite(result.metrics["test_bits_per_dim"]))
    # The class prior `p(y)` is the frequencies of the training split's labels.
    trainer = train_lib.build_trainer(config)
    expected = np.bincount(splits["train"][1][:16], minlength=4) / 16
    self.assertAllClose(np.exp(trainer.label_log_prior), expected)
    self.assertRegex("\n".join(lines), r"(?m)^train \| step: 2 \| steps/sec: ")
    # The final line is named `test` but says which split it scored.
    self.assertRegex("\n".join(lines), r"(?m)^test \| step: 2 \| split: train\[16:\] \| bits_per_dim: ")
    # So does the headline of samples.png.
    self.assertEqual(grids_png.call_args.kwargs["split"], "train[16:]")


class ConfigErrorTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("unknown_dataset", dict(dataset="no_such_dataset"), r"Unknown dataset 'no_such_dataset'"),
    ("unknown_strategy", dict(strategy="gpus"), r"`strategy` must be one of default, .*; got 'gpus'"),
    ("unknown_preset", dict(preset="cifar100"), r"Unknown preset `name='cifar100'`"),
    (
      "image_size_the_preset_cannot_take",
      dict(image_size=9, model_overrides={}),
      r"height and width must be divisible by 2",
    ),
    (
      "preset_for_other_images",
      dict(preset="mnist"),
      r"models 8-bit images of shape \(28, 28, 1\), but dataset "
      r"'digits' gives 4-bit images of shape \(8, 8, 1\)",
    ),
    ("bad_value", dict(batch_size=0), r"`batch_size` must be an integer >= 1; got 0"),
  )
  def test_bad_setting_is_a_config_error(self, changes, message):
    with self.assertRaisesRegex(configs.ConfigError, message):
      train_lib.train_and_evaluate(tiny_config(**changes), os.path.join(self.get_temp_dir(), "bad"))

  def test_a_workdir_that_is_a_file_or_under_a_file_is_a_config_error(self):
    path = os.path.join(self.get_temp_dir(), "a_file")
    open(path, "w").close()
    with self.assertRaisesRegex(configs.ConfigError, rf"^`workdir` must be a directory; {path} is a file\.$"):
      train_lib.train_and_evaluate(tiny_config(), path)
    with self.assertRaisesRegex(configs.ConfigError, rf"^`workdir` {path}/run cannot be created: "):
      train_lib.train_and_evaluate(tiny_config(), os.path.join(path, "run"))

  def test_a_workdir_of_another_model_is_a_config_error(self):
    workdir = os.path.join(self.get_temp_dir(), "other_model")
    other = train_lib.Trainer(
      tf.distribute.get_strategy(),
      lambda: RealNVP.from_preset("digits", **{**TINY_MODEL, "num_filters": 4}),
      global_batch_size=16,
    )
    tf.train.CheckpointManager(other.checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=1).save()
    with self.assertRaisesRegex(
      configs.ConfigError, r"does not match this model \(was the workdir used with "
    ):
      run(tiny_config(), workdir)


@pytest.mark.slow
class CommandLineTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("unknown_strategy", ["--strategy=gpus"], "error: `strategy` must be one of"),
    (
      "indivisible_batch",
      ["--strategy=mirrored", "--num_cpu_devices=2", "--batch_size=63"],
      "error: `batch_size` must be divisible by the 2 replicas of `strategy=mirrored`; got 63.",
    ),
    (
      "idx_folder_that_is_not_one",
      ["--dataset=idx:/no/such/folder"],
      "error: Dataset 'idx:/no/such/folder': '/no/such/folder' is not a directory.",
    ),
  )
  def test_a_bad_flag_prints_one_error_line(self, flags, message):
    completed = run_script("train.py", f"--workdir={self.get_temp_dir()}/cli", *flags, timeout=120)
    self.assertEqual(completed.returncode, 2)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    self.assertEqual(errors, [errors[0]])
    self.assertIn(message, errors[0])
    self.assertNotIn("Traceback", completed.stderr)
    self.assertEqual(completed.stdout, "")
    self.assertFalse(re.search(r"(?m)^train \|", completed.stdout))

  def test_a_workdir_that_is_a_file_prints_one_error_line(self):
    path = os.path.join(self.get_temp_dir(), "a_file")
    open(path, "w").close()
    completed = run_script("train.py", f"--workdir={path}", timeout=120)
    self.assertEqual(completed.returncode, 2)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    self.assertEqual(errors, [f"error: `workdir` must be a directory; {path} is a file."])
    self.assertNotIn("Traceback", completed.stderr)


if __name__ == "__main__":
  tf.test.main()
