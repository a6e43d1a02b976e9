"""The discrete-image bound of an export with a dequantizer (`discrete_bits_per_dim`): equal to
`dequantization.importance_weighted_bits_per_dim` in a fresh process (Python and TF1 loaders) and through the C
program, for perturbed flows and variational dequantizers; its seed and `K`; bad inputs; `load_distribution`;
`checkpoints.restore_run` and `export_workdir` of a variational run with weight averaging."""

import dataclasses
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

# The module, not its classes: pytest would collect them here.
from tests import export_testing, workdir_testing
from tests.bijector_testing import perturb
from tests.export_testing import MAX_NUM_SAMPLES, NUM_CLASSES, assert_close_relative, one_hot
from tests.training_testing import short_config
from tests.workdir_testing import assert_checkpoint_does_not_fit, checkpoint_values_by_name, write_workdir
from tfp_realnvp import RealNVP, data, dequantization
from tfp_realnvp.serving import export, saved_model_distribution, serving_module
from tfp_realnvp.training import checkpoints, flow_builder, train_lib

SIGNATURE = serving_module.DISCRETE_BITS_PER_DIM_SIGNATURE_NAME
SEED = np.array([3, 4], np.int32)
OTHER_SEED = np.array([3, 5], np.int32)
EVENT_SHAPE = (8, 8, 1)
NUM_DIMS = math.prod(EVENT_SHAPE)


def pixel_levels(num_rows, seed):
  """Integer 4-bit levels `[num_rows, 8, 8, 1]`, both ends of `[0, 16)` included."""
  levels = np.random.RandomState(seed).randint(0, 16, [num_rows, *EVENT_SHAPE]).astype(np.float32)
  levels[0, 0, :2, 0] = [0.0, 15.0]
  return levels


def conditional_image_flow():
  """The digits preset conditioned on one-hot labels, small, with moved batch-norm averages and perturbed."""
  return export_testing.moved_and_perturbed(
    RealNVP.from_preset(
      "digits", **{**export_testing.IMAGE_OVERRIDES, "num_scales": 1}, conditional_event_shape=(NUM_CLASSES,)
    )
  )


def perturbed_dequantizer(seed):
  """A small `VariationalDequantizer` of the digits' 4-bit 8x8 images whose couplings are not the identity."""
  dequantizer = dequantization.VariationalDequantizer(EVENT_SHAPE, 4, num_couplings=2, hidden_units=(16,))
  perturb(dequantizer, stddev=0.1, seed=seed)
  return dequantizer


def uniform_noise(num_rows, seed):
  """The first of the `K` noises `importance_weighted_bits_per_dim` draws for `num_rows` rows and `seed`."""
  return tf.random.stateless_uniform([1, num_rows, *EVENT_SHAPE], seed)[0].numpy()


def bound(flow, dequantizer, levels, num_samples, seed, conditional_input=None):
  return dequantization.importance_weighted_bits_per_dim(
    flow, dequantizer, levels, num_samples, tf.constant(seed), conditional_input=conditional_input
  ).numpy()


class DiscreteBoundExports:
  """Mixin for a `WorkspaceTestCase`: `export_models` in `setUpClass`."""

  @classmethod
  def export_models(cls, names=("variational", "uniform", "conditional")):
    """Builds an image flow with a variational and with a uniform dequantizer and a conditional image flow
    with a variational one (`cls.models`), and exports those of `names` and a vector flow without a
    dequantizer (`cls.paths`); `cls.levels` and `cls.bad_levels` to score, `cls.contexts` for them."""
    image_flow = export_testing.small_image_flow(num_scales=1)
    cls.levels = pixel_levels(5, seed=20)
    cls.contexts = {"variational": None, "uniform": None, "conditional": one_hot([3, 1, 4, 1, 5])}
    cls.models = {
      "variational": (image_flow, perturbed_dequantizer(seed=1)),
      "uniform": (image_flow, dequantization.UniformDequantizer(EVENT_SHAPE)),
      "conditional": (conditional_image_flow(), perturbed_dequantizer(seed=2)),
    }
    base = os.path.join(cls.workspace, "exports")
    cls.paths = {
      model: export.export_saved_model(
        flow, base, model, max_num_samples=MAX_NUM_SAMPLES, dequantizer=dequantizer
      )
      for model, (flow, dequantizer) in cls.models.items()
      if model in names
    }
    cls.paths["no_dequantizer"] = export.export_saved_model(export_testing.small_vector_flow(), base)
    cls.bad_levels = {}
    for case, (index, value) in {
      "fractional": ((1, 2, 3, 0), 4.5),
      "above_range": ((2, 7, 7, 0), 16.0),
      "negative": ((3, 0, 0, 0), -1.0),
      "nan": ((4, 4, 4, 0), np.nan),
    }.items():
      cls.bad_levels[case] = cls.levels.copy()
      cls.bad_levels[case][index] = value


