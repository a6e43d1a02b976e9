"""Tests for the input pipelines: values, splits, augmentation, determinism, sharding and offline errors."""

import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized
from PIL import Image
from sklearn.datasets import load_digits

from tfp_realnvp import data


def _collect(dataset):
  return np.concatenate([batch.numpy() for batch in dataset])


def _take(dataset, num_batches):
  return np.concatenate([batch.numpy() for batch in dataset.take(num_batches)])


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
      data.DatasetSpec("digits", (8, 8, 1), 4, False, "train", "test", "digits"),
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
    with self.assertRaisesRegex(FileNotFoundError, r"download_and_prepare\(\)[\s\S]*data_dir"):
      data.load("mnist", "train", batch_size=8, training=True, data_dir=empty_dir)
    # tfds' default is to retry downloads for minutes before failing.
    self.assertLess(time.monotonic() - start, 2.0)

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


if __name__ == "__main__":
  tf.test.main()
