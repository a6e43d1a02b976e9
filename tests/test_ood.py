"""Out-of-distribution scores (`ood`) on synthetic cases with known answers, the detection metrics against
scikit-learn, and the `ood_score` signature: the library's scores in the TF1 loader TF Serving uses, its
threshold, bad inputs, `load_distribution`, `export_workdir`'s held-out split, and the C program (slow)."""

import dataclasses
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from sklearn import metrics

# The module, not its classes: pytest would collect them here.
from tests import export_testing
from tests.bijector_testing import perturb
from tests.export_testing import MAX_NUM_SAMPLES, assert_close_relative, one_hot
from tests.training_testing import REPO_ROOT, tiny_config
from tests.workdir_testing import write_workdir
from tfp_realnvp import RealNVP, data, dequantization, ood
from tfp_realnvp.serving import export, saved_model_distribution, serving_module
from tfp_realnvp.training import flow_builder

tfd = tfp.distributions
SIGNATURE = serving_module.OOD_SCORE_SIGNATURE_NAME
EVENT_SHAPE = (8, 8, 1)
# An export written by older code, without `ood_score` (tests/test_export_compat.py).
OLD_EXPORT = os.path.join(REPO_ROOT, "tests", "data", "conditional_digits_export_b74163e", "export")


class BoxUniformFlow:
  """A stand-in image flow of 4-bit 8x8 images, uniform on `[0, 8)^D`: every image of levels below 8 has the
  discrete likelihood `8**-D` (3 bits/dim), one with a level of 8 or more is outside its support."""

  event_shape = EVENT_SHAPE
  num_bits = 4
  dtype = tf.float32
  conditional_event_shape = None

  def log_prob(self, x, training=False):
    del training
    inside = tf.reduce_all((x >= 0.0) & (x < 8.0), axis=[-3, -2, -1])
    return tf.where(inside, -math.prod(EVENT_SHAPE) * math.log(8.0), -np.inf)


def noise_levels(num_rows, seed, high=8):
  return np.random.RandomState(seed).randint(0, high, [num_rows, *EVENT_SHAPE]).astype(np.float32)


class MetricsTest(tf.test.TestCase):
  def scores(self, seed):
    """Scores with many ties: 300 inliers, 200 outliers shifted up."""
    state = np.random.RandomState(seed)
    return np.round(state.normal(0.0, 1.0, 300), 1), np.round(state.normal(0.7, 1.0, 200), 1)

  def test_auroc_aupr_and_fpr_at_95_tpr_are_scikit_learns(self):
    for seed in range(3):
      inliers, outliers = self.scores(seed)
      labels = np.concatenate([np.zeros(inliers.size), np.ones(outliers.size)])
      scores = np.concatenate([inliers, outliers])
      self.assertAllClose(ood.auroc(inliers, outliers), metrics.roc_auc_score(labels, scores), rtol=1e-12)
      self.assertAllClose(
        ood.aupr(inliers, outliers), metrics.average_precision_score(labels, scores), rtol=1e-12
      )
      fpr, tpr, _ = metrics.roc_curve(labels, scores)
      self.assertAllClose(
        ood.false_positive_rate_at_true_positive_rate(inliers, outliers), fpr[np.argmax(tpr >= 0.95)]
      )

  def test_a_score_that_ranks_the_wrong_way_has_auroc_below_one_half(self):
    self.assertEqual(ood.auroc([3.0, 4.0], [1.0, 2.0]), 0.0)
    self.assertEqual(ood.auroc([1.0, 2.0], [3.0, 4.0]), 1.0)
    self.assertEqual(ood.auroc([1.0], [1.0]), 0.5)
    self.assertEqual(ood.false_positive_rate_at_true_positive_rate([1.0, 2.0], [3.0, 4.0]), 0.0)
    self.assertEqual(ood.false_positive_rate_at_true_positive_rate([3.0, 4.0], [1.0, 2.0]), 1.0)

  def test_the_threshold_flags_the_stated_share_of_held_out_scores(self):
    scores = np.random.RandomState(0).normal(size=1000)
    for rate in (0.0, 0.01, 0.05, 0.2):
      threshold = ood.threshold_at_false_positive_rate(scores, rate)
      self.assertEqual(np.sum(scores > threshold), round(rate * 1000), rate)
    # Ties: never more than the rate.
    tied = np.repeat([1.0, 2.0, 3.0], 10)
    self.assertLessEqual(np.mean(tied > ood.threshold_at_false_positive_rate(tied, 0.2)), 0.2)
    with self.assertRaisesRegex(ValueError, "finite and non-empty"):
      ood.threshold_at_false_positive_rate([1.0, np.nan])
    with self.assertRaisesRegex(ValueError, r"`false_positive_rate` must be in \[0, 1\)"):
      ood.threshold_at_false_positive_rate([1.0], 1.0)


