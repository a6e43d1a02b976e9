"""Tests for the input pipelines: values, splits, labels, augmentation, determinism, sharding and errors."""

import dataclasses
import os
import re
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized
from PIL import Image
from sklearn.datasets import load_digits

from tests import idx_testing
from tfp_realnvp import data


def _collect(dataset):
  return np.concatenate([batch.numpy() for batch in dataset])


def _take(dataset, num_batches):
  return np.concatenate([batch.numpy() for batch in dataset.take(num_batches)])


def _collect_labelled(dataset, num_batches=-1):
  """(images, labels) of a `with_labels=True` pipeline, checking each batch's label dtype and shape."""
  images, labels = [], []
  for batch_images, batch_labels in dataset.take(num_batches):
    assert batch_labels.dtype == tf.int32 and batch_labels.shape == batch_images.shape[:1], batch_labels
    images.append(batch_images.numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(images), np.concatenate(labels)


def _label_of_image(raw_images, raw_labels):
  """Maps the bytes of each raw image (and, for flips, of its mirror image) to its label."""
  labels = {}
  for image, label in zip(raw_images.astype(np.uint8), raw_labels):
    for view in (image, image[:, ::-1]):
      assert labels.setdefault(bytes(view), label) == label, "two labels for one image"
  return labels


def _assert_labels_match_images(test, images, labels, raw_images, raw_labels):
  """Every (image, label) pair is one of the raw pairs (an image may be mirrored)."""
  label_of = _label_of_image(raw_images, raw_labels)
  expected = [label_of[bytes(image)] for image in np.floor(images).astype(np.uint8)]
  np.testing.assert_array_equal(labels, expected)


class TinyLabelled(tfds.core.GeneratorBasedBuilder):
  """A prepared tfds dataset (real files and split metadata, unlike `mock_data`): 4x4 RGB images, 3 classes."""

  VERSION = tfds.core.Version("1.0.0")
  NUM_TRAIN = 20

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(4, 4, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, self.NUM_TRAIN), "test": self._generate_examples(100, 6)}

  def _generate_examples(self, seed, count):
    images = np.random.default_rng(seed).integers(0, 256, size=(count, 4, 4, 3), dtype=np.uint8)
    for i, image in enumerate(images):
      yield i, {"image": image, "label": (i * 7 + seed) % 3}


def _tiny_labelled_examples(data_dir, split):
  examples = list(tfds.as_numpy(tfds.load("tiny_labelled", split=split, data_dir=data_dir, download=False)))
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def _raw_tfds_images(name, split):
  return np.stack(
    [example["image"] for example in tfds.as_numpy(tfds.load(name, split=split, download=False))]
  )


def _assert_dequantized(test, values, num_bits):
  """Values lie in `[0, 2**num_bits)` and their fractional parts (the noise) look uniform on `[0, 1)`."""
  test.assertEqual(values.dtype, np.float32)
  test.assertGreaterEqual(values.min(), 0.0)
  test.assertLess(values.max(), 2.0**num_bits)
  noise = (values - np.floor(values)).ravel()
  # float32 rounding makes `v + u` an integer for `u` below ~`2**-24 * v`: rare, but not impossible.
  test.assertLess(np.mean(noise == 0.0), 1e-3)
  decile_shares = np.bincount(np.minimum((noise * 10).astype(int), 9), minlength=10) / noise.size
  test.assertTrue(np.all((decile_shares > 0.05) & (decile_shares < 0.15)), decile_shares)


class DigitsTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.reference = np.minimum(load_digits().images, 15)[..., np.newaxis]

  def test_spec(self):
    self.assertEqual(
      data.dataset_spec("digits"),
      data.DatasetSpec(
        name="digits",
        image_shape=(8, 8, 1),
        num_bits=4,
        horizontal_flip=False,
        train_split="train",
        eval_split="test",
        preset="digits",
        num_classes=10,
      ),
    )

  def test_splits_are_the_first_1500_and_the_last_297_images_mapped_to_4_bits(self):
    train = _collect(data.load("digits", "train", batch_size=256, training=False))
    test = _collect(data.load("digits", "test", batch_size=256, training=False))
    self.assertEqual(train.shape, (1500, 8, 8, 1))
    self.assertEqual(test.shape, (297, 8, 8, 1))
    np.testing.assert_array_equal(np.floor(train), self.reference[:1500])
    np.testing.assert_array_equal(np.floor(test), self.reference[1500:])
    self.assertEqual(np.unique(np.floor(train)).tolist(), list(range(16)))
    _assert_dequantized(self, np.concatenate([train, test]), num_bits=4)

  def test_sliced_split(self):
    head = _collect(data.load("digits", "train[:10%]", batch_size=64, training=False))
    np.testing.assert_array_equal(np.floor(head), self.reference[:150])

  def test_training_repeats_shuffles_drops_remainder_and_never_flips(self):
    batches = _take(data.load("digits", "train", batch_size=256, training=True), 12)  # 2 epochs and more
    self.assertEqual(batches.shape, (12 * 256, 8, 8, 1))
    _assert_dequantized(self, batches, num_bits=4)
    train = self.reference[:1500].reshape(1500, -1)
    first_epoch = np.floor(batches[:1500]).reshape(1500, -1)
    # Every training image is an unflipped train image, and the first epoch holds each of them once.
    self.assertCountEqual(map(bytes, first_epoch.astype(np.uint8)), map(bytes, train.astype(np.uint8)))
    self.assertFalse(np.array_equal(first_epoch, train), "training order must be shuffled")


