"""Batch moments under tf.distribute: N replicas compute what one device computes on the global batch."""

import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tfp_realnvp import networks
from tfp_realnvp.internal.moments import batch_moments, moments_for_mode

_MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfp_realnvp.internal.moments import batch_moments
    from tfp_realnvp.bijectors import BatchNorm

    x = 3.0 + 2.0 * tf.random.stateless_normal([8, 4, 4, 2], seed=[1, 2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      batch_norm = BatchNorm(2, momentum=0.5)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x).unbatch().batch(8))

    @tf.function
    def step(shard):
      def replica_fn(shard):
        mean, variance = batch_moments(shard, [0, 1, 2])
        ldj = batch_norm.forward_log_det_jacobian(shard, event_ndims=3, training=True)
        return mean, variance, ldj
      return strategy.run(replica_fn, args=(shard,))

    mean, variance, ldj = step(next(iter(dataset)))
    expected_mean, expected_variance = tf.nn.moments(x, [0, 1, 2])
    for replica_mean, replica_variance in zip(mean.values, variance.values):
      np.testing.assert_allclose(replica_mean, expected_mean, rtol=1e-5)
      np.testing.assert_allclose(replica_variance, expected_variance, rtol=1e-5)
    single = BatchNorm(2).forward_log_det_jacobian(x, event_ndims=3, training=True)
    np.testing.assert_allclose(tf.concat(ldj.values, 0), single, rtol=1e-5)
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), 0.5 * expected_mean, rtol=1e-5)
    print("OK", len(mean.values))
""")


class BatchMomentsTest(tf.test.TestCase):
  def test_single_device_matches_tf_nn_moments(self):
    x = tf.random.normal([6, 3, 3, 4])
    for got, expected in zip(batch_moments(x, [0, 1, 2]), tf.nn.moments(x, [0, 1, 2])):
      self.assertAllClose(got, expected)

  def test_an_empty_batch_leaves_the_running_averages_of_every_composite_batch_norm_unchanged(self):
    # `moments_for_mode` serves the flow's `BatchNorm` and the conditioners' composite batch norm.
    batch_norm = networks.BatchNormalization(3, momentum=0.5, fused=False)
    batch_norm.moving_mean.assign([1.0, 2.0, 3.0])
    batch_norm.moving_variance.assign([2.0, 0.5, 4.0])
    for x in (tf.zeros([0, 3]), tf.zeros([0, 4, 4, 3])):
      for call in (batch_norm.__call__, tf.function(batch_norm.__call__)):
        self.assertEqual(call(x, training=True).shape, x.shape)
        self.assertAllEqual(batch_norm.moving_mean, [1.0, 2.0, 3.0])
        self.assertAllEqual(batch_norm.moving_variance, [2.0, 0.5, 4.0])
    moving_mean, moving_variance = tf.Variable([1.0]), tf.Variable([2.0])
    mean, variance = moments_for_mode(tf.zeros([0, 1]), moving_mean, moving_variance, 0.9, training=True)
    self.assertAllEqual([mean, variance, moving_mean, moving_variance], [[1.0], [2.0], [1.0], [2.0]])
    moments_for_mode(tf.fill([4, 1], 3.0), moving_mean, moving_variance, 0.5, training=True)
    self.assertAllClose([moving_mean, moving_variance], [[2.0], [1.0]])  # a non-empty batch still moves them

  @pytest.mark.slow
  def test_mirrored_replicas_see_global_batch_statistics(self):
    # Logical CPU devices must be configured before TensorFlow runs any op: use a fresh process.
    result = subprocess.run(
      [sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, timeout=300
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("OK 2", result.stdout)


if __name__ == "__main__":
  tf.test.main()
