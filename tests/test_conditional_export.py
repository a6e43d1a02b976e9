"""Exports of conditional flows: signatures that take `conditional_input`, `classify` of a `condition=label`
workdir, through the fresh-process Python and TF1 loaders, the C program and gRPC requests; `load_distribution`
with a context; bad contexts."""

import dataclasses
import os
import unittest

import numpy as np
import pytest
import tensorflow as tf

# The module, not its classes: pytest would collect them here.
from tests import export_testing
from tests.bijector_testing import perturb
from tests.export_testing import MAX_NUM_SAMPLES, NUM_CLASSES, SAMPLE_INPUTS, assert_close_relative, one_hot
from tests.workdir_testing import write_workdir
from tfp_realnvp import RealNVP, classifier, data, dequantization
from tfp_realnvp.serving import export, saved_model_distribution, serving_module
from tfp_realnvp.training import configs, flow_builder

# A training split other than the dataset's own: `classify` must take `p(y)` from the run's.
TRAIN_SPLIT = "train[:1200]"
DISCRETE = serving_module.DISCRETE_BITS_PER_DIM_SIGNATURE_NAME
CLASSIFY_LEVELS = serving_module.CLASSIFY_LEVELS_SIGNATURE_NAME


def label_workdir(workdir):
  """A `condition=label` training workdir as train_lib leaves it, with a small non-trivial flow; returns it."""
  config = dataclasses.replace(
    configs.get_config(),
    condition="label",
    train_split=TRAIN_SPLIT,
    ema_decay=0.0,  # the checkpoint below holds the flow alone: no weight average,
    dequantization="uniform",  # no learned dequantizer
    model_overrides={**export_testing.IMAGE_OVERRIDES, "num_scales": 1},
  )
  flow = export_testing.moved_and_perturbed(flow_builder.build_flow(config))
  write_workdir(workdir, config, steps=(5,), flow=flow)
  return flow


def log_prior(split):
  counts = data.label_counts("digits", split).astype(np.float64)
  return np.log(counts / counts.sum())


