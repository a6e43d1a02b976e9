"""Adversarial cases: every served request bounded, the workdir owned by one run, every bad input refused by
name, no invalid row given a confident answer."""

import contextlib
import dataclasses
import gc
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests import export_testing, training_testing
from tests.export_testing import SAVED_MODEL_CLI, pixels, small_image_flow, small_vector_flow
from tfp_realnvp import RealNVP, classifier, data, dequantization
from tfp_realnvp.keras_model import FlowModel
from tfp_realnvp.serving import export, saved_model_distribution, serving_module
from tfp_realnvp.training import checkpoints, configs, train_lib


class TempDirTestCase(tf.test.TestCase):
  def make_dir(self):
    path = tempfile.mkdtemp(prefix=f"{type(self).__name__}_")
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


@pytest.mark.slow  # exports, training runs or fresh processes
class ServedWorkIsBoundedTest(TempDirTestCase, export_testing.WorkspaceTestCase):
  """Every signature refuses a request beyond the export's limits, in the graph, before doing the work."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()  # `cls.workspace`
    cls.flow = small_image_flow()
    dequantizer = dequantization.make_dequantizer("uniform", cls.flow.event_shape, cls.flow.num_bits)
    # Default limits: for this small flow, `MAX_FLOW_EVALUATIONS_CAP` rows and 4096 samples.
    cls.path = export.export_saved_model(cls.flow, cls.workspace, "default", dequantizer=dequantizer)
    cls.small_path = export.export_saved_model(
      cls.flow, cls.workspace, "small", max_num_samples=50, max_flow_evaluations=40, dequantizer=dequantizer
    )
    cls.loaded = tf.saved_model.load(cls.path)
    cls.small = tf.saved_model.load(cls.small_path)

  def assert_refused_quickly(self, function, limit_text, **inputs):
    start = time.perf_counter()
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, limit_text):
      function(**inputs)
    self.assertLess(time.perf_counter() - start, 1.0)

  def test_a_huge_discrete_bits_per_dim_request_is_refused_in_under_a_second(self):
    # 4 MiB of levels (16384 digits rows) at K = 256: 4.2M flow evaluations (was 3.3 GB RSS and > 60 s).
    levels = np.floor(pixels([16384, 8, 8, 1], 4, seed=0))
    signature = self.loaded.signatures["discrete_bits_per_dim"]
    signature(levels=tf.constant(levels[:1]), num_samples=tf.constant(1), seed=tf.constant([1, 2]))  # warm-up
    self.assert_refused_quickly(
      signature,
      "times `num_samples` \\(K\\) must be at most `max_flow_evaluations`, set at export to 16384",
      levels=tf.constant(levels),
      num_samples=tf.constant(256),
      seed=tf.constant([1, 2]),
    )
    # Within the limit it answers: 64 rows x 256 draws.
    outputs = signature(
      levels=tf.constant(levels[:64]), num_samples=tf.constant(256), seed=tf.constant([1, 2])
    )
    self.assertTrue(np.all(np.isfinite(outputs["bits_per_dim"].numpy())))

  def test_every_signature_refuses_work_beyond_max_flow_evaluations(self):
    signatures = self.small.signatures
    x = pixels([41, 8, 8, 1], 4, seed=1)
    limit = "must be at most `max_flow_evaluations`, set at export to 40"
    for name, (inputs, small) in {
      "log_prob": ({"x": x}, {"x": x[:1]}),
      "serving_default": ({"x": x}, {"x": x[:1]}),
      "encode": ({"x": x}, {"x": x[:1]}),
      "decode": ({"z": x}, {"z": x[:1]}),
      "discrete_bits_per_dim": (
        {"levels": np.floor(x[:21]), "num_samples": 2, "seed": [1, 2]},
        {"levels": np.floor(x[:1]), "num_samples": 1, "seed": [1, 2]},
      ),
      "sample": (
        {"num_samples": 41, "temperature": 1.0, "seed": [1, 2]},
        {"num_samples": 1, "temperature": 1.0, "seed": [1, 2]},
      ),
    }.items():
      with self.subTest(signature=name):
        signatures[name](**{k: tf.constant(v) for k, v in small.items()})  # the first call also loads it
        self.assert_refused_quickly(signatures[name], limit, **{k: tf.constant(v) for k, v in inputs.items()})
    # At the limit every signature answers.
    self.assertEqual(signatures["log_prob"](x=tf.constant(x[:40]))["log_prob"].shape, [40])
    outputs = signatures["discrete_bits_per_dim"](
      levels=tf.constant(np.floor(x[:20])), num_samples=tf.constant(2), seed=tf.constant([1, 2])
    )
    self.assertEqual(outputs["bits_per_dim"].shape, [20])
    samples = signatures["sample"](
      num_samples=tf.constant(40), temperature=tf.constant(1.0), seed=tf.constant([1, 2])
    )
    self.assertEqual(samples["samples"].shape, [40, 8, 8, 1])

  def test_the_limits_are_returned_and_shown_by_saved_model_cli(self):
    limits = {"max_num_samples": 50, "max_flow_evaluations": 40}
    self.assertEqual({k: int(v) for k, v in self.small.limits(limits).items()}, limits)
    if not SAVED_MODEL_CLI:
      self.skipTest("needs saved_model_cli")
    shown = subprocess.run(
      [SAVED_MODEL_CLI, "show", "--dir", self.small_path, "--all"],
      capture_output=True,
      text=True,
      timeout=120,
    )
    self.assertIn("Function Name: 'limits'", shown.stdout)
    limits_shown = shown.stdout[shown.stdout.index("Function Name: 'limits'") :]
    self.assertIn("'max_flow_evaluations': 40", limits_shown)
    self.assertIn("'max_num_samples': 50", limits_shown)

  def test_the_default_limit_scales_with_the_flow_s_cost(self):
    # The cifar10 preset's 9.5 GFLOP a row: 104 samples per request (256 took 18 s before the limit).
    with mock.patch.object(serving_module, "flops_per_row", return_value=9_523_869_277):
      self.assertEqual(serving_module.default_max_flow_evaluations(self.flow), 104)
    small, large = small_image_flow(), small_image_flow(num_filters=16, num_blocks=2)
    self.assertLess(serving_module.flops_per_row(small), serving_module.flops_per_row(large))
    self.assertEqual(
      serving_module.default_max_flow_evaluations(small), serving_module.MAX_FLOW_EVALUATIONS_CAP
    )
    # A smaller `max_flow_evaluations` than `max_num_samples` is the one `sample` names.
    module = serving_module.ServingModule(small_vector_flow(), max_num_samples=100, max_flow_evaluations=10)
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, "`max_flow_evaluations`, set at export to 10"
    ):
      module.sample(tf.constant(11), tf.constant(1.0), tf.constant([1, 2]))

  def test_classify_counts_rows_times_classes(self):
    flow = RealNVP.from_preset("digits", **training_testing.TINY_MODEL, conditional_event_shape=(10,))
    module = serving_module.ServingModule(
      flow, label_log_prior=np.log(np.full(10, 0.1)), max_flow_evaluations=30
    )
    self.assertEqual(module.classify(tf.constant(pixels([3, 8, 8, 1], 4, 2)))["label"].shape, [3])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "times the 10 classes must be at most"):
      module.classify(tf.constant(pixels([4, 8, 8, 1], 4, 2)))

  def test_bad_max_flow_evaluations_names_the_argument(self):
    for value in (0, -1, True, 2.5, "8", 2**31):
      with self.assertRaisesRegex(ValueError, "`max_flow_evaluations` must be None .* or an integer"):
        serving_module.ServingModule(small_vector_flow(), max_flow_evaluations=value)


def run_quietly(config, workdir, allow_config_change=()):
  """`train_lib.train_and_evaluate`; returns `(result, its log lines)`."""
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    result = train_lib.train_and_evaluate(config, workdir, allow_config_change)
  return result, stdout.getvalue()


def listing(directory):
  """Every path under `directory`, relative to it (None if it does not exist)."""
  if not os.path.exists(directory):
    return None
  return sorted(
    os.path.relpath(os.path.join(root, name), directory)
    for root, directories, files in os.walk(directory)
    for name in directories + files
  )


# A tiny run: checkpoints at steps 3 and 6 (variational dequantizer, EMA), one evaluation at the end, K = 1.
RUN = dict(num_train_steps=6, eval_every_steps=0, num_importance_samples=1, sample_temperatures=(1.0,))


@pytest.mark.slow  # exports, training runs or fresh processes
class TrainedWorkdirTest(TempDirTestCase, export_testing.WorkspaceTestCase):
  """Reruns of one tiny trained workdir, each on its own copy."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()  # `cls.workspace`
    cls.trained = os.path.join(cls.workspace, "trained")
    cls.config = training_testing.tiny_config(**RUN)
    run_quietly(cls.config, cls.trained)

  def copy(self):
    workdir = os.path.join(self.make_dir(), "run")
    shutil.copytree(self.trained, workdir)
    return workdir

  def test_a_missing_or_garbled_state_file_resumes_from_the_newest_checkpoint(self):
    for damage in ("missing", "garbled"):
      with self.subTest(damage=damage):
        workdir = self.copy()
        state = os.path.join(workdir, "checkpoints", "checkpoint")
        if damage == "missing":
          os.remove(state)
        else:
          with open(state, "w") as file:
            file.write("model_checkpoint_path: {{ garbage\n")
        result, log = run_quietly(dataclasses.replace(self.config, num_train_steps=9), workdir)
        self.assertIn("state | problem: ", log)
        self.assertIn("resume | step: 6 |", log)  # not a silent start at step 0
        self.assertNotIn("train | step: 2 |", log)
        self.assertEqual(result.step, 9)
        self.assertEqual(
          tf.train.get_checkpoint_state(os.path.dirname(state)).all_model_checkpoint_paths,
          [os.path.join(workdir, "checkpoints", f"ckpt-{n}") for n in (3, 6, 9)],
        )

  def test_state_the_checkpoint_holds_is_never_dropped_by_an_edited_config(self):
    for field, value, message in [
      ("dequantization", "uniform", "the checkpoint holds a learned dequantizer"),
      ("ema_decay", 0.0, r"the checkpoint holds weight averages \(`ema_decay`\)"),
    ]:
      with self.subTest(field=field):
        workdir = self.copy()
        edited = dataclasses.replace(self.config, **{field: value})
        with open(os.path.join(workdir, "config.json"), "w") as file:
          file.write(configs.to_json(edited))
        before = listing(workdir)
        with self.assertRaisesRegex(configs.ConfigError, message) as raised:
          run_quietly(dataclasses.replace(edited, num_train_steps=9), workdir)
        self.assertNotIn("\n", str(raised.exception))
        self.assertEqual(listing(workdir), before)
        # The export refuses it too.
        with self.assertRaisesRegex(configs.ConfigError, "the checkpoint holds"):
          checkpoints.restore_run(workdir)

  def test_disk_errors_are_one_line_and_leave_nothing_half_written(self):
    workdir = self.copy()
    config = dataclasses.replace(self.config, num_train_steps=9)
    for name, make, message in [
      ("config.json", os.mkdir, "config.json must be a file"),
      ("metrics.json", os.mkdir, "metrics.json must be a file"),
      ("checkpoints", None, "checkpoints must be a directory"),
    ]:
      with self.subTest(name=name):
        target = os.path.join(workdir, name)
        aside = target + ".aside"
        os.rename(target, aside)
        if make is None:
          open(target, "w").close()
        else:
          make(target)
        before = listing(workdir)
        with self.assertRaisesRegex(configs.ConfigError, message) as raised:
          run_quietly(config, workdir)
        self.assertNotIn("\n", str(raised.exception))
        self.assertEqual(listing(workdir), before)
        (os.rmdir if make else os.remove)(target)
        os.rename(aside, target)

    # A full disk at the next checkpoint: TensorFlow's `ckpt-9_temp/` is not left behind.
    def full_disk(manager, checkpoint_number=None, **kwargs):
      os.makedirs(os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp"))
      raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    with mock.patch.object(tf.train.CheckpointManager, "save", full_disk):
      with self.assertRaisesRegex(
        configs.ConfigError, r"^The checkpoint of step 9 cannot be written in .*No space left on device; "
      ) as raised:
        run_quietly(config, workdir)
    self.assertNotIn("\n", str(raised.exception))
    self.assertEqual(
      sorted(os.listdir(os.path.join(workdir, "checkpoints"))),
      ["checkpoint", *[f"ckpt-{n}.{ext}" for n in (3, 6) for ext in ("data-00000-of-00001", "index")]],
    )

  def test_another_run_s_checkpoint_is_one_error_without_tensorflow_warnings(self):
    other = self.copy()
    config = training_testing.tiny_config(
      **RUN, model_overrides={**training_testing.TINY_MODEL, "num_filters": 4}
    )
    with open(os.path.join(other, "config.json"), "w") as file:
      file.write(configs.to_json(config))
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    tf.get_logger().addHandler(handler)
    try:
      for attempt in (lambda: checkpoints.restore_run(other), lambda: run_quietly(config, other)):
        with self.assertRaisesRegex(configs.ConfigError, "has shape \\[3, 3, 8, 8\\] in the checkpoint"):
          attempt()
        gc.collect()
    finally:
      tf.get_logger().removeHandler(handler)
    self.assertNotIn("could not be found", logged.getvalue())
    self.assertNotIn("unrestored values", logged.getvalue())


@pytest.mark.slow  # exports, training runs or fresh processes
class BadRunSettingsTest(TempDirTestCase):
  """Settings that cannot work fail before anything is written, one line naming them."""

  def assert_refused_before_writing(self, config, message):
    workdir = os.path.join(self.make_dir(), "run")
    with self.assertRaisesRegex(configs.ConfigError, message) as raised:
      run_quietly(config, workdir)
    self.assertNotIn("\n", str(raised.exception))
    self.assertIsNone(listing(workdir))

  def test_a_model_override_training_cannot_use_fails_before_anything_is_written(self):
    for overrides, message in [
      ({"conditional_event_shape": [10]}, "cannot set `conditional_event_shape`.*`condition=label`"),
      ({"dtype": "float64"}, "`dtype` must be float32 for training"),
    ]:
      with self.subTest(overrides=overrides):
        config = training_testing.tiny_config(model_overrides={**training_testing.TINY_MODEL, **overrides})
        self.assert_refused_before_writing(config, message)

  def test_contradicting_settings_are_refused(self):
    for changes, message in [
      (
        dict(logit_alpha=0.0, model_overrides={**training_testing.TINY_MODEL, "logit_alpha": 0.05}),
        r"`logit_alpha=0.0` and `model_overrides` `logit_alpha=0.05` contradict each other",
      ),
      (
        dict(
          compute_dtype="bfloat16",
          model_overrides={**training_testing.TINY_MODEL, "compute_dtype": "float16"},
        ),
        r"`compute_dtype='bfloat16'` and `model_overrides` `compute_dtype='float16'` contradict",
      ),
    ]:
      with self.subTest(changes=changes):
        self.assert_refused_before_writing(training_testing.tiny_config(**changes), message)
    # Agreeing ones are fine.
    config = training_testing.tiny_config(
      logit_alpha=0.0, model_overrides={**training_testing.TINY_MODEL, "logit_alpha": 0}
    )
    train_lib.build_trainer(config)

  def test_booleans_strings_and_non_finite_numbers_are_refused_by_name(self):
    for changes, name in [
      (dict(batch_size=True), "batch_size"),
      (dict(num_train_steps=False), "num_train_steps"),
      (dict(image_size=True), "image_size"),
      (dict(learning_rate=float("inf")), "learning_rate"),
      (dict(learning_rate=float("nan")), "learning_rate"),
      (dict(learning_rate="0.1"), "learning_rate"),
      (dict(clip_global_norm=float("inf")), "clip_global_norm"),
      (dict(l2_coefficient=float("inf")), "l2_coefficient"),
      (dict(sample_temperatures=(float("inf"),)), "sample_temperatures"),
      (dict(sample_temperatures=(1.0, float("nan"))), "sample_temperatures"),
      (dict(seed=True), "seed"),
      (dict(ema_decay=float("nan")), "ema_decay"),
    ]:
      with self.subTest(changes=changes):
        with self.assertRaisesRegex(configs.ConfigError, rf"^`{name}` must be .*; got "):
          training_testing.tiny_config(**changes).validate()

  def test_train_py_refuses_an_infinite_sample_temperature(self):
    completed = training_testing.run_script(
      "train.py", f"--workdir={self.make_dir()}/run", "--sample_temperatures=inf", timeout=120
    )
    self.assertEqual(completed.returncode, 2, completed.stderr[-2000:])
    self.assertEqual(
      completed.stderr.strip().splitlines()[-1],
      "error: `sample_temperatures` must be one or more positive finite numbers; got (inf,).",
    )


@pytest.mark.slow  # exports, training runs or fresh processes
class DivergenceTest(TempDirTestCase):
  def test_after_divergence_the_advice_works(self):
    workdir = os.path.join(self.make_dir(), "run")
    diverging = training_testing.tiny_config(
      **{**RUN, "num_train_steps": 24},
      learning_rate=1e30,
      checkpoint_every_steps=4,
      max_consecutive_non_finite=8,
      log_every_steps=100,
    )
    with self.assertRaisesRegex(
      train_lib.NonFiniteLossError, "--allow_config_change=learning_rate"
    ) as raised:
      run_quietly(diverging, workdir)
    # No checkpoint of weights whose next step was not finite: following the advice trains on.
    result, _ = run_quietly(
      dataclasses.replace(diverging, learning_rate=1e-3), workdir, allow_config_change=("learning_rate",)
    )
    self.assertEqual(result.step, 24, str(raised.exception))
    self.assertTrue(np.isfinite(result.metrics["test_bits_per_dim"]))


@pytest.mark.slow  # exports, training runs or fresh processes
class MetricsTest(TempDirTestCase):
  def test_classes_missing_from_the_training_split_warn_and_metrics_json_stays_json(self):
    workdir = os.path.join(self.make_dir(), "run")
    config = training_testing.tiny_config(
      **{**RUN, "num_train_steps": 2}, condition="label", train_split="train[:5]"
    )
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      run_quietly(config, workdir)
    self.assertRegex(
      stderr.getvalue(), r"warning: class\(es\) 5, 6, 7, 8, 9 have no image in the training split"
    )

    def refuse(constant):
      raise ValueError(f"{constant} is not JSON")

    with open(os.path.join(workdir, "metrics.json")) as file:
      metrics = json.loads(file.read(), parse_constant=refuse)
    self.assertIsNone(metrics["test_class_log_loss"])


class StartScriptSignalTest(tf.test.TestCase):
  @pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the child's /proc status")
  def test_a_started_script_is_not_started_with_sigint_ignored_when_the_tests_ignore_it(self):
    # As under `nohup pytest ... &`: an ignored SIGINT would be inherited across exec, and Ctrl-C lost.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
      process = training_testing.start_script("train.py", "--helpfull")
    finally:
      signal.signal(signal.SIGINT, previous)
    try:
      with open(f"/proc/{process.pid}/status") as file:
        ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", file.read(), re.MULTILINE).group(1), 16)
    finally:
      process.kill()
      process.communicate()
    self.assertFalse(ignored & (1 << (signal.SIGINT - 1)), f"SigIgn {ignored:#x}")
    self.assertIs(signal.getsignal(signal.SIGINT), previous)


@pytest.mark.slow  # exports, training runs or fresh processes
class InterruptTest(TempDirTestCase):
  def test_ctrl_c_is_one_error_line_and_releases_the_lock(self):
    workdir = os.path.join(self.make_dir(), "run")
    process = training_testing.start_script(
      "train.py",
      f"--workdir={workdir}",
      *[f"--model={name}={json.dumps(value)}" for name, value in training_testing.TINY_MODEL.items()],
      "--batch_size=16",
      "--num_train_steps=100000",
      "--log_every_steps=1",
    )
    try:
      for line in process.stdout:  # training has started
        if line.startswith("train |"):
          break
      process.send_signal(signal.SIGINT)
      _, stderr = process.communicate(timeout=120)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    self.assertEqual(process.returncode, 130, stderr[-3000:])
    self.assertNotIn("Traceback", stderr)
    self.assertRegex(stderr.strip().splitlines()[-1], r"^error: interrupted; the workdir's lock is released")
    self.assertFalse(os.path.exists(os.path.join(workdir, "lock.json")))


class ClassifierTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flow = RealNVP.from_preset("digits", **training_testing.TINY_MODEL, conditional_event_shape=(10,))
    cls.x = pixels([4, 8, 8, 1], 4, seed=3)

  def test_classify_marks_invalid_rows_with_label_minus_one(self):
    module = serving_module.ServingModule(self.flow, label_log_prior=np.log(np.full(10, 0.1)))
    x = np.concatenate([self.x[:1]] * 4)
    x[1, 0, 0, 0], x[2, 3, 3, 0], x[3, 5, 5, 0] = np.nan, np.inf, 16.5  # 16.5: past the box of 4-bit pixels
    outputs = module.classify(tf.constant(x))
    self.assertAllEqual(outputs["label"][1:], [-1, -1, -1])
    self.assertGreaterEqual(int(outputs["label"][0]), 0)
    self.assertTrue(np.all(np.isnan(outputs["log_probs"][1:])))
    self.assertTrue(np.all(np.isfinite(outputs["log_probs"][0])))

  def test_num_classes_and_the_prior_are_checked(self):
    with self.assertRaisesRegex(ValueError, r"`num_classes` must be a positive integer; got 10\.7"):
      classifier.class_log_probs(self.flow, self.x, 10.7)
    unnormalized = np.zeros(10, np.float32)  # marginal off by log 10
    for function in (classifier.class_log_probs, classifier.marginal_log_prob, classifier.joint_log_probs):
      with self.assertRaisesRegex(ValueError, r"`log_prior` must be log-probabilities .* sums to 10\.0"):
        function(self.flow, self.x, 10, unnormalized)
    # In a graph, a prior known only when it runs is checked then.
    graph_function = tf.function(lambda prior: classifier.marginal_log_prob(self.flow, self.x, 10, prior))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`log_prior` must be log-probabilities"):
      graph_function(tf.constant(unnormalized))
    self.assertEqual(graph_function(tf.constant(np.log(np.full(10, 0.1)), tf.float32)).shape, [4])
    for counts in ([1, np.nan], [1, np.inf], [[1, 2]], [], [0, 0], [-1, 2], "ab"):
      with self.assertRaisesRegex(ValueError, "`label_counts` must be finite non-negative class counts"):
        classifier.log_prior_of_counts(counts)


@pytest.mark.slow  # two fits
class ArgumentsNamedTest(tf.test.TestCase):
  def test_fit_on_another_shape_after_a_first_fit_names_x(self):
    model = FlowModel(RealNVP.from_preset("digits", **training_testing.TINY_MODEL))
    model.compile(optimizer="adam")
    model.fit(pixels([16, 8, 8, 1], 4, seed=1), batch_size=16, epochs=1, verbose=0)
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"`x` must have shape \[batch, 8, 8, 1\] \(the flow\\?'s events\)"
    ):
      model.fit(pixels([16, 4, 4, 1], 4, seed=1), batch_size=16, epochs=1, verbose=0)
    with self.assertRaisesRegex(ValueError, r"`x` must have shape \[batch, 8, 8, 1\]"):
      model.evaluate(pixels([16, 8, 8], 4, seed=1), batch_size=16, verbose=0)

  def test_image_size_true_is_refused_by_name(self):
    for value in (True, (8, False), "8", 2.5):
      with self.assertRaisesRegex(ValueError, "`image_size` must be a positive int or a"):
        data.dataset_spec("digits", image_size=value)


class FlowEdgesTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.image = small_image_flow(logit_alpha=0.0)
    cls.vector = small_vector_flow()
    cls.x = pixels([3, 8, 8, 1], 4, seed=5)

  def test_encode_gives_no_latent_for_a_row_outside_the_support(self):
    x = self.x.copy()
    x[0, 0, 0, 0], x[1, 2, 2, 0] = -0.1, 16.0  # outside [0, 16) for logit_alpha=0
    z = self.image.encode(x).numpy()
    self.assertTrue(np.all(np.isnan(z[:2])))
    self.assertTrue(np.all(np.isfinite(z[2])))
    self.assertAllEqual(np.isneginf(self.image.log_prob(x).numpy()), [True, True, False])
    self.assertTrue(np.all(np.isnan(self.image.decode(z).numpy()[:2])))  # not a clamped image

  def test_temperature_is_checked_where_it_enters(self):
    for temperature in (np.nan, np.inf, -1.0, "hot", True):
      with self.subTest(temperature=temperature):
        with self.assertRaisesRegex(ValueError, "`temperature` must be a finite number >= 0; got"):
          self.image.sample(2, seed=[1, 2], temperature=temperature)
    sample = tf.function(lambda t: self.vector.sample(2, seed=[1, 2], temperature=t))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`temperature` must be a finite number >= 0"):
      sample(tf.constant(np.inf, tf.float32))
    self.assertEqual(sample(tf.constant(0.5)).shape, [2, 3])

  def test_huge_vectors_score_minus_inf_with_finite_gradients(self):
    x = tf.constant([[3e38, 0.0, 0.0], [1e20, 1e20, 1e20], [0.1, 0.2, 0.3], [np.nan, 0.0, 0.0]], tf.float32)
    with tf.GradientTape() as tape:
      tape.watch(x)
      log_prob = self.vector.log_prob(x)
      total = tf.reduce_sum(tf.where(tf.math.is_finite(log_prob), log_prob, 0.0))
    values = log_prob.numpy()
    self.assertTrue(np.isneginf(values[0]) and np.isneginf(values[1]) and np.isnan(values[3]))
    self.assertTrue(np.isfinite(values[2]))
    gradient = tape.gradient(total, x).numpy()
    self.assertTrue(np.all(np.isfinite(gradient[:3])), gradient)
    with tf.GradientTape() as tape:
      log_prob = self.vector.log_prob(x[:3])
      loss = tf.reduce_sum(tf.where(tf.math.is_finite(log_prob), log_prob, 0.0))
    for gradient in tape.gradient(loss, self.vector.trainable_variables):
      self.assertTrue(np.all(np.isfinite(gradient.numpy())))

  def test_samples_stay_in_the_box_and_agree_with_log_prob_at_any_temperature(self):
    for temperature in (3.0, 1e6):
      with self.subTest(temperature=temperature):
        samples, log_prob = self.image.experimental_sample_and_log_prob(
          200, seed=[1, 2], temperature=temperature
        )
        self.assertLess(float(tf.reduce_max(samples)), 16.0)
        self.assertGreaterEqual(float(tf.reduce_min(samples)), 0.0)
        self.assertAllClose(log_prob, self.image.log_prob(samples), rtol=1e-6, atol=1e-6)
    self.assertLess(float(tf.reduce_max(self.image.decode(np.full([1, 8, 8, 1], 1e30, np.float32)))), 16.0)

  def test_shape_errors_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, r"`x_end` must have the shape of `x_start`, \[8, 8, 1\]"):
      self.image.interpolate(self.x[0], self.x[1:3])
    log_prob = tf.function(
      lambda x: self.image.log_prob(x, training=True), input_signature=[tf.TensorSpec(None, tf.float32)]
    )
    with self.assertRaisesRegex(ValueError, "`x` must have a known rank with `training=True`"):
      log_prob(self.x)

  def test_num_bits_none_or_nan_is_refused_by_name(self):
    for num_bits in (None, np.nan, "4", 2.5):
      with self.subTest(num_bits=num_bits):
        with self.assertRaisesRegex(ValueError, r"`num_bits` must be an integer in \[1, 16\]; got"):
          RealNVP.from_preset("digits", **training_testing.TINY_MODEL, num_bits=num_bits)
    config = training_testing.tiny_config(model_overrides={**training_testing.TINY_MODEL, "num_bits": None})
    with self.assertRaisesRegex(configs.ConfigError, r"`num_bits` must be an integer in \[1, 16\]; got None"):
      train_lib.build_trainer(config)