class ScoresTest(tf.test.TestCase):
  def test_raw_bits_are_known_for_a_uniform_flow_and_infinite_outside_its_support(self):
    flow, dequantizer = BoxUniformFlow(), dequantization.UniformDequantizer(EVENT_SHAPE)
    levels = noise_levels(4, seed=0)
    self.assertAllClose(ood.discrete_bits_per_dim(flow, dequantizer, levels), [3.0] * 4)
    outside = levels.copy()
    outside[2, 3, 3, 0] = 12.0  # a level the flow never gives mass to
    bits = ood.discrete_bits_per_dim(flow, dequantizer, outside).numpy()
    self.assertAllClose(bits[[0, 1, 3]], [3.0] * 3)
    self.assertEqual(bits[2], np.inf)
    self.assertEqual(ood.complexity_corrected_score(flow, dequantizer, outside).numpy()[2], np.inf)

  def test_a_constant_image_is_simple_under_png_and_noise_is_not(self):
    constant = np.full([1, 28, 28, 1], 7.0, np.float32)
    noise = np.random.RandomState(0).randint(0, 256, [1, 28, 28, 1]).astype(np.float32)
    # 79 bytes of 784 pixels, 63 of them PNG's fixed overhead.
    self.assertLess(ood.png_bits_per_dim(constant, 8)[0], 0.85)
    self.assertGreater(ood.png_bits_per_dim(noise, 8)[0], 8.0)  # no code beats 8 bits for uniform bytes
    # Compression levels: 0 stores, 9 compresses most.
    self.assertLess(
      ood.png_bits_per_dim(constant, 8, compression=9)[0], ood.png_bits_per_dim(constant, 8, 0)[0]
    )
    # Images of 5 channels and 16-bit levels encode too; an empty batch gives no scores.
    self.assertEqual(ood.png_bits_per_dim(np.zeros([2, 4, 4, 5], np.float32), 8).shape, [2])
    self.assertLess(ood.png_bits_per_dim(np.full([1, 8, 8, 3], 1000.0, np.float32), 10)[0], 10.0)
    self.assertEqual(ood.png_bits_per_dim(constant[:0], 8).shape, [0])

  def test_the_corrected_score_subtracts_png_bits_so_simple_images_score_higher_at_equal_likelihood(self):
    flow, dequantizer = BoxUniformFlow(), dequantization.UniformDequantizer(EVENT_SHAPE)
    levels = np.concatenate([np.full([1, *EVENT_SHAPE], 3.0, np.float32), noise_levels(1, seed=1)])
    png = ood.png_bits_per_dim(levels, 4).numpy()
    self.assertLess(png[0], png[1])
    self.assertAllClose(ood.complexity_corrected_score(flow, dequantizer, levels), 3.0 - png)

  def test_raw_bits_of_a_flow_are_its_bits_per_dim_with_one_shared_noise_image(self):
    flow = export_testing.small_image_flow(num_scales=1)
    levels = noise_levels(5, seed=2, high=16)
    noise = tf.random.stateless_uniform(EVENT_SHAPE, ood.NOISE_SEED)
    expected = flow.bits_per_dim(data.dequantize(levels, noise)).numpy()
    dequantizer = dequantization.UniformDequantizer(EVENT_SHAPE)
    bits = ood.discrete_bits_per_dim(flow, dequantizer, levels).numpy()
    assert_close_relative(self, expected, bits)
    # A row scores the same alone as in its batch, and dequantized pixels as their levels.
    assert_close_relative(self, bits[3:4], ood.discrete_bits_per_dim(flow, dequantizer, levels[3:4]))
    assert_close_relative(
      self, bits, ood.discrete_bits_per_dim(flow, dequantizer, ood.pixel_levels(levels + 0.7))
    )

  def test_the_typicality_test_flags_batches_too_likely_as_well_as_too_unlikely(self):
    state = np.random.RandomState(0)
    train, validation = state.normal(3.0, 0.3, 2000), state.normal(3.0, 0.3, 1000)
    typical = ood.typicality_test(state.normal(3.0, 0.3, 25), train, validation)
    self.assertFalse(typical.is_atypical)
    self.assertAllClose(typical.entropy, train.mean())
    # A batch more likely than the data (lower bits, as MNIST under a Fashion-MNIST flow) is atypical too.
    for mean in (2.6, 3.4):
      result = ood.typicality_test(state.normal(mean, 0.3, 25), train, validation)
      self.assertTrue(result.is_atypical, mean)
      self.assertGreater(result.statistic, result.epsilon)
    # In-distribution batches are flagged at about the stated rate.
    flagged = [
      ood.typicality_test(state.normal(3.0, 0.3, 25), train, validation, 0.1, seed=s).is_atypical
      for s in range(200)
    ]
    self.assertBetween(np.mean(flagged), 0.03, 0.2)