class DequantizeTest(tf.test.TestCase):
  def test_noise_just_below_one_stays_inside_the_bin(self):
    pixels = tf.range(256, dtype=tf.int32)
    largest_noise = tf.fill([256], np.nextafter(np.float32(1), np.float32(0)))
    values = self.evaluate(data.dequantize(pixels, largest_noise))
    np.testing.assert_array_equal(np.floor(values), np.arange(256))
    self.assertTrue(np.all(values > np.arange(256)))

  def test_adds_the_noise(self):
    values = self.evaluate(data.dequantize(tf.constant([3, 200]), tf.constant([0.25, 0.5])))
    np.testing.assert_array_equal(values, [3.25, 200.5])


class EvaluationDeterminismTest(tf.test.TestCase):
  def test_two_passes_and_batch_sizes_agree(self):
    dataset = data.load("digits", "test", batch_size=64, training=False, seed=3)
    first, second = _collect(dataset), _collect(dataset)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(
      first, _collect(data.load("digits", "test", batch_size=100, training=False, seed=3))
    )
    other_seed = _collect(data.load("digits", "test", batch_size=64, training=False, seed=4))
    self.assertFalse(np.array_equal(first, other_seed))
    np.testing.assert_array_equal(np.floor(first), np.floor(other_seed))

  def test_training_noise_is_fresh_each_epoch_and_repeats_per_seed(self):
    def make(seed):
      return data.load("digits", "train[:64]", batch_size=64, training=True, seed=seed)

    epochs = _take(make(0), 2)
    self.assertFalse(np.array_equal(np.sort(epochs[:64], axis=0), np.sort(epochs[64:], axis=0)))
    np.testing.assert_array_equal(epochs, _take(make(0), 2))


class ShardingTest(tf.test.TestCase):
  def _context(self, pipeline_id):
    return tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
    )

  def test_evaluation_shards_partition_the_split_with_per_replica_batches(self):
    shards = [
      list(data.load("digits", "test", batch_size=64, training=False, input_context=self._context(i)))
      for i in range(2)
    ]
    self.assertEqual(shards[0][0].shape[0], 32)
    full = _collect(data.load("digits", "test", batch_size=64, training=False))
    union = np.concatenate([np.concatenate(shard) for shard in shards])
    self.assertEqual(len(union), 297)
    # Noise is keyed by the global example index, so shards reproduce the unsharded values exactly.
    np.testing.assert_array_equal(
      np.sort(union.reshape(297, -1), axis=0), np.sort(full.reshape(297, -1), axis=0)
    )

  def test_training_shards_read_disjoint_examples(self):
    firsts = [
      np.floor(
        _take(data.load("digits", "train", batch_size=8, training=True, input_context=self._context(i)), 1)
      )
      for i in range(2)
    ]
    self.assertEqual(firsts[0].shape, (4, 8, 8, 1))
    shard_images = [set(map(bytes, f.reshape(4, -1).astype(np.uint8))) for f in firsts]
    self.assertFalse(shard_images[0] & shard_images[1])

  def test_global_batch_must_divide_across_replicas(self):
    with self.assertRaisesRegex(ValueError, "batch_size"):
      data.load("digits", "test", batch_size=5, training=False, input_context=self._context(0))


class TfdsMockTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ("mnist", "mnist", (28, 28, 1), False), ("cifar10", "cifar10", (32, 32, 3), True)
  )
  def test_values_fill_the_bins_of_the_dataset_pixels(self, name, image_shape, horizontal_flip):
    spec = data.dataset_spec(name)
    self.assertEqual(
      (spec.image_shape, spec.num_bits, spec.horizontal_flip), (image_shape, 8, horizontal_flip)
    )
    with tfds.testing.mock_data(num_examples=6):
      raw = _raw_tfds_images(name, "test")
      evaluation = _collect(data.load(name, "test", batch_size=4, training=False))
      training = _take(data.load(name, "train", batch_size=4, training=True), 3)
    self.assertEqual(evaluation.shape, (6,) + image_shape)
    self.assertEqual(training.shape, (12,) + image_shape)
    np.testing.assert_array_equal(np.floor(evaluation), raw)
    _assert_dequantized(self, evaluation, num_bits=8)
    _assert_dequantized(self, training, num_bits=8)

  def test_fashion_mnist_has_the_mnist_settings_and_labels(self):
    spec = data.dataset_spec("fashion_mnist")
    self.assertEqual(spec, dataclasses.replace(data.dataset_spec("mnist"), name="fashion_mnist"))
    with tfds.testing.mock_data(num_examples=6):
      raw = list(tfds.as_numpy(tfds.load("fashion_mnist", split="test", download=False)))
      images, labels = _collect_labelled(
        data.load("fashion_mnist", "test", batch_size=4, training=False, with_labels=True)
      )
    np.testing.assert_array_equal(np.floor(images), np.stack([example["image"] for example in raw]))
    np.testing.assert_array_equal(labels, [example["label"] for example in raw])

  def test_cifar10_flips_in_training_only(self):
    with tfds.testing.mock_data(num_examples=8):
      raw = _raw_tfds_images("cifar10", "train")
      evaluation = np.floor(_collect(data.load("cifar10", "train", batch_size=8, training=False)))
      training = np.floor(_take(data.load("cifar10", "train", batch_size=8, training=True), 8))
    originals = {bytes(image) for image in raw}
    mirrored = {bytes(image[:, ::-1]) for image in raw}
    kinds = [
      "original" if bytes(x) in originals else "mirrored" if bytes(x) in mirrored else "other"
      for x in training.astype(np.uint8)
    ]
    self.assertNotIn("other", kinds)
    self.assertGreater(kinds.count("mirrored"), 8)
    self.assertGreater(kinds.count("original"), 8)
    np.testing.assert_array_equal(evaluation, raw)

  def test_fewer_bits_drop_the_low_bits(self):
    spec = data.dataset_spec("cifar10", num_bits=5)
    self.assertEqual(spec.num_bits, 5)
    with tfds.testing.mock_data(num_examples=4):
      raw = _raw_tfds_images("cifar10", "test")
      values = _collect(data.load("cifar10", "test", batch_size=4, training=False, num_bits=5))
    np.testing.assert_array_equal(np.floor(values), raw >> 3)
    _assert_dequantized(self, values, num_bits=5)

  def test_celeb_a_is_the_central_148_crop_resized(self):
    self.assertEqual(data.dataset_spec("celeb_a").image_shape, (64, 64, 3))
    with tfds.testing.mock_data(num_examples=2):
      raw = _raw_tfds_images("celeb_a", "test")
      values = _collect(data.load("celeb_a", "test", batch_size=2, training=False, image_size=32))
    crop = raw[:, 35:183, 15:163].astype(np.float32)
    expected = np.round(tf.image.resize(crop, (32, 32), method="bilinear", antialias=True).numpy())
    np.testing.assert_array_equal(np.floor(values), expected)

  def test_lsun_crops_a_64x64_patch_after_resizing_the_shorter_side_to_96(self):
    spec = data.dataset_spec("lsun/bedroom")
    self.assertEqual((spec.image_shape, spec.horizontal_flip, spec.preset), ((64, 64, 3), True, "lsun64"))
    with tfds.testing.mock_data(num_examples=3):
      values = _collect(data.load("lsun/bedroom", "validation", batch_size=3, training=False))
      training = _take(data.load("lsun/bedroom", "train", batch_size=3, training=True), 1)
    self.assertEqual(values.shape, (3, 64, 64, 3))
    self.assertEqual(training.shape, (3, 64, 64, 3))
    _assert_dequantized(self, values, num_bits=8)


