"""BatchNorm flow layer: mode chosen at call time, exact inference-mode log-det."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks
from tfp_realnvp.bijectors import BatchNorm


def perturbed_batch_norm(num_features=2, dtype=tf.float32):
  batch_norm = BatchNorm(num_features, momentum=0.9, dtype=dtype)
  generator = tf.random.Generator.from_seed(7)
  for variable in (batch_norm.log_scale, batch_norm.shift, batch_norm.moving_mean):
    variable.assign(generator.normal([num_features], stddev=0.5, dtype=dtype))
  batch_norm.moving_variance.assign(tf.exp(generator.normal([num_features], dtype=dtype)))
  return batch_norm


class BatchNormTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  @parameterized.parameters(tf.float32, tf.float64)
  def test_inference_mode_inverse_and_log_det_are_exact(self, dtype):
    batch_norm = perturbed_batch_norm(dtype=dtype)
    x = tf.random.stateless_normal([4, 4, 4, 2], seed=[1, 1], dtype=dtype)
    self.assert_round_trips(batch_norm, x)
    self.assert_log_dets_consistent(batch_norm, x, 3)
    self.assert_log_det_matches_autodiff(batch_norm, x, 3, rtol=1e-4, min_abs_log_det=0.1)

  def test_vector_events(self):
    batch_norm = perturbed_batch_norm(num_features=6)
    x = tf.random.stateless_normal([5, 6], seed=[1, 2])
    self.assert_round_trips(batch_norm, x)
    self.assert_log_det_matches_autodiff(batch_norm, x, 1, rtol=1e-4, min_abs_log_det=0.1)

  def test_running_averages_move_only_in_training_mode(self):
    batch_norm = perturbed_batch_norm()
    before = [v.numpy() for v in (batch_norm.moving_mean, batch_norm.moving_variance)]
    x = 3.0 + 2.0 * tf.random.stateless_normal([64, 4, 4, 2], seed=[2, 2])
    batch_norm.forward(x)
    batch_norm.forward_log_det_jacobian(x + 1.0, event_ndims=3)
    batch_norm.inverse(x)
    self.assertAllEqual(before, [v.numpy() for v in (batch_norm.moving_mean, batch_norm.moving_variance)])

    batch_norm.forward(x, training=True)
    mean, variance = tf.nn.moments(x, [0, 1, 2])
    self.assertAllClose(batch_norm.moving_mean, 0.9 * before[0] + 0.1 * mean, atol=1e-5)
    self.assertAllClose(batch_norm.moving_variance, 0.9 * before[1] + 0.1 * variance, atol=1e-5)

  def test_training_mode_uses_batch_statistics(self):
    batch_norm = BatchNorm(2)  # log_scale 0 and shift 0: the output is the standardized batch.
    x = 3.0 + 2.0 * tf.random.stateless_normal([64, 4, 4, 2], seed=[3, 3])
    y = batch_norm.forward(x, training=True)
    mean, variance = tf.nn.moments(y, [0, 1, 2])
    self.assertAllClose(mean, [0.0, 0.0], atol=1e-5)
    self.assertAllClose(variance, [1.0, 1.0], atol=1e-3)
    _, batch_variance = tf.nn.moments(x, [0, 1, 2])
    expected_log_det = 16 * np.sum(-0.5 * np.log(batch_variance + 1e-4))
    self.assertAllClose(
      batch_norm.forward_log_det_jacobian(x, event_ndims=3, training=True),
      tf.fill([64], expected_log_det),
      rtol=1e-5,
    )

  @parameterized.parameters("eager", "function")
  def test_an_empty_training_batch_leaves_the_running_averages_unchanged(self, mode):
    batch_norm = perturbed_batch_norm()
    before = [v.numpy() for v in (batch_norm.moving_mean, batch_norm.moving_variance)]

    def forward(x):
      return batch_norm.forward(x, training=True), batch_norm.forward_log_det_jacobian(x, 3, training=True)

    if mode == "function":
      forward = tf.function(forward, input_signature=[tf.TensorSpec([None, 4, 4, 2])])
    y, ldj = forward(tf.zeros([0, 4, 4, 2]))
    self.assertEqual(y.shape, [0, 4, 4, 2])
    self.assertEqual(ldj.shape, [0])
    self.assertAllEqual(batch_norm.moving_mean, before[0])
    self.assertAllEqual(batch_norm.moving_variance, before[1])
    x = tf.random.stateless_normal([3, 4, 4, 2], seed=[3, 3])
    self.assertTrue(np.all(np.isfinite(batch_norm.forward(x))))
    self.assertTrue(np.all(np.isfinite(forward(x)[1])))  # a non-empty batch still trains
    self.assertNotAllClose(batch_norm.moving_mean, before[0])

  def test_two_batch_norms_of_the_same_arguments_each_use_their_own_weights(self):
    # TFP's transform cache once took two bijectors of equal arguments for one: the second to see a tensor
    # returned the first's output for it.
    first, second = BatchNorm(4), BatchNorm(4)
    second.log_scale.assign([0.5, -0.5, 1.0, 0.0])
    second.shift.assign([1.0, 2.0, 3.0, 4.0])
    self.assertNotEqual(first, second)
    x = tf.random.stateless_normal([5, 4], seed=[1, 2])
    first.forward(x)
    self.assertAllClose(
      second.forward(x), x / np.sqrt(1.0 + 1e-4) * tf.exp(second.log_scale) + second.shift, rtol=1e-5
    )
    first.inverse(x)
    self.assertAllClose(
      second.inverse(x), (x - second.shift) * tf.exp(-second.log_scale) * np.sqrt(1.0 + 1e-4), rtol=1e-5
    )

  def test_inverse_refuses_training_mode(self):
    with self.assertRaisesRegex(ValueError, "training=True"):
      BatchNorm(2).inverse(tf.zeros([3, 2]), training=True)

  @parameterized.parameters((), (3,), (2, 3))
  def test_log_det_shape_for_any_batch_shape(self, *batch_shape):
    batch_norm = perturbed_batch_norm()
    x = tf.zeros([*batch_shape, 4, 4, 2])
    self.assertEqual(batch_norm.forward_log_det_jacobian(x, event_ndims=3).shape, batch_shape)
    self.assertEqual(tf.function(batch_norm.forward)(x).shape, x.shape)

  @parameterized.parameters(
    (dict(num_features=0), "`num_features`"),
    (dict(num_features=2, momentum=1.0), "`momentum`"),
    (dict(num_features=2, epsilon=0.0), "`epsilon`"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      BatchNorm(**kwargs)


if __name__ == "__main__":
  tf.test.main()