@pytest.mark.slow
class DiscreteBoundExportTest(DiscreteBoundExports, export_testing.LoadedExportsTestCase):
  """Exports of an image flow with a variational and with a uniform dequantizer and of a conditional image
  flow with a variational one, checked in a fresh process that imports only TensorFlow, and by the C program."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.start_c_build()
    cls.export_models()
    levels, bad_levels = cls.levels, cls.bad_levels

    def inputs(levels, num_samples, seed=SEED, **context):
      return {"levels": levels, "num_samples": np.int32(num_samples), "seed": seed, **context}

    cls.requests = {}
    for model, context in cls.contexts.items():
      extra = {} if context is None else {"conditional_input": context}
      cls.requests.update(
        {
          (model, SIGNATURE, "k1"): inputs(levels, 1, **extra),
          (model, SIGNATURE, "k5"): inputs(levels, 5, **extra),
          (model, SIGNATURE, "k5_again"): inputs(levels, 5, **extra),
          (model, SIGNATURE, "k5_other_seed"): inputs(levels, 5, OTHER_SEED, **extra),
          (model, SIGNATURE, "at_max"): inputs(levels, MAX_NUM_SAMPLES, **extra),
          (model, SIGNATURE, "empty"): inputs(levels[:0], 5, **{k: v[:0] for k, v in extra.items()}),
        }
      )
    cls.requests.update(
      {
        ("variational", SIGNATURE, "k0"): inputs(levels, 0),
        ("variational", SIGNATURE, "above_max"): inputs(levels, MAX_NUM_SAMPLES + 1),
        **{("variational", SIGNATURE, case): inputs(bad, 1) for case, bad in bad_levels.items()},
        ("conditional", SIGNATURE, "fewer_contexts"): inputs(
          levels, 1, conditional_input=cls.contexts["conditional"][:4]
        ),
        # The continuous density of `levels + u` for the noise `u` that K = 1 and SEED draw.
        ("uniform", "log_prob", "dequantized"): {
          "x": data.dequantize(levels, uniform_noise(5, SEED)).numpy()
        },
      }
    )
    loader = cls.start_loader(cls.requests, {model: cls.paths[model] for model in cls.models})

    cls.expected = {}
    for model, (flow, dequantizer) in cls.models.items():
      context = cls.contexts[model]
      for case, num_samples, seed in [
        ("k1", 1, SEED),
        ("k5", 5, SEED),
        ("k5_other_seed", 5, OTHER_SEED),
        ("at_max", MAX_NUM_SAMPLES, SEED),
      ]:
        cls.expected[(model, case)] = bound(flow, dequantizer, levels, num_samples, seed, context)

    if cls.finish_c_build():
      for name, array in {
        "levels": levels,
        "fractional": bad_levels["fractional"],
        "contexts": cls.contexts["conditional"],
      }.items():
        np.save(os.path.join(cls.workspace, f"{name}.npy"), array)
      requests = {
        "variational": [
          [SIGNATURE, "levels=levels.npy", "num_samples=5", "seed=3,4"],
          [SIGNATURE, "levels=fractional.npy", "num_samples=1", "seed=3,4"],
          [SIGNATURE, "levels=levels.npy", f"num_samples={MAX_NUM_SAMPLES + 1}", "seed=3,4"],
        ],
        "conditional": [
          [SIGNATURE, "levels=levels.npy", "conditional_input=contexts.npy", "num_samples=5", "seed=3,4"]
        ],
      }
      cls.c_runs = {model: cls.run_c_program(cls.paths[model], runs) for model, runs in requests.items()}
    cls.finish_loader(loader)

  def test_loader_process_imported_neither_tfp_realnvp_nor_tfp(self):
    self.assertEqual(self.loader_report["modules"], [])

  def test_the_signature_has_the_documented_names_dtypes_and_shapes(self):
    image = [-1, *EVENT_SHAPE]
    for model in self.models:
      with self.subTest(model=model):
        definitions = export_testing.signature_defs(self.paths[model])
        self.assertEqual(
          {name for name in definitions if not name.startswith("__")},
          {*serving_module.SIGNATURE_NAMES, SIGNATURE},
        )
        inputs = {"levels": ("float32", image), "num_samples": ("int32", []), "seed": ("int32", [2])}
        if model == "conditional":
          inputs["conditional_input"] = ("float32", [-1, NUM_CLASSES])
        definition = definitions[SIGNATURE]
        self.assertEqual(export_testing.tensor_table(definition.inputs), inputs)
        self.assertEqual(
          export_testing.tensor_table(definition.outputs),
          {"bits_per_dim": ("float32", [-1]), "log_prob": ("float32", [-1])},
        )
        self.assertEqual(definition.method_name, "tensorflow/serving/predict")
    # Without a dequantizer there is no such signature.
    definitions = export_testing.signature_defs(self.paths["no_dequantizer"])
    self.assertNotIn(SIGNATURE, definitions)

  def test_the_bound_equals_the_library_for_k1_and_k5_in_both_loaders(self):
    for loader in ("tf2", "tf1"):
      for (model, case), expected in self.expected.items():
        with self.subTest(loader=loader, model=model, case=case):
          outputs = self.loader_result(loader, model, SIGNATURE, case)
          self.assertEqual(set(outputs), {"bits_per_dim", "log_prob"})
          assert_close_relative(self, expected, outputs["bits_per_dim"])
          # The discrete log-likelihood bound in nats, `-bits_per_dim * D ln 2`.
          assert_close_relative(self, -expected * NUM_DIMS * math.log(2.0), outputs["log_prob"])
          self.assertTrue(np.all(np.isfinite(outputs["bits_per_dim"])))

  def test_the_same_seed_gives_the_same_bound_and_another_seed_or_k_another(self):
    for model in self.models:
      with self.subTest(model=model):
        k5 = self.loader_result("tf1", model, SIGNATURE, "k5")["bits_per_dim"]
        self.assertAllEqual(k5, self.loader_result("tf2", model, SIGNATURE, "k5_again")["bits_per_dim"])
        self.assertAllEqual(k5, self.loader_result("tf1", model, SIGNATURE, "k5_again")["bits_per_dim"])
        other = self.loader_result("tf1", model, SIGNATURE, "k5_other_seed")["bits_per_dim"]
        self.assertTrue(np.all(np.abs(k5 - other) > 1e-5), (k5, other))
        k1 = self.loader_result("tf1", model, SIGNATURE, "k1")["bits_per_dim"]
        self.assertTrue(np.all(np.abs(k5 - k1) > 1e-5), (k5, k1))

  def test_k1_with_a_uniform_dequantizer_is_the_continuous_bits_per_dim_of_the_seeds_noise(self):
    flow, _ = self.models["uniform"]
    x = data.dequantize(self.levels, uniform_noise(5, SEED))
    continuous = flow.bits_per_dim(x).numpy()
    for loader in ("tf2", "tf1"):
      with self.subTest(loader=loader):
        discrete = self.loader_result(loader, "uniform", SIGNATURE, "k1")["bits_per_dim"]
        assert_close_relative(self, continuous, discrete)
        exported_continuous = self.loader_result(loader, "uniform", "log_prob", "dequantized")["bits_per_dim"]
        assert_close_relative(self, exported_continuous, discrete)
    # The learned dequantizer's `q(u | v)` is not uniform: its bound differs for the same flow and noise.
    variational = self.loader_result("tf1", "variational", SIGNATURE, "k1")["bits_per_dim"]
    self.assertTrue(np.all(np.abs(variational - continuous) > 1e-3), (variational, continuous))

  def test_an_empty_batch_gives_empty_outputs(self):
    for model in self.models:
      outputs = self.loader_result("tf1", model, SIGNATURE, "empty")
      self.assertEqual(outputs["bits_per_dim"].shape, (0,))
      self.assertEqual(outputs["log_prob"].shape, (0,))

  def test_bad_inputs_are_errors_naming_them_in_both_loaders(self):
    for loader in ("tf2", "tf1"):
      for model, case, message in [
        ("variational", "k0", "`num_samples` (K) must be at least 1"),
        (
          "variational",
          "above_max",
          f"`num_samples` must be at most `max_num_samples`, set at export to {MAX_NUM_SAMPLES}",
        ),
        *[
          ("variational", case, "`levels` must be integer pixel levels in [0, 15] (`num_bits=4`)")
          for case in self.bad_levels
        ],
        (
          "conditional",
          "fewer_contexts",
          "`conditional_input` must have one row (context) per row of `levels`",
        ),
      ]:
        with self.subTest(loader=loader, case=case):
          error = self.loader_error(loader, model, SIGNATURE, case)
          self.assertIn("InvalidArgumentError", error)
          self.assertIn(message, error)

  def test_c_program_matches_python_and_refuses_bad_requests(self):
    returncode, results = self.c_results_of(self.c_runs["variational"], 3)
    self.assertEqual(returncode, 1)  # the two bad requests fail, the program does not
    signature, outputs = results[0]
    self.assertEqual(signature, SIGNATURE)
    expected = self.expected[("variational", "k5")]
    assert_close_relative(self, expected, outputs["bits_per_dim"])
    assert_close_relative(self, -expected * NUM_DIMS * math.log(2.0), outputs["log_prob"])
    self.assertIn("`levels` must be integer pixel levels in [0, 15]", results[1][1])
    self.assertIn("`num_samples` must be at most `max_num_samples`", results[2][1])
    returncode, results = self.c_results_of(self.c_runs["conditional"], 1)
    self.assertEqual(returncode, 0)
    assert_close_relative(self, self.expected[("conditional", "k5")], results[0][1]["bits_per_dim"])


@pytest.mark.slow
class InProcessDiscreteBoundTest(DiscreteBoundExports, export_testing.WorkspaceTestCase):
  """The same exports loaded back by `load_distribution` in this process: its `discrete_bits_per_dim` is the
  library's bound. (`DiscreteBoundExportTest` loads them in loaders without this package.)"""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.export_models(names=("variational", "conditional"))
    cls.expected = {
      (model, "k5"): bound(*cls.models[model], cls.levels, 5, SEED, cls.contexts[model])
      for model in ("variational", "conditional")
    }

  def test_load_distribution_gives_the_bound_for_any_batch_shape(self):
    distribution = saved_model_distribution.load_distribution(self.paths["variational"])
    seed = tf.constant(SEED)
    expected = self.expected[("variational", "k5")]
    assert_close_relative(self, expected, distribution.discrete_bits_per_dim(self.levels, 5, seed))
    # The rows go to the signature flattened, so `[1, 5, ...]` draws as the batch of 5 does.
    batched = distribution.discrete_bits_per_dim(self.levels[np.newaxis], 5, seed)
    self.assertEqual(batched.shape, [1, 5])
    assert_close_relative(self, expected, batched[0])
    # The continuous `log_prob` of the same levels is another figure.
    self.assertNotAllClose(
      expected, -distribution.log_prob(self.levels) / (NUM_DIMS * math.log(2.0)), rtol=1e-3
    )

  def test_load_distribution_takes_the_context_as_log_prob_does(self):
    flow, dequantizer = self.models["conditional"]
    distribution = saved_model_distribution.load_distribution(self.paths["conditional"])
    contexts = self.contexts["conditional"]
    seed = tf.constant(SEED)
    assert_close_relative(
      self,
      self.expected[("conditional", "k5")],
      distribution.discrete_bits_per_dim(self.levels, 5, seed, conditional_input=contexts),
    )
    # One context for every row, broadcast as for `log_prob`.
    expected = bound(flow, dequantizer, self.levels, 5, SEED, np.tile(contexts[2:3], [5, 1]))
    assert_close_relative(
      self, expected, distribution.discrete_bits_per_dim(self.levels, 5, seed, conditional_input=contexts[2])
    )
    with self.assertRaisesRegex(ValueError, "pass the context as `conditional_input`"):
      distribution.discrete_bits_per_dim(self.levels, 5, seed)
    with self.assertRaisesRegex(
      ValueError, r"broadcast against those of `levels` \[5\]; got shape \[3, 10\]"
    ):
      distribution.discrete_bits_per_dim(self.levels, 5, seed, conditional_input=contexts[:3])

  def test_load_distribution_refuses_bad_arguments_naming_them(self):
    distribution = saved_model_distribution.load_distribution(self.paths["variational"])
    seed = tf.constant(SEED)
    for num_samples in (0, -1, 2.5, True):
      with self.assertRaisesRegex(
        ValueError, rf"`num_samples` must be a positive integer; got {num_samples}"
      ):
        distribution.discrete_bits_per_dim(self.levels, num_samples, seed)
    with self.assertRaisesRegex(
      ValueError, r"`levels` must have shape `\[\.\.\., 8, 8, 1\]`.*got shape \[5, 8, 8\]"
    ):
      distribution.discrete_bits_per_dim(self.levels[..., 0], 5, seed)
    with self.assertRaisesRegex(ValueError, "is unconditional: it takes no `conditional_input`"):
      distribution.discrete_bits_per_dim(self.levels, 5, seed, conditional_input=one_hot([0] * 5))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "at most `max_num_samples`"):
      distribution.discrete_bits_per_dim(self.levels, MAX_NUM_SAMPLES + 1, seed)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`levels` must be integer pixel levels"):
      distribution.discrete_bits_per_dim(self.bad_levels["fractional"], 1, seed)
    without = saved_model_distribution.load_distribution(self.paths["no_dequantizer"])
    with self.assertRaisesRegex(
      ValueError, r"has no `discrete_bits_per_dim` signature: export the flow with its"
    ):
      without.discrete_bits_per_dim(np.zeros([2, 3], np.float32), 1, seed)

  def test_serving_module_refuses_a_dequantizer_that_does_not_fit_the_flow(self):
    image_flow, _ = self.models["variational"]
    for flow, dequantizer, message in [
      (
        export_testing.small_vector_flow(),
        dequantization.UniformDequantizer((3,)),
        r"needs a flow of pixel data \(`num_bits` not None\); this flow's `num_bits` is None",
      ),
      (
        image_flow,
        dequantization.UniformDequantizer((4, 4, 1)),
        r"events of shape \(8, 8, 1\); got one of event shape \(4, 4, 1\)",
      ),
      (
        image_flow,
        dequantization.VariationalDequantizer(EVENT_SHAPE, 5, num_couplings=1, hidden_units=(4,)),
        "for the flow's 4-bit pixels; got one for 5-bit pixels",
      ),
    ]:
      with self.subTest(message=message), self.assertRaisesRegex(ValueError, "^`dequantizer` .*" + message):
        serving_module.ServingModule(flow, dequantizer=dequantizer)