@pytest.mark.slow
class ConditionalExportTest(export_testing.LoadedExportsTestCase):
  """One export of a `condition=label` workdir (digits, one-hot labels, `classify`) and one of a vector flow
  with a real-valued context, checked through every loader."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.start_c_build()
    base = os.path.join(cls.workspace, "exports")
    cls.flows = {
      "labels": label_workdir(os.path.join(cls.workspace, "run")),
      "vector": export_testing.small_vector_flow(conditional_event_shape=(2,)),
    }
    cls.paths = {
      "labels": export.export_workdir(
        os.path.join(cls.workspace, "run"), base, "labels", max_num_samples=MAX_NUM_SAMPLES
      ).path,
      "vector": export.export_saved_model(
        cls.flows["vector"], base, "vector", max_num_samples=MAX_NUM_SAMPLES
      ),
    }
    state = np.random.RandomState(40)
    cls.inputs = {
      "labels": {
        "x": export_testing.pixels([5, 8, 8, 1], 4, seed=41),
        "c": one_hot([3, 1, 4, 1, 5]),
        "z": state.normal(size=[4, 8, 8, 1]).astype(np.float32),
        "cz": one_hot([9, 2, 6, 5]),
        "cs": one_hot([0, 7, 2]),  # one per sample
      },
      "vector": {
        "x": state.normal(size=[5, 3]).astype(np.float32),
        "c": 1.5 * state.normal(size=[5, 2]).astype(np.float32),
        "z": state.normal(size=[4, 3]).astype(np.float32),
        "cz": 1.5 * state.normal(size=[4, 2]).astype(np.float32),
        "cs": 1.5 * state.normal(size=[3, 2]).astype(np.float32),
      },
    }
    cls.requests = {}
    for model, inputs in cls.inputs.items():
      x, c, z, cz, cs = (inputs[name] for name in ("x", "c", "z", "cz", "cs"))
      cls.requests.update(
        {
          (model, "serving_default", "batch"): {"x": x, "conditional_input": c},
          (model, "log_prob", "batch"): {"x": x, "conditional_input": c},
          (model, "log_prob", "one_row"): {"x": x[1:2], "conditional_input": c[1:2]},
          (model, "log_prob", "empty"): {"x": x[:0], "conditional_input": c[:0]},
          (model, "log_prob", "missing"): {"x": x},
          (model, "log_prob", "fewer_contexts"): {"x": x, "conditional_input": c[:4]},
          (model, "log_prob", "wrong_width"): {"x": x, "conditional_input": np.zeros([5, 9], np.float32)},
          (model, "encode", "batch"): {"x": x, "conditional_input": c},
          (model, "decode", "batch"): {"z": z, "conditional_input": cz},
          (model, "sample", "seed"): dict(SAMPLE_INPUTS, conditional_input=cs),
          (model, "sample", "none"): dict(SAMPLE_INPUTS, num_samples=np.int32(0), conditional_input=cs[:0]),
          (model, "sample", "fewer_contexts"): dict(SAMPLE_INPUTS, conditional_input=cs[:2]),
        }
      )
    x = cls.inputs["labels"]["x"]
    cls.requests[("labels", "classify", "batch")] = {"x": x}
    cls.requests[("labels", "classify", "empty")] = {"x": x[:0]}
    # The workdir's export bounds the discrete likelihood with the run's (uniform) dequantizer.
    levels = np.floor(x)
    cls.requests[("labels", DISCRETE, "k3")] = {
      "levels": levels,
      "num_samples": np.int32(3),
      "seed": SAMPLE_INPUTS["seed"],
      "conditional_input": cls.inputs["labels"]["c"],
    }
    cls.requests[("labels", CLASSIFY_LEVELS, "k3")] = {
      "levels": levels,
      "num_samples": np.int32(3),
      "seed": SAMPLE_INPUTS["seed"],
    }
    # The gRPC client's requests, as TF Serving would decode and feed them.
    cls.grpc_requests = {}
    if export_testing.HAS_SERVING_API:
      grpc_client = export_testing.import_grpc_client()
      inputs = cls.inputs["labels"]
      cls.grpc_requests = {
        "log_prob": grpc_client.log_prob_request(x, "labels", "log_prob", conditional_input=inputs["c"]),
        "sample": grpc_client.sample_request(3, 0.7, (7, 11), "labels", conditional_input=inputs["cs"]),
        "classify": grpc_client.classify_request(x, "labels", version=1),
        DISCRETE: grpc_client.levels_request(
          levels, 3, SAMPLE_INPUTS["seed"], model_name="labels", conditional_input=inputs["c"]
        ),
        CLASSIFY_LEVELS: grpc_client.levels_request(
          levels, 3, SAMPLE_INPUTS["seed"], CLASSIFY_LEVELS, model_name="labels"
        ),
      }
      for signature, request in cls.grpc_requests.items():
        cls.requests[("labels", signature, "grpc")] = {
          name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()
        }
    loader = cls.start_loader(cls.requests, cls.paths)

    cls.log_prior = log_prior(TRAIN_SPLIT)
    cls.expected = {}
    for model, flow in cls.flows.items():
      x, c, z, cz, cs = (cls.inputs[model][name] for name in ("x", "c", "z", "cz", "cs"))
      log_prob = {"log_prob": flow.log_prob(x, conditional_input=c).numpy()}
      if flow.num_bits is not None:
        log_prob["bits_per_dim"] = flow.bits_per_dim(x, conditional_input=c).numpy()
      samples = flow.sample(3, seed=tf.constant([7, 11]), temperature=0.7, conditional_input=cs).numpy()
      cls.expected.update(
        {
          (model, "serving_default", "batch"): log_prob,
          (model, "log_prob", "batch"): log_prob,
          (model, "encode", "batch"): {"z": flow.encode(x, conditional_input=c).numpy()},
          (model, "decode", "batch"): {"x": flow.decode(z, conditional_input=cz).numpy()},
          (model, "sample", "seed"): {"samples": samples},
        }
      )
    flow, x = cls.flows["labels"], cls.inputs["labels"]["x"]
    class_log_probs = classifier.class_log_probs(flow, x, NUM_CLASSES, cls.log_prior).numpy()
    cls.expected[("labels", "classify", "batch")] = {
      "log_probs": class_log_probs,
      "label": np.argmax(class_log_probs, axis=-1),
      "log_prob": classifier.marginal_log_prob(flow, x, NUM_CLASSES, cls.log_prior).numpy(),
    }
    bits_per_dim = dequantization.importance_weighted_bits_per_dim(
      flow,
      dequantization.UniformDequantizer(flow.event_shape),
      levels,
      3,
      tf.constant(SAMPLE_INPUTS["seed"]),
      conditional_input=cls.inputs["labels"]["c"],
    ).numpy()
    cls.expected[("labels", DISCRETE, "k3")] = {
      "bits_per_dim": bits_per_dim,
      "log_prob": -bits_per_dim * flow.num_dims * np.log(2.0),
    }
    joint = classifier.discrete_joint_log_probs(
      flow,
      dequantization.UniformDequantizer(flow.event_shape),
      levels,
      NUM_CLASSES,
      3,
      tf.constant(SAMPLE_INPUTS["seed"]),
      cls.log_prior,
    ).numpy()
    marginal = np.logaddexp.reduce(joint, axis=-1)
    cls.expected[("labels", CLASSIFY_LEVELS, "k3")] = {
      "log_probs": joint - marginal[:, np.newaxis],
      "label": np.argmax(joint, axis=-1),
      "log_prob": marginal,
    }

    if cls.finish_c_build():
      inputs = cls.inputs["labels"]
      arrays = {**inputs, "c4": inputs["c"][:4]}
      for name, array in arrays.items():
        np.save(os.path.join(cls.workspace, f"{name}.npy"), array)
      requests = [
        ["log_prob", "x=x.npy", "conditional_input=c.npy"],
        ["sample", "num_samples=3", "temperature=0.7", "seed=7,11", "conditional_input=cs.npy"],
        ["classify", "x=x.npy"],
        ["decode", "z=z.npy", "conditional_input=cz.npy"],
        ["log_prob", "x=x.npy", "conditional_input=c4.npy"],
      ]
      cls.c_run = cls.run_c_program(cls.paths["labels"], requests)
      cls.c_missing_context = cls.run_c_program(cls.paths["labels"], [["log_prob", "x=x.npy"]])
    cls.finish_loader(loader)

  def c_result(self, index):
    return self.c_results_of(self.c_run, 5)[1][index]

  def test_loader_process_imported_neither_tfp_realnvp_nor_tfp(self):
    self.assertEqual(self.loader_report["modules"], [])

  def test_every_signature_matches_the_flow_in_both_loaders(self):
    self.assert_both_loaders_match(image_model="labels")
    covered = {(model, signature) for model, signature, _ in self.expected}
    expected_signatures = {(m, s) for m in self.flows for s in serving_module.SIGNATURE_NAMES}
    self.assertEqual(
      covered,
      expected_signatures
      | {
        ("labels", serving_module.CLASSIFY_SIGNATURE_NAME),
        ("labels", DISCRETE),
        ("labels", CLASSIFY_LEVELS),
      },
    )

  def test_classify_uses_the_training_splits_label_frequencies(self):
    # The dataset's own training split has other frequencies: the export must not have used them.
    self.assertNotAllClose(self.log_prior, log_prior("train"), rtol=1e-3)
    other = classifier.class_log_probs(
      self.flows["labels"], self.inputs["labels"]["x"], NUM_CLASSES, log_prior("train")
    )
    self.assertNotAllClose(
      other, self.loader_result("tf1", "labels", "classify", "batch")["log_probs"], rtol=1e-5
    )
    outputs = self.loader_result("tf1", "labels", "classify", "batch")
    self.assertAllClose(np.exp(outputs["log_probs"]).sum(axis=-1), np.ones(5), rtol=1e-5)
    empty = self.loader_result("tf1", "labels", "classify", "empty")
    self.assertEqual(empty["log_probs"].shape, (0, NUM_CLASSES))
    self.assertEqual(empty["label"].shape, (0,))

  def test_signatures_have_the_documented_names_dtypes_and_shapes(self):
    image, vector = [-1, 8, 8, 1], [-1, 3]
    for model, event, context, log_prob_outputs, sample_outputs in [
      (
        "labels",
        image,
        ("float32", [-1, NUM_CLASSES]),
        {"log_prob": ("float32", [-1]), "bits_per_dim": ("float32", [-1])},
        {"samples": ("float32", image), "images": ("uint8", image)},
      ),
      (
        "vector",
        vector,
        ("float32", [-1, 2]),
        {"log_prob": ("float32", [-1])},
        {"samples": ("float32", vector)},
      ),
    ]:
      expected = {
        "serving_default": ({"x": ("float32", event), "conditional_input": context}, log_prob_outputs),
        "log_prob": ({"x": ("float32", event), "conditional_input": context}, log_prob_outputs),
        "sample": (
          {
            "num_samples": ("int32", []),
            "temperature": ("float32", []),
            "seed": ("int32", [2]),
            "conditional_input": context,
          },
          sample_outputs,
        ),
        "encode": ({"x": ("float32", event), "conditional_input": context}, {"z": ("float32", event)}),
        "decode": ({"z": ("float32", event), "conditional_input": context}, {"x": ("float32", event)}),
      }
      if model == "labels":
        expected["classify"] = (
          {"x": ("float32", event)},
          {
            "log_probs": ("float32", [-1, NUM_CLASSES]),
            "label": ("int64", [-1]),
            "log_prob": ("float32", [-1]),
          },
        )
        expected[DISCRETE] = (
          {
            "levels": ("float32", event),
            "num_samples": ("int32", []),
            "seed": ("int32", [2]),
            "conditional_input": context,
          },
          {"bits_per_dim": ("float32", [-1]), "log_prob": ("float32", [-1])},
        )
        expected[CLASSIFY_LEVELS] = (
          {"levels": ("float32", event), "num_samples": ("int32", []), "seed": ("int32", [2])},
          expected["classify"][1],
        )
        # Of the marginal `p(x)`: no context.
        expected[serving_module.OOD_SCORE_SIGNATURE_NAME] = (
          {"x": ("float32", event)},
          {"score": ("float32", [-1]), "is_outlier": ("bool", [-1])},
        )
      export_testing.assert_signatures(self, self.paths[model], expected, model=model)

  def test_rows_do_not_depend_on_their_batch_and_empty_batches_work(self):
    self.assert_rows_do_not_depend_on_their_batch_and_empty_batches_work()

  def test_missing_and_misshaped_contexts_are_errors_in_both_loaders(self):
    for model in self.flows:
      with self.subTest(model=model):
        # TF2 names the missing argument; the TF1 session the placeholder it was not fed.
        self.assertRegex(
          self.loader_error("tf2", model, "log_prob", "missing"), "TypeError: .*conditional_input"
        )
        self.assertRegex(
          self.loader_error("tf1", model, "log_prob", "missing"),
          "(?s)InvalidArgumentError: .*must feed a value for placeholder tensor 'log_prob_conditional_input'",
        )
        self.assertIn(
          "is not compatible with expected shape", self.loader_error("tf2", model, "log_prob", "wrong_width")
        )
        self.assertIn("ValueError", self.loader_error("tf1", model, "log_prob", "wrong_width"))
        for loader in ("tf2", "tf1"):
          error = self.loader_error(loader, model, "log_prob", "fewer_contexts")
          self.assertIn("InvalidArgumentError", error)
          self.assertIn("`conditional_input` must have one row (context) per row of `x`", error)
          error = self.loader_error(loader, model, "sample", "fewer_contexts")
          self.assertIn("InvalidArgumentError", error)
          self.assertIn(
            "`conditional_input` must have one row (context) per sample, `num_samples` rows", error
          )

  def test_c_program_matches_python(self):
    for index, (signature, case) in enumerate(
      [("log_prob", "batch"), ("sample", "seed"), ("classify", "batch"), ("decode", "batch")]
    ):
      with self.subTest(signature=signature):
        name, outputs = self.c_result(index)
        self.assertEqual(name, signature)
        if signature == "sample":
          self.assertAllEqual(
            self.loader_result("tf1", "labels", "sample", "seed")["images"], outputs.pop("images")
          )
        self.assert_outputs_match(self.expected[("labels", signature, case)], outputs)

  def test_c_program_gets_an_error_for_a_wrong_or_missing_context(self):
    self.assertEqual(self.c_results_of(self.c_run, 5)[0], 1)  # the last request fails, the program does not
    self.assertIn("`conditional_input` must have one row (context) per row of `x`", self.c_result(4)[1])
    returncode, stderr, _ = self.c_missing_context
    self.assertEqual(returncode, 2, stderr[-3000:])
    self.assertRegex(
      stderr,
      r"signature log_prob takes 2 inputs \((conditional_input, x|x, conditional_input)\); got 1",
    )

  @unittest.skipUnless(export_testing.HAS_SERVING_API, "needs tensorflow-serving-api (the serving extra)")
  def test_grpc_requests_match_the_signatures_and_run(self):
    self.assertEqual(self.grpc_requests["classify"].model_spec.version.value, 1)
    self.assert_grpc_requests_answer("labels")

  def test_non_finite_contexts_give_nan_rows_and_other_dtypes_are_refused(self):
    for model in ("labels", "vector"):
      distribution = saved_model_distribution.load_distribution(self.paths[model])
      inputs = self.inputs[model]
      c, cs = inputs["c"].copy(), inputs["cs"].copy()
      c[0, 0], c[1, 1], cs[1, 0] = np.nan, np.inf, np.nan
      with self.subTest(model):
        self.assertAllEqual(
          np.isnan(distribution.log_prob(inputs["x"], conditional_input=c)), [True, True, False, False, False]
        )
        samples = distribution.sample(3, seed=[1, 2], conditional_input=cs)
        self.assertAllEqual(np.isnan(samples).reshape([3, -1]).all(axis=1), [False, True, False])
        with self.assertRaisesRegex(
          TypeError, "`conditional_input` must have dtype float32, the data's; got float64"
        ):
          distribution.log_prob(inputs["x"], conditional_input=c.astype(np.float64))


class InProcessConditionalExportTest(export_testing.WorkspaceTestCase):
  """An export of a vector flow with a real-valued context loaded back in this process: `load_distribution`
  takes the context as the flow does; the serving module of a flow conditioned on one-hot labels: `classify`
  answers as `classifier` does. (`ConditionalExportTest` loads both kinds of export in loaders without this
  package.)"""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    base = os.path.join(cls.workspace, "exports")
    cls.flow = export_testing.small_vector_flow(conditional_event_shape=(2,))
    cls.path = export.export_saved_model(cls.flow, base, "vector", max_num_samples=MAX_NUM_SAMPLES)
    cls.label_flow = export_testing.moved_and_perturbed(
      RealNVP.from_preset(
        "digits", **export_testing.IMAGE_OVERRIDES, num_scales=1, conditional_event_shape=(NUM_CLASSES,)
      )
    )
    cls.log_prior = log_prior(TRAIN_SPLIT)

  def test_classify_answers_as_the_classifier_with_the_label_frequencies_it_was_given(self):
    x = export_testing.pixels([5, 8, 8, 1], 4, seed=42)
    module = serving_module.ServingModule(self.label_flow, label_log_prior=self.log_prior)
    outputs = module.classify(tf.constant(x))
    class_log_probs = classifier.class_log_probs(self.label_flow, x, NUM_CLASSES, self.log_prior).numpy()
    assert_close_relative(self, class_log_probs, outputs["log_probs"])
    self.assertAllEqual(np.argmax(class_log_probs, axis=-1), outputs["label"])
    marginal = classifier.marginal_log_prob(self.label_flow, x, NUM_CLASSES, self.log_prior)
    assert_close_relative(self, marginal, outputs["log_prob"])

  def test_an_export_of_a_flow_with_the_label_in_the_base_classifies_as_the_classifier(self):
    flow = self.label_in_the_base_flow()
    # One pass scores every class, so 5 rows cost 5 flow evaluations, not 5 times the classes.
    path = export.export_saved_model(
      flow,
      os.path.join(self.workspace, "exports"),
      "label_in_the_base",
      label_log_prior=self.log_prior,
      max_flow_evaluations=5,
    )
    classify = tf.saved_model.load(path).signatures[serving_module.CLASSIFY_SIGNATURE_NAME]
    x = export_testing.pixels([5, 8, 8, 1], 4, seed=43)
    outputs = classify(x=tf.constant(x))
    class_log_probs = classifier.class_log_probs(flow, x, NUM_CLASSES, self.log_prior).numpy()
    self.assertGreater(np.ptp(class_log_probs), 0.1)  # the class means tell the classes apart
    assert_close_relative(self, class_log_probs, outputs["log_probs"].numpy())
    self.assertAllEqual(np.argmax(class_log_probs, axis=-1), outputs["label"])

  def label_in_the_base_flow(self):
    return export_testing.moved_and_perturbed(
      RealNVP.from_preset(
        "digits",
        **export_testing.IMAGE_OVERRIDES,
        num_scales=1,
        conditional_event_shape=(NUM_CLASSES,),
        context_enters="base",
      )
    )

  def classify_levels(self, flow, max_flow_evaluations=None):
    """The serving module's `classify_levels` function for `flow` with a perturbed variational dequantizer,
    and that dequantizer. In this process: tracing one function instead of saving every signature keeps these
    tests fast; `ConditionalExportTest` calls the signature through both loaders."""
    dequantizer = dequantization.VariationalDequantizer((8, 8, 1), 4, num_couplings=2, hidden_units=(16,))
    perturb(dequantizer, stddev=0.1, seed=7)
    module = serving_module.ServingModule(
      flow,
      max_num_samples=MAX_NUM_SAMPLES,
      label_log_prior=self.log_prior,
      dequantizer=dequantizer,
      max_flow_evaluations=max_flow_evaluations,
    )
    return module.classify_levels, dequantizer

  def test_classify_levels_at_one_draw_is_classify_of_the_image_the_dequantizer_draws(self):
    levels = np.floor(export_testing.pixels([5, 8, 8, 1], 4, seed=44))
    seed = np.array([5, 6], np.int32)
    for name, flow in [("couplings", self.label_flow), ("base", self.label_in_the_base_flow())]:
      with self.subTest(context_enters=name):
        classify_levels, dequantizer = self.classify_levels(flow)
        outputs = classify_levels(
          levels=tf.constant(levels), num_samples=tf.constant(1), seed=tf.constant(seed)
        )
        # The one draw of K = 1, through the dequantizer: `q(u | v)` is the same for every class and cancels.
        noise = tf.random.stateless_uniform([1, *levels.shape], seed)[0]
        offsets, log_q = dequantizer.offsets_and_log_prob(levels, noise)
        x = data.dequantize(levels, offsets)
        self.assertGreater(np.ptp(offsets), 0.5)  # not the uniform dequantizer's `u` itself
        self.assertGreater(np.max(np.abs(offsets - noise)), 0.05)
        class_log_probs = classifier.class_log_probs(flow, x, NUM_CLASSES, self.log_prior).numpy()
        assert_close_relative(self, class_log_probs, outputs["log_probs"].numpy(), rtol=1e-4)
        self.assertAllEqual(np.argmax(class_log_probs, axis=-1), outputs["label"])
        marginal = classifier.marginal_log_prob(flow, x, NUM_CLASSES, self.log_prior) - log_q
        assert_close_relative(self, marginal, outputs["log_prob"].numpy(), rtol=1e-4)

  def test_classify_levels_bounds_each_class_as_discrete_bits_per_dim_does(self):
    levels = np.floor(export_testing.pixels([4, 8, 8, 1], 4, seed=45))
    seed = tf.constant([8, 9])
    classify_levels, dequantizer = self.classify_levels(self.label_flow)
    outputs = classify_levels(levels=tf.constant(levels), num_samples=tf.constant(5), seed=seed)
    # `log P(v, y)` class by class: the bound on `log P(v | y)` with the same draws, plus `log p(y)`.
    joint = np.stack(
      [
        dequantization.discrete_log_prob_bound(
          self.label_flow, dequantizer, levels, 5, seed, conditional_input=one_hot([label] * 4)
        ).numpy()
        + self.log_prior[label]
        for label in range(NUM_CLASSES)
      ],
      axis=-1,
    )
    marginal = np.logaddexp.reduce(joint, axis=-1)
    assert_close_relative(self, joint - marginal[:, np.newaxis], outputs["log_probs"].numpy(), rtol=1e-4)
    assert_close_relative(self, marginal, outputs["log_prob"].numpy(), rtol=1e-4)
    one_draw = classify_levels(levels=tf.constant(levels), num_samples=tf.constant(1), seed=seed)
    self.assertNotAllClose(one_draw["log_probs"], outputs["log_probs"], atol=1e-3)

  def test_classify_levels_refuses_bad_levels_and_work_beyond_the_limit(self):
    levels = np.floor(export_testing.pixels([3, 8, 8, 1], 4, seed=46))
    seed = tf.constant([1, 2])
    # 3 rows x 2 draws x 10 classes = 60 flow evaluations; one pass scores every class with the label in the base.
    for name, flow, limit, message in [
      ("couplings", self.label_flow, 59, r"times `num_samples` \(K\) times the 10 classes must be at most"),
      (
        "base",
        self.label_in_the_base_flow(),
        5,
        r"The rows of `levels` times `num_samples` \(K\) must be at most",
      ),
    ]:
      with self.subTest(context_enters=name):
        classify_levels, _ = self.classify_levels(flow, max_flow_evaluations=limit)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message + ".*set at export to"):
          classify_levels(levels=tf.constant(levels), num_samples=tf.constant(2), seed=seed)
        outputs = classify_levels(levels=tf.constant(levels[:1]), num_samples=tf.constant(2), seed=seed)
        self.assertEqual(outputs["label"].shape, [1])
    classify_levels, _ = self.classify_levels(self.label_flow)
    for bad, num_samples, message in [
      (levels + 0.5, 1, r"`levels` must be integer pixel levels in \[0, 15\]"),
      (np.where(levels == levels.max(), 16.0, levels), 1, "`levels` must be integer pixel levels"),
      (levels, 0, r"`num_samples` \(K\) must be at least 1"),
      (levels, MAX_NUM_SAMPLES + 1, "`num_samples` must be at most `max_num_samples`"),
    ]:
      with self.subTest(message=message):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
          classify_levels(
            levels=tf.constant(bad, tf.float32), num_samples=tf.constant(num_samples), seed=seed
          )

  def test_discrete_joint_log_probs_names_levels_of_the_wrong_shape(self):
    with self.assertRaisesRegex(
      ValueError, r"`levels` must be a batch `\[batch, 8, 8, 1\]`; got shape \[8, 8, 1\]"
    ):
      classifier.discrete_joint_log_probs(
        self.label_flow,
        dequantization.UniformDequantizer((8, 8, 1)),
        np.zeros([8, 8, 1]),
        NUM_CLASSES,
        1,
        [1, 2],
      )

  def test_classify_levels_needs_both_a_prior_and_a_dequantizer(self):
    dequantizer = dequantization.UniformDequantizer((8, 8, 1))
    for arguments, expected in [
      ({"label_log_prior": self.log_prior}, False),
      ({"dequantizer": dequantizer}, False),
      ({"label_log_prior": self.log_prior, "dequantizer": dequantizer}, True),
    ]:
      module = serving_module.ServingModule(self.label_flow, **arguments)
      self.assertEqual(CLASSIFY_LEVELS in module.signatures(), expected, arguments)

  def test_load_distribution_takes_the_context_as_the_flow_does(self):
    flow = self.flow
    distribution = saved_model_distribution.load_distribution(self.path)
    self.assertEqual(distribution.conditional_event_shape, (2,))
    state = np.random.RandomState(50)
    x = state.normal(size=[2, 4, 3]).astype(np.float32)
    for context_shape in ([2, 4, 2], [4, 2], [2, 1, 2], [2]):  # per row, or broadcast as the flow does
      with self.subTest(context_shape=context_shape):
        c = state.normal(size=context_shape).astype(np.float32)
        assert_close_relative(
          self, flow.log_prob(x, conditional_input=c), distribution.log_prob(x, conditional_input=c)
        )
    seed = tf.constant([3, 4])
    for sample_shape, context_shape in [(5, [5, 2]), (5, [2]), ([2, 3], [2, 3, 2]), ([2, 3], [3, 2])]:
      with self.subTest(sample_shape=sample_shape, context_shape=context_shape):
        c = state.normal(size=context_shape).astype(np.float32)
        samples = distribution.sample(sample_shape, seed=seed, conditional_input=c)
        self.assertEqual(samples.shape, [*np.reshape(sample_shape, [-1]), 3])
        assert_close_relative(self, flow.sample(sample_shape, seed=seed, conditional_input=c), samples)
    c = state.normal(size=[3, 2]).astype(np.float32)  # a batch of contexts: two samples under each
    samples = distribution.sample(2, seed=seed, conditional_input=c)
    self.assertEqual(samples.shape, [2, 3, 3])
    assert_close_relative(self, flow.sample(2, seed=seed, conditional_input=c), samples)
    c = state.normal(size=[5, 2]).astype(np.float32)
    self.assertNotAllClose(
      distribution.sample(5, seed=seed, conditional_input=c),
      distribution.sample(5, seed=seed, conditional_input=2 * c),
    )

  def test_load_distribution_refuses_a_missing_or_misshaped_context(self):
    distribution = saved_model_distribution.load_distribution(self.path)
    x = np.zeros([4, 3], np.float32)
    with self.assertRaisesRegex(
      ValueError, r"is conditional .* pass the context as `conditional_input` of shape `\[\.\.\., 2\]`"
    ):
      distribution.log_prob(x)
    with self.assertRaisesRegex(ValueError, "pass the context as `conditional_input`"):
      distribution.sample(2, seed=1)
    with self.assertRaisesRegex(
      ValueError, r"`conditional_input` must have shape `\[\.\.\., 2\]`.*got shape \[4, 3\]"
    ):
      distribution.log_prob(x, conditional_input=np.zeros([4, 3], np.float32))
    with self.assertRaisesRegex(ValueError, r"broadcast against those of `x` \[4\]; got shape \[3, 2\]"):
      distribution.log_prob(x, conditional_input=np.zeros([3, 2], np.float32))
    # Four contexts for one sample are a batch (the flow's rule), not a mismatch.
    self.assertEqual(
      distribution.sample(1, seed=1, conditional_input=np.zeros([4, 2], np.float32)).shape, [1, 4, 3]
    )

  def test_serving_module_refuses_a_bad_label_log_prior(self):
    uniform = np.full(NUM_CLASSES, -np.log(NUM_CLASSES))
    for flow, prior, message in [
      (export_testing.small_vector_flow(), uniform, r"needs a flow conditioned on one-hot labels.* is None"),
      (self.label_flow, uniform[:3], r"of shape \[10\] .*got shape \[3\]"),
      (self.label_flow, uniform + 1.0, r"`exp` summing to 1.*sums to 2\.718"),
      (self.label_flow, np.where(np.arange(NUM_CLASSES) == 0, np.nan, uniform), "`exp` summing to 1"),
    ]:
      with self.assertRaisesRegex(ValueError, "`label_log_prior`.*" + message):
        serving_module.ServingModule(flow, label_log_prior=prior)
    # A class with prior 0 is allowed: its `log p(y)` is -inf.
    with np.errstate(divide="ignore"):
      only_class_0 = np.log(np.eye(NUM_CLASSES)[0])
    serving_module.ServingModule(self.label_flow, label_log_prior=only_class_0)


if __name__ == "__main__":
  tf.test.main()
