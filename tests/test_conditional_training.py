"""`train_and_evaluate` with `condition="label"`: a class-conditional flow `p(x | y)` on the one-hot label, its
marginal and conditional bits/dim and accuracy, class-row samples, resuming, strategies and config errors."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.bijector_testing import perturb
from tests.training_testing import TINY_MODEL, run_program, tiny_config
from tests.workdir_testing import run
from tfp_realnvp import classifier, data, dequantization
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import configs, flow_builder, losses, optimization, reporting, train_lib, wall_time

NUM_CLASSES = 10


@pytest.mark.slow
class ConditionalRunTest(tf.test.TestCase):
  """One tiny class-conditional digits run of 6 steps, shared by the tests below, with uniform dequantization:
  its figures are then the flow's own densities of the test images (the variational dequantizer's
  class-conditional scores and their mirrored evaluation are tested in test_dequantization)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(tf.compat.v1.test.get_temp_dir(), "conditional")
    cls.config = tiny_config(condition="label", num_samples=20, dequantization="uniform")
    cls.result, cls.lines = run(cls.config, cls.workdir)
    cls.log_prior = np.log(data.label_counts("digits", "train") / 1500.0)

  def _test_split(self):
    batches = list(data.load("digits", "test", batch_size=100, training=False, with_labels=True))
    return np.concatenate([images for images, _ in batches]), np.concatenate(
      [labels for _, labels in batches]
    )

  def test_the_flow_is_conditioned_on_the_one_hot_label(self):
    self.assertEqual(self.result.flow.conditional_event_shape, (NUM_CLASSES,))

  def test_metrics_are_the_marginal_and_conditional_bits_per_dim_and_the_accuracy_over_the_test_split(self):
    flow, metrics = self.result.flow, self.result.metrics
    images, labels = self._test_split()
    self.assertLen(labels, 297)
    self.assertEqual(metrics["num_test_examples"], 297)
    to_bits_per_dim = -1.0 / (64 * np.log(2.0))
    # The marginal uses `p(y)` = the training label frequencies, not the uniform prior.
    marginal = classifier.marginal_log_prob(flow, images, NUM_CLASSES, self.log_prior).numpy()
    self.assertAllClose(metrics["test_bits_per_dim"], to_bits_per_dim * marginal.mean(), rtol=1e-5)
    conditional = flow.log_prob(images, conditional_input=tf.one_hot(labels, NUM_CLASSES)).numpy()
    self.assertAllClose(
      metrics["test_conditional_bits_per_dim"], to_bits_per_dim * conditional.mean(), rtol=1e-5
    )
    class_log_probs = classifier.class_log_probs(flow, images, NUM_CLASSES, self.log_prior).numpy()
    predictions = np.argmax(class_log_probs, axis=-1)
    self.assertAllClose(metrics["test_accuracy"], np.mean(predictions == labels), atol=1e-12)
    self.assertBetween(metrics["test_accuracy"], 0.0, 1.0)
    log_loss = -np.mean(class_log_probs[np.arange(len(labels)), labels])
    self.assertAllClose(metrics["test_class_log_loss"], log_loss, rtol=1e-5)
    self.assertGreater(metrics["test_class_log_loss"], 0.0)

  def test_marginal_and_conditional_bits_per_dim_are_consistent(self):
    metrics = self.result.metrics
    _, labels = self._test_split()
    # `p(x) >= p(x | y) p(y)`, so the marginal is at most the conditional plus `-log2 p(y) / D` on average.
    prior_bits_per_dim = np.mean(-self.log_prior[labels] / np.log(2.0)) / 64
    self.assertAllClose(prior_bits_per_dim, np.log2(NUM_CLASSES) / 64, rtol=0.01)  # nearly balanced classes
    self.assertLessEqual(
      metrics["test_bits_per_dim"], metrics["test_conditional_bits_per_dim"] + prior_bits_per_dim + 1e-9
    )
    # A barely trained flow barely tells the classes apart, so the other classes add little.
    self.assertGreaterEqual(metrics["test_bits_per_dim"], metrics["test_conditional_bits_per_dim"] - 0.01)

  def test_log_lines_metrics_file_and_summaries_hold_the_three_figures(self):
    self.assertRegex(
      "\n".join(self.lines),
      r"(?m)^test \| step: 6 \| split: test \| bits_per_dim: \d+\.\d{4} \| examples: 297 \| conditional_bits_per_dim: "
      r"\d+\.\d{4} \| accuracy: \d\.\d{4} \| class_log_loss: \d+\.\d{4}$",
    )
    with open(os.path.join(self.workdir, "metrics.json")) as file:
      self.assertEqual(json.load(file), self.result.metrics)
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(self.workdir, "tensorboard", "eval", "events.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(value.tag for value in event.summary.value)
    self.assertContainsSubset(
      {"bits_per_dim", "conditional_bits_per_dim", "accuracy", "class_log_loss"}, tags
    )

  def test_periodic_evaluations_report_the_accuracy_too(self):
    # The evaluation at step 4 (of 6) computes the class figures anyway: its log line, TensorBoard scalars and
    # `validation.jsonl` line carry them, as the final one does.
    self.assertRegex(
      "\n".join(self.lines),
      r"(?m)^eval \| step: 4 \| bits_per_dim: \d+\.\d{4} \| examples: 297 \| conditional_bits_per_dim: "
      r"\d+\.\d{4} \| accuracy: \d\.\d{4} \| class_log_loss: \d+\.\d{4} \| train_seconds: ",
    )
    curve = wall_time.validation_curve(self.workdir)
    self.assertEqual([(line["step"], line["final"]) for line in curve], [(4, False), (6, True)])
    for line in curve:
      self.assertBetween(line["accuracy"], 0.0, 1.0)
      self.assertGreater(line["class_log_loss"], 0.0)
      self.assertGreater(line["conditional_bits_per_dim"], 0.0)
    self.assertEqual(curve[-1]["accuracy"], self.result.metrics["test_accuracy"])
    steps_by_tag = {}
    for path in tf.io.gfile.glob(os.path.join(self.workdir, "tensorboard", "eval", "events.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          steps_by_tag.setdefault(value.tag, set()).add(event.step)
    for tag in ("accuracy", "class_log_loss", "conditional_bits_per_dim"):
      self.assertEqual(steps_by_tag[tag], {4, 6})

  def test_sample_grids_have_one_row_per_class(self):
    self.assertTrue(os.path.exists(os.path.join(self.workdir, "samples.png")))
    trainer = train_lib.build_trainer(self.config)
    trainer.restore(tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints")))
    grid = trainer.sample_grid(0.7, self.config.num_samples)
    # 20 samples for 10 classes: rows of 2 tiles of 8x8, 1-pixel separators.
    self.assertEqual(grid.shape, (NUM_CLASSES * 9 - 1, 2 * 9 - 1, 3))
    labels = np.repeat(np.arange(NUM_CLASSES), 2)
    with trainer.evaluation_weights():  # the grids are drawn with the averaged weights (`ema_decay`)
      samples = trainer.flow.sample(
        len(labels),
        seed=tf.constant(train_lib.SAMPLE_SEED),
        temperature=0.7,
        conditional_input=tf.one_hot(labels, NUM_CLASSES),
      )
    self.assertAllClose(grid, reporting.image_grid(samples.numpy(), 4, columns=2), atol=1e-6)
    # The rows differ: the context reaches the samples.
    self.assertNotAllClose(grid[:8], grid[9:17])

  def test_a_resumed_run_continues_from_its_checkpoint(self):
    workdir = os.path.join(self.get_temp_dir(), "resumed")
    shutil.copytree(self.workdir, workdir)  # the other tests read the original
    resumed, lines = run(dataclasses.replace(self.config, num_train_steps=8), workdir)
    self.assertRegex(lines[0], r"^resume \| step: 6 \| checkpoint: .*ckpt-6$")
    self.assertEqual([line.split(" | ")[1] for line in lines if line.startswith("train |")], ["step: 8"])
    self.assertEqual(resumed.step, 8)
    self.assertEqual(set(resumed.metrics), set(self.result.metrics))
    self.assertNotAllClose(
      resumed.metrics["test_conditional_bits_per_dim"], self.result.metrics["test_conditional_bits_per_dim"]
    )


SKEWED_LABEL_COUNTS = np.array([5, 1, 1, 1, 1, 1, 1, 1, 1, 20])


def skewed_prior_trainer(**trainer_kwargs):
  """A class-conditional `Trainer` of the tiny digits model whose label prior is `SKEWED_LABEL_COUNTS`."""
  return train_lib.Trainer(
    tf.distribute.get_strategy(),
    lambda: RealNVP.from_preset("digits", **TINY_MODEL, conditional_event_shape=(NUM_CLASSES,)),
    global_batch_size=16,
    label_counts=SKEWED_LABEL_COUNTS,
    **trainer_kwargs,
  )


class ConditionalTrainerTest(tf.test.TestCase):
  def test_evaluation_uses_the_label_frequencies_as_prior(self):
    trainer = skewed_prior_trainer()
    label_counts = SKEWED_LABEL_COUNTS
    perturb(trainer.flow, stddev=0.3, seed=3)  # so that the classes have different densities
    test = data.load("digits", "test[:40]", batch_size=16, training=False, with_labels=True)
    metrics = trainer.evaluate_metrics(test)
    images, labels = (np.concatenate(parts) for parts in zip(*test))
    log_prior = np.log(label_counts / label_counts.sum())
    to_bits_per_dim = -1.0 / (64 * np.log(2.0))
    flow = trainer.flow
    marginal = (
      to_bits_per_dim * classifier.marginal_log_prob(flow, images, NUM_CLASSES, log_prior).numpy().mean()
    )
    uniform = to_bits_per_dim * classifier.marginal_log_prob(flow, images, NUM_CLASSES).numpy().mean()
    self.assertAllClose(metrics["bits_per_dim"], marginal, rtol=1e-5)
    self.assertGreater(abs(marginal - uniform), 1e-3)  # the prior matters here
    conditional = flow.bits_per_dim(images, conditional_input=tf.one_hot(labels, NUM_CLASSES)).numpy().mean()
    self.assertAllClose(metrics["conditional_bits_per_dim"], conditional, rtol=1e-5)
    class_log_probs = classifier.class_log_probs(flow, images, NUM_CLASSES, log_prior).numpy()
    self.assertAllClose(
      metrics["accuracy"], np.mean(np.argmax(class_log_probs, axis=-1) == labels), atol=1e-12
    )
    log_loss = -np.mean(class_log_probs[np.arange(len(labels)), labels])
    self.assertAllClose(metrics["class_log_loss"], log_loss, rtol=1e-5)
    self.assertEqual(trainer.evaluate(test), (metrics["bits_per_dim"], 40))

  @pytest.mark.slow
  def test_with_a_variational_dequantizer_the_figures_come_from_the_bounds_on_each_class_likelihood(self):
    # The bound on `log P(v | y)` for every `y`, with the draws `u ~ q(u | v)` shared by the classes; the
    # marginal, accuracy and conditional figures all come from those scores (K = 1: the images' own noise;
    # K = 3: it and two rotations of it).
    trainer = skewed_prior_trainer(dequantization="variational")
    label_counts = SKEWED_LABEL_COUNTS
    dequantizer = trainer.dequantizer
    perturb(trainer.flow, stddev=0.3, seed=5)
    perturb(dequantizer, stddev=0.1, seed=6)
    test = data.load("digits", "test[:24]", batch_size=16, training=False, with_labels=True)
    images, labels = (np.concatenate(parts) for parts in zip(*test))
    v = np.floor(images)
    log_prior = np.log(label_counts / label_counts.sum())
    for num_samples in (1, 3):
      metrics = trainer.evaluate_metrics(test, num_importance_samples=num_samples)
      noises = dequantization.rotated_noise(images - v, num_samples, tf.constant(train_lib.IMPORTANCE_SEED))
      scores = np.zeros([len(v), NUM_CLASSES])
      for label in range(NUM_CLASSES):
        context = tf.one_hot(np.full(len(v), label), NUM_CLASSES)
        weights = []
        for noise in noises:
          u, log_q = dequantizer.offsets_and_log_prob(v, noise)
          log_p = trainer.flow.log_prob(data.dequantize(v, u), conditional_input=context)
          weights.append((log_p - log_q).numpy().astype(np.float64))
        scores[:, label] = np.logaddexp.reduce(weights, axis=0) - np.log(num_samples)
      joint = scores + log_prior
      marginal = np.logaddexp.reduce(joint, axis=1)
      to_bits_per_dim = -1.0 / (64 * np.log(2.0))
      self.assertAllClose(metrics["bits_per_dim"], to_bits_per_dim * marginal.mean(), rtol=1e-5)
      true = scores[np.arange(len(v)), labels]
      self.assertAllClose(metrics["conditional_bits_per_dim"], to_bits_per_dim * true.mean(), rtol=1e-5)
      self.assertAllClose(metrics["accuracy"], np.mean(np.argmax(joint, axis=1) == labels), atol=1e-12)
      log_loss = np.mean(marginal - joint[np.arange(len(v)), labels])
      self.assertAllClose(metrics["class_log_loss"], log_loss, rtol=1e-4, atol=1e-6)

  def test_the_loss_takes_the_context(self):
    flow = RealNVP.from_preset("digits", **TINY_MODEL, conditional_event_shape=(NUM_CLASSES,))
    perturb(flow, stddev=0.3, seed=4)
    images = next(iter(data.load("digits", "test", batch_size=8, training=False)))
    context = tf.one_hot(np.arange(8), NUM_CLASSES)
    loss = losses.bits_per_dim_loss(flow, images, 0.0, conditional_input=context)
    expected = flow.bits_per_dim(images, training=True, conditional_input=context)
    self.assertAllClose(loss.bits_per_dim, expected)
    self.assertAllClose(loss.total, tf.reduce_mean(expected))
    other = losses.bits_per_dim_loss(flow, images, 0.0, conditional_input=tf.roll(context, 1, axis=0))
    self.assertNotAllClose(loss.total, other.total)

  @pytest.mark.slow
  def test_label_dropout_trains_dropped_images_on_the_all_zeros_context(self):
    images, labels = next(iter(data.load("digits", "train", batch_size=16, training=False, with_labels=True)))
    contexts = {"labels": tf.one_hot(labels, NUM_CLASSES), "zeros": tf.zeros([16, NUM_CLASSES])}
    step_figures, expected = {}, {}
    for name, label_dropout in (("labels", 0.0), ("zeros", 1.0 - 1e-9)):  # 1e-9: all 16 dropped but by 1.6e-8
      trainer = skewed_prior_trainer(label_dropout=label_dropout)
      perturb(trainer.flow, stddev=0.3, seed=8)
      # The step's bits/dim are those of the weights before its update.
      expected[name] = float(
        losses.bits_per_dim_loss(
          trainer.flow, images, 0.0, conditional_input=contexts[name]
        ).mean_bits_per_dim
      )
      step_figures[name] = float(trainer.train_step((images, labels))[0])
    self.assertAllClose(step_figures, expected, rtol=1e-5)
    self.assertGreater(abs(expected["labels"] - expected["zeros"]), 1e-3)  # the label matters here
    with self.assertRaisesRegex(
      ValueError, r"`label_dropout` must be in \[0, 1\), and 0 without `label_counts`"
    ):
      train_lib.Trainer(
        tf.distribute.get_strategy(),
        lambda: RealNVP.from_preset("digits", **TINY_MODEL),
        global_batch_size=16,
        label_dropout=0.1,
      )

  def test_a_hybrid_trainer_trains_the_classifier_that_bits_per_dim_alone_leaves(self):
    images, labels = next(iter(data.load("digits", "train", batch_size=32, training=False, with_labels=True)))
    log_losses = {}
    for weight in (0.0, 10.0):
      tf.random.set_seed(5)
      trainer = train_lib.Trainer(
        tf.distribute.get_strategy(),
        lambda: RealNVP.from_preset(
          "digits", **TINY_MODEL, conditional_event_shape=(NUM_CLASSES,), context_enters="base"
        ),
        global_batch_size=32,
        make_optimizer=lambda: optimization.adam(1e-2),  # so that 30 steps move the class means
        label_counts=[1] * NUM_CLASSES,
        class_loss_weight=weight,
      )
      for _ in range(30):
        bits_per_dim, applied = trainer.train_step((images, labels))
        self.assertTrue(bool(applied))
      # The step reports the bits/dim alone, whatever the weight.
      conditional = trainer.flow.bits_per_dim(images, training=True, conditional_input=tf.one_hot(labels, 10))
      self.assertLess(abs(float(bits_per_dim) - float(tf.reduce_mean(conditional))), 0.5)
      # In training mode, as trained (30 steps barely move the batch norms' running averages).
      joint = classifier.class_conditional_log_probs(trainer.flow, images, NUM_CLASSES, training=True)
      log_probs = joint - tf.reduce_logsumexp(joint, -1, keepdims=True)
      log_losses[weight] = -float(tf.reduce_mean(tf.gather(log_probs, labels, batch_dims=1)))
    self.assertLess(log_losses[10.0], 0.5 * log_losses[0.0], log_losses)

  def test_the_hybrid_loss_needs_labels_in_the_base_and_no_label_dropout(self):
    strategy = tf.distribute.get_strategy()
    for context_enters, label_dropout, message in (
      ("couplings", 0.0, r"`class_loss_weight` needs a flow whose label enters only the base.*'couplings'"),
      (
        "base",
        0.2,
        r"`class_loss_weight` must be a number >= 0, and 0 without `label_counts`.*or with `label_",
      ),
    ):
      with self.assertRaisesRegex(ValueError, message):
        train_lib.Trainer(
          strategy,
          lambda: RealNVP.from_preset(
            "digits", **TINY_MODEL, conditional_event_shape=(NUM_CLASSES,), context_enters=context_enters
          ),
          global_batch_size=16,
          label_counts=[1] * NUM_CLASSES,
          label_dropout=label_dropout,
          class_loss_weight=1.0,
        )

  def test_label_counts_must_match_the_flow_context(self):
    with self.assertRaisesRegex(ValueError, r"`label_counts` gives 3 classes, so the flow must have "):
      train_lib.Trainer(
        tf.distribute.get_strategy(),
        lambda: RealNVP.from_preset("digits", **TINY_MODEL, conditional_event_shape=(NUM_CLASSES,)),
        global_batch_size=16,
        label_counts=[1, 2, 3],
      )


@pytest.mark.slow
class ConditionalMirroredTest(tf.test.TestCase):
  def test_mirrored_on_two_cpus_matches_one_device(self):
    report = run_program(
      "conditional_mirrored", os.path.join(self.get_temp_dir(), "conditional_mirrored.json")
    )
    self.assertEqual(report["replicas"], [1, 2])
    self.assertLess(report["loss_difference"], 1e-5)
    self.assertGreater(report["weight_change"], 1e-2)
    self.assertLess(report["weight_difference"], 1e-5)
    one, two = report["metrics"]
    self.assertEqual((one["num_examples"], two["num_examples"]), (45, 45))
    for name in ("bits_per_dim", "conditional_bits_per_dim", "accuracy", "class_log_loss"):
      self.assertAllClose(one[name], two[name], rtol=1e-5, msg=name)


class ConditionConfigTest(tf.test.TestCase):
  def test_an_unknown_condition_is_a_config_error(self):
    with self.assertRaisesRegex(
      configs.ConfigError, r"^`condition` must be one of None, label; got 'bogus'\.$"
    ):
      tiny_config(condition="bogus").validate()

  def test_label_dropout_needs_the_label_condition_and_a_share_below_one(self):
    for changes in (dict(label_dropout=0.2), dict(condition="label", label_dropout=1.0)):
      with self.assertRaisesRegex(
        configs.ConfigError,
        r"^`label_dropout` must be None or in \[0, 1\), and 0 unless `condition` is label; got ",
      ):
        tiny_config(**changes).validate()
    tiny_config(condition="label", label_dropout=0.5).validate()
    # None (the default): the measured share for a class-conditional run, none for another.
    self.assertIsNone(configs.TrainConfig().label_dropout)
    self.assertEqual(
      tiny_config(condition="label").effective_label_dropout, configs.CONDITIONAL_LABEL_DROPOUT
    )
    self.assertEqual(tiny_config().effective_label_dropout, 0.0)
    self.assertEqual(tiny_config(condition="label", label_dropout=0.0).effective_label_dropout, 0.0)
    self.assertEqual(train_lib.build_trainer(tiny_config(condition="label")).label_dropout, 0.2)

  def test_the_label_in_the_base_and_the_hybrid_weight_are_checked(self):
    base = dict(condition="label", context_enters="base")
    for changes, message in (
      (
        dict(context_enters="base"),
        r"`context_enters` must be couplings unless `condition` is label; got 'base'",
      ),
      (
        dict(condition="label", class_loss_weight=1.0),
        r"`class_loss_weight` must be >= 0, and 0 unless `cont",
      ),
      (dict(**base, class_loss_weight=-1.0), r"`class_loss_weight` must be >= 0.*; got -1\.0\.$"),
      (
        dict(**base, class_loss_weight=1.0, label_dropout=0.2),
        r"`label_dropout` must be None or 0 with a `class_",
      ),
      (dict(condition="label", context_enters="prior"), r"`context_enters` must be one of couplings, base"),
    ):
      with self.assertRaisesRegex(configs.ConfigError, message):
        tiny_config(**changes).validate()
    # With the label in the base only, no label dropout by default: an all-zeros context is no "no class".
    config = tiny_config(**base, class_loss_weight=0.5)
    config.validate()
    self.assertEqual(config.effective_label_dropout, 0.0)
    trainer = train_lib.build_trainer(config)
    self.assertEqual(
      (trainer.flow.context_enters, trainer.class_loss_weight, trainer.label_dropout), ("base", 0.5, 0.0)
    )
    self.assertEqual(flow_builder.build_flow(tiny_config(condition="label")).context_enters, "couplings")
    with self.assertRaisesRegex(
      configs.ConfigError, r"`context_enters='couplings'` and `model_overrides` `context_"
    ):
      flow_builder.build_flow(
        tiny_config(condition="label", model_overrides={**TINY_MODEL, "context_enters": "base"})
      )

  def test_label_condition_on_a_dataset_without_labels_is_a_config_error(self):
    directory = os.path.join(self.get_temp_dir(), "unlabelled")
    os.makedirs(directory)
    for index in range(4):
      Image.fromarray(np.full([8, 8], 16 * index, np.uint8)).save(os.path.join(directory, f"{index}.png"))
    config = tiny_config(dataset=data.DIRECTORY_PREFIX + directory, condition="label")
    message = rf"`condition=label` needs class labels, but dataset 'dir:{re.escape(directory)}' has none"
    with self.assertRaisesRegex(configs.ConfigError, message):
      flow_builder.build_flow(config)
    with self.assertRaisesRegex(configs.ConfigError, rf"dataset 'dir:{re.escape(directory)}' has none"):
      train_lib.train_and_evaluate(config, os.path.join(self.get_temp_dir(), "run"))

  def test_split_overrides_choose_the_training_and_evaluation_splits(self):
    spec = flow_builder.dataset_spec(
      tiny_config(train_split=data.DIGITS_FIT_SPLIT, eval_split=data.DIGITS_VALIDATION_SPLIT)
    )
    self.assertEqual((spec.train_split, spec.eval_split), ("train[:1200]", "train[1200:]"))
    spec = flow_builder.dataset_spec(tiny_config())
    self.assertEqual((spec.train_split, spec.eval_split), ("train", "test"))
    with self.assertRaisesRegex(
      configs.ConfigError, r"^`eval_split` must be a split name or None; got ''\.$"
    ):
      tiny_config(eval_split="").validate()
