"""What the export tests share: small flows with moved batch-norm averages and non-trivial couplings, the
loaders that know nothing of this package (a fresh interpreter with the TF2 and the TF1 / TF Serving loader,
the C program `export/realnvp_serve.c`, gRPC requests) and the checks every export must pass in them."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tests.bijector_testing import perturb
from tests.training_testing import REPO_ROOT
from tfp_realnvp import RealNVP, data

TF_DIR = os.path.dirname(tf.__file__)
IMAGE_OVERRIDES = {"num_blocks": 1, "num_filters": 4, "dropout": 0.0, "batch_norm_momentum": 0.5}
# The exports' `max_num_samples`: small, so that requests at the limit are quick.
MAX_NUM_SAMPLES = 6
SAMPLE_INPUTS = {
  "num_samples": np.int32(3),
  "temperature": np.float32(0.7),
  "seed": np.array([7, 11], np.int32),
}

# Runs in a fresh interpreter that imports only TensorFlow and NumPy: every request through
# `tf.saved_model.load` and through the TF1 loader TF Serving uses. Prints a JSON report.
LOADER_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

requests_path, results_path, model_paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
requests = np.load(requests_path)
cases = {}
for key in requests.files:
    model, signature, case, name = key.split("|")
    cases.setdefault((model, signature, case), {})[name] = requests[key]
outputs, errors = {}, {}


def record(prefix, run):
    try:
        for name, value in run().items():
            outputs[f"{prefix}|{name}"] = np.asarray(value)
    except Exception as error:
        errors[prefix] = f"{type(error).__name__}: {str(error).strip()[:300]}"


for model, path in model_paths.items():
    model_cases = {key: inputs for key, inputs in cases.items() if key[0] == model}
    loaded = tf.saved_model.load(path)
    for (_, signature, case), inputs in model_cases.items():
        function = loaded.signatures[signature]
        record(f"tf2|{model}|{signature}|{case}",
               lambda: function(**{k: tf.constant(v) for k, v in inputs.items()}))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        for (_, signature, case), inputs in model_cases.items():
            definition = meta_graph.signature_def[signature]
            feeds = {definition.inputs[k].name: v for k, v in inputs.items()}
            fetches = {k: v.name for k, v in definition.outputs.items()}
            record(f"tf1|{model}|{signature}|{case}", lambda: session.run(fetches, feeds))

np.savez(results_path, **outputs)
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("tfp_realnvp", "tensorflow_probability"))
print(json.dumps({"errors": errors, "modules": ours}))
"""


def pixels(shape, num_bits, seed):
  return np.random.RandomState(seed).uniform(0.0, 2.0**num_bits, shape).astype(np.float32)


def small_image_flow(**overrides):
  """The digits preset, small, with moved batch-norm averages and non-trivial couplings."""
  flow = RealNVP.from_preset("digits", **{**IMAGE_OVERRIDES, **overrides})
  for seed in range(3):
    flow.log_prob(pixels([16, 8, 8, 1], 4, seed), training=True)
  perturb(flow, stddev=0.1)
  return flow


def small_vector_flow(conditional_event_shape=None):
  """A vector flow over `R^3` with moved batch-norm averages and non-trivial couplings; with
  `conditional_event_shape`, of `p(x | c)` for a real-valued context."""
  flow = RealNVP(
    event_shape=(3,),
    num_couplings=4,
    hidden_units=(16,),
    batch_norm=True,
    batch_norm_momentum=0.5,
    conditional_event_shape=conditional_event_shape,
  )
  for seed in range(3):
    state = np.random.RandomState(seed)
    x = state.normal(size=[16, 3]).astype(np.float32)
    context = None
    if conditional_event_shape is not None:
      context = state.normal(size=[16, *conditional_event_shape]).astype(np.float32)
    flow.log_prob(x, training=True, conditional_input=context)
  perturb(flow, stddev=0.1)
  return flow


NUM_CLASSES = 10  # the digits' labels


