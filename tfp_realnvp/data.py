"""Input pipelines: dequantized image batches from the bundled 8x8 digits, a folder of images, a folder of IDX
files, or tfds.

Every pipeline yields float32 batches `[batch, H, W, C]` of `x = v + u`: integer pixels
`v in {0, ..., 2**num_bits - 1}` plus uniform dequantization noise `u ~ U[0, 1)`, so `floor(x) == v` and
`0 <= x < 2**num_bits`. Training noise (and flips, crops) is random and repeats for a given `seed`;
evaluation noise is a fixed function of `(seed, example index)`, so a test bits/dim repeats exactly.

With `with_labels=True` a pipeline yields `(images, labels)` instead, `labels` int32 `[batch]` class indices
in `[0, num_classes)`, each beside its image through every shuffle, flip, crop, shard and cache; the
training label frequencies (a class-conditional model's `p(y)`) are `label_counts(name, train_split)`.
Labelled are the bundled digits, IDX folders and tfds datasets with a `label` `ClassLabel` feature (mnist,
fashion_mnist, cifar10). Image directories are not: their sub-directories already name splits (`train`, `test`,
`validation`) and files are found at any depth, so a folder layout says nothing reliable about classes.

A split is a name with an optional tfds-style slice, in examples or percent: `train`, `train[:1200]`,
`train[90%:]`. Choose hyperparameters on a validation split carved from the training images, never on the
test split: for the bundled digits fit on `DIGITS_FIT_SPLIT` (`train[:1200]`) and validate on
`DIGITS_VALIDATION_SPLIT` (`train[1200:]`, the last 300 of the 1500 training images, about 30 per class),
then report the 297 `test` images once.

Sources, each a few small functions behind `dataset_spec`, `load` and `label_counts`:

- `digits`: scikit-learn's 1797 8x8 digits at 4 bits, bundled (no download).
- `dir:PATH`: image files (PNG, JPEG, BMP, GIF) at any depth under `PATH`, its `train`/`test`/`validation`
  sub-directories the splits. Its images must all decode to one shape: its first file's, in sort order (any
  height and width with an explicit `image_size`, which resizes them all). Every file is decoded when the
  directory's `dataset_spec` is built (on 2 idle cores about 35 us per 32x32 PNG, 200 us per 218x178 JPEG), so
  a file of another size or channel count, or one that does not decode, is named before training starts.
- `idx:PATH`: MNIST's IDX files in the folder `PATH` (as Fashion-MNIST, KMNIST and MNIST itself ship them),
  `train-images-idx3-ubyte` with `train-labels-idx1-ubyte` (split `train`) and `t10k-images-idx3-ubyte` with
  `t10k-labels-idx1-ubyte` (split `test`), each gzipped (`.gz`) or not: 8-bit grey images with their labels,
  the image shape and count from the files' headers. Without the `t10k` pair, `test` is absent and the last
  10% of `train` evaluates. Every file is read and checked when the folder's `dataset_spec` is built, so a
  missing file, wrong magic number, truncated data or a count of labels other than of images is named first.
- any other name: a tfds dataset with an `image` feature, read from a prepared `data_dir`, never downloaded.
"""

import dataclasses
import functools
import gzip
import os
import re
import typing

import numpy as np
import tensorflow as tf

__all__ = [
  "SUPPORTED_DATASETS",
  "DatasetSpec",
  "dataset_spec",
  "dequantize",
  "label_counts",
  "load",
  "uint8_images",
]

