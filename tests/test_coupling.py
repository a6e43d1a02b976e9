"""AffineCoupling: exact inverse and log-det for every mask type and parity, with non-trivial weights."""

import functools

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as tfk
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks, perturb
from tfp_realnvp import networks
from tfp_realnvp.bijectors import AffineCoupling, make_mask

tfd = tfp.distributions

IMAGE_SHAPE = (4, 4, 2)
VECTOR_SHAPE = (6,)
CASES = [
  dict(
    testcase_name=f"{mask_type}_parity{parity}_{np.dtype(dtype.as_numpy_dtype).name}",
    mask_type=mask_type,
    parity=parity,
    dtype=dtype,
  )
  for mask_type in ("checkerboard", "channel", "half")
  for parity in (0, 1)
  for dtype in (tf.float32, tf.float64)
]


def make_coupling(mask_type, parity, dtype=tf.float32, seed=1):
  tf.random.set_seed(seed)
  if mask_type == "half":
    event_shape = VECTOR_SHAPE
    conditioner = networks.MLP(6, 12, hidden_units=(16,), dropout=0.3, dtype=dtype)
  else:
    event_shape = IMAGE_SHAPE
    conditioner = networks.ResNet(2, 4, num_blocks=1, num_filters=8, dropout=0.3, dtype=dtype)
  coupling = AffineCoupling(conditioner, event_shape, mask_type, parity=parity, dtype=dtype)
  perturb(coupling, seed=seed)
  return coupling, event_shape


class AffineCouplingTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  @parameterized.named_parameters(*CASES)
  def test_inverse_and_log_det_are_exact(self, mask_type, parity, dtype):
    coupling, event_shape = make_coupling(mask_type, parity, dtype)
    x = tf.random.stateless_normal([5, *event_shape], seed=[3, parity], dtype=dtype)
    tolerance = 1e-5 if dtype == tf.float32 else 1e-10
    self.assert_round_trips(coupling, x, atol=tolerance)
    self.assert_log_dets_consistent(coupling, x, len(event_shape), atol=tolerance)
    self.assert_log_det_matches_autodiff(coupling, x, len(event_shape), rtol=1e-4, min_abs_log_det=0.05)

  @parameterized.named_parameters(*CASES[::2])
  def test_masked_units_pass_through_and_the_rest_change(self, mask_type, parity, dtype):
    coupling, event_shape = make_coupling(mask_type, parity, dtype)
    x = tf.random.stateless_normal([5, *event_shape], seed=[4, parity], dtype=dtype)
    y = coupling.forward(x)
    mask = make_mask(mask_type, parity, event_shape).astype(bool)
    self.assertAllEqual(tf.boolean_mask(x, mask, axis=1), tf.boolean_mask(y, mask, axis=1))
    changed = tf.abs(tf.boolean_mask(x - y, ~mask, axis=1))
    self.assertGreater(float(tf.reduce_min(changed)), 0.0)

  @parameterized.product(
    mask_type=("checkerboard", "half"), batch_shape=((), (3,), (2, 3)), use_tf_function=(False, True)
  )
  def test_shapes_for_any_batch_shape(self, mask_type, batch_shape, use_tf_function):
    coupling, event_shape = make_coupling(mask_type, 0)
    x = tf.random.stateless_normal([*batch_shape, *event_shape], seed=[5, 0])

    def transform(x):
      y = coupling.forward(x)
      return (
        y,
        coupling.forward_log_det_jacobian(x, event_ndims=len(event_shape)),
        coupling.inverse(tf.identity(y)),
      )

    if use_tf_function:
      transform = tf.function(transform)
    y, fldj, x_again = transform(x)
    self.assertEqual(y.shape, x.shape)
    self.assertEqual(fldj.shape, batch_shape)
    self.assertAllClose(x, x_again, atol=1e-5)
    # Each batch member is transformed on its own: compare with a batch of one.
    flat_x = tf.reshape(x, [-1, *event_shape])
    self.assertAllClose(tf.reshape(y, [-1, *event_shape])[-1], coupling.forward(flat_x[-1:])[0], atol=1e-6)

  @parameterized.parameters("checkerboard", "channel", "half")
  def test_every_variable_gets_a_gradient_from_the_likelihood(self, mask_type):
    coupling, event_shape = make_coupling(mask_type, 0)
    base = tfd.Sample(tfd.Normal(0.0, 1.0), event_shape)
    x = tf.random.stateless_normal([8, *event_shape], seed=[6, 0])
    with tf.GradientTape() as tape:
      z = coupling.forward(x, training=True)
      loss = -tf.reduce_mean(
        base.log_prob(z) + coupling.forward_log_det_jacobian(x, event_ndims=len(event_shape), training=True)
      )
    variables = coupling.trainable_variables
    self.assertNotEmpty(variables)
    self.assertIn(coupling.tanh_scale.ref(), {v.ref() for v in variables})
    gradients = tape.gradient(loss, variables)
    for variable, gradient in zip(variables, gradients):
      self.assertIsNotNone(gradient, variable.name)
      self.assertTrue(np.all(np.isfinite(gradient)), variable.name)

  def test_conditioner_runs_once_per_transform_and_log_det(self):
    calls = []

    class CountingMLP(networks.MLP):
      def __call__(self, x, training=False):
        calls.append(1)
        return super().__call__(x, training)

    coupling = AffineCoupling(CountingMLP(6, 12), VECTOR_SHAPE, "half")
    x = tf.random.normal([4, 6])
    coupling.forward(x)
    coupling.forward_log_det_jacobian(x, event_ndims=1)
    self.assertLen(calls, 1)

  def test_tf_keras_conditioner_is_tracked(self):
    conditioner = tfk.Sequential([tfk.layers.Dense(8, activation="relu"), tfk.layers.Dense(12)])
    conditioner.build([None, 6])
    coupling = AffineCoupling(conditioner, VECTOR_SHAPE, "half")
    self.assertLen(coupling.trainable_variables, len(conditioner.trainable_variables) + 1)
    self.assertEqual(coupling.forward(tf.ones([2, 6])).shape, [2, 6])

  def test_keras3_conditioner_is_rejected_with_the_reason(self):
    with self.assertRaisesRegex(TypeError, r"(?s)Keras 3.*silently.*tf_keras"):
      AffineCoupling(keras.layers.Dense(12), VECTOR_SHAPE, "half")

  def test_closure_conditioner_is_rejected(self):
    network = networks.MLP(6, 12)
    with self.assertRaisesRegex(TypeError, r"`conditioner`.*closure"):
      AffineCoupling(lambda x: network(x), VECTOR_SHAPE, "half")
    with self.assertRaisesRegex(TypeError, r"`conditioner`"):
      AffineCoupling(functools.partial(network.__call__, training=False), VECTOR_SHAPE, "half")

  @parameterized.named_parameters(
    ("unknown_mask", dict(mask_type="stripes"), r"`mask_type`.*'checkerboard', 'channel', 'half'.*'stripes'"),
    ("bad_parity", dict(parity=2), r"`parity` must be 0 or 1; got 2"),
    ("vector_mask_on_image", dict(mask_type="half"), r"`mask_type='half'`.*vector.*\(4, 4, 2\)"),
    (
      "image_mask_on_vector",
      dict(mask_type="checkerboard", event_shape=(6,)),
      r"`mask_type='checkerboard'`.*image.*\(6,\)",
    ),
    (
      "odd_channels",
      dict(mask_type="channel", event_shape=(4, 4, 3)),
      r"even number of channels.*\(4, 4, 3\)",
    ),
  )
  def test_bad_arguments_raise_naming_the_argument(self, overrides, message):
    arguments = dict(
      conditioner=networks.MLP(6, 12), event_shape=IMAGE_SHAPE, mask_type="checkerboard", parity=0
    )
    arguments.update(overrides)
    with self.assertRaisesRegex(ValueError, message):
      AffineCoupling(**arguments)


def make_conditional_coupling(mask_type, context_shape, seed=2):
  """A coupling whose conditioner takes a context of `context_shape`, with perturbed weights."""
  tf.random.set_seed(seed)
  if mask_type == "half":
    event_shape = VECTOR_SHAPE
    conditioner = networks.ConditionalMLP(6, 12, context_shape, hidden_units=(16,))
  else:
    event_shape = IMAGE_SHAPE
    block_size = context_shape[0] // IMAGE_SHAPE[0] if len(context_shape) == 3 else 1
    conditioner = networks.ConditionalResNet(
      2, 4, context_shape, num_blocks=1, num_filters=8, context_block_size=block_size
    )
  coupling = AffineCoupling(conditioner, event_shape, mask_type, parity=1)
  perturb(coupling, seed=seed)
  return coupling, event_shape


CONDITIONAL_CASES = [
  dict(testcase_name="vector_context_image", mask_type="checkerboard", context_shape=(3,)),
  dict(testcase_name="image_context_at_the_event_resolution", mask_type="channel", context_shape=(4, 4, 1)),
  dict(
    testcase_name="image_context_at_twice_the_resolution", mask_type="checkerboard", context_shape=(8, 8, 1)
  ),
  dict(testcase_name="vector_context_vector", mask_type="half", context_shape=(3,)),
]


