"""Export speed and serving throughput: export time, SavedModel size, and log_prob / sample images/s
of the exported model (Python loader and TF1 / TF Serving loader) against the in-memory flow.

Usage, from the repository root:

  python bench/bench_export.py                       # digits and small (32x32x3)
  python bench/bench_export.py --models=digits --batch_size=256

One JSON line per model. Throughput is the batch over the median of `--timed_runs` runs after
`--warmup_runs`; `load_average` (1-minute, before the run) says how much the cores were shared.
"""

import json
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfp_realnvp.flows import RealNVP
from tfp_realnvp.serving import export

_MODELS = flags.DEFINE_list("models", ["digits", "small"], "Models: digits (the preset), small.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per log_prob call and per sample call.")
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 2, "Untimed runs after the first call.")
_TIMED_RUNS = flags.DEFINE_integer("timed_runs", 5, "Timed runs; throughput uses their median.")

MODELS = {
  "digits": lambda: RealNVP.from_preset("digits"),
  "small": lambda: RealNVP(event_shape=(32, 32, 3), num_scales=2, num_blocks=4, num_filters=32),
}


def images_per_s(run, batch_size):
  run()  # traces or optimizes the graph
  for _ in range(_WARMUP_RUNS.value):
    run()
  times = []
  for _ in range(_TIMED_RUNS.value):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return batch_size / statistics.median(times)


def directory_mb(path):
  return (
    sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    / 2**20
  )


def bench(model):
  load_average = os.getloadavg()[0]
  flow = MODELS[model]()
  batch_size = _BATCH_SIZE.value
  x = (
    np.random.RandomState(0)
    .uniform(0, 2.0**flow.num_bits, [batch_size, *flow.event_shape])
    .astype(np.float32)
  )
  seed = tf.constant([1, 2])
  with tempfile.TemporaryDirectory() as export_base:
    start = time.perf_counter()
    path = export.export_saved_model(flow, export_base)
    export_s = time.perf_counter() - start
    in_memory_log_prob = tf.function(lambda x: flow.log_prob(x))
    in_memory_sample = tf.function(lambda: flow.sample(batch_size, seed=seed))
    loaded = tf.saved_model.load(path)
    sample_inputs = dict(num_samples=tf.constant(batch_size), temperature=tf.constant(1.0), seed=seed)
    result = {
      "model": model,
      "batch_size": batch_size,
      "export_s": round(export_s, 1),
      "saved_model_mb": round(directory_mb(path), 2),
      "log_prob_images_per_s": {
        "in_memory": images_per_s(lambda: in_memory_log_prob(x).numpy(), batch_size),
        "tf2_loader": images_per_s(lambda: loaded.signatures["log_prob"](x=tf.constant(x)), batch_size),
      },
      "sample_images_per_s": {
        "in_memory": images_per_s(lambda: in_memory_sample().numpy(), batch_size),
        "tf2_loader": images_per_s(lambda: loaded.signatures["sample"](**sample_inputs), batch_size),
      },
    }
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
      for signature, feeds, key in [
        ("log_prob", {"x": x}, "log_prob_images_per_s"),
        ("sample", {"num_samples": batch_size, "temperature": 1.0, "seed": [1, 2]}, "sample_images_per_s"),
      ]:
        definition = meta_graph.signature_def[signature]
        feed_dict = {definition.inputs[name].name: value for name, value in feeds.items()}
        fetches = [output.name for output in definition.outputs.values()]
        result[key]["tf1_loader"] = images_per_s(lambda: session.run(fetches, feed_dict), batch_size)
  for key in ("log_prob_images_per_s", "sample_images_per_s"):
    result[key] = {name: round(value, 1) for name, value in result[key].items()}
  result["load_average"] = load_average
  return result


def main(argv):
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(2)
  for model in _MODELS.value:
    print(json.dumps(bench(model)), flush=True)


if __name__ == "__main__":
  app.run(main)
