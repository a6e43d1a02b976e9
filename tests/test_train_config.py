"""The pieces around the training loop: config and its flags, optimizer and schedule (log lines, sample grids
and summaries: `test_reporting.py`)."""

import dataclasses
import os

import pytest
import tensorflow as tf
import tf_keras as tfk
from absl import flags
from absl.testing import parameterized

import train
from tests.training_testing import run_script
from tfp_realnvp.training import configs, optimization

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed_flags(*argv):
  """`train.py`'s flags, parsed from `argv`, in a `FlagValues` of their own."""
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values(["train.py", *argv])
  return flag_values


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
  def test_json_round_trip(self):
    config = dataclasses.replace(configs.get_config(), strategy="mirrored", model_overrides={"num_blocks": 3})
    self.assertEqual(configs.from_json(configs.to_json(config)), config)

  @parameterized.named_parameters(
    (
      "unknown",
      '{"num_layers": 3}',
      r"^runs/x/config\.json must hold exactly the fields of TrainConfig; it has "
      r"unknown key\(s\) num_layers and missing key\(s\) batch_size, ",
    ),
    (
      "not_json",
      "{",
      r"^runs/x/config\.json must be the JSON that configs\.to_json writes; it is not JSON: ",
    ),
    (
      "not_an_object",
      "[1]",
      r"^runs/x/config\.json must be a JSON object of TrainConfig fields; got list\.$",
    ),
  )
  def test_from_json_names_the_file_and_the_keys(self, text, message):
    with self.assertRaisesRegex(configs.ConfigError, message):
      configs.from_json(text, source="runs/x/config.json")

  def test_defaults_are_the_paper_recipe(self):
    for config in (configs.get_config(), configs.get_config("cifar10")):
      config.validate()
      self.assertEqual(config.learning_rate, 1e-3)
      self.assertEqual(config.l2_coefficient, 5e-5)
      self.assertEqual(config.clip_global_norm, 100.0)
      self.assertEqual(config.batch_size, 64)
      self.assertEqual(config.sample_temperatures, (1.0, 0.7))
    self.assertEqual(configs.get_config().dataset, "digits")
    cifar10 = configs.get_config("cifar10")
    self.assertEqual(
      (cifar10.dataset, cifar10.model_overrides, cifar10.learning_rate_decay), ("cifar10", {}, "constant")
    )

  def test_every_dataset_gets_the_options_chosen_on_the_digits_validation_split(self):
    options = ("logit_alpha", "dequantization", "ema_decay", "num_importance_samples")
    digits, cifar10 = configs.get_config(), configs.get_config("cifar10")
    # `logit_alpha=None`: the digits preset's 0 (box-exact); the cifar10 preset's would be the paper's 0.05.
    self.assertEqual([getattr(digits, name) for name in options], [None, "variational", 0.99, 100])
    self.assertEqual([getattr(cifar10, name) for name in options], [0.0, "variational", 0.999, 100])
    self.assertEqual(configs.get_config("mnist").dequantization, "variational")
    # The paper's recipe is three flags away.
    paper = train.config_from_flags(
      parsed_flags("--dataset=cifar10", "--logit_alpha=0.05", "--dequantization=uniform", "--ema_decay=0")
    )
    paper.validate()
    self.assertEqual(
      paper, dataclasses.replace(cifar10, logit_alpha=0.05, dequantization="uniform", ema_decay=0.0)
    )

  @parameterized.named_parameters(
    ("batch_size", dict(batch_size=0), r"`batch_size` must be an integer >= 1; got 0\."),
    ("num_train_steps", dict(num_train_steps=2.5), r"`num_train_steps` must be an integer >= 1; got 2\.5\."),
    ("eval_every_steps", dict(eval_every_steps=-1), r"`eval_every_steps` must be an integer >= 0; got -1\."),
    ("image_size", dict(image_size=0), r"`image_size` must be a positive integer or None; got 0\."),
    ("learning_rate", dict(learning_rate=0.0), r"`learning_rate` must be > 0; got 0\.0\."),
    ("decay", dict(learning_rate_decay="linear"), r"`learning_rate_decay` must be one of cosine, constant"),
    ("temperatures", dict(sample_temperatures=()), r"`sample_temperatures` must be one or more positive"),
    ("model_overrides", dict(model_overrides=["dropout"]), r"`model_overrides` must be a dict"),
    ("logit_alpha", dict(logit_alpha=0.5), r"`logit_alpha` must be None or in \[0, 0\.5\); got 0\.5\."),
    ("ema_decay", dict(ema_decay=1.0), r"`ema_decay` must be in \[0, 1\) \(0: off\); got 1\.0\."),
  )
  def test_validate_names_the_setting(self, changes, message):
    with self.assertRaisesRegex(configs.ConfigError, message):
      dataclasses.replace(configs.get_config(), **changes).validate()


