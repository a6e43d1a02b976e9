"""`evaluation`: the bounds on the discrete images' bits/dim, unconditional and class-conditional, and the
`Evaluator` that sums them over a dataset."""

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from tests.bijector_testing import perturb
from tests.fixtures import TINY_MODEL, tiny_config
from tfp_realnvp import data, dequantization
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import evaluation

NUM_CLASSES = 10


def perturbed_flow(seed, **overrides):
  flow = RealNVP.from_preset("digits", **TINY_MODEL, **overrides)
  perturb(flow, stddev=0.3, seed=seed)  # away from the identity, so that images and classes differ
  return flow


def digits_test_images(split="test[:24]", batch_size=64, with_labels=False):
  return data.load("digits", split, batch_size=batch_size, training=False, with_labels=with_labels)


def concatenated(dataset):
  return tuple(np.concatenate(parts) for parts in zip(*dataset))


class BoundsTest(tf.test.TestCase):
  def test_one_draw_with_the_uniform_dequantizer_is_the_flows_bits_per_dim(self):
    flow = perturbed_flow(seed=1)
    images = next(iter(digits_test_images()))
    sums = evaluation.unconditional_sums(
      images, flow=flow, dequantizer=dequantization.UniformDequantizer((8, 8, 1)), num_samples=1
    )
    self.assertEqual(sums["num_examples"], 24)
    self.assertAllClose(sums["bits_per_dim"], tf.reduce_sum(flow.bits_per_dim(images)), rtol=1e-6)

  def test_an_images_importance_weighted_bound_does_not_depend_on_its_batch(self):
    flow = perturbed_flow(seed=2)
    dequantizer = dequantization.make_dequantizer("variational", (8, 8, 1), 4)
    perturb(dequantizer, stddev=0.1, seed=3)
    images = next(iter(digits_test_images()))

    def bounds(batch):
      return evaluation.discrete_log_likelihoods(
        batch, log_prob_fn=flow.log_prob, dequantizer=dequantizer, num_samples=3
      ).numpy()

    whole = bounds(images)
    self.assertEqual(whole.dtype, np.float64)
    self.assertAllClose(bounds(images[::-1])[::-1], whole, rtol=1e-6)
    self.assertAllClose(np.concatenate([bounds(images[:5]), bounds(images[5:])]), whole, rtol=1e-6)
    # The draws are the image's own noise and its rotations: other noise for the same levels, another bound.
    levels = np.floor(images)
    self.assertNotAllClose(bounds(levels + (images - levels + 0.5) % 1.0), whole)

  def test_with_one_class_the_class_conditional_figures_are_the_unconditional_ones(self):
    # One class of prior 1: the marginal is the conditional, every image is classified right at no loss.
    flow = perturbed_flow(seed=4, conditional_event_shape=(1,))
    dequantizer = dequantization.UniformDequantizer((8, 8, 1))
    images = next(iter(digits_test_images()))
    labels = tf.zeros([24], tf.int32)
    for num_samples in (1, 3):
      sums = evaluation.class_conditional_sums(
        images,
        labels,
        flow=flow,
        dequantizer=dequantizer,
        label_log_prior=evaluation.label_log_prior([7]),
        num_samples=num_samples,
      )
      bound = evaluation.discrete_log_likelihoods(
        images,
        log_prob_fn=lambda x: flow.log_prob(x, conditional_input=tf.ones([24, 1])),
        dequantizer=dequantizer,
        num_samples=num_samples,
      )
      expected_bits_per_dim = -tf.reduce_sum(bound) / (64 * np.log(2.0))
      self.assertAllClose(sums["bits_per_dim"], expected_bits_per_dim, rtol=1e-6)
      self.assertAllClose(sums["conditional_bits_per_dim"], expected_bits_per_dim, rtol=1e-6)
      self.assertEqual((float(sums["accuracy"]), float(sums["num_examples"])), (24.0, 24.0))
      self.assertAllClose(sums["class_log_loss"], 0.0, atol=1e-9)


class EvaluatorTest(tf.test.TestCase):
  def test_figures_are_means_over_the_dataset_whatever_the_batch_size(self):
    flow = perturbed_flow(seed=5, conditional_event_shape=(NUM_CLASSES,))
    evaluator = evaluation.Evaluator(
      strategy=tf.distribute.get_strategy(),
      flow=flow,
      dequantizer=dequantization.UniformDequantizer((8, 8, 1)),
      label_log_prior=evaluation.label_log_prior(np.arange(1, NUM_CLASSES + 1)),
    )
    whole = evaluator.evaluate(digits_test_images(batch_size=64, with_labels=True), num_importance_samples=2)
    in_parts = evaluator.evaluate(
      digits_test_images(batch_size=7, with_labels=True), num_importance_samples=2
    )
    self.assertEqual(
      set(whole), {"bits_per_dim", "conditional_bits_per_dim", "accuracy", "class_log_loss", "num_examples"}
    )
    self.assertEqual(whole["num_examples"], 24)
    self.assertAllClose(in_parts, whole, rtol=1e-9)
    images, labels = concatenated(digits_test_images(with_labels=True))
    sums = evaluation.class_conditional_sums(
      images,
      labels,
      flow=flow,
      dequantizer=evaluator.dequantizer,
      label_log_prior=evaluator.label_log_prior,
      num_samples=2,
    )
    self.assertAllClose(whole["accuracy"], float(sums["accuracy"]) / 24, atol=1e-12)

  def test_an_empty_dataset_and_a_bad_number_of_draws_are_errors(self):
    evaluator = evaluation.Evaluator(
      strategy=tf.distribute.get_strategy(),
      flow=perturbed_flow(seed=6),
      dequantizer=dequantization.UniformDequantizer((8, 8, 1)),
    )
    with self.assertRaisesRegex(ValueError, "The evaluation dataset is empty"):
      evaluator.evaluate(digits_test_images().take(0))
    with self.assertRaisesRegex(ValueError, "`num_importance_samples`"):
      evaluator.evaluate(digits_test_images(), num_importance_samples=0)


class LabelPriorTest(tf.test.TestCase):
  def test_the_prior_is_the_frequencies_of_the_configs_training_split(self):
    config = tiny_config(condition="label", train_split="train[:300]")
    counts = evaluation.train_label_counts(config)
    np.testing.assert_array_equal(counts, np.bincount(load_digits().target[:300], minlength=NUM_CLASSES))
    self.assertAllClose(np.exp(evaluation.label_log_prior(counts)), counts / 300)
    self.assertIsNone(evaluation.label_log_prior(None))


if __name__ == "__main__":
  tf.test.main()
