"""`FlowModel`: `model.fit` trains a flow with standard Keras callbacks."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as tfk

from tests.training_testing import TINY_MODEL
from tfp_realnvp import data, keras_model
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import configs, flow_builder


class FlowModelTest(tf.test.TestCase):
  @pytest.mark.slow
  def test_fit_lowers_the_loss_on_digits_and_checkpoints_restore(self):
    model = keras_model.FlowModel(RealNVP.from_preset("digits", **TINY_MODEL))
    model.compile()
    self.assertEqual(model.optimizer.learning_rate, 1e-3)
    self.assertEqual(model.optimizer.global_clipnorm, 100.0)
    self.assertEqual(len(model.trainable_variables), len(model.flow.trainable_variables))
    test = data.load("digits", "test", batch_size=99, training=False)
    before = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    logdir = os.path.join(self.get_temp_dir(), "keras")
    history = model.fit(
      data.load("digits", "train", batch_size=64, training=True),
      steps_per_epoch=20,
      epochs=3,
      verbose=0,
      callbacks=[
        tfk.callbacks.ModelCheckpoint(os.path.join(logdir, "ckpt"), save_weights_only=True),
        tfk.callbacks.TensorBoard(logdir),
      ],
    )
    after = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    losses = history.history["loss"]
    self.assertLess(losses[-1], losses[0] - 0.2)
    self.assertLess(after, before - 0.5)
    # The loss is bits/dim plus the (small) L2 term.
    self.assertAllClose(losses[-1], history.history["bits_per_dim"][-1], atol=0.05)
    self.assertNotEmpty(tf.io.gfile.glob(os.path.join(logdir, "train", "events.*")))

    restored = keras_model.FlowModel(RealNVP.from_preset("digits", **TINY_MODEL))
    restored.load_weights(os.path.join(logdir, "ckpt")).assert_existing_objects_matched()
    images = next(iter(test))
    self.assertAllClose(restored(images), model(images))
    for original, copy in zip(model.flow.variables, restored.flow.variables):
      self.assertAllEqual(original, copy)  # batch-norm running averages included

  def test_call_is_per_example_bits_per_dim_in_inference_mode(self):
    flow = RealNVP.from_preset("digits", **TINY_MODEL)
    model = keras_model.FlowModel(flow)
    images = np.random.default_rng(0).uniform(0, 16, size=[5, 8, 8, 1]).astype(np.float32)
    self.assertAllClose(model(images), flow.bits_per_dim(images, training=False))
    self.assertAllClose(model(images, training=True), flow.bits_per_dim(images, training=True))

  def test_from_train_config_builds_the_flow_and_l2_coefficient_of_training(self):
    config = dataclasses.replace(configs.get_config(), model_overrides=TINY_MODEL, l2_coefficient=1e-3)
    tf.random.set_seed(2)
    model = keras_model.FlowModel.from_train_config(config)
    tf.random.set_seed(2)
    flow = flow_builder.build_flow(config)
    self.assertEqual(model.l2_coefficient, 1e-3)
    self.assertEqual([v.name for v in model.flow.variables], [v.name for v in flow.variables])
    images = np.random.default_rng(0).uniform(0, 16, size=[5, 8, 8, 1]).astype(np.float32)
    self.assertAllEqual(model(images), flow.bits_per_dim(images))


if __name__ == "__main__":
  tf.test.main()