class FlagsTest(tf.test.TestCase, parameterized.TestCase):
  def test_every_config_field_has_a_flag_with_help(self):
    flag_values = parsed_flags()
    names = {
      train.FLAG_NAMES.get(field.name, field.name) for field in dataclasses.fields(configs.TrainConfig)
    }
    self.assertEqual(
      set(flag_values), names | {"workdir", "allow_config_change", "evaluate_only", "max_importance_images"}
    )
    self.assertTrue({"tpu", "model", "dataset", "compute_dtype", "batch_size"} <= names)
    for name in names:
      self.assertNotEmpty(flag_values[name].help, name)
    self.assertIn(
      f"`{configs.TrainConfig().dequantization}` (the default)", flag_values["dequantization"].help
    )

  def test_unset_flags_keep_the_datasets_defaults(self):
    self.assertEqual(train.config_from_flags(parsed_flags()), configs.get_config())
    self.assertEqual(
      train.config_from_flags(parsed_flags("--dataset=cifar10")), configs.get_config("cifar10")
    )
    config = train.config_from_flags(parsed_flags("--dataset=mnist", "--batch_size=32"))
    self.assertEqual(config, dataclasses.replace(configs.get_config("mnist"), batch_size=32))

  def test_flags_set_the_config(self):
    config = train.config_from_flags(parsed_flags("--compute_dtype=bfloat16", "--jit_compile"))
    self.assertEqual((config.compute_dtype, config.jit_compile), ("bfloat16", True))
    self.assertEqual(configs.from_json(configs.to_json(config)), config)

  def test_flag_values_are_typed(self):
    config = train.config_from_flags(
      parsed_flags(
        "--tpu=grpc://10.0.0.2:8470",
        "--learning_rate=3e-4",
        "--num_train_steps=10",
        "--nojit_compile",
        "--image_size=16",
        "--learning_rate_decay=constant",
        "--sample_temperatures=1,0.5,0.25",
        "--model=dropout=0.3",
        "--model=num_blocks=4",
        "--model=hidden_units=[32,32]",
        "--model=compute_dtype=bfloat16",
        "--model=batch_norm=false",
        '--model=name="7"',
      )
    )
    self.assertEqual(config.tpu_address, "grpc://10.0.0.2:8470")
    self.assertEqual((config.learning_rate, config.num_train_steps, config.image_size), (3e-4, 10, 16))
    self.assertIs(config.jit_compile, False)
    self.assertEqual(config.learning_rate_decay, "constant")
    self.assertEqual(config.sample_temperatures, (1.0, 0.5, 0.25))
    overrides = dict(
      dropout=0.3, num_blocks=4, hidden_units=[32, 32], compute_dtype="bfloat16", batch_norm=False, name="7"
    )
    self.assertEqual(config.model_overrides, overrides)
    self.assertEqual(
      {k: type(v) for k, v in config.model_overrides.items()}, {k: type(v) for k, v in overrides.items()}
    )
    self.assertEqual(configs.from_json(configs.to_json(config)), config)

  def test_model_flags_update_the_datasets_overrides(self):
    base = dataclasses.replace(configs.get_config(), model_overrides={"num_blocks": 2, "dropout": 0.4})
    flag_values = parsed_flags("--model=dropout=0.1", "--model=num_filters=8")
    values = train.config_values_from_flags(base, flag_values)
    self.assertEqual(
      values, {"dataset": "digits", "model_overrides": {"num_blocks": 2, "dropout": 0.1, "num_filters": 8}}
    )

  @parameterized.named_parameters(
    (
      "model_without_value",
      "--model=dropout",
      r"flag --model=dropout: expected name=VALUE such as dropout=0\.3",
    ),
    (
      "model_bad_json",
      "--model=hidden_units=[32,32",
      r"VALUE of `hidden_units` must be JSON .*; got '\[32,32'",
    ),
    (
      "model_python_literal",
      "--model=batch_norm=False",
      r"VALUE of `batch_norm` must be JSON .*; got 'False'",
    ),
    ("temperatures", "--sample_temperatures=1,hot", r"expected comma-separated numbers such as 1\.0,0\.7"),
    ("compute_dtype", "--compute_dtype=int8", r"flag --compute_dtype=int8: value should be one of"),
    ("integer", "--batch_size=many", r"flag --batch_size=many: "),
  )
  def test_a_bad_value_names_the_flag(self, argument, message):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      parsed_flags(argument)

  def test_a_field_added_to_a_dataclass_gets_a_typed_flag(self):
    @dataclasses.dataclass(frozen=True)
    class Settings:
      steps: int = dataclasses.field(default=1, metadata={"help": "Steps."})
      rate: float = 0.5
      label: str | None = None
      fast: bool = False
      mode: str = dataclasses.field(default="a", metadata={"help": "Mode.", "choices": ("a", "b")})
      scales: tuple[float, ...] = (1.0,)
      extras: dict[str, object] = dataclasses.field(default_factory=dict)

    flag_values = flags.FlagValues()
    train.define_config_flags(Settings, flag_values)
    self.assertEqual(set(flag_values), {field.name for field in dataclasses.fields(Settings)})
    self.assertEqual(flag_values["steps"].help, "Steps.")
    flag_values(
      ["prog", "--steps=3", "--rate=2", "--label=x", "--fast", "--mode=b", "--scales=2,3", "--extras=k=[1]"]
    )
    values = train.config_values_from_flags(Settings(extras={"j": 0}), flag_values)
    expected = dict(
      steps=3, rate=2.0, label="x", fast=True, mode="b", scales=(2.0, 3.0), extras={"j": 0, "k": [1]}
    )
    self.assertEqual(values, expected)
    self.assertEqual(dataclasses.replace(Settings(), **values).rate, 2.0)
    flag_values.unparse_flags()
    flag_values(["prog", "--rate=2"])
    self.assertEqual(train.config_values_from_flags(Settings(), flag_values), {"rate": 2.0})

  def test_a_field_type_without_a_flag_is_refused(self):
    @dataclasses.dataclass
    class Settings:
      shape: list = dataclasses.field(default_factory=list)

    with self.assertRaisesRegex(
      TypeError, r"Field `Settings.shape` has type <class 'list'>, which has no flag"
    ):
      train.define_config_flags(Settings, flags.FlagValues())

  @parameterized.named_parameters(
    ("model", "--model=dropout=0.3.1", "error: flag --model=dropout=0.3.1: VALUE of `dropout` must be JSON"),
    ("unknown_flag", "--num_steps=3", "error: Unknown command line flag 'num_steps'"),
  )
  @pytest.mark.slow
  def test_the_command_line_prints_one_error_line_for_a_bad_flag(self, argument, message):
    completed = run_script("train.py", argument, timeout=120)
    self.assertEqual(completed.returncode, 2)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    self.assertLen(errors, 1)
    self.assertStartsWith(errors[0], message)
    self.assertNotIn("Traceback", completed.stderr)
    self.assertEqual(completed.stdout, "")