class OfflineErrorsTest(tf.test.TestCase):
  def test_unprepared_dataset_fails_at_once_saying_how_to_prepare_it(self):
    empty_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    data.dataset_spec("mnist", data_dir=empty_dir)  # imports tfds outside the timed call
    start = time.monotonic()
    with self.assertRaisesRegex(FileNotFoundError, r"download_and_prepare\(\)[\s\S]*data_dir") as raised:
      data.load("mnist", "train", batch_size=8, training=True, data_dir=empty_dir)
    # tfds' default is to retry downloads for minutes before failing.
    self.assertLess(time.monotonic() - start, 2.0)
    # Both routes: a machine with network access, or the original files here through `manual_dir`.
    message = str(raised.exception)
    self.assertIn("on a machine with network access run `tfds build mnist --data_dir=DIR`", message)
    self.assertIn("download_config=tfds.download.DownloadConfig(manual_dir=MANUAL)", message)
    self.assertIn("examples/prepare_fashion_mnist.py", message)

  def test_unknown_names_list_the_supported_ones(self):
    with self.assertRaisesRegex(
      ValueError, "Unknown dataset 'not_a_dataset_at_all'; supported: digits, mnist"
    ):
      data.load("not_a_dataset_at_all", "train", batch_size=8, training=True)
    with self.assertRaisesRegex(ValueError, "'/no/such/directory' is not a directory"):
      data.load("dir:/no/such/directory", "train", batch_size=8, training=True)

  def test_dataset_without_images(self):
    with self.assertRaisesRegex(ValueError, "no 'image' feature"):
      data.dataset_spec("imdb_reviews")

  def test_bad_arguments_name_themselves(self):
    with self.assertRaisesRegex(ValueError, "`split`"):
      data.load("digits", "validation", batch_size=8, training=False)
    with self.assertRaisesRegex(ValueError, "`batch_size`"):
      data.load("digits", "test", batch_size=0, training=False)
    with self.assertRaisesRegex(ValueError, "`num_bits`"):
      data.dataset_spec("digits", num_bits=8)
    with self.assertRaisesRegex(ValueError, "`image_size`"):
      data.dataset_spec("digits", image_size=(8, 0))


class DirectoryTest(tf.test.TestCase):
  def _write_images(self, directory, count, shape, seed):
    os.makedirs(directory, exist_ok=True)
    images = np.random.default_rng(seed).integers(0, 256, size=(count,) + shape, dtype=np.uint8)
    for i, image in enumerate(images):
      Image.fromarray(image).save(os.path.join(directory, f"image_{i:02d}.png"))
    return images

  def test_flat_directory_loads_at_native_size_and_resized(self):
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    images = self._write_images(directory, 10, (10, 12, 3), seed=0)
    name = data.DIRECTORY_PREFIX + directory
    spec = data.dataset_spec(name)
    self.assertEqual(
      (spec.image_shape, spec.num_bits, spec.train_split, spec.eval_split),
      ((10, 12, 3), 8, "train[:90%]", "train[90%:]"),
    )
    native = _collect(data.load(name, "train", batch_size=4, training=False))
    np.testing.assert_array_equal(np.floor(native), images)
    np.testing.assert_array_equal(
      np.floor(_collect(data.load(name, spec.eval_split, batch_size=4, training=False))), images[9:]
    )
    resized = _take(data.load(name, spec.train_split, batch_size=4, training=True, image_size=8), 3)
    self.assertEqual(resized.shape, (12, 8, 8, 3))
    _assert_dequantized(self, resized, num_bits=8)

  def test_train_and_test_subdirectories_are_the_splits(self):
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    self._write_images(os.path.join(directory, "train"), 3, (6, 6), seed=1)
    test_images = self._write_images(os.path.join(directory, "test"), 2, (6, 6), seed=2)
    spec = data.dataset_spec(data.DIRECTORY_PREFIX + directory)
    self.assertEqual((spec.image_shape, spec.train_split, spec.eval_split), ((6, 6, 1), "train", "test"))
    test = _collect(data.load(data.DIRECTORY_PREFIX + directory, "test", batch_size=4, training=False))
    np.testing.assert_array_equal(np.floor(test), test_images[..., np.newaxis])


class DigitsLabelsTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    digits = load_digits()
    self.images, self.labels = np.minimum(digits.images, 15)[..., np.newaxis], digits.target

  def test_spec_and_label_counts(self):
    self.assertEqual(data.dataset_spec("digits").num_classes, 10)
    counts = data.label_counts("digits", "train")
    self.assertEqual(counts.dtype, np.int64)
    np.testing.assert_array_equal(counts, np.bincount(self.labels[:1500], minlength=10))
    np.testing.assert_array_equal(
      data.label_counts("digits", "train[1200:]"), np.bincount(self.labels[1200:1500], minlength=10)
    )

  def test_evaluation_labels_are_the_targets_in_order_beside_the_same_images(self):
    for split, expected in (("train", slice(1500)), ("test", slice(1500, None))):
      images, labels = _collect_labelled(
        data.load("digits", split, batch_size=128, training=False, seed=5, with_labels=True)
      )
      np.testing.assert_array_equal(labels, self.labels[expected])
      np.testing.assert_array_equal(
        images, _collect(data.load("digits", split, batch_size=128, training=False, seed=5))
      )

  def test_training_labels_follow_their_shuffled_images(self):
    def make(with_labels, cache):
      return data.load(
        "digits", "train", batch_size=100, training=True, seed=2, cache=cache, with_labels=with_labels
      )

    # 32 batches: more than two epochs, so the cached second epoch (reshuffled) is covered too.
    images, labels = _collect_labelled(make(True, None), 32)
    _assert_labels_match_images(self, images, labels, self.images[:1500], self.labels[:1500])
    np.testing.assert_array_equal(images, _take(make(False, None), 32))
    uncached_images, uncached_labels = _collect_labelled(make(True, False), 32)
    np.testing.assert_array_equal(uncached_images, images)
    np.testing.assert_array_equal(uncached_labels, labels)

  def test_sharded_labels_stay_with_their_images(self):
    def context(pipeline_id):
      return tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
      )

    for training, num_batches in ((False, -1), (True, 20)):
      shards = [
        _collect_labelled(
          data.load(
            "digits", "train", batch_size=64, training=training, input_context=context(i), with_labels=True
          ),
          num_batches,
        )
        for i in range(2)
      ]
      for images, labels in shards:
        self.assertEqual(images.shape[1:], (8, 8, 1))
        _assert_labels_match_images(self, images, labels, self.images[:1500], self.labels[:1500])
      if not training:  # one pass: the two shards partition the split
        union = np.concatenate([labels for _, labels in shards])
        np.testing.assert_array_equal(np.sort(union), np.sort(self.labels[:1500]))

  def test_unlabelled_datasets_and_bad_flags_are_errors_naming_with_labels(self):
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(directory, "a.png"))
    name = data.DIRECTORY_PREFIX + directory
    self.assertIsNone(data.dataset_spec(name).num_classes)
    with self.assertRaisesRegex(ValueError, rf"`with_labels=True`.*{re.escape(repr(name))} has none"):
      data.load(name, "train", batch_size=1, training=False, with_labels=True)
    with self.assertRaisesRegex(ValueError, "label_counts"):
      data.label_counts(name, "train")
    with self.assertRaisesRegex(TypeError, "`with_labels` must be a bool"):
      data.load("digits", "test", batch_size=8, training=False, with_labels="yes")

  def test_num_classes_of_the_known_datasets(self):
    self.assertEqual(
      {name: data.dataset_spec(name).num_classes for name in ("mnist", "cifar10", "celeb_a", "lsun/bedroom")},
      {"mnist": 10, "cifar10": 10, "celeb_a": None, "lsun/bedroom": None},
    )


class ValidationSplitTest(tf.test.TestCase):
  def test_fit_and_validation_splits_partition_the_1500_training_digits(self):
    train_images, train_labels = _collect_labelled(
      data.load("digits", "train", batch_size=256, training=False, with_labels=True)
    )
    fit_images, fit_labels = _collect_labelled(
      data.load("digits", data.DIGITS_FIT_SPLIT, batch_size=256, training=False, with_labels=True)
    )
    validation_images, validation_labels = _collect_labelled(
      data.load("digits", data.DIGITS_VALIDATION_SPLIT, batch_size=256, training=False, with_labels=True)
    )
    self.assertEqual((len(fit_images), len(validation_images)), (1200, 300))
    np.testing.assert_array_equal(np.floor(fit_images), np.floor(train_images[:1200]))
    np.testing.assert_array_equal(np.floor(validation_images), np.floor(train_images[1200:]))
    np.testing.assert_array_equal(np.concatenate([fit_labels, validation_labels]), train_labels)
    self.assertEqual(set(validation_labels.tolist()), set(range(10)))
    fit_training = _take(data.load("digits", data.DIGITS_FIT_SPLIT, batch_size=100, training=True), 12)
    self.assertCountEqual(
      map(bytes, np.floor(fit_training).astype(np.uint8)),
      map(bytes, np.floor(fit_images).astype(np.uint8)),
    )

  def test_validation_split_never_overlaps_the_test_split(self):
    validation = _collect(data.load("digits", data.DIGITS_VALIDATION_SPLIT, batch_size=300, training=False))
    test = _collect(data.load("digits", "test", batch_size=300, training=False))
    validation_set = set(map(bytes, np.floor(validation).astype(np.uint8)))
    self.assertFalse(validation_set & set(map(bytes, np.floor(test).astype(np.uint8))))


