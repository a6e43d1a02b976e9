"""Squeeze: a 2x2 space-to-depth permutation with log-det 0."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks
from tfp_realnvp.bijectors import Squeeze


class SqueezeTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  def test_each_2x2_square_becomes_one_pixel_of_4c_channels(self):
    x = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    y = Squeeze().forward(x).numpy()
    self.assertEqual(y.shape, (2, 2, 8))
    for i in range(2):
      for j in range(2):
        expected = [x[2 * i + dy, 2 * j + dx, c] for dy in (0, 1) for dx in (0, 1) for c in (0, 1)]
        self.assertAllEqual(y[i, j], expected)

  @parameterized.parameters(tf.float32, tf.float64)
  def test_inverse_and_log_det_are_exact(self, dtype):
    x = tf.random.stateless_normal([3, 4, 4, 2], seed=[1, 2], dtype=dtype)
    squeeze = Squeeze()
    self.assert_round_trips(squeeze, x, atol=0.0)
    self.assert_log_dets_consistent(squeeze, x, 3)
    self.assert_log_det_matches_autodiff(squeeze, x, 3)

  @parameterized.parameters((), (3,), (2, 3))
  def test_shapes_for_any_batch_shape(self, *batch_shape):
    squeeze = Squeeze()
    x = tf.zeros([*batch_shape, 6, 4, 3])
    self.assertEqual(squeeze.forward(x).shape, [*batch_shape, 3, 2, 12])
    self.assertEqual(tf.function(squeeze.forward)(x).shape, [*batch_shape, 3, 2, 12])
    self.assertEqual(squeeze.forward_log_det_jacobian(x, event_ndims=3).shape, batch_shape)

  def test_event_shape_methods(self):
    squeeze = Squeeze()
    self.assertEqual(squeeze.forward_event_shape([6, 4, 3]), [3, 2, 12])
    self.assertEqual(squeeze.inverse_event_shape([3, 2, 12]), [6, 4, 3])
    self.assertAllEqual(squeeze.forward_event_shape_tensor([6, 4, 3]), [3, 2, 12])
    self.assertAllEqual(squeeze.inverse_event_shape_tensor([3, 2, 12]), [6, 4, 3])

  @parameterized.parameters(([5, 4, 3], "height 5"), ([4, 7, 3], "width 7"))
  def test_odd_spatial_size_is_a_clear_error(self, shape, message):
    with self.assertRaisesRegex(ValueError, f"even .*{message}"):
      Squeeze().forward_event_shape(shape)
    with self.assertRaisesRegex(ValueError, f"even .*{message}"):
      Squeeze().forward(tf.zeros(shape))

  def test_inverse_needs_channels_divisible_by_4(self):
    with self.assertRaisesRegex(ValueError, "divisible by 4; got 6"):
      Squeeze().inverse(tf.zeros([2, 2, 6]))


if __name__ == "__main__":
  tf.test.main()
