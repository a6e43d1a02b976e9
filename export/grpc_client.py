r"""gRPC client for a RealNVP flow served by TF Serving: scores or classifies a batch, or draws samples.

Needs `pip install tfp_realnvp[serving]` (tensorflow-serving-api), not this package:

  python export/grpc_client.py --server=localhost:8500 --model_name=realnvp --input=batch.npy
  python export/grpc_client.py --server=localhost:8500 --model_name=realnvp \
      --num_samples=16 --temperature=0.7 --seed=1,2 --output=samples.npz
  python export/grpc_client.py --server=localhost:8500 --input=batch.npy --conditional_input=labels.npy
  python export/grpc_client.py --server=localhost:8500 --input=batch.npy --classify
  python export/grpc_client.py --server=localhost:8500 --input=levels.npy --levels --num_importance_samples=10
  python export/grpc_client.py --server=localhost:8500 --input=levels.npy --levels --classify

`batch.npy` holds float32 `[batch, *event_shape]` pixel values (or vectors). A conditional flow's requests
take `--conditional_input`, float32 `[batch, *conditional_event_shape]` (for sampling `[num_samples, ...]`);
`--classify` asks a class-conditional export for `log p(y | x)`. With `--levels`, `--input` holds the discrete
images themselves (integer pixel levels) and goes to `discrete_bits_per_dim`, or with `--classify` to
`classify_levels`, which dequantize them with the export's own dequantizer at `--num_importance_samples`
draws. The request builders below are the example to copy into other programs.
"""

import sys

import grpc
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

__all__ = [
  "classify_request",
  "levels_request",
  "log_prob_request",
  "predict",
  "response_to_numpy",
  "sample_request",
]


def _model_spec(request, model_name, signature_name, version):
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = version


def _float32_input(request, name, value):
  request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))


def _int32_input(request, name, value):
  request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value, np.int32)))


def log_prob_request(
  x, model_name="realnvp", signature_name="serving_default", version=None, conditional_input=None
):
  """A `PredictRequest` for `log_prob` (and `bits_per_dim`) of the rows of `x`.

  `x`: float32 `[batch, *event_shape]`. `version=None` asks for the newest version. `conditional_input`: for a
  conditional flow, float32 `[batch, *conditional_event_shape]`, one context per row.
  """
  request = predict_pb2.PredictRequest()
  _model_spec(request, model_name, signature_name, version)
  _float32_input(request, "x", x)
  if conditional_input is not None:
    _float32_input(request, "conditional_input", conditional_input)
  return request


def sample_request(
  num_samples, temperature=1.0, seed=(0, 0), model_name="realnvp", version=None, conditional_input=None
):
  """A `PredictRequest` for `num_samples` samples at `temperature`; the same `seed`, the same samples.

  `conditional_input`: for a conditional flow, float32 `[num_samples, *conditional_event_shape]`.
  """
  request = predict_pb2.PredictRequest()
  _model_spec(request, model_name, "sample", version)
  _int32_input(request, "num_samples", num_samples)
  _float32_input(request, "temperature", temperature)
  _int32_input(request, "seed", np.reshape(seed, [2]))
  if conditional_input is not None:
    _float32_input(request, "conditional_input", conditional_input)
  return request


def classify_request(x, model_name="realnvp", version=None):
  """A `PredictRequest` to a class-conditional export's `classify`: `log_probs` (`log p(y | x)`), `label` and
  the marginal `log_prob` of the rows of `x`, float32 `[batch, *event_shape]`."""
  request = predict_pb2.PredictRequest()
  _model_spec(request, model_name, "classify", version)
  _float32_input(request, "x", x)
  return request


def levels_request(
  levels,
  num_samples=1,
  seed=(0, 0),
  signature_name="discrete_bits_per_dim",
  model_name="realnvp",
  version=None,
  conditional_input=None,
):
  """A `PredictRequest` for discrete images, to `discrete_bits_per_dim` (the default) or `classify_levels`.

  `levels`: the integer pixel levels, float32 `[batch, *event_shape]`. The export's dequantizer draws
  `num_samples` offsets `u_k` per image: `discrete_bits_per_dim` answers the importance-weighted bound
  `-log2 (1/K) sum_k p(v + u_k) / q(u_k | v) / D`, a class-conditional export's `classify_levels` the same bound
  for every class and `log p(y | levels)`. The same `seed`, the same draws. `conditional_input`: for
  `discrete_bits_per_dim` of a conditional flow, float32 `[batch, *conditional_event_shape]`.
  """
  request = predict_pb2.PredictRequest()
  _model_spec(request, model_name, signature_name, version)
  _float32_input(request, "levels", levels)
  _int32_input(request, "num_samples", num_samples)
  _int32_input(request, "seed", np.reshape(seed, [2]))
  if conditional_input is not None:
    _float32_input(request, "conditional_input", conditional_input)
  return request


