"""SavedModel export: loaders without our code (Python, TF1 / TF Serving, C API), gRPC requests,
bad input at serving time, version directories, interrupted exports and training workdirs."""

import collections
import dataclasses
import hashlib
import inspect
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import unittest
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tests import export_testing
from tests.export_testing import (
  MAX_NUM_SAMPLES,
  SAMPLE_INPUTS,
  assert_close_relative,
  pixels,
  small_vector_flow,
)
from tests.training_testing import REPO_ROOT, run_script, short_config
from tfp_realnvp import data
from tfp_realnvp.serving import export, saved_model_distribution, serving_module
from tfp_realnvp.training import checkpoints, configs, train_lib


def tree_snapshot(directory):
  """Every path under `directory` with its contents' SHA-256 and modification time."""
  snapshot = {}
  for root, _, files in os.walk(directory):
    snapshot[root] = os.stat(root).st_mtime_ns
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as file:
        snapshot[path] = (
          hashlib.sha256(file.read()).hexdigest(),
          os.stat(path).st_mtime_ns,
        )
  return snapshot


def version_dirs(model_dir):
  return sorted(name for name in os.listdir(model_dir) if name.isascii() and name.isdigit())


@pytest.mark.slow
class ExportedFlowTest(export_testing.LoadedExportsTestCase):
  """One export of an image and a vector flow, checked through every loader."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # gcc, the fresh loader process and the C program run while this process works.
    cls.start_c_build()

    cls.flows = {"realnvp": export_testing.small_image_flow(), "vector": small_vector_flow()}
    base = os.path.join(cls.workspace, "exports")
    cls.paths = {
      name: export.export_saved_model(flow, base, model_name=name, max_num_samples=MAX_NUM_SAMPLES)
      for name, flow in cls.flows.items()
    }
    x_image = pixels([5, 8, 8, 1], 4, seed=10)
    x_bad = x_image.copy()
    x_bad[0, 1, 2, 0] = np.nan
    x_bad[1, 0, 0, 0] = -1.0
    x_bad[2, 7, 7, 0] = 17.0  # past the support (-0.889, 16.889) of 4-bit pixels
    x_bad[3, 4, 4, 0] = np.inf
    x_vector = np.random.RandomState(11).normal(size=[5, 3]).astype(np.float32)
    x_vector_bad = x_vector[:4].copy()
    x_vector_bad[0, 1], x_vector_bad[1, 0], x_vector_bad[2, 2] = np.nan, np.inf, -np.inf
    cls.inputs = {
      "realnvp": {
        "x": x_image,
        "x_bad": x_bad,
        "z": np.random.RandomState(12).normal(size=[4, 8, 8, 1]),
      },
      "vector": {
        "x": x_vector,
        "x_bad": x_vector_bad,
        "z": np.random.RandomState(13).normal(size=[4, 3]),
      },
    }
    cls.requests = {}
    for model, inputs in cls.inputs.items():
      x, z = inputs["x"], inputs["z"].astype(np.float32)
      cls.requests.update(
        {
          (model, "serving_default", "batch"): {"x": x},
          (model, "log_prob", "batch"): {"x": x},
          (model, "log_prob", "one_row"): {"x": x[1:2]},
          (model, "log_prob", "empty"): {"x": x[:0]},
          (model, "log_prob", "bad_values"): {"x": inputs["x_bad"]},
          (model, "log_prob", "wrong_rank"): {"x": x[..., 0]},
          (model, "log_prob", "wrong_dtype"): {"x": np.round(x).astype(np.int32)},
          (model, "encode", "batch"): {"x": x},
          (model, "encode", "empty"): {"x": x[:0]},
          (model, "decode", "batch"): {"z": z},
          (model, "decode", "empty"): {"z": z[:0]},
          (model, "sample", "seed"): SAMPLE_INPUTS,
          (model, "sample", "none"): dict(SAMPLE_INPUTS, num_samples=np.int32(0)),
          (model, "sample", "negative"): dict(SAMPLE_INPUTS, num_samples=np.int32(-1)),
          (model, "sample", "at_max"): dict(SAMPLE_INPUTS, num_samples=np.int32(MAX_NUM_SAMPLES)),
          (model, "sample", "above_max"): dict(SAMPLE_INPUTS, num_samples=np.int32(MAX_NUM_SAMPLES + 1)),
          (model, "sample", "int32_max"): dict(SAMPLE_INPUTS, num_samples=np.int32(2**31 - 1)),
          (model, "sample", "nan_temperature"): dict(SAMPLE_INPUTS, temperature=np.float32(np.nan)),
        }
      )
    # The gRPC client's requests, as TF Serving would decode and feed them.
    cls.grpc_requests = {}
    if export_testing.HAS_SERVING_API:
      grpc_client = export_testing.import_grpc_client()
      x = cls.inputs["realnvp"]["x"]
      cls.grpc_requests = {
        "log_prob": grpc_client.log_prob_request(x, "realnvp", "log_prob", version=1),
        "serving_default": grpc_client.log_prob_request(x),
        "sample": grpc_client.sample_request(3, 0.7, (7, 11)),
      }
      for signature, request in cls.grpc_requests.items():
        cls.requests[("realnvp", signature, "grpc")] = {
          name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()
        }
    loader = cls.start_loader(cls.requests, cls.paths)

    # docs/serving.md's `saved_model_cli run` command, as printed there.
    saved_model_cli = None
    if export_testing.SAVED_MODEL_CLI:
      np.save(os.path.join(cls.workspace, "rows.npy"), cls.inputs["realnvp"]["x"])
      saved_model_cli = subprocess.Popen(
        [
          export_testing.SAVED_MODEL_CLI,
          "run",
          "--dir",
          cls.paths["realnvp"],
          "--tag_set",
          "serve",
          "--signature_def",
          "log_prob",
          "--inputs",
          "x=rows.npy",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cls.workspace,
      )

    cls.expected = {}
    for model, flow in cls.flows.items():
      x, z = cls.inputs[model]["x"], cls.inputs[model]["z"].astype(np.float32)
      log_prob = {"log_prob": flow.log_prob(x).numpy()}
      if flow.num_bits is not None:
        log_prob["bits_per_dim"] = flow.bits_per_dim(x).numpy()
      samples = flow.sample(3, seed=tf.constant([7, 11]), temperature=0.7).numpy()
      cls.expected.update(
        {
          (model, "serving_default", "batch"): log_prob,
          (model, "log_prob", "batch"): log_prob,
          (model, "encode", "batch"): {"z": flow.encode(x).numpy()},
          (model, "decode", "batch"): {"x": flow.decode(z).numpy()},
          (model, "sample", "seed"): {"samples": samples},
        }
      )

    if cls.finish_c_build():
      # One load, six requests: the good batch followed by the bad-valued one, a sample,
      # a wrong image size, a wrong dtype, and samples at and above `max_num_samples`.
      x, x_bad = cls.inputs["realnvp"]["x"], cls.inputs["realnvp"]["x_bad"]
      arrays = {
        "batch": np.concatenate([x, x_bad]),
        "wrong_size": x[:2, :4, :4],
        "wrong_dtype": x.astype(np.float64),
      }
      for name, array in arrays.items():
        np.save(os.path.join(cls.workspace, f"{name}.npy"), array)
      requests = [
        ["log_prob", f"x={cls.workspace}/batch.npy"],
        ["sample", "num_samples=3", "temperature=0.7", "seed=7,11"],
        ["log_prob", f"x={cls.workspace}/wrong_size.npy"],
        ["log_prob", f"x={cls.workspace}/wrong_dtype.npy"],
        ["sample", f"num_samples={MAX_NUM_SAMPLES}", "temperature=0.7", "seed=7,11"],
        ["sample", f"num_samples={MAX_NUM_SAMPLES + 1}", "temperature=0.7", "seed=7,11"],
      ]
      cls.c_run = cls.run_c_program(cls.paths["realnvp"], requests)
    if saved_model_cli is not None:
      cls.saved_model_cli_output = saved_model_cli.communicate(timeout=600)
      cls.saved_model_cli_returncode = saved_model_cli.returncode
    cls.finish_loader(loader)

  def c_result(self, index):
    """The C program's `(signature, outputs or error)` for its `index`-th request."""
    return self.c_results_of(self.c_run, 6)[1][index]

  def test_first_export_is_version_1(self):
    self.assertEqual(os.path.basename(self.paths["realnvp"]), "1")

  def test_loader_process_imported_neither_tfp_realnvp_nor_tfp(self):
    self.assertEqual(self.loader_report["modules"], [])

  def test_every_signature_matches_the_flow_in_both_loaders(self):
    self.assert_both_loaders_match(image_model="realnvp")
    covered = {(model, signature) for model, signature, _ in self.expected}
    self.assertEqual(covered, {(m, s) for m in self.flows for s in serving_module.SIGNATURE_NAMES})

  def test_signatures_have_the_documented_names_dtypes_and_shapes(self):
    image, vector = [-1, 8, 8, 1], [-1, 3]
    for model, event, log_prob_outputs, sample_outputs in [
      (
        "realnvp",
        image,
        {"log_prob": ("float32", [-1]), "bits_per_dim": ("float32", [-1])},
        {"samples": ("float32", image), "images": ("uint8", image)},
      ),
      ("vector", vector, {"log_prob": ("float32", [-1])}, {"samples": ("float32", vector)}),
    ]:
      expected = {
        "serving_default": ({"x": ("float32", event)}, log_prob_outputs),
        "log_prob": ({"x": ("float32", event)}, log_prob_outputs),
        "sample": (
          {
            "num_samples": ("int32", []),
            "temperature": ("float32", []),
            "seed": ("int32", [2]),
          },
          sample_outputs,
        ),
        "encode": ({"x": ("float32", event)}, {"z": ("float32", event)}),
        "decode": ({"z": ("float32", event)}, {"x": ("float32", event)}),
      }
      self.assertEqual(set(expected), set(serving_module.SIGNATURE_NAMES))
      export_testing.assert_signatures(self, self.paths[model], expected, model=model)

  def test_rows_do_not_depend_on_their_batch_and_empty_batches_work(self):
    self.assert_rows_do_not_depend_on_their_batch_and_empty_batches_work()
    for model, flow in self.flows.items():
      for signature, output in [("encode", "z"), ("decode", "x")]:
        outputs = self.loader_result("tf1", model, signature, "empty")
        self.assertEqual(outputs[output].shape, (0, *flow.event_shape))

  def test_bad_values_score_nan_or_minus_inf(self):
    expected = {
      "realnvp": [np.nan, -np.inf, -np.inf, -np.inf],  # NaN, -1, 2**num_bits, inf
      "vector": [np.nan, -np.inf, -np.inf],  # NaN, inf, -inf
    }
    for model, special in expected.items():
      # The library's flow scores them the same (a vector flow's `[inf, ...]` once was NaN there).
      library = self.flows[model].log_prob(self.inputs[model]["x_bad"]).numpy()
      self.assertAllEqual(library[: len(special)], special)
    for loader in ("tf2", "tf1"):
      for model, special in expected.items():
        outputs = self.loader_result(loader, model, "log_prob", "bad_values")
        log_prob = outputs["log_prob"]
        self.assertAllEqual(log_prob[: len(special)], special)
        valid_row = len(special)  # the rows after the bad ones are the good batch's
        expected_log_prob = self.expected[(model, "log_prob", "batch")]["log_prob"]
        assert_close_relative(self, expected_log_prob[valid_row : len(log_prob)], log_prob[valid_row:])
        if model == "realnvp":
          self.assertAllEqual(outputs["bits_per_dim"][:4], [np.nan, np.inf, np.inf, np.inf])

  def test_bad_shapes_dtypes_and_sample_arguments_are_errors(self):
    for model in self.flows:
      # The graph checks the shape (the TF1 Python session refuses it even before).
      self.assertIn(
        "is not compatible with expected shape",
        self.loader_error("tf2", model, "log_prob", "wrong_rank"),
      )
      self.assertIn("ValueError", self.loader_error("tf1", model, "log_prob", "wrong_rank"))
      self.assertIn(
        "expected to be a float tensor but is a int32 tensor",
        self.loader_error("tf2", model, "log_prob", "wrong_dtype"),
      )
      for loader in ("tf2", "tf1"):
        self.assertIn(
          "`num_samples` must be non-negative",
          self.loader_error(loader, model, "sample", "negative"),
        )
        self.assertIn(
          "`temperature` must be",
          self.loader_error(loader, model, "sample", "nan_temperature"),
        )

  def test_c_program_matches_python_and_defines_bad_values(self):
    signature, outputs = self.c_result(0)
    self.assertEqual(signature, "log_prob")
    expected = self.expected[("realnvp", "log_prob", "batch")]
    self.assertEqual(set(outputs), set(expected))
    for name in expected:
      assert_close_relative(self, expected[name], outputs[name][:5])
      assert_close_relative(self, expected[name][4:], outputs[name][9:])
    # The bad-valued rows: NaN, -1, 2**num_bits and inf pixels.
    self.assertAllEqual(outputs["log_prob"][5:9], [np.nan, -np.inf, -np.inf, -np.inf])

    signature, outputs = self.c_result(1)
    self.assertEqual(signature, "sample")
    expected_samples = self.expected[("realnvp", "sample", "seed")]["samples"]
    assert_close_relative(self, expected_samples, outputs["samples"])
    self.assertAllEqual(self.loader_result("tf1", "realnvp", "sample", "seed")["images"], outputs["images"])

  def test_c_program_gets_an_error_for_a_wrong_shape_or_dtype(self):
    # The C++ loader does not check feeds against the signature: the graph must.
    self.assertEqual(self.c_results_of(self.c_run, 6)[0], 1)  # these two requests fail, the program does not
    self.assertIn("is not compatible with expected shape", self.c_result(2)[1])
    self.assertIn("Expects arg[0] to be float but double is provided", self.c_result(3)[1])

  def test_sample_refuses_more_than_max_num_samples_in_every_loader(self):
    for model, flow in self.flows.items():
      shape = (MAX_NUM_SAMPLES, *flow.event_shape)
      for loader in ("tf2", "tf1"):
        with self.subTest(model=model, loader=loader):
          samples = self.loader_result(loader, model, "sample", "at_max")["samples"]
          self.assertEqual(samples.shape, shape)
          self.assertTrue(np.all(np.isfinite(samples)))
          for case in ("above_max", "int32_max"):
            error = self.loader_error(loader, model, "sample", case)
            self.assertIn("InvalidArgumentError", error)
            self.assertIn(
              f"`num_samples` must be at most `max_num_samples`, set at export to {MAX_NUM_SAMPLES}", error
            )
    # The C API loader is TF Serving's.
    signature, outputs = self.c_result(4)
    self.assertEqual(signature, "sample")
    self.assertEqual(outputs["samples"].shape, (MAX_NUM_SAMPLES, 8, 8, 1))
    signature, error = self.c_result(5)
    self.assertEqual(signature, "sample")
    self.assertIn(
      f"`num_samples` must be at most `max_num_samples`, set at export to {MAX_NUM_SAMPLES}", error
    )

  @unittest.skipUnless(
    export_testing.SAVED_MODEL_CLI, "needs saved_model_cli (installed with tensorflow) on PATH"
  )
  def test_saved_model_cli_runs_the_readme_command(self):
    stdout, stderr = self.saved_model_cli_output
    self.assertEqual(self.saved_model_cli_returncode, 0, stderr[-3000:])
    # `Result for output key NAME:` and then the array as NumPy prints it, one block per output.
    blocks = re.findall(r"Result for output key (\w+):\n\[([^\]]*)\]", stdout)
    outputs = {name: np.array(values.split(), np.float32) for name, values in blocks}
    expected = self.expected[("realnvp", "log_prob", "batch")]
    self.assertEqual(set(outputs), set(expected), stdout)
    for name in expected:
      assert_close_relative(self, expected[name], outputs[name])

  @unittest.skipUnless(export_testing.HAS_SERVING_API, "needs tensorflow-serving-api (the serving extra)")
  def test_grpc_requests_match_the_signatures_and_run(self):
    self.assertEqual(self.grpc_requests["log_prob"].model_spec.version.value, 1)
    self.assert_grpc_requests_answer("realnvp")