class TfdsLabelsTest(parameterized.TestCase, tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    TinyLabelled(data_dir=cls.data_dir).download_and_prepare()

  @parameterized.named_parameters(("mnist", "mnist"), ("cifar10", "cifar10"))
  def test_mock_labels_follow_images_in_evaluation_and_flipped_training(self, name):
    with tfds.testing.mock_data(num_examples=8):
      raw = list(tfds.as_numpy(tfds.load(name, split="train", download=False)))
      evaluation = _collect_labelled(data.load(name, "train", batch_size=4, training=False, with_labels=True))
      training = _collect_labelled(data.load(name, "train", batch_size=4, training=True, with_labels=True), 8)
      counts = data.label_counts(name, "train")
    raw_images, raw_labels = np.stack([e["image"] for e in raw]), np.array([e["label"] for e in raw])
    np.testing.assert_array_equal(np.floor(evaluation[0]), raw_images)
    np.testing.assert_array_equal(evaluation[1], raw_labels)
    _assert_labels_match_images(self, *training, raw_images, raw_labels)
    np.testing.assert_array_equal(counts, np.bincount(raw_labels, minlength=10))

  def test_spec_of_a_tfds_dataset_with_a_class_label(self):
    spec = data.dataset_spec("tiny_labelled", data_dir=self.data_dir)
    self.assertEqual((spec.image_shape, spec.num_classes, spec.train_split), ((4, 4, 3), 3, "train"))

  def test_sliced_splits_with_labels_partition_the_train_split(self):
    train_images, train_labels = _tiny_labelled_examples(self.data_dir, "train")
    pieces = [
      _collect_labelled(
        data.load(
          "tiny_labelled", split, batch_size=5, training=False, data_dir=self.data_dir, with_labels=True
        )
      )
      for split in ("train[:12]", "train[12:]")
    ]
    self.assertEqual([len(labels) for _, labels in pieces], [12, TinyLabelled.NUM_TRAIN - 12])
    np.testing.assert_array_equal(np.floor(np.concatenate([p[0] for p in pieces])), train_images)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), train_labels)
    training = _collect_labelled(
      data.load(
        "tiny_labelled", "train[:12]", batch_size=4, training=True, data_dir=self.data_dir, with_labels=True
      ),
      6,
    )
    _assert_labels_match_images(self, *training, train_images[:12], train_labels[:12])

  def test_label_counts(self):
    _, train_labels = _tiny_labelled_examples(self.data_dir, "train")
    np.testing.assert_array_equal(
      data.label_counts("tiny_labelled", "train", data_dir=self.data_dir),
      np.bincount(train_labels, minlength=3),
    )
    np.testing.assert_array_equal(
      data.label_counts("tiny_labelled", "train[12:]", data_dir=self.data_dir),
      np.bincount(train_labels[12:], minlength=3),
    )

  def test_tfds_dataset_without_labels_is_an_error(self):
    with self.assertRaisesRegex(ValueError, r"`with_labels=True`.*'celeb_a' has none"):
      data.load("celeb_a", "test", batch_size=2, training=False, with_labels=True)


class IdxFolderTest(parameterized.TestCase, tf.test.TestCase):
  """`idx:PATH`: MNIST's four IDX files, gzipped or not, as splits `train` and `test` with labels."""

  def _folder(self, **kwargs):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    return folder, idx_testing.write_folder(folder, **kwargs)

  @parameterized.named_parameters(("plain", False), ("gzipped", True))
  def test_spec_comes_from_the_headers(self, gzipped):
    folder, _ = self._folder(num_train=9, num_test=4, image_hw=(5, 7), num_classes=3, gzipped=gzipped)
    self.assertEqual(
      data.dataset_spec(data.IDX_PREFIX + folder),
      data.DatasetSpec(
        name=data.IDX_PREFIX + folder,
        image_shape=(5, 7, 1),
        num_bits=8,
        horizontal_flip=False,
        train_split="train",
        eval_split="test",
        preset=None,  # no preset is made for 5x7 images
        num_classes=3,
      ),
    )

  def test_28x28_images_take_the_mnist_preset_unless_resized(self):
    folder, _ = self._folder(num_train=3, num_test=2, image_hw=(28, 28))
    self.assertEqual(data.dataset_spec(data.IDX_PREFIX + folder).preset, "mnist")
    self.assertIsNone(data.dataset_spec(data.IDX_PREFIX + folder, image_size=16).preset)

  @parameterized.named_parameters(("plain", False), ("gzipped", True))
  def test_splits_and_slices_are_the_files_images_in_order_beside_their_labels(self, gzipped):
    folder, splits = self._folder(num_train=10, num_test=5, gzipped=gzipped)
    name = data.IDX_PREFIX + folder

    def evaluation(split):
      return _collect_labelled(data.load(name, split, batch_size=4, training=False, with_labels=True))

    for split, (images, labels) in [
      ("train", splits["train"]),
      ("test", splits["test"]),
      ("train[:6]", (splits["train"][0][:6], splits["train"][1][:6])),
      ("train[6:]", (splits["train"][0][6:], splits["train"][1][6:])),
      ("train[50%:]", (splits["train"][0][5:], splits["train"][1][5:])),
    ]:
      loaded_images, loaded_labels = evaluation(split)
      np.testing.assert_array_equal(np.floor(loaded_images), images[..., np.newaxis], err_msg=split)
      np.testing.assert_array_equal(loaded_labels, labels, err_msg=split)
      _assert_dequantized(self, loaded_images, num_bits=8)
      np.testing.assert_array_equal(data.label_counts(name, split), np.bincount(labels, minlength=3))
    unlabelled = _collect(data.load(name, "test", batch_size=4, training=False))
    np.testing.assert_array_equal(unlabelled, evaluation("test")[0])

  def test_training_labels_follow_their_shuffled_images(self):
    folder, splits = self._folder(num_train=12, num_test=2, gzipped=True)
    images, labels = _collect_labelled(
      data.load(data.IDX_PREFIX + folder, "train[:8]", batch_size=4, training=True, with_labels=True), 6
    )
    self.assertEqual(images.shape, (24, 5, 7, 1))
    raw_images, raw_labels = splits["train"][0][:8, ..., np.newaxis], splits["train"][1][:8]
    _assert_labels_match_images(self, images, labels, raw_images, raw_labels)

  def test_without_the_t10k_pair_the_last_tenth_of_train_evaluates(self):
    folder, splits = self._folder(num_train=20, num_test=0)
    name = data.IDX_PREFIX + folder
    spec = data.dataset_spec(name)
    self.assertEqual((spec.train_split, spec.eval_split), ("train[:90%]", "train[90%:]"))
    np.testing.assert_array_equal(
      np.floor(_collect(data.load(name, spec.eval_split, batch_size=4, training=False))),
      splits["train"][0][18:, ..., np.newaxis],
    )
    with self.assertRaisesRegex(
      ValueError, r"`split` for .* must be 'train' \(optionally sliced\); got 'test'"
    ):
      data.load(name, "test", batch_size=4, training=False)

  def test_a_rewritten_file_is_read_again(self):
    folder, _ = self._folder(num_train=6, num_test=2)
    name = data.IDX_PREFIX + folder
    self.assertEqual(data.label_counts(name, "train").sum(), 6)
    idx_testing.write_folder(folder, num_train=9, num_test=2, seed=5)
    self.assertEqual(data.label_counts(name, "train").sum(), 9)
    self.assertLen(_collect(data.load(name, "train", batch_size=4, training=False)), 9)