SUPPORTED_DATASETS = (
  "digits",
  "mnist",
  "fashion_mnist",
  "cifar10",
  "celeb_a",
  "downsampled_imagenet/32x32",
  "downsampled_imagenet/64x64",
  "lsun/<category>",
  "<any tfds dataset with an 'image' feature>",
  "dir:<path to a directory of image files>",
  "idx:<path to a folder of IDX files>",
)
DIRECTORY_PREFIX = "dir:"
IDX_PREFIX = "idx:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Splits whose decoded images fit in this many bytes are cached in memory (ImageNet or LSUN would not).
CACHE_LIMIT_BYTES = 1 << 30
# Bundled digits: the first 1500 of scikit-learn's 1797 images train, the remaining 297 test.
DIGITS_NUM_TRAIN = 1500
DIGITS_FIT_SPLIT = "train[:1200]"
DIGITS_VALIDATION_SPLIT = "train[1200:]"
_SPLIT_PATTERN = re.compile(r"^(?P<name>[\w-]+)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSpec:
  """What a dataset name means: image shape, bit depth, augmentation, splits and the matching flow preset.

  `preset` names the `RealNVP.from_preset` configuration the paper used for this dataset, or None;
  `num_classes` is the number of class labels that `load(..., with_labels=True)` yields, or None when the
  dataset has none.
  """

  name: str
  image_shape: tuple
  num_bits: int
  horizontal_flip: bool
  train_split: str
  eval_split: str
  preset: str | None
  num_classes: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Recipe:
  """How a known dataset is read and shaped: `tfds_name` None for the bundled digits; `geometry` one of
  'fit' (resize to cover, central crop), 'celeba' or 'lsun'; `native_bits` the bit depth of its pixels."""

  tfds_name: str | None
  image_size: int
  channels: int
  preset: str
  native_bits: int = 8
  horizontal_flip: bool = False
  train_split: str = "train"
  eval_split: str = "test"
  num_classes: int | None = None
  geometry: str = "fit"


# Horizontal flips where the paper uses them: CIFAR-10, CelebA, LSUN. Fashion-MNIST takes MNIST's settings.
_RECIPES = {
  "digits": _Recipe(tfds_name=None, image_size=8, channels=1, preset="digits", native_bits=4, num_classes=10),
  "mnist": _Recipe(tfds_name="mnist", image_size=28, channels=1, preset="mnist", num_classes=10),
  "fashion_mnist": _Recipe(
    tfds_name="fashion_mnist", image_size=28, channels=1, preset="mnist", num_classes=10
  ),
  "cifar10": _Recipe(
    tfds_name="cifar10", image_size=32, channels=3, preset="cifar10", horizontal_flip=True, num_classes=10
  ),
  "celeb_a": _Recipe(
    tfds_name="celeb_a", image_size=64, channels=3, preset="celeba64", horizontal_flip=True, geometry="celeba"
  ),
  **{
    f"downsampled_imagenet/{size}x{size}": _Recipe(
      tfds_name=f"downsampled_imagenet/{size}x{size}",
      image_size=size,
      channels=3,
      preset=f"imagenet{size}",
      eval_split="validation",
    )
    for size in (32, 64)
  },
}
_LSUN_RECIPE = _Recipe(
  tfds_name="lsun",
  image_size=64,
  channels=3,
  preset="lsun64",
  horizontal_flip=True,
  eval_split="validation",
  geometry="lsun",
)
# The preset of 8-bit images of a shape, for sources that know only the shape (IDX folders).
_PRESETS_BY_SHAPE = {(28, 28, 1): "mnist"}
# The paper's CelebA crop: the central 148x148 of the 218x178 aligned faces.
CELEBA_CROP_SIZE = 148
# The paper's LSUN recipe: shorter side to 96 (1.5x the 64x64 output), then a 64x64 crop.
LSUN_RESIZE_FACTOR = 1.5


def _recipe(name):
  if not isinstance(name, str):
    raise _unknown_name_error(name)
  if name == "lsun" or name.startswith("lsun/"):
    return _LSUN_RECIPE
  return _RECIPES.get(name)


def _import_tfds():
  # Imported on first use so that the bundled digits and image or IDX folders never pay for tfds.
  import tensorflow_datasets as tfds

  return tfds


# Arguments and splits.


def _check_image_size(image_size):
  if image_size is None:
    return None
  try:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  except TypeError:  # neither an int nor a pair
    size = ()
  # A bool is an `int` to Python, not a size: `image_size=True` is refused, not read as 1.
  if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
    raise ValueError(
      f"`image_size` must be a positive int or a (height, width) pair of them; got {image_size!r}."
    )
  return size


def _check_num_bits(num_bits, native_bits, name):
  if num_bits is None:
    return native_bits
  if not isinstance(num_bits, int) or not 1 <= num_bits <= native_bits:
    raise ValueError(
      f"`num_bits` for {name!r} must be an int in [1, {native_bits}] (its pixels have {native_bits} bits); "
      f"got {num_bits!r}."
    )
  return num_bits


def _unknown_name_error(name):
  return ValueError(f"Unknown dataset {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}.")


def _parse_split(split):
  """Parses `name`, `name[start:stop]`, with ints or percents as in tfds, into (name, start, stop)."""
  match = _SPLIT_PATTERN.match(split) if isinstance(split, str) else None
  if match is None:
    raise ValueError(f"`split` must look like 'train', 'train[:1000]' or 'train[90%:]'; got {split!r}.")
  return match["name"], match["start"], match["stop"]


def _slice(items, start, stop, split):
  def position(bound):
    if bound is None:
      return None
    if bound.endswith("%"):
      return round(float(bound[:-1]) * len(items) / 100.0)  # tfds' 'closest' rounding
    return int(bound)

  selected = items[position(start) : position(stop)]
  if not len(selected):
    raise ValueError(f"`split` {split!r} selects no examples out of {len(items)}.")
  return selected


def _split_indices(name, split, split_sizes):
  """The example indices of `split` within its named split, `split_sizes` `{split name: size}`."""
  split_name, start, stop = _parse_split(split)
  if split_name not in split_sizes:
    names = " or ".join(repr(s) for s in split_sizes)
    raise ValueError(f"`split` for {name!r} must be {names} (optionally sliced); got {split!r}.")
  return _slice(np.arange(split_sizes[split_name]), start, stop, split)


def _array_examples(images, labels, with_labels):
  """(examples, number) of in-memory uint8 `images` `[n, H, W, C]` and their int32 `labels` `[n]`."""
  examples = tf.data.Dataset.from_tensor_slices((images, labels) if with_labels else (images,))
  return examples, len(images)


def _recipe_spec(name, recipe, *, size, num_bits):
  """The spec of a known dataset (`recipe`), at `size` (height, width) instead of its own when given."""
  height, width = size or (recipe.image_size, recipe.image_size)
  return DatasetSpec(
    name=name,
    image_shape=(height, width, recipe.channels),
    num_bits=_check_num_bits(num_bits, recipe.native_bits, name),
    horizontal_flip=recipe.horizontal_flip,
    train_split=recipe.train_split,
    eval_split=recipe.eval_split,
    preset=recipe.preset,
    num_classes=recipe.num_classes,
  )


# Source: the bundled digits.


def _digits_arrays(split):
  """(images, labels) of the bundled digits: 4-bit images (scikit-learn's pixel `v in 0..16` becomes
  `min(v, 15)`) and int32 class indices.
  """
  # Imported on use: scikit-learn is slow to import and only the digits need it.
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = np.minimum(digits.images, 15).astype(np.uint8)[..., np.newaxis]
  labels = digits.target.astype(np.int32)
  sizes = {"train": DIGITS_NUM_TRAIN, "test": len(images) - DIGITS_NUM_TRAIN}
  indices = _split_indices("digits", split, sizes)
  indices = indices + {"train": 0, "test": DIGITS_NUM_TRAIN}[_parse_split(split)[0]]
  return images[indices], labels[indices]


def _digits_spec(name, *, size, num_bits, data_dir):
  del data_dir
  return _recipe_spec(name, _RECIPES["digits"], size=size, num_bits=num_bits)


def _digits_examples(name, split, *, spec, data_dir, training, seed, with_labels):
  del name, spec, data_dir, training, seed
  return _array_examples(*_digits_arrays(split), with_labels)


def _digits_labels(name, split, *, data_dir):
  del name, data_dir
  return [_digits_arrays(split)[1]]


# Source: a directory of image files, `dir:PATH`.


def _image_files(directory):
  files = []
  for root, _, names in tf.io.gfile.walk(directory):
    files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(files)


def _decoded_shapes(files):
  """`{path: (height, width, channels)}` of the files that decode, decoded in parallel as the pipeline will."""

  def shape(path):
    return path, tf.shape(tf.io.decode_image(tf.io.read_file(path), expand_animations=False))

  shapes = tf.data.Dataset.from_tensor_slices(files).map(shape, num_parallel_calls=tf.data.AUTOTUNE)
  decoded = {}
  for paths, batch_shapes in shapes.ignore_errors().batch(4096):
    decoded.update(zip((p.decode() for p in paths.numpy()), map(tuple, batch_shapes.numpy().tolist())))
  return decoded


def _decode_error(path):
  try:
    tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
  except tf.errors.OpError as error:  # TF's message, without its op-name prefix and suffix
    return error.message.split("}}")[-1].split("[Op:")[0].strip()
  return "it decodes when read again (a transient read error?)"


def _directory_image_shape(name, directory, size):
  """The `(height, width, channels)` of the first image file under `directory`, in sort order, after checking
  that every file decodes to it (to any height and width when `size` is given), naming the first that does not.
  """
  files = _image_files(directory)
  if not files:
    raise ValueError(f"Dataset {name!r}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {directory!r}.")
  shapes = _decoded_shapes(files)
  first = files[0]
  for path in files:
    if path not in shapes:
      raise ValueError(f"Dataset {name!r}: image file {path!r} does not decode: {_decode_error(path)}.")
    (height, width, channels), (first_height, first_width, first_channels) = shapes[path], shapes[first]
    if channels != first_channels:
      raise ValueError(
        f"Dataset {name!r}: {path!r} has {channels} channels but the first file {first!r} has "
        f"{first_channels}; every image must have the same number of channels."
      )
    if size is None and (height, width) != (first_height, first_width):
      raise ValueError(
        f"Dataset {name!r}: {path!r} is {height}x{width} but the first file {first!r} is "
        f"{first_height}x{first_width}; pass `image_size` to resize every image to one size."
      )
  return shapes[first]


def _directory_splits(directory):
  """Split names of an image directory: its `train`/`test`/`validation` subdirectories, else one 'train'."""
  present = [s for s in ("train", "test", "validation") if tf.io.gfile.isdir(os.path.join(directory, s))]
  if "train" in present and len(present) > 1:
    return "train", present[1]
  return "train[:90%]", "train[90%:]"


def _directory_split_files(directory, split):
  split_name, start, stop = _parse_split(split)
  subdirectory = os.path.join(directory, split_name)
  if tf.io.gfile.isdir(subdirectory):
    files = _image_files(subdirectory)
  elif split_name == "train":
    files = _image_files(directory)
  else:
    raise ValueError(
      f"`split` {split!r} names no subdirectory of {directory!r}; a flat directory has only 'train'."
    )
  return _slice(files, start, stop, split)


def _directory_spec(name, *, size, num_bits, data_dir):
  del data_dir
  directory = name[len(DIRECTORY_PREFIX) :]
  if not tf.io.gfile.isdir(directory):
    raise ValueError(f"Dataset {name!r}: {directory!r} is not a directory.")
  first_height, first_width, channels = _directory_image_shape(name, directory, size)
  height, width = size or (first_height, first_width)
  train_split, eval_split = _directory_splits(directory)
  return DatasetSpec(
    name=name,
    image_shape=(height, width, channels),
    num_bits=_check_num_bits(num_bits, 8, name),
    horizontal_flip=False,
    train_split=train_split,
    eval_split=eval_split,
    preset=None,
  )


def _directory_examples(name, split, *, spec, data_dir, training, seed, with_labels):
  del data_dir, training, seed, with_labels  # unlabelled: `load` refuses `with_labels` first
  channels = spec.image_shape[-1]
  files = _directory_split_files(name[len(DIRECTORY_PREFIX) :], split)

  def read(path):
    image = tf.io.decode_image(
      tf.io.read_file(path), channels=channels, dtype=tf.uint8, expand_animations=False
    )
    image.set_shape([None, None, channels])
    return (image,)

  return tf.data.Dataset.from_tensor_slices(files).map(read, num_parallel_calls=tf.data.AUTOTUNE), len(files)


# Source: a folder of IDX files, `idx:PATH`.

# `{split: (images file, labels file)}`, MNIST's names, each also read gzipped with `.gz` appended.
IDX_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: two zero bytes, the type (0x08: unsigned byte), the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


class _IdxSplit(typing.NamedTuple):
  images: np.ndarray  # uint8 [count, height, width, 1]
  labels: np.ndarray  # int32 [count]


def _idx_file(folder, base_name):
  """The path of IDX file `base_name` in `folder`: plain, else gzipped (`.gz`), else None."""
  for path in (os.path.join(folder, base_name), os.path.join(folder, base_name + ".gz")):
    if tf.io.gfile.exists(path):
      return path
  return None


def _idx_split_files(name, folder):
  """`{split: (images path, labels path)}` of the IDX pairs in `folder`: `train` always, `test` if present."""
  if not tf.io.gfile.isdir(folder):
    raise ValueError(f"Dataset {name!r}: {folder!r} is not a directory.")
  pairs = {}
  for split, base_names in IDX_FILES.items():
    paths = tuple(_idx_file(folder, base_name) for base_name in base_names)
    if None not in paths:
      pairs[split] = paths
    elif paths != (None, None) or split == "train":
      present = [path for path in paths if path is not None]
      missing = [base for base, path in zip(base_names, paths) if path is None]
      beside = f" beside {present[0]!r}" if present else ""
      raise ValueError(
        f"Dataset {name!r}: no {' or '.join(missing)} (or .gz) in {folder!r}{beside}; an IDX folder holds "
        f"the pairs {', '.join(f'{images} with {labels}' for images, labels in IDX_FILES.values())} (the "
        "t10k pair optional), each file gzipped or not."
      )
  return pairs


def _idx_bytes(name, path):
  """The contents of `path`, gunzipped if its name ends in `.gz`; any failure names the file."""
  try:
    with tf.io.gfile.GFile(path, "rb") as file:
      contents = file.read()
    return gzip.decompress(contents) if path.endswith(".gz") else contents
  except (OSError, EOFError, tf.errors.OpError) as error:  # gzip.BadGzipFile is an OSError
    raise ValueError(f"Dataset {name!r}: cannot read {path!r}: {error}.") from None


def _parse_idx(name, path, contents, magic, what):
  """The uint8 array of the IDX file `path` (its bytes `contents`), checked to have `magic` and exactly the
  data its header announces."""
  ndim = magic & 0xFF
  if len(contents) < 4 or int.from_bytes(contents[:4], "big") != magic:
    found = f"0x{int.from_bytes(contents[:4], 'big'):08x}" if len(contents) >= 4 else "missing"
    raise ValueError(
      f"Dataset {name!r}: {path!r} is no IDX file of {what}: its magic number is {found}, expected "
      f"0x{magic:08x} (unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})."
    )
  header_size = 4 + 4 * ndim
  if len(contents) < header_size:
    raise ValueError(
      f"Dataset {name!r}: {path!r} is truncated: {len(contents)} bytes, less than its {header_size}-byte header."
    )
  shape = tuple(int.from_bytes(contents[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  expected, found = int(np.prod(shape)), len(contents) - header_size
  if found != expected:
    problem = "is truncated" if found < expected else "has bytes past its data"
    raise ValueError(
      f"Dataset {name!r}: {path!r} {problem}: its header gives {what} of shape {list(shape)}, {expected} bytes, "
      f"but {found} bytes follow the header."
    )
  return np.frombuffer(contents, np.uint8, offset=header_size).reshape(shape)


def _read_idx_pair(name, images_path, labels_path):
  """The `_IdxSplit` of one images file and its labels file, checked to hold as many labels as images."""
  images = _parse_idx(name, images_path, _idx_bytes(name, images_path), _IDX_IMAGES_MAGIC, "images")
  labels = _parse_idx(name, labels_path, _idx_bytes(name, labels_path), _IDX_LABELS_MAGIC, "labels")
  if len(images) != len(labels):
    raise ValueError(
      f"Dataset {name!r}: {images_path!r} holds {len(images)} images but {labels_path!r} holds {len(labels)} "
      "labels; each image needs one label."
    )
  if not len(images):
    raise ValueError(f"Dataset {name!r}: {images_path!r} holds no images.")
  return _IdxSplit(images=images[..., np.newaxis], labels=labels.astype(np.int32))


def _file_stamp(path):
  stat = tf.io.gfile.stat(path)
  return stat.length, stat.mtime_nsec


def _idx_splits(name):
  """`{split: _IdxSplit}` of the IDX folder of dataset `name`, read once per process while its files stay."""
  files = _idx_split_files(name, name[len(IDX_PREFIX) :])
  key = tuple((split, paths, tuple(map(_file_stamp, paths))) for split, paths in files.items())
  return _read_idx_folder(name, key)


@functools.lru_cache(maxsize=4)
def _read_idx_folder(name, files):
  """`{split: _IdxSplit}` of `files`, `((split, (images path, labels path), their stamps), ...)`; the stamps
  (size, modification time) are in the cache key only, so a rewritten file is read again."""
  splits = {split: _read_idx_pair(name, *paths) for split, paths, _ in files}
  train_shape = splits["train"].images.shape[1:3]
  for (split, (images_path, _), _), arrays in zip(files, splits.values()):
    if arrays.images.shape[1:3] != train_shape:
      raise ValueError(
        f"Dataset {name!r}: the images of {images_path!r} are {'x'.join(map(str, arrays.images.shape[1:3]))} "
        f"but those of the train split are {'x'.join(map(str, train_shape))}; every split needs one size."
      )
  return splits


def _idx_spec(name, *, size, num_bits, data_dir):
  del data_dir
  splits = _idx_splits(name)
  height, width, channels = size + (1,) if size else splits["train"].images.shape[1:]
  image_shape = (height, width, channels)
  train_split, eval_split = ("train", "test") if "test" in splits else ("train[:90%]", "train[90%:]")
  return DatasetSpec(
    name=name,
    image_shape=image_shape,
    num_bits=_check_num_bits(num_bits, 8, name),
    horizontal_flip=False,
    train_split=train_split,
    eval_split=eval_split,
    preset=_PRESETS_BY_SHAPE.get(image_shape),
    num_classes=int(max(arrays.labels.max() for arrays in splits.values())) + 1,
  )


def _idx_arrays(name, split):
  splits = _idx_splits(name)
  indices = _split_indices(name, split, {split_name: len(a.labels) for split_name, a in splits.items()})
  arrays = splits[_parse_split(split)[0]]
  return arrays.images[indices], arrays.labels[indices]


def _idx_examples(name, split, *, spec, data_dir, training, seed, with_labels):
  del spec, data_dir, training, seed
  return _array_examples(*_idx_arrays(name, split), with_labels)


def _idx_labels(name, split, *, data_dir):
  del data_dir
  return [_idx_arrays(name, split)[1]]


# Source: tfds.


def _tfds_builder(name, data_dir):
  tfds = _import_tfds()
  try:
    return tfds.builder(name, data_dir=data_dir)
  except ValueError as error:  # tfds' DatasetNotFoundError is a ValueError listing every tfds dataset
    raise _unknown_name_error(name) from error


def _tfds_image_feature(builder, name):
  if "image" not in builder.info.features:
    raise ValueError(
      f"tfds dataset {name!r} has no 'image' feature; its features: {list(builder.info.features)}."
    )
  return builder.info.features["image"].shape


def _tfds_num_classes(builder):
  features = builder.info.features
  label = features["label"] if "label" in features else None
  return label.num_classes if isinstance(label, _import_tfds().features.ClassLabel) else None


def _generic_tfds_splits(builder):
  splits = list(builder.info.splits)  # empty until the dataset is prepared
  if not splits:
    return "train", "test"
  eval_split = next((s for s in ("test", "validation") if s in splits), None)
  return ("train", eval_split) if eval_split else ("train[:90%]", "train[90%:]")


def _tfds_spec(name, *, size, num_bits, data_dir):
  """A known dataset's spec from its recipe, without reading anything; any other's from its tfds metadata."""
  recipe = _recipe(name)
  if recipe is not None:
    return _recipe_spec(name, recipe, size=size, num_bits=num_bits)
  builder = _tfds_builder(name, data_dir)
  feature_shape = _tfds_image_feature(builder, name)
  if feature_shape[-1] is None:
    raise ValueError(f"tfds dataset {name!r} has images with an unknown number of channels: {feature_shape}.")
  if size is None and None in feature_shape[:2]:
    raise ValueError(f"tfds dataset {name!r} has images of varying size {feature_shape}; pass `image_size`.")
  height, width = size or tuple(feature_shape[:2])
  train_split, eval_split = _generic_tfds_splits(builder)
  return DatasetSpec(
    name=name,
    image_shape=(height, width, feature_shape[-1]),
    num_bits=_check_num_bits(num_bits, 8, name),
    horizontal_flip=False,
    train_split=train_split,
    eval_split=eval_split,
    preset=None,
    num_classes=_tfds_num_classes(builder),
  )


def _not_prepared_error(name, data_dir, error):
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  return FileNotFoundError(
    f"tfds dataset {name!r} is not prepared in {where!r} and this pipeline never downloads. Prepare it one of "
    f"two ways: (1) on a machine with network access run `tfds build {name} --data_dir=DIR` (or, in Python, "
    f"`tfds.builder({name!r}, data_dir=DIR).download_and_prepare()`), copy DIR here and pass it as "
    f"`data_dir`; or (2) here, with the dataset's original download files in a folder MANUAL, run "
    f"`tfds.builder({name!r}, data_dir=DIR).download_and_prepare(download_config="
    f"tfds.download.DownloadConfig(manual_dir=MANUAL))` (for fashion_mnist from Debian's "
    f"dataset-fashion-mnist package: examples/prepare_fashion_mnist.py). (tfds said: {error})"
  )


def _tfds_split(name, split, *, data_dir, shuffle_files=False, seed=0, decoders=None):
  """(examples, number of examples or None) of a tfds split, failing at once when the data is absent."""
  tfds = _import_tfds()
  builder = _tfds_builder(name, data_dir)
  read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
  try:
    examples = builder.as_dataset(
      split=split, shuffle_files=shuffle_files, read_config=read_config, decoders=decoders
    )
  except AssertionError as error:  # what tfds raises, at once, for data that was never prepared
    raise _not_prepared_error(name, data_dir, error) from error
  try:
    num_examples = builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # metadata is absent under tfds.testing.mock_data
    num_examples = None
  return examples, num_examples


def _tfds_examples(name, split, *, spec, data_dir, training, seed, with_labels):
  del spec
  examples, num_examples = _tfds_split(name, split, data_dir=data_dir, shuffle_files=training, seed=seed)

  def example_tuple(example):
    if with_labels:
      return example["image"], tf.cast(example["label"], tf.int32)
    return (example["image"],)

  return examples.map(example_tuple, num_parallel_calls=tf.data.AUTOTUNE), num_examples


def _tfds_labels(name, split, *, data_dir):
  tfds = _import_tfds()
  # Only the labels are wanted, so the images are read but never decoded.
  examples, _ = _tfds_split(name, split, data_dir=data_dir, decoders={"image": tfds.decode.SkipDecoding()})
  return tfds.as_numpy(examples.map(lambda example: example["label"]).batch(65536))


# One entry point over the sources.


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Source:
  """How one kind of dataset name is read.

  `spec(name, *, size, num_bits, data_dir)` is its `DatasetSpec`; `examples(name, split, *, spec, data_dir,
  training, seed, with_labels)` is `(tf.data.Dataset of (image,) or (image, label) tuples, uint8 images,
  int32 labels; number of examples or None)`; `labels(name, split, *, data_dir)` the split's labels in
  batches (None for a source without labels).
  """

  spec: typing.Callable
  examples: typing.Callable
  labels: typing.Callable | None


_DIGITS = _Source(spec=_digits_spec, examples=_digits_examples, labels=_digits_labels)
_DIRECTORY = _Source(spec=_directory_spec, examples=_directory_examples, labels=None)
_IDX = _Source(spec=_idx_spec, examples=_idx_examples, labels=_idx_labels)
_TFDS = _Source(spec=_tfds_spec, examples=_tfds_examples, labels=_tfds_labels)


def _source(name):
  if not isinstance(name, str):
    raise _unknown_name_error(name)
  if name == "digits":
    return _DIGITS
  if name.startswith(DIRECTORY_PREFIX):
    return _DIRECTORY
  if name.startswith(IDX_PREFIX):
    return _IDX
  return _TFDS


def dataset_spec(name, *, image_size=None, num_bits=None, data_dir=None):
  """Returns the `DatasetSpec` of dataset `name` (see `SUPPORTED_DATASETS`).

  `image_size` (int or (height, width)) overrides the dataset's native or paper size; `num_bits` (at most the
  dataset's own bit depth) quantizes pixels more coarsely, e.g. 5 for Glow's CelebA-HQ protocol. No data is
  read, except that every file of an image directory is decoded once and every file of an IDX folder read
  once, to check them.
  """
  size = _check_image_size(image_size)
  return _source(name).spec(name, size=size, num_bits=num_bits, data_dir=data_dir)


def _no_labels_error(name):
  kind = "an image directory" if name.startswith(DIRECTORY_PREFIX) else "no 'label' ClassLabel tfds feature"
  return ValueError(
    f"`with_labels=True` and `label_counts` need class labels, but dataset {name!r} has none ({kind}); "
    "labelled are 'digits', IDX folders ('idx:PATH') and tfds datasets with a 'label' ClassLabel feature "
    "such as 'mnist', 'fashion_mnist', 'cifar10'."
  )


def label_counts(name, split, *, data_dir=None):
  """Returns how many examples of `split` have each class label: int64 `[num_classes]`.

  Divided by their sum, the counts of the training split are a class-conditional model's prior `p(y)`.
  """
  spec = dataset_spec(name, data_dir=data_dir)
  if spec.num_classes is None:
    raise _no_labels_error(name)
  counts = np.zeros(spec.num_classes, np.int64)
  for batch in _source(name).labels(name, split, data_dir=data_dir):
    counts += np.bincount(batch, minlength=spec.num_classes)
  return counts


# Preprocessing.


def _resize(image, size):
  # Bilinear with antialiasing is a convex combination of pixels, so rounding keeps values in range.
  resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.math.round(resized), 0.0, 255.0), tf.uint8)


def _resize_to_cover(image, target_hw):
  """Resizes `image` keeping its aspect ratio so that it just covers `target_hw`; a no-op if it already fits."""
  if tuple(image.shape[:2]) == tuple(target_hw):
    return image
  image_hw = tf.shape(image)[:2]
  scale = tf.reduce_max(tf.constant(target_hw, tf.float32) / tf.cast(image_hw, tf.float32))
  new_hw = tf.maximum(tf.cast(tf.math.round(tf.cast(image_hw, tf.float32) * scale), tf.int32), target_hw)
  return tf.cond(tf.reduce_all(image_hw == target_hw), lambda: image, lambda: _resize(image, new_hw))


def _central_crop(image, target_hw):
  if tuple(image.shape[:2]) == tuple(target_hw):
    return image
  image_hw = tf.shape(image)[:2]
  top, left = tf.unstack((image_hw - target_hw) // 2)
  return tf.image.crop_to_bounding_box(image, top, left, target_hw[0], target_hw[1])


def _shorter_side_to(image, length):
  image_hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = length / tf.reduce_min(image_hw)
  return _resize(image, tf.cast(tf.math.round(image_hw * scale), tf.int32))


def dequantize(pixels, noise):
  """Returns `pixels + noise` as float32, each value kept inside its bin `[v, v + 1)`.

  `noise` should be `U[0, 1)`; in float32 `v + u` rounds up to `v + 1` for `u` within ~`2**-24 * v` of 1,
  which would move the value into the next bin, so such sums are pulled back below `v + 1`.
  """
  values = tf.cast(pixels, tf.float32)
  return tf.minimum(values + noise, tf.math.nextafter(values + 1.0, values))


def uint8_images(samples, num_bits):
  """Maps pixel values in `[0, 2**num_bits)` (dequantized data, or a flow's samples) to viewable uint8 images.

  `images = round(floor(clip(samples, 0, L)) * 255 / L)` with `L = 2**num_bits - 1`: the sample's
  discrete pixel level, stretched to `0..255` so that data with fewer than 8 bits (e.g. 4-bit
  digits, levels 0..15 -> 0, 17, ..., 255) view like 8-bit images. For 8-bit data it is
  `floor(clip(samples, 0, 255))`. NaN maps to 0.
  """
  max_level = 2.0**num_bits - 1.0
  samples = tf.convert_to_tensor(samples)
  levels = tf.floor(tf.clip_by_value(samples, 0.0, max_level))
  levels = tf.where(tf.math.is_nan(samples), tf.zeros_like(levels), levels)
  return tf.cast(tf.round(levels * (255.0 / max_level)), tf.uint8)


def _random_seeds(seed, index):
  """Three independent stateless seeds (crop, flip, noise) drawn from `(seed, index)` alone."""
  return tf.unstack(tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), index]), 3))


