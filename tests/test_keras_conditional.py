"""`FlowModel` with conditional flows (`(x, conditional_input)` batches) and flows over `R^D` (nats per dim)."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as tfk

from tests.training_testing import TINY_MODEL
from tfp_realnvp import data, keras_model
from tfp_realnvp.flows import RealNVP


def one_hot_digits(split, training, batch_size=64):
  """Digits batches `(images, one-hot labels)`."""
  dataset = data.load("digits", split, batch_size=batch_size, training=training, with_labels=True)
  return dataset.map(lambda images, labels: (images, tf.one_hot(labels, 10)))


def gaussian_pairs(num, seed):
  """`(theta, x)`: `theta ~ N(0, I_2)`, `x = A theta + 0.3 noise`; the posterior `p(theta | x)` is Gaussian."""
  rng = np.random.default_rng(seed)
  theta = rng.normal(size=[num, 2]).astype(np.float32)
  x = theta @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], np.float32)
  return theta, (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)


class ConditionalImageFlowModelTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tf.random.set_seed(0)
    cls.model = keras_model.FlowModel(
      RealNVP.from_preset("digits", conditional_event_shape=(10,), **TINY_MODEL)
    )
    cls.model.compile()
    cls.test = one_hot_digits("test", training=False, batch_size=99)
    cls.before = cls.model.evaluate(cls.test, verbose=0, return_dict=True)["bits_per_dim"]
    cls.history = cls.model.fit(
      one_hot_digits("train", training=True), steps_per_epoch=20, epochs=2, verbose=0
    )
    cls.after = cls.model.evaluate(cls.test, verbose=0, return_dict=True)["bits_per_dim"]
    cls.images, cls.contexts = next(iter(cls.test))

  def path(self, name):
    return os.path.join(self.get_temp_dir(), name)

  def test_fit_trains_on_the_context_and_evaluate_reports_bits_per_dim(self):
    self.assertEqual(sorted(self.history.history), ["bits_per_dim", "loss"])
    self.assertLess(self.after, self.before - 0.5)
    flow = self.model.flow
    self.assertAllClose(
      self.model.evaluate(self.test, verbose=0, return_dict=True)["bits_per_dim"],
      np.mean(np.concatenate([flow.bits_per_dim(x, conditional_input=c) for x, c in self.test])),
      rtol=1e-5,
    )

  def test_call_takes_the_pair_and_the_context_changes_the_answer(self):
    images, contexts = self.images, self.contexts
    flow = self.model.flow
    self.assertAllClose(self.model((images, contexts)), flow.bits_per_dim(images, conditional_input=contexts))
    other = tf.roll(contexts, shift=1, axis=-1)
    self.assertNotAllClose(self.model((images, contexts)), self.model((images, other)))

  def test_batches_and_calls_without_a_context_are_refused_naming_it(self):
    with self.assertRaisesRegex(ValueError, r"\(x, conditional_input\)"):
      self.model(self.images)
    images_only = data.load("digits", "test", batch_size=99, training=False)
    with self.assertRaisesRegex(ValueError, r"\(x, conditional_input\)"):
      self.model.evaluate(images_only, verbose=0)

  @pytest.mark.slow  # writes, reloads and trains a .keras file and a SavedModel
  def test_keras_file_and_saved_model_reload_with_equal_log_prob_and_keep_training(self):
    for path in (self.path("conditional.keras"), self.path("conditional_saved_model")):
      self.model.save(path)
      reloaded = tfk.models.load_model(path)
      self.assertIsInstance(reloaded, keras_model.FlowModel)
      self.assertEqual(reloaded.flow.conditional_event_shape, (10,))
      for original, copy in zip(self.model.flow.variables, reloaded.flow.variables):
        self.assertAllEqual(original, copy)
      self.assertAllClose(
        reloaded.flow.log_prob(self.images, conditional_input=self.contexts),
        self.model.flow.log_prob(self.images, conditional_input=self.contexts),
      )
      if reloaded.optimizer is None:
        reloaded.compile()
      before = [v.numpy() for v in reloaded.flow.trainable_variables]
      history = reloaded.fit(one_hot_digits("train", training=True), steps_per_epoch=2, verbose=0)
      self.assertTrue(np.isfinite(history.history["loss"][-1]))
      moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, reloaded.flow.trainable_variables)]
      self.assertGreater(sum(moved), len(moved) // 2)


class VectorFlowModelTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tf.random.set_seed(1)
    flow = RealNVP(event_shape=(2,), num_couplings=4, hidden_units=(32, 32), conditional_event_shape=(3,))
    cls.model = keras_model.FlowModel(flow)
    cls.model.compile(optimizer=tfk.optimizers.Adam(3e-3))
    cls.theta, cls.x = gaussian_pairs(4096, seed=0)
    cls.test_theta, cls.test_x = gaussian_pairs(1024, seed=1)
    cls.before = cls.model.evaluate(cls.test_theta, cls.test_x, batch_size=256, verbose=0, return_dict=True)
    cls.history = cls.model.fit(cls.theta, cls.x, batch_size=128, epochs=8, verbose=0)
    cls.after = cls.model.evaluate(cls.test_theta, cls.test_x, batch_size=256, verbose=0, return_dict=True)

  def path(self, name):
    return os.path.join(self.get_temp_dir(), name)

  def test_fit_on_arrays_reports_nats_per_dim_and_approaches_the_true_posterior(self):
    self.assertEqual(sorted(self.history.history), ["loss", "nats_per_dim"])
    self.assertLess(self.after["nats_per_dim"], self.before["nats_per_dim"] - 0.3)
    # The exact posterior's entropy-based bound: E[-log p(theta | x)] / 2 for the true Gaussian posterior.
    a = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
    precision = np.eye(2) + a @ a.T / 0.09
    exact_nats_per_dim = 0.5 * (2 * np.log(2 * np.pi) + 2 - np.linalg.slogdet(precision)[1]) / 2
    self.assertAllClose(self.after["nats_per_dim"], exact_nats_per_dim, atol=0.15)
    per_example = self.model((self.test_theta[:5], self.test_x[:5]))
    expected = -self.model.flow.log_prob(self.test_theta[:5], conditional_input=self.test_x[:5]) / 2
    self.assertAllClose(per_example, expected)

  def test_an_unconditional_vector_flow_fits_from_a_dataset(self):
    tf.random.set_seed(2)
    model = keras_model.FlowModel(RealNVP(event_shape=(2,), num_couplings=2, hidden_units=(16,)))
    model.compile()
    dataset = tf.data.Dataset.from_tensor_slices(self.theta).batch(128)
    history = model.fit(dataset, epochs=3, verbose=0)
    self.assertLess(history.history["nats_per_dim"][-1], history.history["nats_per_dim"][0])

  @pytest.mark.slow  # writes, reloads and trains a .keras file and a SavedModel
  def test_keras_file_and_saved_model_reload_with_equal_log_prob_and_keep_training(self):
    for path in (self.path("vector.keras"), self.path("vector_saved_model")):
      self.model.save(path)
      reloaded = tfk.models.load_model(path)
      self.assertEqual(type(reloaded.flow), type(self.model.flow))
      self.assertAllClose(
        reloaded.flow.log_prob(self.test_theta, conditional_input=self.test_x),
        self.model.flow.log_prob(self.test_theta, conditional_input=self.test_x),
      )
      if reloaded.optimizer is None:
        reloaded.compile()
      history = reloaded.fit(self.theta, self.x, batch_size=128, epochs=1, verbose=0)
      self.assertLess(history.history["nats_per_dim"][-1], self.before["nats_per_dim"])

  def test_anything_but_a_realnvp_is_refused(self):
    with self.assertRaisesRegex(ValueError, "`flow` must be a RealNVP"):
      keras_model.FlowModel(tfp.distributions.Normal(0.0, 1.0))


if __name__ == "__main__":
  tf.test.main()