def _idx_error_cases():
  """Functions `make(folder)` that break the IDX folder `folder` and return the path the error must name and
  a pattern of its message."""

  def missing_labels(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=2)
    path = os.path.join(folder, "t10k-labels-idx1-ubyte")
    os.remove(path)
    return os.path.join(folder, "t10k-images-idx3-ubyte"), r"no t10k-labels-idx1-ubyte \(or \.gz\)"

  def missing_train(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=2)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
      os.remove(os.path.join(folder, name))
    return folder, "no train-images-idx3-ubyte or train-labels-idx1-ubyte"

  def wrong_magic(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=2, gzipped=True)
    path = os.path.join(folder, "train-images-idx3-ubyte")
    images = np.zeros((4, 5, 7), np.uint8)
    return idx_testing.write_file(path, idx_testing.idx_bytes(images, magic=0x00000D03), True), (
      r"no IDX file of images: its magic number is 0x00000d03, expected 0x00000803"
    )

  def labels_for_images(folder):
    path = folder_with_file(folder, "train-images-idx3-ubyte", idx_testing.idx_bytes(np.zeros(4, np.uint8)))
    return path, r"magic number is 0x00000801, expected 0x00000803"

  def truncated_data(folder):
    contents = idx_testing.idx_bytes(np.zeros((4, 5, 7), np.uint8))
    path = folder_with_file(folder, "train-images-idx3-ubyte", contents[:-10])
    return (
      path,
      r"is truncated: its header gives images of shape \[4, 5, 7\], 140 bytes, but 130 bytes follow",
    )

  def truncated_header(folder):
    path = folder_with_file(
      folder, "t10k-labels-idx1-ubyte", idx_testing.idx_bytes(np.zeros(2, np.uint8))[:6]
    )
    return path, r"is truncated: 6 bytes, less than its 8-byte header"

  def truncated_gzip(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=2, gzipped=True)
    path = os.path.join(folder, "train-labels-idx1-ubyte.gz")
    with open(path, "rb") as file:
      contents = file.read()
    with open(path, "wb") as file:
      file.write(contents[: len(contents) // 2])
    return path, r"cannot read .*: Compressed file ended"

  def not_gzip(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=2)
    path = os.path.join(folder, "train-labels-idx1-ubyte")
    os.rename(path, path + ".gz")
    return path + ".gz", r"cannot read .*Not a gzipped file"

  def counts_differ(folder):
    path = folder_with_file(folder, "t10k-labels-idx1-ubyte", idx_testing.idx_bytes(np.zeros(3, np.uint8)))
    return path, r"holds 2 images but .* holds 3 labels"

  def sizes_differ(folder):
    idx_testing.write_folder(folder, num_train=4, num_test=0, image_hw=(5, 7))
    images, labels = idx_testing.random_split(2, (6, 7), 3, seed=1)
    paths = idx_testing.write_split(folder, "t10k", images, labels, gzipped=True)
    return paths[0], r"are 6x7 but those of the train split are 5x7"

  def not_a_directory(folder):
    return os.path.join(folder, "absent"), r"is not a directory"

  return [
    missing_labels,
    missing_train,
    wrong_magic,
    labels_for_images,
    truncated_data,
    truncated_header,
    truncated_gzip,
    not_gzip,
    counts_differ,
    sizes_differ,
    not_a_directory,
  ]


def folder_with_file(folder, name, contents):
  """A small IDX folder (4 training and 2 test images) whose file `name` holds `contents`; returns its path."""
  idx_testing.write_folder(folder, num_train=4, num_test=2)
  path = os.path.join(folder, name)
  idx_testing.write_file(path, contents, False)
  return path


class IdxErrorTest(parameterized.TestCase, tf.test.TestCase):
  """A broken IDX folder is one `ValueError` naming the file (or folder), before any pipeline is built."""

  @parameterized.named_parameters(*[(make.__name__, make) for make in _idx_error_cases()])
  def test_the_error_names_the_file(self, make):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    path, message = make(folder)
    name = data.IDX_PREFIX + (path if make.__name__ == "not_a_directory" else folder)
    for call in (
      lambda: data.dataset_spec(name),
      lambda: data.load(name, "train", batch_size=2, training=True),
      lambda: data.label_counts(name, "train"),
    ):
      with self.assertRaisesRegex(ValueError, message) as error:
        call()
      self.assertIn(repr(path), str(error.exception))
      self.assertStartsWith(str(error.exception), f"Dataset {name!r}: ")


class DirectoryCheckTest(tf.test.TestCase):
  """Every file of an image directory is checked before any training: a misfit is named in one line."""

  def _directory(self, shapes):
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes):
      Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
        os.path.join(directory, f"image_{i:02d}.png")
      )
    return directory

  def _assert_names(self, error, directory, *file_names):
    message = str(error.exception)
    self.assertNotIn("\n", message)
    for file_name in file_names:
      self.assertIn(repr(os.path.join(directory, file_name)), message)

  def test_a_file_of_another_size_is_named_unless_image_size_is_given(self):
    # The case: twelve 10x12 RGB images and one 20x30 one that sorts first.
    directory = self._directory([(20, 30, 3)] + [(10, 12, 3)] * 12)
    name = data.DIRECTORY_PREFIX + directory
    for call in (
      lambda: data.dataset_spec(name),
      lambda: data.load(name, "train", batch_size=4, training=True),
    ):
      with self.assertRaisesRegex(
        ValueError, r"is 10x12 but the first file .* is 20x30; pass `image_size`"
      ) as error:
        call()
      self._assert_names(error, directory, "image_01.png", "image_00.png")
    resized = _collect(data.load(name, "train", batch_size=4, training=False, image_size=(10, 12)))
    self.assertEqual(resized.shape, (13, 10, 12, 3))

  def test_a_file_with_another_channel_count_is_named_even_with_image_size(self):
    directory = self._directory([(10, 12, 3)] * 3 + [(10, 12)] + [(10, 12, 3)])
    name = data.DIRECTORY_PREFIX + directory
    for image_size in (None, 8):
      with self.assertRaisesRegex(ValueError, "has 1 channels but the first file .* has 3") as error:
        data.dataset_spec(name, image_size=image_size)
      self._assert_names(error, directory, "image_03.png", "image_00.png")

  def test_a_corrupt_file_is_named_before_training_even_with_image_size(self):
    directory = self._directory([(10, 12, 3)] * 4)
    path = os.path.join(directory, "image_02.png")
    with open(path, "rb") as file:
      encoded = file.read()
    with open(path, "wb") as file:
      file.write(encoded[: len(encoded) // 2])  # a truncated PNG
    with open(os.path.join(directory, "image_03.png"), "wb") as file:
      file.write(b"not an image")
    name = data.DIRECTORY_PREFIX + directory
    for image_size in (None, 8):
      with self.assertRaisesRegex(ValueError, "image file .* does not decode: Invalid PNG") as error:
        data.load(name, "train", batch_size=2, training=True, image_size=image_size)
      self._assert_names(error, directory, "image_02.png")
    os.remove(path)
    with self.assertRaisesRegex(ValueError, "does not decode: Unknown image file format") as error:
      data.dataset_spec(name)
    self._assert_names(error, directory, "image_03.png")


if __name__ == "__main__":
  tf.test.main()