def response_to_numpy(response):
  """`{output name: numpy array}` from a `PredictResponse`."""
  return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def predict(server, request, timeout=30.0):
  """Sends `request` to TF Serving's gRPC port `server` (`host:port`); returns the outputs."""
  with grpc.insecure_channel(server) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return response_to_numpy(stub.Predict(request, timeout))


FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a script, so that importing the request builders adds no flags.
  flags.DEFINE_string("server", "localhost:8500", "TF Serving's gRPC address.")
  flags.DEFINE_string("model_name", "realnvp", "The served model's name.")
  flags.DEFINE_integer("version", None, "The model version; default: the newest.")
  flags.DEFINE_string("input", None, "A .npy file of rows to score with `log_prob`.")
  flags.DEFINE_string(
    "conditional_input", None, "A conditional flow's contexts: a .npy file, one row per row."
  )
  flags.DEFINE_bool(
    "classify", False, "Classify `--input` (a class-conditional export) instead of scoring it."
  )
  flags.DEFINE_bool(
    "levels",
    False,
    "`--input` holds integer pixel levels: bound their discrete likelihood (`discrete_bits_per_dim`), or with "
    "`--classify` classify them (`classify_levels`).",
  )
  flags.DEFINE_integer(
    "num_importance_samples", 1, "With `--levels`: the dequantizer's draws K per image (importance-weighted)."
  )
  flags.DEFINE_integer("num_samples", None, "Draw this many samples instead of scoring `--input`.")
  flags.DEFINE_float("temperature", 1.0, "Sampling temperature (base standard deviation).")
  flags.DEFINE_list("seed", ["0", "0"], "Two integers: the stateless seed of the samples or draws.")
  flags.register_validator(
    "seed", _is_seed, message="--seed must be two comma-separated integers in int32's range, like --seed=1,2."
  )
  flags.DEFINE_string("output", None, "Write the outputs to this .npz file.")


def _is_seed(values):
  try:
    return len(values) == 2 and all(-(2**31) <= int(value) < 2**31 for value in values)
  except ValueError:
    return False


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if (FLAGS.input is None) == (FLAGS.num_samples is None):
    sys.exit("grpc_client: give exactly one of --input (score rows) or --num_samples (sample).")
  if FLAGS.classify and (FLAGS.input is None or FLAGS.conditional_input is not None):
    sys.exit("grpc_client: --classify classifies --input and takes no --conditional_input.")
  if FLAGS.levels and FLAGS.input is None:
    sys.exit("grpc_client: --levels says --input holds discrete images; it does not go with --num_samples.")
  context = None if FLAGS.conditional_input is None else np.load(FLAGS.conditional_input)
  seed = [int(value) for value in FLAGS.seed]
  if FLAGS.levels:
    request = levels_request(
      np.load(FLAGS.input),
      FLAGS.num_importance_samples,
      seed,
      "classify_levels" if FLAGS.classify else "discrete_bits_per_dim",
      FLAGS.model_name,
      FLAGS.version,
      conditional_input=context,
    )
  elif FLAGS.classify:
    request = classify_request(np.load(FLAGS.input), FLAGS.model_name, FLAGS.version)
  elif FLAGS.input is not None:
    request = log_prob_request(
      np.load(FLAGS.input), FLAGS.model_name, version=FLAGS.version, conditional_input=context
    )
  else:
    request = sample_request(
      FLAGS.num_samples, FLAGS.temperature, seed, FLAGS.model_name, FLAGS.version, conditional_input=context
    )
  try:
    outputs = predict(FLAGS.server, request)
  except grpc.RpcError as error:
    sys.exit(f"grpc_client: {error.code().name}: {error.details()}")
  for name, value in sorted(outputs.items()):
    summary = value if value.ndim == 1 else f"{value.dtype} array of shape {value.shape}"
    print(f"{name}: {summary}")
  if FLAGS.output:
    np.savez(FLAGS.output, **outputs)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