def held_out_levels(num_rows, seed):
  return np.random.RandomState(seed).randint(0, 16, [num_rows, *EVENT_SHAPE]).astype(np.float32)


class OodScoreExports:
  """Mixin for a `WorkspaceTestCase`: `export_model` in `setUpClass`."""

  FALSE_POSITIVE_RATE = 0.25

  @classmethod
  def export_model(cls):
    """An image flow with a perturbed variational dequantizer exported with a threshold at a quarter of 40
    held-out rows' library scores (`cls.held_out`, `cls.threshold`), and `cls.levels` to score."""
    cls.flow = export_testing.small_image_flow(num_scales=1)
    cls.dequantizer = dequantization.VariationalDequantizer(
      EVENT_SHAPE, 4, num_couplings=2, hidden_units=(16,)
    )
    perturb(cls.dequantizer, stddev=0.1, seed=1)
    cls.held_out = held_out_levels(40, seed=5)
    held_out_scores = ood.complexity_corrected_score(cls.flow, cls.dequantizer, cls.held_out).numpy()
    cls.threshold = ood.threshold_at_false_positive_rate(held_out_scores, cls.FALSE_POSITIVE_RATE)
    cls.levels = held_out_levels(6, seed=6)
    cls.levels[0] = 0.0  # a constant image
    cls.expected = ood.complexity_corrected_score(cls.flow, cls.dequantizer, cls.levels).numpy()
    cls.path = export.export_saved_model(
      cls.flow,
      os.path.join(cls.workspace, "exports"),
      max_num_samples=MAX_NUM_SAMPLES,
      dequantizer=cls.dequantizer,
      max_flow_evaluations=64,
      ood_threshold=cls.threshold,
      ood_false_positive_rate=cls.FALSE_POSITIVE_RATE,
    )


def bad_inputs(levels):
  cases = {}
  for case, (index, value) in {
    "nan": ((1, 2, 3, 0), np.nan),
    "inf": ((1, 2, 3, 0), np.inf),
    "at_the_top": ((2, 7, 7, 0), 16.0),
    "negative": ((3, 0, 0, 0), -0.5),
  }.items():
    cases[case] = levels.copy()
    cases[case][index] = value
  return cases


