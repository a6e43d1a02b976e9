"""What does a class-conditional export's served accuracy depend on? `classify` of values the caller makes up
against `classify_levels`, which dequantizes the levels with the export's own dequantizer.

Usage, from the repository root, on an export of a `--condition=label` run (`export/export_model.py`):

  python bench/classify_export.py --export=runs/hybrid/export/fashion_hybrid/1 \
    --dataset=idx:/usr/share/datasets/fashion-mnist --split='train[50000:]'

Loads the export with `tf.saved_model.load` and calls its signatures only, as a server would, on the images of
`--split` read through `tfp_realnvp.data` (`floor` of the dequantized pixels is the stored level), in requests of
`--batch_size` rows. Each way of asking gets one JSON line with its accuracy against the split's labels, the
rows it could not classify (label -1) and images/s: `classify` of `levels + 0.5` (each bin's centre) and of
`levels + u` with uniform noise `u` (`--seed`), and `classify_levels` at each K of `--num_samples` (seed
`[request index, --seed]`). A request must fit the export's `max_flow_evaluations` (`--batch_size` times K, times
the classes for a flow whose label enters the couplings).
"""

import json
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfp_realnvp import data
from tfp_realnvp.internal import cpu_features

_EXPORT = flags.DEFINE_string(
  "export", None, "A version directory of a class-conditional export.", required=True
)
_DATASET = flags.DEFINE_string("dataset", "digits", "A `tfp_realnvp.data` source: digits, idx:PATH, ...")
_SPLIT = flags.DEFINE_string("split", "test", "The labelled split whose images are classified.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Rows per request.")
_NUM_SAMPLES = flags.DEFINE_list("num_samples", ["1", "10"], "The draws K of `classify_levels` to measure.")
_SEED = flags.DEFINE_integer("seed", 7, "Seed of the uniform noise and of the draws.")


def _levels_and_labels():
  levels, labels = [], []
  for images, batch_labels in data.load(
    _DATASET.value, _SPLIT.value, batch_size=1000, training=False, with_labels=True
  ):
    levels.append(np.floor(images.numpy()))
    labels.append(batch_labels.numpy())
  return np.concatenate(levels).astype(np.float32), np.concatenate(labels)


def main(argv):
  del argv
  levels, labels = _levels_and_labels()
  signatures = tf.saved_model.load(_EXPORT.value).signatures
  noise = np.random.RandomState(_SEED.value).uniform(size=levels.shape).astype(np.float32)
  requests = {
    "classify, levels + 0.5": lambda start, stop: signatures["classify"](
      x=tf.constant(levels[start:stop] + 0.5)
    ),
    "classify, levels + uniform noise": lambda start, stop: signatures["classify"](
      x=tf.constant(levels[start:stop] + noise[start:stop])
    ),
  }
  for k in map(int, _NUM_SAMPLES.value):
    requests[f"classify_levels, K={k}"] = lambda start, stop, k=k: signatures["classify_levels"](
      levels=tf.constant(levels[start:stop]),
      num_samples=tf.constant(k),
      seed=tf.constant([start, _SEED.value]),
    )
  cpu = cpu_features.read_cpu_info()
  for name, request in requests.items():
    request(0, min(_BATCH_SIZE.value, len(levels)))  # the first call loads the function
    start_time = time.perf_counter()
    predictions = np.concatenate(
      [
        request(start, start + _BATCH_SIZE.value)["label"].numpy()
        for start in range(0, len(levels), _BATCH_SIZE.value)
      ]
    )
    seconds = time.perf_counter() - start_time
    result = {
      "export": _EXPORT.value,
      "split": _SPLIT.value,
      "request": name,
      "accuracy": round(float(np.mean(predictions == labels)), 4),
      "unclassified": int(np.sum(predictions < 0)),
      "images": len(labels),
      "images_per_s": round(len(labels) / seconds, 1),
      "cpu": cpu.model_name,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
