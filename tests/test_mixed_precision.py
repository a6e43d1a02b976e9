"""Speed paths keep the numbers: fused batch norm and bfloat16 conditioners (`compute_dtype`)."""

import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import autodiff_log_det, perturb
from tfp_realnvp import networks
from tfp_realnvp.bijectors import LogitTransform
from tfp_realnvp.flows import RealNVP

tfd = tfp.distributions


def _copy_weights(source, target):
  for source_variable, target_variable in zip(source.variables, target.variables):
    target_variable.assign(source_variable)


def relu_conv2d_gradient_graph(num_layers):
  """The graph of the gradient of `num_layers` training-mode `relu_conv2d`s of one batch norm and kernel."""
  batch_norm = networks.BatchNormalization(6)
  kernel = tf.Variable(tf.random.stateless_normal([3, 3, 6, 6], seed=[1, 2]))

  @tf.function
  def gradients(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      h = x
      for _ in range(num_layers):
        h = batch_norm.relu_conv2d(h, kernel, training=True)
      loss = tf.reduce_sum(h)
    return tape.gradient(loss, [x, kernel])

  return gradients.get_concrete_function(tf.TensorSpec([2, 4, 4, 6])).graph


class FusedBatchNormTest(tf.test.TestCase, parameterized.TestCase):
  """The fused kernel (rank 4) against the composite path (rank 2, same statistics per feature)."""

  def _pair(self, momentum=0.5):
    fused, composite = (networks.BatchNormalization(3, momentum=momentum) for _ in range(2))
    for module in (fused, composite):
      module.gamma.assign([0.5, 1.0, 2.0])
      module.beta.assign([-1.0, 0.0, 1.0])
    return fused, composite

  @parameterized.parameters(True, False)
  def test_fused_matches_composite_outputs_and_running_averages(self, training):
    fused, composite = self._pair()
    x = 2.0 + 3.0 * tf.random.stateless_normal([4, 5, 6, 3], seed=[1, 2])
    if not training:
      for module in (fused, composite):
        module.moving_mean.assign([0.5, -0.5, 1.0])
        module.moving_variance.assign([4.0, 9.0, 0.25])
    y_fused = fused(x, training=training)
    y_composite = tf.reshape(composite(tf.reshape(x, [-1, 3]), training=training), x.shape)
    self.assertAllClose(y_fused, y_composite, atol=1e-5)
    self.assertAllClose(fused.moving_mean, composite.moving_mean, atol=1e-6)
    # Biased batch variance, as `tf.nn.moments` (the kernel itself returns the unbiased one).
    self.assertAllClose(fused.moving_variance, composite.moving_variance, rtol=1e-5)
    if training:
      mean, variance = tf.nn.moments(x, [0, 1, 2])
      self.assertAllClose(fused.moving_mean, 0.5 * mean, atol=1e-6)
      self.assertAllClose(fused.moving_variance, 0.5 + 0.5 * variance, rtol=1e-5)

  def test_fused_gradient_matches_composite(self):
    fused, composite = self._pair()
    x = tf.random.stateless_normal([4, 5, 6, 3], seed=[3, 4])
    weights = tf.random.stateless_normal(x.shape, seed=[5, 6])
    gradients = []
    for module, rank in ((fused, 4), (composite, 2)):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = module(x if rank == 4 else tf.reshape(x, [-1, 3]), training=True)
        loss = tf.reduce_sum(tf.reshape(y, x.shape) * weights)
      gradients.append(tape.gradient(loss, [x, module.gamma, module.beta]))
    for got, expected in zip(*gradients):
      self.assertAllClose(got, expected, atol=1e-4)

  def test_bfloat16_input_keeps_float32_statistics(self):
    batch_norm = networks.BatchNormalization(3, momentum=0.0)
    x = 2.0 + 3.0 * tf.random.stateless_normal([8, 4, 4, 3], seed=[7, 8])
    y = batch_norm(tf.cast(x, tf.bfloat16), training=True)
    self.assertEqual(y.dtype, tf.bfloat16)
    self.assertEqual(batch_norm.moving_mean.dtype, tf.float32)
    mean, variance = tf.nn.moments(x, [0, 1, 2])
    self.assertAllClose(batch_norm.moving_mean, mean, atol=0.05)
    self.assertAllClose(batch_norm.moving_variance, variance, rtol=0.02)
    self.assertAllClose(tf.cast(y, tf.float32), (x - mean) * tf.math.rsqrt(variance + 1e-4), atol=0.05)


class RecomputingReluConv2dTest(tf.test.TestCase, parameterized.TestCase):
  """`BatchNormalization.relu_conv2d` in training recomputes `relu(bn(x))` for its gradient, keeping the numbers."""

  def _pair(self):
    recomputing, composed = (networks.BatchNormalization(6, momentum=0.5) for _ in range(2))
    for module in (recomputing, composed):
      module.gamma.assign(np.linspace(-1.5, 2.0, 6))  # one negative scale: a ReLU mask the other way round
      module.beta.assign(np.linspace(-1.0, 0.5, 6))
    return recomputing, composed

  @parameterized.parameters(
    (tf.float32, tf.float32), (tf.bfloat16, tf.bfloat16), (tf.bfloat16, tf.float32), (tf.float32, tf.bfloat16)
  )
  def test_values_gradients_and_running_averages_are_those_of_the_composition_bit_for_bit(
    self, dtype, kernel_dtype
  ):
    recomputing, composed = self._pair()
    x = tf.cast(2.0 + 3.0 * tf.random.stateless_normal([4, 8, 8, 6], seed=[1, 2]), dtype)
    kernel = tf.Variable(0.3 * tf.random.stateless_normal([3, 3, 6, 5], seed=[3, 4]))
    weights = tf.random.stateless_normal([4, 8, 8, 5], seed=[5, 6])

    @tf.function
    def value_and_gradients(module, recompute):
      with tf.GradientTape() as tape:
        tape.watch(x)
        cast_kernel = tf.cast(kernel, kernel_dtype)
        if recompute:
          z = module.relu_conv2d(x, cast_kernel, training=True)
        else:
          a = tf.cast(tf.nn.relu(module(x, training=True)), kernel_dtype)
          z = tf.nn.conv2d(a, cast_kernel, strides=1, padding="SAME")
        loss = tf.reduce_sum(tf.cast(z, tf.float32) * weights)
      return [z, *tape.gradient(loss, [x, kernel, module.gamma, module.beta])]

    got = value_and_gradients(recomputing, True)
    expected = value_and_gradients(composed, False)
    self.assertEqual(got[0].dtype, kernel_dtype)
    for got_tensor, expected_tensor in zip(got, expected):
      self.assertAllEqual(got_tensor, expected_tensor)
    self.assertAllEqual(recomputing.moving_mean, composed.moving_mean)
    self.assertAllEqual(recomputing.moving_variance, composed.moving_variance)
    self.assertNotAllClose(recomputing.moving_mean, tf.zeros([6]))  # the averages did move

  @parameterized.parameters(True, False)
  def test_a_shortcut_is_added_next_to_the_convolution_with_the_composition_values(self, training):
    recomputing, composed = self._pair()
    x = 2.0 + 3.0 * tf.random.stateless_normal([4, 8, 8, 6], seed=[1, 2])
    shortcut = tf.random.stateless_normal([4, 8, 8, 5], seed=[7, 8])
    kernel = tf.Variable(0.3 * tf.random.stateless_normal([3, 3, 6, 5], seed=[3, 4]))
    weights = tf.random.stateless_normal([4, 8, 8, 5], seed=[5, 6])

    @tf.function
    def value_and_gradients(module, fused):
      with tf.GradientTape() as tape:
        tape.watch([x, shortcut])
        if fused:
          z = module.relu_conv2d(x, tf.identity(kernel), training=training, shortcut=shortcut)
        else:
          a = tf.nn.relu(module(x, training=training))
          z = tf.nn.conv2d(a, kernel, strides=1, padding="SAME") + shortcut
        loss = tf.reduce_sum(z * weights)
      return [z, *tape.gradient(loss, [x, shortcut, kernel, module.gamma, module.beta])]

    got = value_and_gradients(recomputing, True)
    expected = value_and_gradients(composed, False)
    for got_tensor, expected_tensor in zip(got, expected):
      self.assertAllClose(got_tensor, expected_tensor, rtol=1e-5, atol=1e-4)
    self.assertAllClose(got[2], weights)  # the shortcut's gradient is the incoming one
    # What grappler's remapper needs to fold the addition into the convolution: convolution -> bias -> add.
    graph = value_and_gradients.get_concrete_function(recomputing, True).graph
    (convolution,) = [op for op in graph.get_operations() if op.type == "Conv2D"]
    (bias,) = [consumer for consumer in convolution.outputs[0].consumers()]
    self.assertEqual(bias.type, "BiasAdd")
    (add,) = [consumer for consumer in bias.outputs[0].consumers()]
    self.assertEqual(add.type, "AddV2")

  def test_the_gradient_keeps_no_relu_output(self):
    """What the memory saving rests on: no gradient op reads a forward ReLU output, so none is kept."""
    graph = relu_conv2d_gradient_graph(num_layers=2)
    relus = [op for op in graph.get_operations() if op.type == "Relu"]
    # Forward: after a training-mode batch norm; the gradient's recomputation: after an inference-mode one.
    forward_relus = [op for op in relus if op.inputs[0].op.get_attr("is_training")]
    self.assertLen(forward_relus, 2)
    self.assertLen(relus, 4)
    for relu in forward_relus:
      self.assertEqual([consumer.type for consumer in relu.outputs[0].consumers()], ["Conv2D"])
    for relu in relus:
      if relu not in forward_relus:  # recomputed only once the backward pass reaches it
        batch_norm_op = relu.inputs[0].op
        (x_after_dz,) = [t for t in batch_norm_op.inputs if t.op.type == "Identity"]
        self.assertNotEmpty(x_after_dz.op.control_inputs)

  def test_the_recomputed_batch_norm_and_relu_can_be_fused(self):
    """Grappler folds a batch norm and its ReLU into one kernel only when neither has control inputs or other
    readers: the recomputation's wait for the incoming gradient sits on an identity of its input instead."""
    graph = relu_conv2d_gradient_graph(num_layers=1)
    (recomputed,) = [
      op for op in graph.get_operations() if op.type == "FusedBatchNormV3" and not op.get_attr("is_training")
    ]
    self.assertEmpty(recomputed.control_inputs)
    self.assertEqual([consumer.type for consumer in recomputed.outputs[0].consumers()], ["Relu"])
    (relu,) = recomputed.outputs[0].consumers()
    self.assertEmpty(relu.control_inputs)

  def test_inference_and_the_composite_path_compute_the_composition(self):
    composite = networks.BatchNormalization(6, fused=False)
    x = tf.random.stateless_normal([2, 4, 4, 6], seed=[1, 2])
    kernel = tf.random.stateless_normal([3, 3, 6, 5], seed=[3, 4])
    for training in (False, True):
      expected = tf.nn.conv2d(tf.nn.relu(composite(x, training=training)), kernel, strides=1, padding="SAME")
      self.assertAllClose(composite.relu_conv2d(x, kernel, training=training), expected, atol=1e-5)


def _is_bfloat16(values):
  """Whether every value of a float32 tensor is a bfloat16 number (its low 16 bits are zero)."""
  return bool(tf.reduce_all(tf.cast(tf.cast(values, tf.bfloat16), tf.float32) == values))


class ComputeDtypeTest(tf.test.TestCase, parameterized.TestCase):
  def test_bfloat16_resnet_is_close_to_float32_with_float32_variables_and_output(self):
    exact = networks.ResNet(3, 6, num_blocks=2, num_filters=16)
    mixed = networks.ResNet(3, 6, num_blocks=2, num_filters=16, compute_dtype=tf.bfloat16)
    perturb(exact, seed=1, stateless=True)
    _copy_weights(exact, mixed)
    self.assertTrue(all(v.dtype == tf.float32 for v in mixed.variables))
    x = tf.random.stateless_normal([4, 8, 8, 3], seed=[9, 10])
    for training in (False, True):
      expected, got = exact(x, training=training), mixed(x, training=training)
      self.assertEqual(got.dtype, tf.float32)
      # bfloat16 keeps 8 significant bits: a relative RMS error of a few 1e-3, never exactly 0.
      relative_error = float(tf.norm(got - expected) / tf.norm(expected))
      self.assertBetween(relative_error, 1e-5, 0.03)

  def test_bfloat16_mlp_is_close_to_float32(self):
    exact = networks.MLP(4, 8, hidden_units=(32, 32))
    mixed = networks.MLP(4, 8, hidden_units=(32, 32), compute_dtype="bfloat16")
    perturb(exact, seed=2, stateless=True)
    _copy_weights(exact, mixed)
    x = tf.random.stateless_normal([16, 4], seed=[11, 12])
    expected, got = exact(x), mixed(x)
    self.assertEqual(got.dtype, tf.float32)
    relative_error = float(tf.norm(got - expected) / tf.norm(expected))
    self.assertBetween(relative_error, 1e-5, 0.03)

  def test_bfloat16_flow_log_prob_and_gradients_stay_float32_and_close(self):
    kwargs = dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=8, num_bits=4)
    exact = RealNVP(**kwargs)
    mixed = RealNVP(**kwargs, compute_dtype=tf.bfloat16)
    perturb(exact, seed=3, stateless=True)
    _copy_weights(exact, mixed)
    x = tf.random.stateless_uniform([16, 8, 8, 1], seed=[13, 14], maxval=16.0)
    # bfloat16 rounding moves single images by up to ~1% of their bits/dim here (10-26 bits/dim: the perturbed
    # weights are far from a trained model's). Inference first: the training call below moves the running
    # averages.
    self.assertAllClose(mixed.bits_per_dim(x), exact.bits_per_dim(x), rtol=0.02, atol=0.03)
    with tf.GradientTape() as tape:
      got = mixed.bits_per_dim(x, training=True)
      loss = tf.reduce_mean(got)
    gradients = tape.gradient(loss, mixed.trainable_variables)
    self.assertEqual(got.dtype, tf.float32)
    self.assertTrue(all(g.dtype == tf.float32 for g in gradients))
    self.assertTrue(all(np.isfinite(g.numpy()).all() for g in gradients))
    self.assertAllClose(got, exact.bits_per_dim(x, training=True), rtol=0.02, atol=0.03)
    # Sampling inverts the same bfloat16 conditioners: encode(decode(z)) returns z to bfloat16 accuracy.
    z = tf.random.stateless_normal([4, 8, 8, 1], seed=[15, 16])
    self.assertAllClose(mixed.encode(mixed.decode(z)), z, atol=1e-3)

  def test_checkpoints_move_between_float32_and_bfloat16_flows(self):
    # The variables are float32 either way: train in bfloat16, evaluate or export in float32.
    kwargs = dict(event_shape=(8, 8, 1), num_scales=1, num_blocks=1, num_filters=8, num_bits=4)
    mixed = RealNVP(**kwargs, compute_dtype=tf.bfloat16)
    perturb(mixed, seed=4, stateless=True)
    path = tf.train.Checkpoint(flow=mixed).save(os.path.join(self.get_temp_dir(), "ckpt"))
    exact = RealNVP(**kwargs)
    tf.train.Checkpoint(flow=exact).restore(path).assert_existing_objects_matched()
    for restored, saved in zip(exact.variables, mixed.variables):
      self.assertAllEqual(restored, saved)

  def test_without_full_precision_output_the_output_layer_runs_in_bfloat16(self):
    # Same weights, no output bias: the default's output is a float32 convolution's (not bfloat16 numbers);
    # with `full_precision_output=False` every output value is a bfloat16 number, cast to float32.
    x = tf.random.stateless_normal([4, 8, 8, 3], seed=[9, 10])
    vectors = tf.random.stateless_normal([16, 4], seed=[11, 12])
    for make, inputs in (
      (lambda **kw: networks.ResNet(3, 6, num_blocks=1, num_filters=16, **kw), x),
      (lambda **kw: networks.MLP(4, 8, hidden_units=(32,), **kw), vectors),
    ):
      exact = make()
      perturb(exact, seed=1, stateless=True)
      full, rounded = (
        make(compute_dtype=tf.bfloat16),
        make(compute_dtype=tf.bfloat16, full_precision_output=False),
      )
      for network in (exact, full, rounded):
        _copy_weights(exact, network)
        for variable in network.trainable_variables:
          if "bias" in variable.name:  # the output layer's: the only biases added to the output
            variable.assign(tf.zeros_like(variable))
      for training in (False, True):
        expected, got = exact(inputs, training=training), rounded(inputs, training=training)
        self.assertEqual(got.dtype, tf.float32)
        self.assertTrue(_is_bfloat16(got))
        self.assertFalse(_is_bfloat16(full(inputs, training=training)))
        self.assertBetween(float(tf.norm(got - expected) / tf.norm(expected)), 1e-5, 0.03)

  @parameterized.parameters(True, False)
  def test_bfloat16_flow_is_exactly_invertible_with_its_log_det(self, full_precision_output):
    flow = RealNVP(
      event_shape=(4, 4, 2),
      num_scales=2,
      num_blocks=1,
      num_filters=8,
      num_bits=4,
      compute_dtype=tf.bfloat16,
      full_precision_output=full_precision_output,
    )
    perturb(flow, stddev=0.3, seed=5, stateless=True)
    x = tf.random.stateless_uniform([3, 4, 4, 2], seed=[17, 18], maxval=16.0)
    z = flow.encode(x)
    self.assertAllClose(flow.decode(tf.identity(z)), x, atol=1e-4)
    self.assertAllClose(flow.encode(flow.decode(tf.identity(z))), z, atol=1e-4)
    self.assertAllClose(
      flow.bijector.forward_log_det_jacobian(z, 3), -flow.bijector.inverse_log_det_jacobian(x, 3), rtol=1e-5
    )
    # The conditioners' rounding does not enter the log-det: the Jacobian is triangular, its diagonal exp(s).
    log_det = autodiff_log_det(flow.encode, x, 3)
    expected = tfd.Sample(tfd.Normal(0.0, 1.0), [4, 4, 2]).log_prob(z) + log_det
    self.assertAllClose(flow.log_prob(x), expected, rtol=1e-4)
    # Non-trivial couplings: the log-det is far from the logit transform's alone.
    logit_log_det = LogitTransform(4, 0.05).forward_log_det_jacobian(x, event_ndims=3)
    self.assertGreater(float(tf.reduce_max(tf.abs(log_det - logit_log_det))), 1.0)

  @parameterized.parameters("int32", "float8", tf.string)
  def test_bad_compute_dtype(self, compute_dtype):
    with self.assertRaisesRegex(ValueError, "`compute_dtype` must be None or one of float16, bfloat16"):
      networks.ResNet(2, 4, compute_dtype=compute_dtype)


if __name__ == "__main__":
  tf.test.main()
