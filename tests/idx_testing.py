"""Small IDX files (MNIST's format) written by the tests themselves, gzipped or not."""

import gzip
import os

import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def idx_bytes(array, magic=None):
  """The IDX encoding of uint8 `array`: the magic number (by default unsigned bytes with `array.ndim`
  dimensions), each dimension as a big-endian uint32, then the values in C order."""
  array = np.asarray(array, np.uint8)
  magic = 0x00000800 + array.ndim if magic is None else magic
  header = magic.to_bytes(4, "big") + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
  return header + array.tobytes()


def write_file(path, contents, gzipped):
  """Writes `contents` to `path`, or gzipped to `path + '.gz'` when `gzipped`; returns the path written."""
  if gzipped:
    path += ".gz"
    contents = gzip.compress(contents)
  with open(path, "wb") as file:
    file.write(contents)
  return path


def write_split(folder, prefix, images, labels, gzipped):
  """Writes `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` (with `.gz` when `gzipped`); returns
  their paths."""
  return (
    write_file(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), idx_bytes(images), gzipped),
    write_file(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), idx_bytes(labels), gzipped),
  )


def random_split(count, image_hw, num_classes, seed):
  """`(images uint8 [count, height, width], labels uint8 [count])`, each class present when `count` allows."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(count, *image_hw), dtype=np.uint8)
  labels = (np.arange(count) % num_classes).astype(np.uint8)
  return images, labels[rng.permutation(count)]


def write_folder(folder, *, num_train, num_test, image_hw=(5, 7), num_classes=3, gzipped=False, seed=0):
  """An IDX folder with a `train` pair of `num_train` images and, unless `num_test` is 0, a `t10k` pair;
  returns `{split: (images, labels)}` as written."""
  os.makedirs(folder, exist_ok=True)
  splits = {"train": random_split(num_train, image_hw, num_classes, seed)}
  if num_test:
    splits["test"] = random_split(num_test, image_hw, num_classes, seed + 1)
  for split, (images, labels) in splits.items():
    write_split(folder, {"train": "train", "test": "t10k"}[split], images, labels, gzipped)
  return splits