@pytest.mark.slow
class OodScoreExportTest(OodScoreExports, export_testing.WorkspaceTestCase):
  """The export loaded by the TF1 loader TF Serving uses (a graph and a session, in this process) and by
  `load_distribution`."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.export_model()

  def run_tf1(self, x):
    """The signature's outputs for `x` through `tf.compat.v1.saved_model.loader`, or the error it raised."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], self.path)
      definition = meta_graph.signature_def[SIGNATURE]
      fetches = {name: info.name for name, info in definition.outputs.items()}
      return session.run(fetches, {definition.inputs["x"].name: x})

  def test_the_signature_has_the_documented_names_dtypes_and_shapes(self):
    definitions = export_testing.signature_defs(self.path)
    self.assertIn(SIGNATURE, definitions)
    self.assertEqual(
      export_testing.tensor_table(definitions[SIGNATURE].inputs), {"x": ("float32", [-1, 8, 8, 1])}
    )
    self.assertEqual(
      export_testing.tensor_table(definitions[SIGNATURE].outputs),
      {"score": ("float32", [-1]), "is_outlier": ("bool", [-1])},
    )
    self.assertEqual(definitions[SIGNATURE].method_name, "tensorflow/serving/predict")

  def test_the_tf1_loader_gives_the_librarys_scores_and_flags_above_the_threshold(self):
    outputs = self.run_tf1(self.levels)
    assert_close_relative(self, self.expected, outputs["score"])
    self.assertAllEqual(outputs["is_outlier"], self.expected > self.threshold)
    # Dequantized pixels score as their levels; an empty batch gives empty outputs.
    assert_close_relative(self, self.expected, self.run_tf1(self.levels + 0.999)["score"])
    empty = self.run_tf1(self.levels[:0])
    self.assertEqual(empty["score"].shape, (0,))
    self.assertEqual(empty["is_outlier"].shape, (0,))

  def test_the_threshold_flags_the_stated_share_of_the_held_out_rows(self):
    flagged = self.run_tf1(self.held_out)["is_outlier"]
    # 10 of 40; one more or fewer if a score at the threshold rounds differently in the served graph.
    self.assertBetween(np.sum(flagged), 9, 11)

  def test_bad_inputs_are_errors_naming_x_in_the_tf1_loader(self):
    for case, x in bad_inputs(self.levels).items():
      with self.subTest(case=case):
        with self.assertRaisesRegex(
          tf.errors.InvalidArgumentError,
          re.escape("`x` must be pixel values in [0, 16) (`num_bits=4`), finite"),
        ):
          self.run_tf1(x)
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, re.escape("`max_flow_evaluations`, set at export to 64")
    ):
      self.run_tf1(np.zeros([65, *EVENT_SHAPE], np.float32))
    # Python's session refuses another image size before the graph runs; the graph's own check, for the C++
    # loader, is `OodScoreCProgramTest`'s.
    with self.assertRaisesRegex(ValueError, r"Cannot feed value of shape \(2, 4, 4, 1\)"):
      self.run_tf1(np.zeros([2, 4, 4, 1], np.float32))

  def test_load_distribution_gives_the_same_scores_for_any_batch_shape_and_the_settings(self):
    distribution = saved_model_distribution.load_distribution(self.path)
    score, is_outlier = distribution.ood_score(self.levels[np.newaxis])
    self.assertEqual(score.shape, [1, 6])
    assert_close_relative(self, self.expected, score[0])
    self.assertAllEqual(is_outlier[0], self.expected > self.threshold)
    settings = distribution.ood_settings
    self.assertEqual(set(settings), {"threshold", "false_positive_rate", "png_compression"})
    self.assertEqual(settings["threshold"], self.threshold)
    self.assertEqual(settings["false_positive_rate"], self.FALSE_POSITIVE_RATE)
    self.assertEqual(settings["png_compression"], ood.DEFAULT_PNG_COMPRESSION)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`x` must be pixel values"):
      distribution.ood_score(bad_inputs(self.levels)["nan"])
    with self.assertRaisesRegex(ValueError, r"`x` must have shape `\[\.\.\., 8, 8, 1\]`"):
      distribution.ood_score(self.levels[..., 0])

  def test_an_export_without_the_signature_says_so_and_old_exports_still_load(self):
    old = saved_model_distribution.load_distribution(OLD_EXPORT)
    self.assertIsNone(old.ood_settings)
    with self.assertRaisesRegex(ValueError, "has no `ood_score` signature"):
      old.ood_score(np.zeros([1, 8, 8, 1], np.float32))
    without = export.export_saved_model(self.flow, os.path.join(self.workspace, "without"))
    self.assertNotIn(SIGNATURE, export_testing.signature_defs(without))

  def test_serving_module_refuses_a_threshold_it_cannot_serve(self):
    for flow, threshold, message in [
      (export_testing.small_vector_flow(), 1.0, r"needs a flow of pixel data \(`num_bits` not None\)"),
      (conditional_image_flow(), 1.0, "class-conditional with its `label_log_prior`"),
      (self.flow, np.nan, "must be a finite number; got nan"),
      (self.flow, True, "must be a finite number; got True"),
    ]:
      with self.subTest(message=message), self.assertRaisesRegex(ValueError, "^`ood_threshold` .*" + message):
        serving_module.ServingModule(flow, ood_threshold=threshold)


def conditional_image_flow():
  """A small digits flow conditioned on one-hot labels, with moved batch-norm averages and perturbed."""
  overrides = {**export_testing.IMAGE_OVERRIDES, "num_scales": 1}
  flow = RealNVP.from_preset("digits", **overrides, conditional_event_shape=(export_testing.NUM_CLASSES,))
  return export_testing.moved_and_perturbed(flow)


