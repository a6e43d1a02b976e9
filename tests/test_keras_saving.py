"""Every tf_keras save path of `FlowModel` keeps the trained flow, or refuses naming the path that does."""

import contextlib
import gc
import io
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as tfk

from tests.training_testing import TINY_MODEL
from tfp_realnvp import data, keras_model
from tfp_realnvp.flows import ImageRealNVP, RealNVP


def new_model(compile=True):
  model = keras_model.FlowModel(RealNVP.from_preset("digits", **TINY_MODEL))
  if compile:
    model.compile()
  return model


def num_parameters(variables):
  return sum(int(np.prod(variable.shape)) for variable in variables)


class FlowModelSavingTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tf.random.set_seed(1)
    cls.test = data.load("digits", "test", batch_size=99, training=False)
    cls.model = new_model()
    cls.fresh_bits_per_dim = cls.model.evaluate(cls.test, verbose=0, return_dict=True)["bits_per_dim"]
    cls.model.fit(data.load("digits", "train", batch_size=64, training=True), steps_per_epoch=5, verbose=0)
    cls.bits_per_dim = cls.model.evaluate(cls.test, verbose=0, return_dict=True)["bits_per_dim"]

  def path(self, name):
    return os.path.join(self.get_temp_dir(), name)

  def assert_same_flow(self, model):
    self.assertIsInstance(model, keras_model.FlowModel)
    self.assertLen(model.flow.variables, len(self.model.flow.variables))
    for original, copy in zip(self.model.flow.variables, model.flow.variables):
      self.assertAllEqual(original, copy)  # batch-norm running averages included
    if model.optimizer is None:
      model.compile()  # `evaluate` needs a compiled model
    bits_per_dim = model.evaluate(self.test, verbose=0, return_dict=True)["bits_per_dim"]
    self.assertAllClose(bits_per_dim, self.bits_per_dim, rtol=0, atol=1e-6)

  def test_training_moved_the_weights(self):  # so the round trips below prove something
    self.assertLess(self.bits_per_dim, self.fresh_bits_per_dim - 0.1)

  def test_weights_h5_round_trips(self):
    path = self.path("w.weights.h5")
    self.model.save_weights(path)
    restored = new_model(compile=False)
    restored.load_weights(path)
    self.assert_same_flow(restored)

  def test_legacy_h5_weights_are_refused_naming_the_formats_that_work(self):
    for path in (self.path("w.h5"), self.path("w.hdf5")):
      with self.assertRaisesRegex(ValueError, r"\.weights\.h5.*TF checkpoint"):
        self.model.save_weights(path)
      self.assertFalse(tf.io.gfile.exists(path))
      with self.assertRaisesRegex(ValueError, r"\.weights\.h5.*TF checkpoint"):
        new_model().load_weights(path)
    with self.assertRaisesRegex(ValueError, r"\.weights\.h5.*TF checkpoint"):
      self.model.save_weights(self.path("w"), save_format="h5")

  def test_a_full_h5_model_is_refused_naming_the_formats_that_work(self):
    with self.assertRaisesRegex(ValueError, r"\.keras.*SavedModel"):
      self.model.save(self.path("m.h5"))

  def test_keras_file_reloads_with_the_same_evaluate_and_optimizer_state(self):
    path = self.path("m.keras")
    self.model.save(path)
    restored = tfk.models.load_model(path)
    self.assert_same_flow(restored)
    self.assertEqual(int(restored.optimizer.iterations), int(self.model.optimizer.iterations))
    self.assertAllClose(restored.optimizer.variables[1], self.model.optimizer.variables[1])
    self.assertEqual(restored.l2_coefficient, self.model.l2_coefficient)

  @pytest.mark.slow
  def test_saved_model_reloads_with_the_same_evaluate(self):
    path = self.path("saved_model")
    self.model.save(path)
    restored = tfk.models.load_model(path)  # compiled, with a new optimizer (tf_keras keeps no state here)
    self.assert_same_flow(restored)

  def test_config_rebuilds_the_flow_and_a_flow_it_cannot_rebuild_is_refused(self):
    config = self.model.get_config()
    self.assertEqual(config["flow"]["num_filters"], TINY_MODEL["num_filters"])
    copy = keras_model.FlowModel.from_config(config)
    self.assertEqual(copy.flow.parameters, self.model.flow.parameters)
    self.assertEqual(copy.l2_coefficient, self.model.l2_coefficient)

    class CustomFlow(ImageRealNVP):
      pass

    model = keras_model.FlowModel(CustomFlow(event_shape=(8, 8, 1), num_scales=1, num_blocks=1, num_bits=4))
    model.compile()
    with self.assertRaisesRegex(NotImplementedError, r"ImageRealNVP.*CustomFlow.*save_weights"):
      model.get_config()
    with self.assertRaisesRegex(NotImplementedError, r"ImageRealNVP.*CustomFlow.*save_weights"):
      model.save(self.path("custom.keras"))

  def test_summary_and_count_params_before_and_after_fit(self):
    for model in (new_model(), self.model):
      self.assertTrue(model.built)
      trainable = num_parameters(model.flow.trainable_variables)
      self.assertEqual(num_parameters(model.trainable_weights), trainable)
      self.assertGreaterEqual(model.count_params(), num_parameters(model.flow.variables))
      lines = []
      model.summary(print_fn=lines.append)
      self.assertIn(f"Trainable params: {trainable}", "\n".join(lines))

  def test_load_weights_restores_the_optimizer_state_without_warnings(self):
    path = self.path("ckpt")
    self.model.save_weights(path)
    for compiled in (True, False):
      restored = new_model(compile=compiled)
      records = io.StringIO()
      handler = logging.StreamHandler(records)
      tf_logger = logging.getLogger("tensorflow")
      tf_logger.addHandler(handler)
      try:
        with contextlib.redirect_stderr(io.StringIO()):
          restored.load_weights(path).assert_existing_objects_matched()
          gc.collect()  # unmatched checkpoint values are reported when the load status is collected
      finally:
        tf_logger.removeHandler(handler)
      self.assertNotIn("could not be found", records.getvalue())
      self.assert_same_flow(restored)
      if compiled:
        self.assertEqual(int(restored.optimizer.iterations), int(self.model.optimizer.iterations))
        for original, copy in zip(self.model.optimizer.variables, restored.optimizer.variables):
          self.assertAllEqual(original, copy)


if __name__ == "__main__":
  tf.test.main()