# A tiny `dequantization="variational"` run with weight averaging, 4 steps.
VARIATIONAL_RUN = short_config(
  4, dequantization="variational", ema_decay=0.9, num_samples=1, num_importance_samples=1
)


@pytest.mark.slow
class WorkdirExportTest(export_testing.WorkspaceTestCase):
  """A tiny `dequantization="variational"` run with weight averaging: what `restore_run` restores and
  `export_workdir` exports, against the checkpoint's saved values and the run's own evaluation."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(cls.workspace, "run")
    cls.config = VARIATIONAL_RUN
    train_lib.train_and_evaluate(cls.config, cls.workdir)
    cls.checkpoint = tf.train.latest_checkpoint(checkpoints.checkpoint_dir(cls.workdir))
    cls.saved = checkpoint_values_by_name(cls.checkpoint)
    cls.export = export.export_workdir(
      cls.workdir, os.path.join(cls.workspace, "exports"), max_num_samples=MAX_NUM_SAMPLES
    )

  def assert_holds_the_runs_evaluation_weights(self, values, flow, dequantizer):
    """`values` `{variable name: value}` holds the averages of `flow`'s trainable weights, its other variables
    and `dequantizer`'s trained weights, as the run's checkpoint saved them."""
    averaged = {variable.name.split(":")[0] for variable in flow.trainable_variables}
    names = {variable.name.split(":")[0] for variable in (*flow.variables, *dequantizer.variables)}
    self.assertEqual(set(values), names)
    for name, value in values.items():
      self.assertAllEqual(value, self.saved[f"{name}/ExponentialMovingAverage" if name in averaged else name])
    # The averages are not the training weights, and the dequantizer trained: its zero-initialized output
    # layers are no longer 0.
    self.assertTrue(
      any(np.any(self.saved[f"{n}/ExponentialMovingAverage"] != self.saved[n]) for n in averaged)
    )
    initial = dequantization.make_dequantizer("variational", EVENT_SHAPE, 4).variables
    zero_initialized = [variable.name.split(":")[0] for variable in initial if not np.any(variable.numpy())]
    self.assertNotEmpty(zero_initialized)
    for name in zero_initialized:
      self.assertTrue(np.any(values[name]), name)

  def test_restore_run_gives_the_averaged_flow_and_the_trained_dequantizer(self):
    run = checkpoints.restore_run(self.workdir)
    self.assertEqual(run.checkpoint, self.checkpoint)
    self.assertIsInstance(run.dequantizer, dequantization.VariationalDequantizer)
    values = {v.name.split(":")[0]: v.numpy() for v in (*run.flow.variables, *run.dequantizer.variables)}
    self.assert_holds_the_runs_evaluation_weights(values, run.flow, run.dequantizer)
    flow, checkpoint = checkpoints.restore_flow(self.workdir)  # the same flow, alone
    self.assertEqual(checkpoint, self.checkpoint)
    for restored, alone in zip(run.flow.variables, flow.variables):
      self.assertAllEqual(restored, alone)

  def test_the_export_holds_the_averaged_flow_and_the_trained_dequantizer(self):
    self.assertEqual(self.export.checkpoint, self.checkpoint)
    exported = checkpoint_values_by_name(os.path.join(self.export.path, "variables", "variables"))
    run = checkpoints.restore_run(self.workdir)
    self.assert_holds_the_runs_evaluation_weights(exported, run.flow, run.dequantizer)

  def test_the_exports_bound_is_the_runs_own_evaluation(self):
    trainer = train_lib.build_trainer(self.config)
    trainer.restore(self.checkpoint)
    levels = pixel_levels(6, seed=30)
    signature = tf.saved_model.load(self.export.path).signatures[SIGNATURE]

    def exported(num_samples):
      outputs = signature(
        levels=tf.constant(levels), num_samples=tf.constant(num_samples), seed=tf.constant(SEED)
      )
      return outputs["bits_per_dim"].numpy()

    # K = 1: the run's evaluation of the dequantized images `levels + noise` for the noise the seed draws.
    images = data.dequantize(levels, uniform_noise(6, SEED))
    metrics = trainer.evaluate_metrics(tf.data.Dataset.from_tensors(images))
    self.assertAllClose(metrics["bits_per_dim"], np.mean(exported(1)), rtol=1e-5, atol=0.0)
    # K = 5: the library's bound with the run's evaluation weights and dequantizer.
    with trainer.evaluation_weights():
      expected = bound(trainer.flow, trainer.dequantizer, levels, 5, SEED)
    assert_close_relative(self, expected, exported(5))


class RestoreRunTest(export_testing.WorkspaceTestCase):
  """`restore_run` of workdirs written by hand: one-line errors, and a config.json older than dequantization."""

  def test_restore_run_refuses_a_checkpoint_whose_dequantizer_is_not_the_configs(self):
    flow_only = dataclasses.replace(VARIATIONAL_RUN, ema_decay=0.0)
    larger = dequantization.VariationalDequantizer(EVENT_SHAPE, 4, num_couplings=5)
    for name, config, objects, message in [
      (
        "edited_to_uniform",
        dataclasses.replace(flow_only, dequantization="uniform"),
        {"dequantizer": perturbed_dequantizer(seed=3)},
        r"the checkpoint holds a learned dequantizer, but the config says `dequantization='uniform'`$",
      ),
      ("no_dequantizer", flow_only, {}, r": \S"),
      (
        "larger_dequantizer",
        flow_only,
        {"dequantizer": larger},
        r"holds \d+ variable\(s\) of a larger dequantizer",
      ),
    ]:
      with self.subTest(name=name):
        workdir = os.path.join(self.workspace, name)
        saved = write_workdir(workdir, config, flow=flow_builder.build_flow(config), **objects)
        assert_checkpoint_does_not_fit(self, checkpoints.restore_run, workdir, saved, f".*{message}")

  def test_a_config_json_older_than_dequantization_restores_a_uniform_dequantizer(self):
    workdir = os.path.join(self.workspace, "old")
    shutil.copytree(workdir_testing.OLD_DIGITS_WORKDIR, workdir)
    run = checkpoints.restore_run(workdir)
    self.assertIsInstance(run.dequantizer, dequantization.UniformDequantizer)
    self.assertEqual(run.dequantizer.event_shape, EVENT_SHAPE)


if __name__ == "__main__":
  tf.test.main()
