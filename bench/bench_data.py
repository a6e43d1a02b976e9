"""Input-pipeline throughput: prints one JSON line per pipeline with images/s after a warm-up.

Usage: `python bench/bench_data.py [--num_batches=200]`. Pipelines: the bundled digits (train and eval) and a
temporary directory of 2000 random 32x32 RGB PNGs (cached after its first epoch, as CIFAR-10 would be).
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from tfp_realnvp import data

_NUM_BATCHES = flags.DEFINE_integer("num_batches", 200, "Batches timed per pipeline, after a warm-up.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")


def _images_per_second(dataset, num_batches, batch_size):
  iterator = iter(dataset.repeat())
  for _ in range(num_batches):  # warm-up: fills caches and lets AUTOTUNE settle
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * batch_size / (time.perf_counter() - start)


def _write_pngs(directory, count, shape):
  images = np.random.default_rng(0).integers(0, 256, size=(count,) + shape, dtype=np.uint8)
  for i, image in enumerate(images):
    Image.fromarray(image).save(os.path.join(directory, f"{i:05d}.png"))


def main(argv):
  del argv
  num_batches, batch_size = _NUM_BATCHES.value, _BATCH_SIZE.value
  with tempfile.TemporaryDirectory() as directory:
    _write_pngs(directory, 2000, (32, 32, 3))
    pipelines = {
      "digits_train": ("digits", "train", True, None),
      "digits_eval": ("digits", "test", False, None),
      "digits_train_resized_to_32": ("digits", "train", True, 32),
      "png_dir_32x32x3_train": (data.DIRECTORY_PREFIX + directory, "train", True, None),
    }
    for label, (name, split, training, image_size) in pipelines.items():
      dataset = data.load(name, split, batch_size=batch_size, training=training, image_size=image_size)
      rate = _images_per_second(dataset, num_batches, batch_size)
      print(
        json.dumps({"pipeline": label, "batch_size": batch_size, "images_per_s": round(rate)}), flush=True
      )


if __name__ == "__main__":
  app.run(main)