@pytest.mark.slow
class ClassConditionalOodScoreTest(export_testing.WorkspaceTestCase):
  def test_a_class_conditional_export_scores_the_marginal_likelihood(self):
    flow = conditional_image_flow()
    dequantizer = dequantization.UniformDequantizer(EVENT_SHAPE)
    log_prior = np.log(np.arange(1.0, 11.0) / 55.0)
    levels = held_out_levels(4, seed=7)
    path = export.export_saved_model(
      flow,
      os.path.join(self.workspace, "exports"),
      label_log_prior=log_prior,
      dequantizer=dequantizer,
      max_flow_evaluations=30,
      ood_threshold=0.0,
    )
    signature = tf.saved_model.load(path).signatures[SIGNATURE]
    score = signature(x=tf.constant(levels[:3]))["score"]
    expected = ood.complexity_corrected_score(flow, dequantizer, levels[:3], label_log_prior=log_prior)
    assert_close_relative(self, expected, score)
    # The marginal: -log2 of sum_y p(x | y) p(y), per dimension, less the PNG bits.
    noise = tf.random.stateless_uniform(EVENT_SHAPE, ood.NOISE_SEED)
    x = data.dequantize(levels[:3], noise)
    joint = np.stack(
      [flow.log_prob(x, conditional_input=np.tile(one_hot([y]), [3, 1])) for y in range(10)], -1
    )
    marginal = np.logaddexp.reduce(joint + log_prior, axis=-1)
    png = ood.png_bits_per_dim(levels[:3], 4)
    assert_close_relative(self, -marginal / (64 * math.log(2.0)) - png, score, rtol=1e-4)
    # Rows times classes count against the work limit: 4 x 10 > 30.
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "The rows of `x` times the 10 classes"):
      signature(x=tf.constant(levels))


class HeldOutSplitTest(export_testing.WorkspaceTestCase):
  """Which split sets `export_workdir`'s threshold, and the export of a workdir with a validation split."""

  def test_the_eval_split_when_it_is_a_validation_split_else_the_training_split_never_a_test_split(self):
    config = tiny_config()
    for changes, expected in [
      ({"train_split": "train[:1200]", "eval_split": "train[1200:]"}, ("train[1200:]", True)),
      ({"eval_split": None}, ("train", False)),
      ({"train_split": "train[:1000]", "eval_split": "test[:100]"}, ("train[:1000]", False)),
    ]:
      with self.subTest(**changes):
        split = export.held_out_split(dataclasses.replace(config, **changes))
        self.assertEqual((split.name, split.held_out), expected)
    self.assertEqual(export.held_out_split(config, "train[1400:]").name, "train[1400:]")
    with self.assertRaisesRegex(ValueError, "`ood_split` must not be a test split; got 'test'"):
      export.held_out_split(config, "test")

  @pytest.mark.slow
  def test_export_workdir_sets_the_threshold_on_the_runs_validation_split(self):
    config = tiny_config(
      train_split="train[:1200]", eval_split="train[1200:]", dequantization="uniform", ema_decay=0.0
    )
    workdir = os.path.join(self.workspace, "run")
    flow = flow_builder.build_flow(config)
    perturb(flow, stddev=0.1)
    write_workdir(workdir, config, flow=flow)
    exported = export.export_workdir(workdir, os.path.join(self.workspace, "exports"))
    self.assertEqual(exported.ood_split, export.HeldOutSplit("train[1200:]", "the run's eval split", True))
    images = np.concatenate(list(data.load("digits", "train[1200:]", batch_size=300, training=False)))
    outputs = tf.saved_model.load(exported.path).signatures[SIGNATURE](x=tf.constant(images))
    # 5% of the 300 held-out images: 15 (one more or fewer if a score at the threshold rounds differently).
    self.assertBetween(int(np.sum(outputs["is_outlier"])), 14, 16)
    self.assertEqual(
      exported.ood_threshold,
      saved_model_distribution.load_distribution(exported.path).ood_settings["threshold"],
    )


@pytest.mark.slow
class OodScoreCProgramTest(OodScoreExports, export_testing.LoadedExportsTestCase):
  """The export through the C program: the library's scores and flags, and bad inputs refused."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.start_c_build()
    cls.export_model()
    if cls.finish_c_build():
      np.save(os.path.join(cls.workspace, "levels.npy"), cls.levels)
      np.save(os.path.join(cls.workspace, "nan.npy"), bad_inputs(cls.levels)["nan"])
      cls.c_run = cls.run_c_program(cls.path, [[SIGNATURE, "x=levels.npy"], [SIGNATURE, "x=nan.npy"]])

  def test_c_program_matches_python_and_refuses_bad_inputs(self):
    returncode, results = self.c_results_of(self.c_run, 2)
    self.assertEqual(returncode, 1)  # the bad request fails, the program does not
    signature, outputs = results[0]
    self.assertEqual(signature, SIGNATURE)
    assert_close_relative(self, self.expected, outputs["score"])
    self.assertAllEqual(outputs["is_outlier"], self.expected > self.threshold)
    self.assertIn("`x` must be pixel values in [0, 16)", results[1][1])


if __name__ == "__main__":
  tf.test.main()