class InProcessExportTest(export_testing.WorkspaceTestCase):
  """An export of a vector flow loaded back in this process: its signatures answer as the flow does, and
  `load_distribution` is a distribution backed by it. (`ExportedFlowTest` loads exports in loaders without
  this package.)"""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flow = small_vector_flow()
    cls.path = export.export_saved_model(
      cls.flow, os.path.join(cls.workspace, "exports"), "vector", max_num_samples=MAX_NUM_SAMPLES
    )

  def test_every_signature_answers_as_the_flow(self):
    signatures = tf.saved_model.load(self.path).signatures
    self.assertEqual(set(signatures.keys()), set(serving_module.SIGNATURE_NAMES))
    state = np.random.RandomState(14)
    x, z = (tf.constant(state.normal(size=[5, 3]).astype(np.float32)) for _ in range(2))
    for name in ("serving_default", "log_prob"):
      outputs = signatures[name](x=x)
      self.assertEqual(set(outputs), {"log_prob"})
      assert_close_relative(self, self.flow.log_prob(x), outputs["log_prob"])
    assert_close_relative(self, self.flow.encode(x), signatures["encode"](x=x)["z"])
    assert_close_relative(self, self.flow.decode(z), signatures["decode"](z=z)["x"])
    samples = signatures["sample"](**{name: tf.constant(value) for name, value in SAMPLE_INPUTS.items()})
    expected = self.flow.sample(3, seed=tf.constant([7, 11]), temperature=0.7)
    assert_close_relative(self, expected, samples["samples"])

  def test_each_serving_function_is_stored_once(self):
    # Traced outside the save and again inside it, every computation was stored twice: twice the file to
    # write, ship and load.
    with open(os.path.join(self.path, "saved_model.pb"), "rb") as file:
      (meta_graph,) = saved_model_pb2.SavedModel.FromString(file.read()).meta_graphs
    traced = collections.Counter(
      re.sub(r"_\d+$", "", function.signature.name) for function in meta_graph.graph_def.library.function
    )
    for name in ("_log_prob", "_sample", "_encode", "_decode"):
      with self.subTest(function=name):
        self.assertEqual(traced[f"__inference_{name}"], 1)

  def test_load_distribution_is_a_distribution_backed_by_the_export(self):
    flow = self.flow
    distribution = saved_model_distribution.load_distribution(self.path)
    self.assertEqual(distribution.event_shape, [3])
    self.assertEqual(distribution.batch_shape, [])
    self.assertEmpty(distribution.trainable_variables)
    x = np.random.RandomState(20).normal(size=[2, 4, 3]).astype(np.float32)
    assert_close_relative(self, flow.log_prob(x), distribution.log_prob(x))
    seed = tf.constant([3, 4])
    samples = distribution.sample(5, seed=seed)
    self.assertEqual(samples.shape, [5, 3])
    assert_close_relative(self, flow.sample(5, seed=seed), samples)
    self.assertAllEqual(samples, distribution.sample(5, seed=seed))
    self.assertNotAllClose(samples, distribution.sample(5, seed=tf.constant([3, 5])))
    self.assertEqual(distribution.sample([2, 3], seed=1).shape, [2, 3, 3])  # MAX_NUM_SAMPLES samples
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "at most `max_num_samples`"):
      distribution.sample(MAX_NUM_SAMPLES + 1, seed=1)
    # Gradients flow through the restored graph: usable as a learned prior.
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      exported, in_memory = distribution.log_prob(x), flow.log_prob(x)
    assert_close_relative(self, tape.gradient(in_memory, x), tape.gradient(exported, x), rtol=1e-4)

  def test_load_distribution_of_an_unconditional_export_refuses_a_context(self):
    distribution = saved_model_distribution.load_distribution(self.path)
    self.assertIsNone(distribution.conditional_event_shape)
    context = np.zeros([4, 2], np.float32)
    message = r"is unconditional: it takes no `conditional_input`; got one of shape \[4, 2\]"
    with self.assertRaisesRegex(ValueError, message):
      distribution.log_prob(np.zeros([4, 3], np.float32), conditional_input=context)
    with self.assertRaisesRegex(ValueError, message):
      distribution.sample(4, seed=1, conditional_input=context)