def one_hot(labels):
  return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def moved_and_perturbed(flow):
  """`flow`, a digits flow conditioned on one-hot labels, with its batch-norm averages moved and its couplings
  perturbed (not the identity)."""
  for seed in range(3):
    labels = np.random.RandomState(seed).randint(NUM_CLASSES, size=16)
    flow.log_prob(pixels([16, 8, 8, 1], 4, seed), training=True, conditional_input=one_hot(labels))
  perturb(flow, stddev=0.1)
  return flow


def num_trainable_parameters(flow):
  return sum(int(np.prod(variable.shape)) for variable in flow.trainable_variables)


def assert_close_relative(test, expected, actual, rtol=1e-5):
  """Equal to `rtol` relative to the largest magnitude in `expected` (entries near 0 included)."""
  expected, actual = np.asarray(expected), np.asarray(actual)
  test.assertEqual(expected.shape, actual.shape)
  scale = float(np.max(np.abs(expected), initial=1e-30))
  test.assertAllClose(expected, actual, rtol=rtol, atol=rtol * scale)


def signature_defs(version_dir):
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as file:
    saved_model = saved_model_pb2.SavedModel.FromString(file.read())
  (meta_graph,) = saved_model.meta_graphs
  return meta_graph.signature_def


def tensor_table(tensor_infos):
  """`{name: (dtype name, dims)}` of a signature's inputs or outputs; -1 for any size."""
  return {
    name: (tf.dtypes.as_dtype(info.dtype).name, [dim.size for dim in info.tensor_shape.dim])
    for name, info in tensor_infos.items()
  }


def assert_signatures(test, version_dir, expected, **labels):
  """The export in `version_dir` has exactly the signatures of `expected` `{name: (inputs, outputs)}`, each a
  TF Serving predict method whose inputs and outputs have those `tensor_table`s (TF's own
  `__saved_model_init_op` aside: TF Serving ignores it). `labels` name the export in the subtests."""
  definitions = signature_defs(version_dir)
  test.assertEqual({name for name in definitions if not name.startswith("__")}, set(expected))
  for name, (inputs, outputs) in expected.items():
    with test.subTest(signature=name, **labels):
      test.assertEqual(tensor_table(definitions[name].inputs), inputs)
      test.assertEqual(tensor_table(definitions[name].outputs), outputs)
      test.assertEqual(definitions[name].method_name, "tensorflow/serving/predict")


def gcc_command(binary):
  return [
    "gcc",
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-o",
    binary,
    os.path.join(REPO_ROOT, "export", "realnvp_serve.c"),
    f"-I{TF_DIR}/include",
    f"-L{TF_DIR}",
    "-l:libtensorflow_cc.so.2",
    "-l:libtensorflow_framework.so.2",
    f"-Wl,-rpath,{TF_DIR}",
  ]


def parse_binary_output(stdout):
  """`[(signature, {output: array} or error message)]` from `realnvp_serve`'s output."""
  results = []
  for line in stdout.splitlines():
    if line.startswith("== "):
      results.append((line[3:], {}))
    elif line.startswith("error "):
      results[-1] = (results[-1][0], line[6:])
    else:
      name, dtype, dims, *values = line.split(" ")
      shape = [int(dim) for dim in dims.split(",")] if dims else []
      array = np.array([float(value) for value in values]).astype(dtype).reshape(shape)
      results[-1][1][name] = array
  return results


def import_grpc_client():
  spec = importlib.util.spec_from_file_location(
    "grpc_client", os.path.join(REPO_ROOT, "export", "grpc_client.py")
  )
  grpc_client = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(grpc_client)
  return grpc_client


HAS_SERVING_API = importlib.util.find_spec("tensorflow_serving") is not None
# Installed with tensorflow, beside this interpreter.
SAVED_MODEL_CLI = shutil.which(
  "saved_model_cli", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)