class _Preprocessor:
  """The ops of one pipeline: `prepare` is deterministic (cacheable), the others draw their randomness
  from `(seed, index)`: training per batch (vectorized), evaluation per example, keyed by its index.
  """

  def __init__(self, spec, *, geometry, native_bits, training, seed):
    self.image_shape = spec.image_shape
    self.target_hw = spec.image_shape[:2]
    self.geometry = geometry
    self.bit_shift = native_bits - spec.num_bits
    self.horizontal_flip = spec.horizontal_flip and training
    self.random_crop = geometry == "lsun" and training
    self.seed = seed

  def prepare(self, image):
    if self.geometry == "celeba":
      image = _resize_to_cover(_central_crop(image, (CELEBA_CROP_SIZE, CELEBA_CROP_SIZE)), self.target_hw)
    elif self.geometry == "lsun":
      image = _shorter_side_to(image, round(LSUN_RESIZE_FACTOR * max(self.target_hw)))
    else:
      image = _central_crop(_resize_to_cover(image, self.target_hw), self.target_hw)
    if self.bit_shift:
      image = tf.bitwise.right_shift(image, tf.constant(self.bit_shift, image.dtype))
    return image

  def crop_example(self, index, image):
    """The training crop (LSUN: a random `image_shape` patch)."""
    crop_seed, _, _ = _random_seeds(self.seed, index)
    return tf.image.stateless_random_crop(image, self.image_shape, crop_seed)

  def augment_batch(self, index, images):
    """Training: flips (where the dataset uses them) and dequantizes batch number `index`."""
    _, flip_seed, noise_seed = _random_seeds(self.seed, index)
    images = tf.ensure_shape(images, (None,) + tuple(self.image_shape))
    if self.horizontal_flip:
      flip = tf.random.stateless_uniform(tf.shape(images)[:1], flip_seed) < 0.5
      images = tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)
    return dequantize(images, tf.random.stateless_uniform(tf.shape(images), noise_seed))

  def evaluation_example(self, index, image):
    """Evaluation: the central crop (LSUN) and the noise of example number `index`."""
    _, _, noise_seed = _random_seeds(self.seed, index)
    image = tf.ensure_shape(_central_crop(image, self.target_hw), self.image_shape)
    return dequantize(image, tf.random.stateless_uniform(self.image_shape, noise_seed))