@pytest.mark.slow  # exports, training runs or fresh processes
class LoadDistributionShapesTest(TempDirTestCase):
  def test_other_shapes_are_not_reinterpreted_as_events(self):
    flow = small_image_flow()
    path = export.export_saved_model(flow, self.make_dir(), "shapes")
    distribution = saved_model_distribution.load_distribution(path)
    x = pixels([2, 8, 8, 1], 4, seed=6)
    self.assertAllClose(distribution.log_prob(x), flow.log_prob(x), rtol=1e-5)
    for wrong in (np.transpose(x, [0, 3, 1, 2]), x.reshape([2, 64]), x.reshape([2, 4, 16, 1])):
      with self.subTest(shape=wrong.shape):
        with self.assertRaisesRegex(ValueError, r"`x` must have shape `\[\.\.\., 8, 8, 1\]`"):
          distribution.log_prob(wrong)
    dynamic = tf.function(distribution.log_prob, input_signature=[tf.TensorSpec([None] * 4, tf.float32)])
    self.assertAllClose(dynamic(x), flow.log_prob(x), rtol=1e-5)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"`x` must have shape `\[\.\.\., 8, 8, 1\]`"):
      dynamic(np.transpose(x, [0, 3, 1, 2]))


class DynamicContextRowsTest(tf.test.TestCase):
  def test_a_context_row_mismatch_known_only_when_the_graph_runs_is_named(self):
    flow = RealNVP.from_preset("digits", **training_testing.TINY_MODEL, conditional_event_shape=(10,))
    log_prob = tf.function(
      lambda x, c: flow.log_prob(x, conditional_input=c),
      input_signature=[tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None, 10])],
    )
    x = pixels([3, 8, 8, 1], 4, seed=7)
    self.assertEqual(log_prob(x, np.eye(10, dtype=np.float32)[:3]).shape, [3])
    self.assertEqual(log_prob(x, np.eye(10, dtype=np.float32)[:1]).shape, [3])  # one context for all
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, "`conditional_input` must have batch dimensions that broadcast against"
    ):
      log_prob(x, np.eye(10, dtype=np.float32)[:2])