class WorkspaceTestCase(tf.test.TestCase):
  """`cls.workspace`: a directory for the whole class, removed after its last test."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workspace = tempfile.mkdtemp(prefix=f"{cls.__name__}_")
    cls.addClassCleanup(shutil.rmtree, cls.workspace, ignore_errors=True)


class LoadedExportsTestCase(WorkspaceTestCase):
  """Exports loaded by `LOADER_SCRIPT` in a fresh interpreter and by the C program.

  In `setUpClass`: `start_c_build` and `start_loader`, the exports' expected outputs while both run, then
  `finish_c_build` and `run_c_program`, and `finish_loader`. The tests read what the fresh process got with
  `loader_result` and `loader_error`, and compare with `assert_outputs_match`.

  Import this module, not the class, into a test module: pytest would collect the class there.
  """

  @classmethod
  def start_c_build(cls):
    """Starts gcc on `export/realnvp_serve.c`, building `cls.binary`; `finish_c_build` waits for it."""
    cls.binary = os.path.join(cls.workspace, "realnvp_serve")
    cls.gcc = subprocess.Popen(
      gcc_command(cls.binary), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

  @classmethod
  def finish_c_build(cls):
    """Waits for gcc and keeps its output for `c_results_of`; returns whether it built the program."""
    cls.gcc_output = cls.gcc.communicate(timeout=600)[0]
    cls.gcc_returncode = cls.gcc.returncode
    return cls.gcc_returncode == 0

  @classmethod
  def run_c_program(cls, path, requests):
    """One run of the C program on the export `path` with `requests` (each a list of its arguments: the
    signature, then `name=value` inputs), in the workspace; returns its status, its stderr and its
    `[(signature, {output: array} or error message)]`."""
    arguments = [cls.binary, path]
    for request in requests:
      arguments += [*request, "--"]
    completed = subprocess.run(
      arguments[:-1], check=False, capture_output=True, text=True, timeout=600, cwd=cls.workspace
    )
    return completed.returncode, completed.stderr, parse_binary_output(completed.stdout)

  def c_results_of(self, run, count):
    """The status and the `count` results of `run`, a `run_c_program` answer; fails if gcc did not build
    the program or the program gave another number of results."""
    self.assertEqual(self.gcc_returncode, 0, self.gcc_output)
    returncode, stderr, results = run
    self.assertLen(results, count, stderr[-3000:])
    return returncode, results

  @classmethod
  def start_loader(cls, requests, paths):
    """Starts the fresh process on `requests` `{(model, signature, case): {input name: array}}` to the
    exports `paths` `{model: version directory}`; returns it for `finish_loader`."""
    requests_path = os.path.join(cls.workspace, "requests.npz")
    np.savez(
      requests_path,
      **{"|".join((*key, name)): value for key, inputs in requests.items() for name, value in inputs.items()},
    )
    results_path = os.path.join(cls.workspace, "results.npz")
    return subprocess.Popen(
      [sys.executable, "-c", LOADER_SCRIPT, requests_path, results_path, json.dumps(paths)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=cls.workspace,
    )

  @classmethod
  def finish_loader(cls, loader):
    """Waits for `loader` and keeps its report and outputs."""
    stdout, stderr = loader.communicate(timeout=600)
    if loader.returncode:
      raise RuntimeError(f"The loader process failed:\n{stderr[-5000:]}")
    cls.loader_report = json.loads(stdout.strip().splitlines()[-1])
    with np.load(os.path.join(cls.workspace, "results.npz")) as results:
      cls.loader_outputs = dict(results)

  def loader_result(self, loader, model, signature, case):
    """The outputs the fresh process got, or fails with the error it recorded."""
    prefix = f"{loader}|{model}|{signature}|{case}|"
    outputs = {
      key[len(prefix) :]: value for key, value in self.loader_outputs.items() if key.startswith(prefix)
    }
    if not outputs:
      self.fail(f"{prefix} failed: {self.loader_report['errors'].get(prefix[:-1])}")
    return outputs

  def loader_error(self, loader, model, signature, case):
    return self.loader_report["errors"].get(f"{loader}|{model}|{signature}|{case}", "")

  def assert_outputs_match(self, expected, actual):
    """`actual` has the outputs `expected` `{name: array}` has: equal labels, other values equal to 1e-5
    relative (`assert_close_relative`)."""
    self.assertEqual(set(expected), set(actual))
    for name in expected:
      if name == "label":
        self.assertAllEqual(expected[name], actual[name])
      else:
        assert_close_relative(self, expected[name], actual[name])

  def assert_both_loaders_match(self, image_model):
    """Both loaders of the fresh process answered every request of `cls.expected`
    `{(model, signature, case): outputs}` with those outputs; the `images` of `image_model`'s samples are
    their `uint8` pixels."""
    for loader in ("tf2", "tf1"):
      for (model, signature, case), expected in self.expected.items():
        with self.subTest(loader=loader, model=model, signature=signature):
          actual = self.loader_result(loader, model, signature, case)
          if signature == "sample" and model == image_model:
            self.assertAllEqual(data.uint8_images(actual["samples"], 4), actual.pop("images"))
          self.assert_outputs_match(expected, actual)

  def assert_rows_do_not_depend_on_their_batch_and_empty_batches_work(self):
    """In the TF1 loader, for each of `cls.flows` `{model: flow}`: a row alone (`one_row`) scores as in its
    batch (batch norm runs on its running averages), and an empty batch (`log_prob`'s `empty`) and no samples
    (`sample`'s `none`) give empty outputs."""
    for model, flow in self.flows.items():
      batch = self.loader_result("tf1", model, "log_prob", "batch")["log_prob"]
      one_row = self.loader_result("tf1", model, "log_prob", "one_row")["log_prob"]
      assert_close_relative(self, batch[1:2], one_row)
      self.assertEqual(self.loader_result("tf1", model, "log_prob", "empty")["log_prob"].shape, (0,))
      samples = self.loader_result("tf1", model, "sample", "none")["samples"]
      self.assertEqual(samples.shape, (0, *flow.event_shape))

  def assert_grpc_requests_answer(self, model):
    """Each of `cls.grpc_requests` `{signature: PredictRequest}` fits `model`'s signature, and TF Serving's
    answer to it, read back by the client, is `cls.expected`'s: the `seed` case for `sample`, the `k3` case for
    the signatures of discrete images (their requests ask for 3 draws), else `batch`."""
    definitions = signature_defs(self.paths[model])
    cases = {"sample": "seed", "discrete_bits_per_dim": "k3", "classify_levels": "k3"}
    for signature, request in self.grpc_requests.items():
      with self.subTest(signature=signature):
        self.assert_grpc_request_fits(request, model, signature, definitions)
        outputs = self.grpc_response_outputs(model, signature)
        expected = self.expected[(model, signature, cases.get(signature, "batch"))]
        self.assert_outputs_match(expected, {name: outputs[name] for name in expected})

  def assert_grpc_request_fits(self, request, model_name, signature, definitions):
    """`request` asks for `model_name`'s `signature` with inputs of the names, dtypes and shapes that its
    `definitions[signature]` takes."""
    self.assertEqual(request.model_spec.name, model_name)
    self.assertEqual(request.model_spec.signature_name, signature)
    definition = definitions[signature]
    self.assertEqual(set(request.inputs), set(definition.inputs))
    for name, tensor in request.inputs.items():
      self.assertEqual(tensor.dtype, definition.inputs[name].dtype)
      shape = tf.TensorShape([dim.size for dim in tensor.tensor_shape.dim])
      signature_shape = tf.TensorShape(definition.inputs[name].tensor_shape)
      self.assertTrue(signature_shape.is_compatible_with(shape), (name, shape))

  def grpc_response_outputs(self, model, signature):
    """TF Serving's answer to the gRPC request recorded as `(model, signature, 'grpc')`: the TF1 loader's
    outputs in a `PredictResponse`, read back by the client."""
    from tensorflow_serving.apis import predict_pb2  # optional: the serving extra

    response = predict_pb2.PredictResponse()
    for name, value in self.loader_result("tf1", model, signature, "grpc").items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return import_grpc_client().response_to_numpy(response)