# The pipeline.


def _check_batch_size(batch_size, input_context):
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
  if input_context is None:
    return batch_size
  replicas = input_context.num_replicas_in_sync
  if batch_size % replicas:
    raise ValueError(f"`batch_size` {batch_size} (global) does not divide across {replicas} replicas.")
  return batch_size // replicas


def _map_image(function, example):
  """`example`, a tuple `(image,)` or `(image, label)`, with `function` applied to its image."""
  return (function(example[0]),) + tuple(example[1:])


def _output(example, with_labels):
  return example if with_labels else example[0]


def _cached(dataset, *, spec, preprocessor, num_examples, cache):
  """`dataset` cached in memory when `cache`, or when `cache` is None and its prepared images fit the limit."""
  stored_bytes = np.prod(spec.image_shape) * (LSUN_RESIZE_FACTOR**2 if preprocessor.geometry == "lsun" else 1)
  if cache or (cache is None and (num_examples or 0) * stored_bytes <= CACHE_LIMIT_BYTES):
    return dataset.cache()
  return dataset


def _training_batches(
  examples,
  *,
  preprocessor,
  cache_fn,
  batch_size,
  pipeline_id,
  num_pipelines,
  shuffle_buffer_size,
  seed,
  with_labels,
):
  """Shuffled, repeated, flipped (where used) and freshly dequantized batches of this pipeline's shard.

  Randomness is keyed by a running count that interleaves the pipelines, so every replica draws its own.
  """
  if num_pipelines > 1:
    examples = examples.shard(num_pipelines, pipeline_id)
  examples = examples.map(
    lambda *example: _map_image(preprocessor.prepare, example), num_parallel_calls=tf.data.AUTOTUNE
  )
  examples = (
    cache_fn(examples).shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True).repeat()
  )
  if preprocessor.random_crop:
    examples = examples.enumerate().map(
      lambda count, example: _map_image(
        functools.partial(preprocessor.crop_example, count * num_pipelines + pipeline_id), example
      ),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
  return (
    examples.batch(batch_size, drop_remainder=True)
    .enumerate()
    .map(
      lambda count, batch: _output(
        _map_image(functools.partial(preprocessor.augment_batch, count * num_pipelines + pipeline_id), batch),
        with_labels,
      ),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
  )


def _evaluation_batches(
  examples, *, preprocessor, cache_fn, batch_size, pipeline_id, num_pipelines, with_labels
):
  """One pass over this pipeline's shard in order, the last batch partial, the noise of example `i` (its index
  in the whole split) drawn from `(seed, i)`."""
  indexed = examples.enumerate()
  if num_pipelines > 1:
    indexed = indexed.shard(num_pipelines, pipeline_id)
  indexed = indexed.map(
    lambda index, example: (index, _map_image(preprocessor.prepare, example)),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return (
    cache_fn(indexed)
    .map(
      lambda index, example: _output(
        _map_image(functools.partial(preprocessor.evaluation_example, index), example), with_labels
      ),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
    .batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE)
  )


def load(
  name,
  split,
  *,
  batch_size,
  training,
  data_dir=None,
  image_size=None,
  seed=0,
  input_context=None,
  num_bits=None,
  shuffle_buffer_size=10_000,
  cache=None,
  with_labels=False,
):
  """Returns a `tf.data.Dataset` of float32 batches `[batch, H, W, C]` of dequantized pixels in `[0, 2**num_bits)`.

  Training (`training=True`) shuffles, flips where `dataset_spec(name).horizontal_flip`, draws fresh noise
  every epoch, repeats forever and drops the last partial batch. Evaluation makes one pass in order, keeps the
  last partial batch, and draws the noise of example `i` from `(seed, i)`, so every pass is identical.

  `batch_size` is the **global** batch size. With `input_context` (a `tf.distribute.InputContext`, as given to
  `distribute_datasets_from_function`) this input pipeline reads shard `input_pipeline_id` of
  `num_input_pipelines` and yields **per-replica** batches of `batch_size // num_replicas_in_sync`.

  With `with_labels=True` the batches are `(images, labels)`, `labels` int32 `[batch]` in
  `[0, dataset_spec(name).num_classes)`; a dataset without labels raises `ValueError`. The images are those
  of `with_labels=False`, value for value.

  tfds datasets are read from `data_dir` (tfds' default when None) and are never downloaded: one that is not
  prepared raises `FileNotFoundError` at once, saying how to prepare it. `cache=None` caches the prepared
  images in memory when they fit in `CACHE_LIMIT_BYTES`.
  """
  spec = dataset_spec(name, image_size=image_size, num_bits=num_bits, data_dir=data_dir)
  per_replica_batch_size = _check_batch_size(batch_size, input_context)
  if not isinstance(seed, int):
    raise TypeError(f"`seed` must be an int; got {seed!r}.")
  if not isinstance(with_labels, bool):
    raise TypeError(f"`with_labels` must be a bool; got {with_labels!r}.")
  if with_labels and spec.num_classes is None:
    raise _no_labels_error(name)
  # Every element is a tuple `(image,)` or `(image, label)` until the last step, so labels travel with images.
  examples, num_examples = _source(name).examples(
    name, split, spec=spec, data_dir=data_dir, training=training, seed=seed, with_labels=with_labels
  )
  recipe = _recipe(name)
  preprocessor = _Preprocessor(
    spec,
    geometry=recipe.geometry if recipe else "fit",
    native_bits=recipe.native_bits if recipe else 8,
    training=training,
    seed=seed,
  )
  shard = {
    "pipeline_id": input_context.input_pipeline_id if input_context else 0,
    "num_pipelines": input_context.num_input_pipelines if input_context else 1,
  }
  cache_fn = functools.partial(
    _cached, spec=spec, preprocessor=preprocessor, num_examples=num_examples, cache=cache
  )
  if training:
    dataset = _training_batches(
      examples,
      preprocessor=preprocessor,
      cache_fn=cache_fn,
      batch_size=per_replica_batch_size,
      shuffle_buffer_size=shuffle_buffer_size,
      seed=seed,
      with_labels=with_labels,
      **shard,
    )
  else:
    dataset = _evaluation_batches(
      examples,
      preprocessor=preprocessor,
      cache_fn=cache_fn,
      batch_size=per_replica_batch_size,
      with_labels=with_labels,
      **shard,
    )
  if input_context is not None:
    options = tf.data.Options()
    # Already sharded above; a strategy must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
  return dataset.prefetch(tf.data.AUTOTUNE)
