"""`optimization.learning_rate_schedule` (tf_keras `CosineDecay` / `PolynomialDecay`) gives the rates of the
hand-written `WarmupCosineDecay` it replaced, and stays a built-in tf_keras schedule (serializable)."""

import math

import numpy as np
import tensorflow as tf
import tf_keras as tfk
from absl.testing import parameterized

from tfp_realnvp.training import optimization


def replaced_warmup_cosine_decay(learning_rate, num_train_steps, warmup_steps, decay, step):
  """The rate `WarmupCosineDecay.__call__` (before tf_keras' schedules were adopted) gave at `step`."""
  step = tf.cast(step, tf.float32)
  rate = tf.constant(learning_rate, tf.float32)
  if warmup_steps:
    rate *= tf.minimum(1.0, step / warmup_steps)
  if decay == "cosine":
    decay_steps = max(num_train_steps - warmup_steps, 1)
    progress = tf.clip_by_value((step - warmup_steps) / decay_steps, 0.0, 1.0)
    rate *= 0.5 * (1.0 + tf.cos(math.pi * progress))
  return float(rate)


class LearningRateScheduleTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters(
    (1e-3, 1000, 0, "cosine"),
    (1e-3, 1000, 100, "cosine"),
    (3e-3, 40, 5, "cosine"),  # the checkpoint fixture's config
    (1e-3, 40, 100, "cosine"),  # a warm-up longer than the run only warms up
    (1e-3, 1, 0, "cosine"),
    (1e-3, 1000, 10, "constant"),
    (1e-3, 7, 3, "constant"),
  )
  def test_rates_equal_the_replaced_schedule(self, learning_rate, num_train_steps, warmup_steps, decay):
    schedule = optimization.learning_rate_schedule(learning_rate, num_train_steps, warmup_steps, decay)
    steps = range(num_train_steps + max(warmup_steps, num_train_steps) + 3)  # and past the end
    rates = [float(schedule(step)) for step in steps]
    expected = [
      replaced_warmup_cosine_decay(learning_rate, num_train_steps, warmup_steps, decay, step)
      for step in steps
    ]
    self.assertAllClose(rates, expected, rtol=1e-7, atol=0.0)

  def test_constant_without_warmup_is_the_number_itself(self):
    self.assertEqual(optimization.learning_rate_schedule(1e-3, 1000), 1e-3)

  @parameterized.parameters((0, "cosine"), (100, "cosine"), (10, "constant"))
  def test_is_a_serializable_tf_keras_schedule(self, warmup_steps, decay):
    schedule = optimization.learning_rate_schedule(1e-3, 1000, warmup_steps, decay)
    revived = tfk.optimizers.schedules.deserialize(tfk.optimizers.schedules.serialize(schedule))
    steps = np.arange(0, 1100, 50)
    self.assertAllEqual([float(revived(step)) for step in steps], [float(schedule(step)) for step in steps])

  def test_unknown_decay(self):
    with self.assertRaisesRegex(ValueError, "`decay` must be one of constant, cosine; got 'linear'"):
      optimization.learning_rate_schedule(1e-3, 1000, decay="linear")


if __name__ == "__main__":
  tf.test.main()
