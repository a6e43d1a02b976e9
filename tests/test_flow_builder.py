"""`build_flow`: the flow of a training config, the same for training, export and Keras, checked against its data."""

import dataclasses
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import idx_testing
from tests.fixtures import TINY_MODEL, tiny_config
from tfp_realnvp import data, networks
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import configs, flow_builder


def variable_table(flow):
  return [(variable.name, tuple(variable.shape), variable.dtype) for variable in flow.variables]


class BuildFlowTest(tf.test.TestCase, parameterized.TestCase):
  def test_the_default_config_builds_the_digits_preset(self):
    config = configs.get_config()
    tf.random.set_seed(1)
    built = flow_builder.build_flow(config)
    tf.random.set_seed(1)
    preset = RealNVP.from_preset("digits")
    self.assertEqual(variable_table(built), variable_table(preset))
    self.assertEqual((tuple(built.event_shape), built.num_bits), ((8, 8, 1), 4))
    x = np.random.default_rng(0).uniform(0, 16, size=[3, 8, 8, 1]).astype(np.float32)
    self.assertAllEqual(built.log_prob(x), preset.log_prob(x))

  def test_model_overrides_and_a_given_spec_are_used(self):
    config = tiny_config()
    spec = data.dataset_spec("digits")
    built = flow_builder.build_flow(config, spec)
    self.assertEqual(variable_table(built), variable_table(RealNVP.from_preset("digits", **TINY_MODEL)))

  def test_compute_dtype_overrides_the_preset(self):
    flow = flow_builder.build_flow(tiny_config(compute_dtype="bfloat16"))
    conditioners = [module for module in flow.submodules if isinstance(module, networks.ResNet)]
    self.assertNotEmpty(conditioners)
    self.assertEqual({conditioner.compute_dtype for conditioner in conditioners}, {tf.bfloat16})
    self.assertEqual(tf.as_dtype(flow.compute_dtype), tf.bfloat16)
    self.assertEqual(flow.dtype, tf.float32)  # variables and log-densities stay float32

  def test_logit_alpha_is_the_presets_unless_the_config_sets_it(self):
    def alpha(config):
      return flow_builder.build_flow(config).parameters["logit_alpha"]

    self.assertEqual(alpha(tiny_config()), 0.0)  # the digits preset: box-exact
    self.assertEqual(alpha(tiny_config(logit_alpha=0.05)), 0.05)
    old_run = configs.from_json(configs.to_json(tiny_config()).replace('"logit_alpha": null,', ""))
    self.assertEqual(alpha(old_run), 0.05)  # a config.json from before the field: what those runs had

  def test_image_size_sets_the_event_shape(self):
    flow = flow_builder.build_flow(tiny_config(image_size=16))
    self.assertEqual(tuple(flow.event_shape), (16, 16, 1))

  @parameterized.named_parameters(
    (
      "shape",
      dict(preset="mnist", model_overrides={}),
      r"^`preset=mnist` models 8-bit images of shape \(28, 28, 1\), but dataset 'digits' gives 4-bit images "
      r"of shape \(8, 8, 1\); set `image_size` or a matching `preset`\.$",
    ),
    (
      "num_bits",
      dict(model_overrides={**TINY_MODEL, "num_bits": 5}),
      r"^`preset=digits` models 5-bit images of shape \(8, 8, 1\), but dataset 'digits' gives 4-bit images",
    ),
    ("bad_override", dict(model_overrides={"num_scales": 0}), r"^`preset=digits` with \{'num_scales': 0\}: "),
    ("unknown_argument", dict(model_overrides={"depth": 3}), r"^`preset=digits` with \{'depth': 3\}: "),
    (
      "unknown_preset",
      dict(preset="cifar100"),
      r"^`preset=cifar100` with .*Unknown preset `name='cifar100'`",
    ),
    ("unknown_dataset", dict(dataset="no_such_dataset"), r"^Unknown dataset 'no_such_dataset'"),
  )
  def test_a_flow_that_cannot_model_the_data_is_a_one_line_config_error(self, changes, message):
    with self.assertRaisesRegex(configs.ConfigError, message) as raised:
      flow_builder.build_flow(tiny_config(**changes))
    self.assertNotIn("\n", str(raised.exception))

  def test_a_dataset_without_a_preset_needs_one(self):
    spec = dataclasses.replace(data.dataset_spec("digits"), preset=None)
    with self.assertRaisesRegex(
      configs.ConfigError, r"^Dataset 'digits' has no default preset; set `preset`\.$"
    ):
      flow_builder.build_flow(tiny_config(), spec)

  @parameterized.named_parameters(("tfds", "fashion_mnist"), ("idx_folder", "idx"))
  def test_fashion_mnist_and_28x28_idx_folders_take_the_mnist_preset(self, dataset):
    if dataset == "idx":
      folder = tempfile.mkdtemp(dir=self.get_temp_dir())
      idx_testing.write_folder(folder, num_train=10, num_test=2, image_hw=(28, 28), num_classes=10)
      dataset = data.IDX_PREFIX + folder
    config = dataclasses.replace(configs.get_config(dataset), model_overrides=TINY_MODEL, condition="label")
    self.assertIsNone(config.preset)  # the dataset's own
    tf.random.set_seed(1)
    built = flow_builder.build_flow(config)
    tf.random.set_seed(1)
    mnist = RealNVP.from_preset("mnist", **TINY_MODEL, logit_alpha=0.0, conditional_event_shape=(10,))
    self.assertEqual(variable_table(built), variable_table(mnist))
    self.assertEqual((tuple(built.event_shape), built.num_bits), ((28, 28, 1), 8))


if __name__ == "__main__":
  tf.test.main()