class OptimizationTest(tf.test.TestCase):
  def test_warmup_then_cosine_to_zero(self):
    schedule = optimization.learning_rate_schedule(1e-3, 1000, warmup_steps=100, decay="cosine")
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    self.assertAllClose(rates, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)

  def test_warmup_longer_than_the_run_only_warms_up(self):
    schedule = optimization.learning_rate_schedule(1e-3, 40, warmup_steps=100, decay="cosine")
    self.assertAllClose([float(schedule(step)) for step in (0, 20, 40)], [0.0, 2e-4, 4e-4])

  def test_constant(self):
    self.assertEqual(optimization.learning_rate_schedule(1e-3, 1000), 1e-3)
    schedule = optimization.learning_rate_schedule(1e-3, 1000, warmup_steps=10)
    self.assertAllClose([float(schedule(step)) for step in (5, 10, 500, 10**6)], [5e-4, 1e-3, 1e-3, 1e-3])

  def test_adam_clips_by_global_norm(self):
    variable = tf.Variable([0.0, 0.0])
    optimizer = optimization.adam(learning_rate=0.1, clip_global_norm=100.0)
    self.assertEqual(optimizer.global_clipnorm, 100.0)
    optimizer.apply_gradients([(tf.constant([1.0, -1.0]), variable)])
    self.assertAllClose(variable, [-0.1, 0.1])  # Adam's first step is `learning_rate` times the sign

  def test_fused_adam_takes_the_steps_of_tf_keras_adam(self):
    # A schedule and clipping that binds: the fused update must see the same rate, step and clipped gradient.
    schedule = optimization.learning_rate_schedule(0.05, 10, warmup_steps=2, decay="cosine")
    shapes = ([3, 3, 2, 4], [4], [5])
    initial = [tf.random.stateless_normal(shape, seed=[i, 1]) for i, shape in enumerate(shapes)]
    fused_variables = [tf.Variable(value) for value in initial]
    keras_variables = [tf.Variable(value) for value in initial]
    fused = optimization.adam(learning_rate=schedule, clip_global_norm=1.0)
    self.assertIsInstance(fused, optimization.FusedAdam)
    keras = tfk.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-8, global_clipnorm=1.0)
    for step in range(6):
      gradients = [
        3.0 * tf.random.stateless_normal(shape, seed=[i, 10 + step]) for i, shape in enumerate(shapes)
      ]
      fused.apply_gradients(zip(gradients, fused_variables))
      keras.apply_gradients(zip(gradients, keras_variables))
      for got, expected in zip(fused_variables, keras_variables):
        self.assertAllClose(got, expected, rtol=1e-5, atol=1e-6)
    # The variables moved, and the moments are the same variables under the same names: checkpoints move.
    self.assertGreater(float(tf.reduce_max(tf.abs(fused_variables[0] - initial[0]))), 0.05)
    self.assertEqual([v.name for v in fused.variables], [v.name for v in keras.variables])
    for got, expected in zip(fused.variables, keras.variables):
      self.assertAllClose(got, expected, rtol=1e-5, atol=1e-6)
    path = tf.train.Checkpoint(optimizer=fused).save(os.path.join(self.get_temp_dir(), "ckpt"))
    restored = tfk.optimizers.Adam(schedule)
    restored.build(keras_variables)
    tf.train.Checkpoint(optimizer=restored).restore(path).assert_consumed()
    for got, expected in zip(restored.variables, fused.variables):
      self.assertAllEqual(got, expected)

  def test_fused_adam_is_a_serializable_keras_optimizer(self):
    optimizer = optimization.adam(learning_rate=0.01)
    restored = tfk.optimizers.deserialize(tfk.optimizers.serialize(optimizer))
    self.assertIsInstance(restored, optimization.FusedAdam)
    self.assertEqual(restored.get_config(), optimizer.get_config())

  def test_l2_penalty(self):
    variables = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    self.assertAllClose(optimization.l2_penalty(variables, 5e-5), 5e-5 * 14.0)
    self.assertEqual(float(optimization.l2_penalty([], 5e-5)), 0.0)


if __name__ == "__main__":
  tf.test.main()
