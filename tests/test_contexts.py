"""`internal.contexts`: the one check of a context, its broadcast against the data, NaN rows; `internal.bits`."""

import math

import numpy as np
import tensorflow as tf

from tfp_realnvp.internal import bits, contexts


class CheckTest(tf.test.TestCase):
  def test_returns_the_context_or_none(self):
    self.assertIsNone(contexts.check(None, None, tf.float32, "This flow"))
    context = contexts.check([[0, 1, 0]], (3,), tf.float32, "This flow")  # a Python list takes the dtype
    self.assertEqual(context.dtype, tf.float32)
    self.assertAllEqual(context, [[0.0, 1.0, 0.0]])

  def test_errors_name_the_argument_the_expected_and_the_given(self):
    cases = [
      (None, (3,), r"This flow is conditional \(`conditional_event_shape=\(3,\)`\).*`\[\.\.\., 3\]`"),
      (np.zeros([2, 3], np.float32), None, r"This flow is unconditional.*got one of shape \[2, 3\]"),
      (tf.zeros([2, 4]), (3,), r"`conditional_input` must have shape `\[\.\.\., 3\]`; got shape \[2, 4\]"),
    ]
    for value, shape, message in cases:
      with self.subTest(message), self.assertRaisesRegex(ValueError, message):
        contexts.check(value, shape, tf.float32, "This flow")
    for value in (tf.zeros([2, 3], tf.int32), np.zeros([2, 3]), tf.zeros([2, 3], tf.bool)):
      with self.assertRaisesRegex(TypeError, r"`conditional_input` must have dtype float32, the data's; got"):
        contexts.check(value, (3,), tf.float32, "This flow")
    with self.assertRaisesRegex(ValueError, r"shape `\[batch, 3\]`; got shape \[2, 2, 3\]"):
      contexts.check(tf.zeros([2, 2, 3]), (3,), None, "`net`", batch_rank=1)
    with self.assertRaisesRegex(TypeError, r"a floating dtype; got int32"):
      contexts.check(tf.zeros([2, 3], tf.int32), (3,), None, "`net`", batch_rank=1)
    # Without a dtype of its own to match, any floating context passes as it is.
    self.assertEqual(contexts.check(tf.zeros([2, 3], tf.float64), (3,), None, "`net`").dtype, tf.float64)


class BroadcastTest(tf.test.TestCase):
  def test_broadcasts_both_batches_and_refuses_what_does_not_broadcast(self):
    x = tf.zeros([4, 1, 5])
    batch, context = contexts.broadcast_batch(*contexts.batch_shape(x, 1), tf.ones([3, 2]), (2,))
    self.assertAllEqual(batch, [4, 3])
    self.assertEqual(context.shape, [4, 3, 2])
    self.assertEqual(contexts.broadcast_to_batch(x, batch, 1).shape, [4, 3, 5])
    with self.assertRaisesRegex(
      ValueError, r"broadcast against those of `x` \[4, 1\]; got shape \[2, 3, 2\]"
    ):
      contexts.broadcast_batch(*contexts.batch_shape(x, 1), tf.ones([2, 3, 2]), (2,))

  def test_sampling_takes_a_context_per_sample_or_one_for_all(self):
    samples = tf.zeros([5, 2])
    _, context = contexts.broadcast_batch(
      *contexts.batch_shape(samples, 1), tf.ones([2]), (2,), sampling=True
    )
    self.assertEqual(context.shape, [5, 2])
    with self.assertRaisesRegex(ValueError, r"`\[\*sample_shape, 2\]` \(sample shape \[5\]\) or `\[2\]`"):
      contexts.broadcast_batch(*contexts.batch_shape(samples, 1), tf.ones([3, 5, 2]), (2,), sampling=True)


class NonFiniteRowsTest(tf.test.TestCase):
  def test_non_finite_rows_are_zeroed_and_their_outputs_nan(self):
    context = tf.constant([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.0]])
    zeroed, finite = contexts.finite_rows(context, 1)
    self.assertAllEqual(finite, [False, True, False])
    self.assertAllEqual(zeroed, [[0.0, 0.0], [2.0, 3.0], [0.0, 0.0]])
    values = contexts.nan_rows(tf.ones([3, 4]), finite, 1)
    self.assertAllEqual(np.isnan(values).all(axis=1), [True, False, True])
    self.assertAllEqual(values[1], tf.ones([4]))
    self.assertIs(contexts.nan_rows(values, None, 1), values)

  def test_one_context_per_row_is_checked_when_the_graph_runs(self):
    check = tf.function(lambda c, n: contexts.assert_one_per_row(c, (2,), n, "row of `x`"))
    self.assertAllEqual(check(tf.ones([3, 2]), 3), tf.ones([3, 2]))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "one row \\(context\\) per row of `x`"):
      check(tf.ones([3, 2]), 4)


class BitsPerDimTest(tf.test.TestCase):
  def test_a_uniform_density_over_the_pixel_box_is_num_bits(self):
    num_dims, num_bits = 64, 4
    self.assertAllClose(bits.bits_per_dim(-num_dims * num_bits * math.log(2.0), num_dims), num_bits)
    self.assertAllClose(bits.bits_per_dim(tf.constant([0.0, -math.log(2.0)]), 1), [0.0, 1.0])


if __name__ == "__main__":
  tf.test.main()