class ConditionalAffineCouplingTest(tf.test.TestCase, parameterized.TestCase, BijectorChecks):
  @parameterized.named_parameters(*CONDITIONAL_CASES)
  def test_inverse_and_log_det_are_exact_for_each_context(self, mask_type, context_shape):
    coupling, event_shape = make_conditional_coupling(mask_type, context_shape)
    x = tf.random.stateless_normal([5, *event_shape], seed=[7, 0])
    context = tf.random.stateless_normal([5, *context_shape], seed=[8, 0])
    kwargs = dict(conditional_input=context)
    self.assert_round_trips(coupling, x, **kwargs)
    self.assert_log_dets_consistent(coupling, x, len(event_shape), **kwargs)
    self.assert_log_det_matches_autodiff(coupling, x, len(event_shape), min_abs_log_det=0.05, **kwargs)
    # The context matters: another context, another transform and log-det.
    other = dict(conditional_input=2.0 * context + 1.0)
    self.assertNotAllClose(coupling.forward(x, **kwargs), coupling.forward(x, **other))
    self.assertNotAllClose(
      coupling.forward_log_det_jacobian(x, len(event_shape), **kwargs),
      coupling.forward_log_det_jacobian(x, len(event_shape), **other),
    )

  @parameterized.named_parameters(*CONDITIONAL_CASES)
  def test_identity_at_initialization_whatever_the_context(self, mask_type, context_shape):
    coupling, event_shape = make_conditional_coupling(mask_type, context_shape)
    for variable in coupling.conditioner.trainable_variables:
      if "output" in variable.name or "conv_out" in variable.name:
        variable.assign(tf.zeros_like(variable))  # back to the zero-initialized output layer
    x = tf.random.stateless_normal([3, *event_shape], seed=[9, 0])
    context = tf.random.stateless_normal([3, *context_shape], seed=[10, 0])
    self.assertAllEqual(coupling.forward(x, conditional_input=context), x)

  def test_context_broadcasts_over_batch_dimensions_and_each_row_sees_its_own(self):
    coupling, event_shape = make_conditional_coupling("half", (3,))
    x = tf.random.stateless_normal([2, 4, *event_shape], seed=[11, 0])
    context = tf.random.stateless_normal([2, 1, 3], seed=[12, 0])
    y = coupling.forward(x, conditional_input=context)
    self.assertEqual(y.shape, x.shape)
    self.assertAllClose(y[1, 2:3], coupling.forward(x[1, 2:3], conditional_input=context[1]), atol=1e-6)

  def test_declares_conditional_input_only_when_its_conditioner_takes_it(self):
    conditional, _ = make_conditional_coupling("half", (3,))
    unconditional, _ = make_coupling("half", 0)
    self.assertEqual(conditional.call_keywords, {"training", "conditional_input"})
    self.assertEqual(unconditional.call_keywords, {"training"})

  def test_a_context_for_an_unconditional_conditioner_and_a_missing_one_are_errors(self):
    unconditional, _ = make_coupling("half", 0)
    with self.assertRaisesRegex(ValueError, r"got `conditional_input`.*\(MLP\) takes no `conditional_input`"):
      unconditional.forward(tf.ones([2, 6]), conditional_input=tf.ones([2, 3]))
    conditional, _ = make_conditional_coupling("half", (3,))
    with self.assertRaisesRegex(ValueError, r"no `conditional_input`.*ConditionalMLP.*requires one"):
      conditional.forward(tf.ones([2, 6]))
    with self.assertRaisesRegex(ValueError, r"`conditional_input`.*must have shape `\[batch, 3\]`.*\[2, 4\]"):
      conditional.forward(tf.ones([2, 6]), conditional_input=tf.ones([2, 4]))
    with self.assertRaisesRegex(
      TypeError, r"`conditional_input` must have dtype float32, the data's; got int32"
    ):
      conditional.forward(tf.ones([2, 6]), conditional_input=tf.ones([2, 3], tf.int32))

  def test_tf_keras_conditioner_with_a_context(self):
    class KerasConditioner(tfk.layers.Layer):
      def __init__(self):
        super().__init__()
        self.dense = tfk.layers.Dense(12, kernel_initializer="random_normal")

      def call(self, x, conditional_input, training=False):
        return self.dense(tf.concat([x, conditional_input], -1))

    conditioner = KerasConditioner()
    coupling = AffineCoupling(conditioner, VECTOR_SHAPE, "half")
    self.assertIn("conditional_input", coupling.call_keywords)
    x, context = tf.random.normal([4, 6]), tf.random.normal([4, 2])
    self.assert_round_trips(coupling, x, conditional_input=context)
    self.assertNotAllClose(coupling.forward(x, conditional_input=context), x)
    self.assertLen(coupling.trainable_variables, 3)


if __name__ == "__main__":
  tf.test.main()