@pytest.mark.slow
class ExportCommandTest(export_testing.WorkspaceTestCase):
  """`export/export_model.py` on a workdir that `train_lib` trained: one line of output, no logging."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(cls.workspace, "run")
    config = short_config(2, num_samples=1)
    train_lib.train_and_evaluate(config, cls.workdir)
    flow, cls.checkpoint = checkpoints.restore_flow(cls.workdir)
    cls.num_parameters = export_testing.num_trainable_parameters(flow)

  def run_command(self, export_base, *flags):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
      [
        sys.executable,
        os.path.join(REPO_ROOT, "export", "export_model.py"),
        f"--workdir={self.workdir}",
        f"--export_base={export_base}",
        *flags,
      ],
      env={**env, "PYTHONPATH": REPO_ROOT},
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
    )

  def test_an_export_prints_what_it_exported_and_the_ood_threshold_and_no_logging(self):
    export_base = os.path.join(self.workspace, "quiet")
    completed = self.run_command(export_base, "--max_num_samples=3")
    self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
    path = os.path.join(export_base, "realnvp", "1")
    threshold = saved_model_distribution.load_distribution(path).ood_settings["threshold"]
    # The run evaluated on the test split: the threshold comes from its training split, and the line says so.
    self.assertEqual(
      completed.stdout,
      f"exported digits flow ({self.num_parameters:,} parameters) from {self.checkpoint} to {path}\n"
      f"ood_score: outlier above {threshold:.4f}, 5% of the images of train (the run's training split: no "
      "validation split held out); the flow trained on these images, so new ones are flagged more often\n",
    )
    self.assertEqual(self.checkpoint, os.path.join(self.workdir, "checkpoints", "ckpt-2"))
    self.assertEqual(completed.stderr, "")
    # `--max_num_samples` reaches the graph.
    sample = tf.saved_model.load(path).signatures["sample"]
    seed = tf.constant([1, 2])
    self.assertEqual(sample(num_samples=3, temperature=1.0, seed=seed)["samples"].shape, [3, 8, 8, 1])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "set at export to 3"):
      sample(num_samples=4, temperature=1.0, seed=seed)

  def test_verbosity_brings_the_logging_back(self):
    completed = self.run_command(os.path.join(self.workspace, "verbose"), "--verbosity=0")
    self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
    # The logging goes to stderr; stdout keeps the command's two report lines (the export and its ood_score).
    lines = completed.stdout.splitlines()
    self.assertEqual(len(lines), 2, completed.stdout)
    self.assertRegex(lines[0], r"^exported ")
    self.assertRegex(lines[1], r"^ood_score: ")
    self.assertRegex(completed.stderr, r"(?m)^I\d{4} .*Writing fingerprint")


@pytest.mark.slow
@unittest.skipUnless(export_testing.HAS_SERVING_API, "needs tensorflow-serving-api (the serving extra)")
class GrpcClientCommandTest(tf.test.TestCase):
  """`export/grpc_client.py` refuses bad arguments in one line, before it connects to anything."""

  def refusal(self, *arguments):
    completed = run_script("export/grpc_client.py", "--server=localhost:1", *arguments, timeout=120)
    self.assertEqual(completed.returncode, 1, completed.stderr)
    self.assertNotIn("Traceback", completed.stderr)
    self.assertNotIn("UNAVAILABLE", completed.stderr)  # refused before any request
    return completed.stderr

  def test_a_malformed_seed_is_one_line_naming_the_flag(self):
    self.assertIn(
      "--seed must be two comma-separated integers in int32's range, like --seed=1,2.",
      self.refusal("--num_samples=2", "--seed=1,x"),
    )

  def test_levels_refuse_num_samples(self):
    self.assertIn(
      "grpc_client: --levels says --input holds discrete images; it does not go with --num_samples.",
      self.refusal("--levels", "--num_samples=2"),
    )


class MaxNumSamplesTest(tf.test.TestCase):
  def test_the_default_is_4096_in_the_graph(self):
    self.assertEqual(serving_module.DEFAULT_MAX_NUM_SAMPLES, 4096)
    for function in (export.export_saved_model, export.export_workdir):
      self.assertEqual(inspect.signature(function).parameters["max_num_samples"].default, 4096)
    module = serving_module.ServingModule(small_vector_flow())
    seed = tf.constant([1, 2])
    self.assertEqual(module.sample(tf.constant(4096), tf.constant(1.0), seed)["samples"].shape, [4096, 3])
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, "at most `max_num_samples`, set at export to 4096"
    ):
      module.sample(tf.constant(4097), tf.constant(1.0), seed)

  def test_bad_max_num_samples_names_the_argument(self):
    flow = small_vector_flow()
    for value in (0, -1, True, 2.5, "8", 2**31 // 3 + 1):
      with self.assertRaisesRegex(ValueError, r"`max_num_samples` must be an integer in \[1, 715827882\]"):
        serving_module.ServingModule(flow, max_num_samples=value)


class Uint8ImagesTest(tf.test.TestCase):
  def test_levels_are_floored_clipped_and_stretched_to_0_255(self):
    samples = np.array([-3.0, 0.0, 0.99, 1.0, 7.5, 15.0, 15.99, 16.0, 40.0, np.nan], np.float32)
    self.assertAllEqual(data.uint8_images(samples, 4), [0, 0, 0, 17, 119, 255, 255, 255, 255, 0])
    self.assertAllEqual(
      data.uint8_images(np.array([-1.0, 0.5, 254.9, 255.5, 300.0], np.float32), 8),
      [0, 0, 254, 255, 255],
    )


class ExportDirectoryTest(export_testing.WorkspaceTestCase):
  """Version directories, interrupted exports and exports of training workdirs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.vector_flow = small_vector_flow()
    cls.vector_export = export.export_saved_model(
      cls.vector_flow, os.path.join(cls.workspace, "exports"), "vector", version=4
    )
    # A training workdir as train_lib leaves it: config.json and a checkpoint of flow, step, ...
    # One scale keeps its exports quick.
    cls.image_flow = export_testing.small_image_flow(num_scales=1)
    cls.workdir = os.path.join(cls.workspace, "workdir")
    os.makedirs(cls.workdir)
    # A flow-only checkpoint (no EMA, no learned dequantizer) of this flow's preprocessing.
    config = dataclasses.replace(
      configs.get_config(),
      model_overrides={**export_testing.IMAGE_OVERRIDES, "num_scales": 1},
      logit_alpha=cls.image_flow.parameters["logit_alpha"],
      ema_decay=0.0,
      dequantization="uniform",
    )
    with open(os.path.join(cls.workdir, "config.json"), "w") as file:
      file.write(configs.to_json(config))
    checkpoint = tf.train.Checkpoint(flow=cls.image_flow, step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, os.path.join(cls.workdir, "checkpoints"), 2).save(7)

  def model_dir(self, name):
    return os.path.join(self.workspace, "exports", name)

  @pytest.mark.slow
  def test_versions_count_up_from_the_largest_and_ignore_staging_directories(self):
    self.assertEqual(self.vector_export, os.path.join(self.model_dir("vector"), "4"))
    model_dir = self.model_dir("counting")
    shutil.copytree(self.vector_export, os.path.join(model_dir, "5"))
    os.makedirs(os.path.join(model_dir, ".staging-left-by-a-killed-export"))
    path = export.export_saved_model(self.vector_flow, os.path.dirname(model_dir), "counting")
    self.assertEqual(path, os.path.join(model_dir, "6"))
    self.assertEqual(version_dirs(model_dir), ["5", "6"])
    self.assertTrue(os.path.exists(os.path.join(path, "saved_model.pb")))

  def test_only_ascii_decimal_int64_names_are_versions(self):
    model_dir = self.model_dir("unicode_digits")
    shutil.copytree(self.vector_export, os.path.join(model_dir, "2"))
    # `str.isdigit` is True for all three; `int` refuses the first two, TF Serving's int64 the third.
    for name in ("²", "٣", "9" * 20):
      os.makedirs(os.path.join(model_dir, name))
    path = export.export_saved_model(self.vector_flow, os.path.dirname(model_dir), "unicode_digits")
    self.assertEqual(path, os.path.join(model_dir, "3"))

  @pytest.mark.slow
  def test_export_into_an_existing_version_raises_and_leaves_it_untouched(self):
    # TF Serving parses version names as int64: `007` is version 7.
    for name, version in [("3", 3), ("007", 7)]:
      with self.subTest(name=name):
        model_dir = self.model_dir(f"existing_{name}")
        shutil.copytree(self.vector_export, os.path.join(model_dir, name))
        before = tree_snapshot(model_dir)
        with self.assertRaisesRegex(FileExistsError, f"Version {version} already exists as .*/{name};"):
          export.export_saved_model(
            self.vector_flow, os.path.dirname(model_dir), os.path.basename(model_dir), version=version
          )
        self.assertEqual(tree_snapshot(model_dir), before)
        self.assertEqual(os.listdir(model_dir), [name])
    path = export.export_saved_model(self.vector_flow, os.path.dirname(model_dir), "existing_007")
    self.assertEqual(path, os.path.join(model_dir, "8"))

  @pytest.mark.slow
  def test_versions_are_as_readable_as_the_umask_allows(self):
    for umask, directory_mode, file_mode in [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)]:
      with self.subTest(umask=oct(umask)):
        previous = os.umask(umask)
        try:
          path = export.export_saved_model(self.vector_flow, self.model_dir(f"umask_{umask:o}"), "modes")
        finally:
          os.umask(previous)
        modes = {}
        for root, directories, files in os.walk(path):
          for name in [".", *directories]:
            modes[os.path.relpath(os.path.join(root, name), path)] = (True, os.stat(os.path.join(root, name)))
          for name in files:
            modes[os.path.relpath(os.path.join(root, name), path)] = (
              False,
              os.stat(os.path.join(root, name)),
            )
        self.assertContainsSubset({".", "variables", "saved_model.pb"}, modes)
        for name, (is_directory, status) in modes.items():
          expected = directory_mode if is_directory else file_mode
          self.assertEqual(oct(stat.S_IMODE(status.st_mode)), oct(expected), name)

  def test_interrupted_export_leaves_no_version_and_no_staging_directory(self):
    base = os.path.dirname(self.model_dir("interrupted"))
    # Ctrl-C arriving after the SavedModel is written, just before it is published.
    with (
      mock.patch.object(export.os, "rename", side_effect=KeyboardInterrupt),
      self.assertRaises(KeyboardInterrupt),
    ):
      export.export_saved_model(self.vector_flow, base, "interrupted")
    self.assertEqual(os.listdir(self.model_dir("interrupted")), [])

  @pytest.mark.slow
  def test_killed_export_command_leaves_no_version_directory(self):
    base = os.path.join(self.workspace, "killed")
    model_dir = os.path.join(base, "realnvp")
    log_path = os.path.join(self.workspace, "killed_export.log")
    with open(log_path, "w") as log:
      process = subprocess.Popen(
        [
          sys.executable,
          os.path.join(REPO_ROOT, "export", "export_model.py"),
          f"--workdir={self.workdir}",
          f"--export_base={base}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
      )
    try:
      deadline = time.monotonic() + 300
      while not (os.path.isdir(model_dir) and os.listdir(model_dir)):
        if process.poll() is not None or time.monotonic() > deadline:
          with open(log_path) as log:
            self.fail(f"The export was not caught mid-way:\n{log.read()[-3000:]}")
        time.sleep(0.01)
      os.kill(process.pid, signal.SIGKILL)  # mid-way: the staging directory exists
      process.wait(timeout=60)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    self.assertEqual(process.returncode, -signal.SIGKILL)
    (staging,) = os.listdir(model_dir)
    self.assertTrue(staging.startswith(".staging-"))
    self.assertEqual(version_dirs(model_dir), [])

  def test_load_distribution_of_a_damaged_export_is_one_error_naming_it(self):
    def truncate(path):
      with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)

    damages = {
      "half_saved_model_pb": lambda path: truncate(os.path.join(path, "saved_model.pb")),
      "no_saved_model_pb": lambda path: os.remove(os.path.join(path, "saved_model.pb")),
      "no_variables": lambda path: shutil.rmtree(os.path.join(path, "variables")),
      "half_variables_data": lambda path: truncate(
        os.path.join(path, "variables", "variables.data-00000-of-00001")
      ),
      "half_variables_index": lambda path: truncate(os.path.join(path, "variables", "variables.index")),
    }
    for name, damage in damages.items():
      with self.subTest(damage=name):
        path = os.path.join(self.workspace, "damaged", name)
        shutil.copytree(self.vector_export, path)
        damage(path)
        with self.assertRaises(ValueError) as context:
          saved_model_distribution.load_distribution(path)
        message = str(context.exception)
        self.assertTrue(message.startswith(f"`path` {path} does not hold a complete SavedModel"), message)
        self.assertNotIn("\n", message)
        self.assertIsNone(context.exception.__cause__)
        self.assertTrue(context.exception.__suppress_context__)  # no traceback from inside TensorFlow
    missing = os.path.join(self.workspace, "damaged", "missing")
    with self.assertRaisesRegex(FileNotFoundError, f"{missing} is not a directory"):
      saved_model_distribution.load_distribution(missing)

  @pytest.mark.slow
  def test_export_workdir_exports_the_checkpointed_flow(self):
    base = os.path.join(self.workspace, "from_workdir")
    path, checkpoint, dataset, num_parameters, *_ = export.export_workdir(self.workdir, base)
    self.assertEqual(path, os.path.join(base, "realnvp", "1"))
    self.assertEqual(checkpoint, os.path.join(self.workdir, "checkpoints", "ckpt-7"))
    self.assertEqual(dataset, "digits")
    self.assertEqual(num_parameters, export_testing.num_trainable_parameters(self.image_flow))
    x = pixels([4, 8, 8, 1], 4, seed=30)
    exported = tf.saved_model.load(path).signatures["log_prob"](x=tf.constant(x))["log_prob"]
    assert_close_relative(self, self.image_flow.log_prob(x), exported)

  def test_restore_flow_errors_name_what_is_missing_or_wrong(self):
    with self.assertRaisesRegex(FileNotFoundError, "config.json"):
      checkpoints.restore_flow(os.path.join(self.workspace, "no_such_run"))
    with self.assertRaisesRegex(FileNotFoundError, "no checkpoint"):
      empty_run = os.path.join(self.workspace, "empty_run")
      os.makedirs(empty_run)
      shutil.copy(os.path.join(self.workdir, "config.json"), empty_run)
      checkpoints.restore_flow(empty_run)
    vector_checkpoint = tf.train.Checkpoint(flow=self.vector_flow).save(
      os.path.join(self.workspace, "vector_checkpoint", "ckpt")
    )
    with self.assertRaisesRegex(ValueError, "does not hold the flow"):
      checkpoints.restore_flow(self.workdir, checkpoint=vector_checkpoint)

  def test_bad_arguments_name_the_argument(self):
    base = os.path.join(self.workspace, "bad_arguments")
    for model_name in ("", "a/b", ".."):
      with self.assertRaisesRegex(ValueError, "`model_name`"):
        export.export_saved_model(self.vector_flow, base, model_name=model_name)
    for version in (-1, True, "3", 1.0, 2**63):
      with self.assertRaisesRegex(ValueError, "`version`"):
        export.export_saved_model(self.vector_flow, base, version=version)
    with self.assertRaisesRegex(ValueError, "`max_num_samples`"):
      export.export_saved_model(self.vector_flow, base, max_num_samples=0)
    self.assertFalse(os.path.exists(base))


if __name__ == "__main__":
  tf.test.main()
