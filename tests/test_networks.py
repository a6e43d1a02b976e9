"""Conditioner networks: identity at initialization, weight norm, training-time behaviour."""

import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp import networks


class ResNetTest(tf.test.TestCase, parameterized.TestCase):
  def test_output_is_zero_at_initialization_and_has_the_requested_shape(self):
    resnet = networks.ResNet(3, 6, num_blocks=2, num_filters=8)
    out = resnet(tf.random.normal([2, 8, 8, 3]), training=True)
    self.assertEqual(out.shape, [2, 8, 8, 6])
    self.assertAllEqual(out, tf.zeros_like(out))

  def test_weight_norm_kernel_has_the_scale_as_its_norm(self):
    conv = networks.WeightNormConv2D(3, 5)
    conv.weight_scale.assign([0.5, 1.0, 2.0, 3.0, 4.0])
    # With weight norm, doubling `direction` leaves the layer unchanged.
    x = tf.random.normal([1, 4, 4, 3])
    before = conv(x)
    conv.direction.assign(2.0 * conv.direction)
    self.assertAllClose(before, conv(x), atol=1e-5)
    self.assertAllClose(tf.norm(tf.reshape(conv.kernel, [-1, 5]), axis=0), conv.weight_scale)

  def test_batch_norm_and_dropout_follow_the_training_flag(self):
    resnet = networks.ResNet(2, 4, num_blocks=1, num_filters=8, dropout=0.5)
    for variable in resnet.trainable_variables:
      variable.assign_add(0.3 * tf.random.normal(variable.shape))
    x = tf.random.normal([4, 4, 4, 2])
    self.assertAllEqual(resnet(x), resnet(x))  # inference: deterministic
    moving_means = [v for v in resnet.variables if "moving_mean" in v.name]
    self.assertNotEmpty(moving_means)
    self.assertAllEqual(moving_means[0], tf.zeros_like(moving_means[0]))
    self.assertNotAllClose(resnet(x, training=True), resnet(x, training=True))  # dropout
    self.assertNotAllClose(moving_means[0], tf.zeros_like(moving_means[0]))

  def test_regularized_variables_are_the_weight_norm_scales(self):
    resnet = networks.ResNet(2, 4, num_blocks=2, num_filters=8)
    regularized = [v for v in resnet.trainable_variables if networks.is_regularized(v)]
    # input conv + 2 per block + output conv
    self.assertLen(regularized, 1 + 2 * 2 + 1)
    self.assertTrue(all("weight_scale" in v.name for v in regularized))

  @parameterized.parameters(True, False)
  def test_unfused_batch_norms_compute_the_same_values(self, training):
    fused = networks.ResNet(2, 4, num_blocks=2, num_filters=8, batch_norm_momentum=0.5)
    unfused = networks.ResNet(
      2, 4, num_blocks=2, num_filters=8, batch_norm_momentum=0.5, fused_batch_norm=False
    )
    self.assertTrue(all(m.fused for m in fused.submodules if isinstance(m, networks.BatchNormalization)))
    self.assertFalse(any(m.fused for m in unfused.submodules if isinstance(m, networks.BatchNormalization)))
    generator = tf.random.Generator.from_seed(1)
    for variable, unfused_variable in zip(fused.variables, unfused.variables):
      if "moving_variance" in variable.name:
        variable.assign(tf.exp(generator.normal(variable.shape, stddev=0.3)))
      else:
        variable.assign_add(generator.normal(variable.shape, stddev=0.3))
      unfused_variable.assign(variable)
    x = tf.random.stateless_normal([4, 6, 6, 2], seed=[1, 2])
    with tf.GradientTape(persistent=True) as tape:
      y_fused, y_unfused = fused(x, training=training), unfused(x, training=training)
    self.assertNotAllClose(y_fused, tf.zeros_like(y_fused))
    self.assertAllClose(y_fused, y_unfused, rtol=1e-4, atol=1e-4)
    for variable, unfused_variable in zip(fused.variables, unfused.variables):
      self.assertAllClose(variable, unfused_variable, rtol=1e-5, atol=1e-6)  # running averages moved alike
    gradients = tape.gradient(y_fused, fused.trainable_variables)
    unfused_gradients = tape.gradient(y_unfused, unfused.trainable_variables)
    for gradient, unfused_gradient in zip(gradients, unfused_gradients):
      self.assertAllClose(gradient, unfused_gradient, rtol=1e-3, atol=1e-3)

  @parameterized.parameters(
    (dict(num_blocks=0), "`num_blocks` must be a positive integer; got 0"),
    (dict(dropout=1.0), r"`dropout` must be in \[0, 1\); got 1.0"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      networks.ResNet(2, 4, **kwargs)


class MLPTest(tf.test.TestCase):
  def test_output_is_zero_at_initialization(self):
    mlp = networks.MLP(3, 6, hidden_units=(16, 16))
    out = mlp(tf.random.normal([5, 3]))
    self.assertEqual(out.shape, [5, 6])
    self.assertAllEqual(out, tf.zeros_like(out))

  def test_bad_hidden_units(self):
    with self.assertRaisesRegex(ValueError, "`hidden_units` must be a non-empty sequence"):
      networks.MLP(3, 6, hidden_units=())


class ConditionalNetworksTest(tf.test.TestCase, parameterized.TestCase):
  def test_unconditional_networks_hold_the_same_variables_as_before(self):
    # The variables checkpoints name: a context adds variables only to the conditional networks.
    self.assertEqual(
      sorted(v.name for v in networks.ResNet(2, 4, num_blocks=1, num_filters=8, name="r").variables),
      sorted(
        ["r/conv_in/direction:0", "r/conv_in/weight_scale:0", "r/conv_out/bias:0", "r/conv_out/direction:0"]
        + ["r/conv_out/weight_scale:0", "r/norm_out/beta:0", "r/norm_out/gamma:0", "r/norm_out/moving_mean:0"]
        + ["r/norm_out/moving_variance:0"]
        + [
          f"r/block_0/{layer}/{leaf}:0"
          for layer, leaves in (
            ("conv_in", ("direction", "weight_scale")),
            ("conv_out", ("direction", "weight_scale")),
            ("norm_in", ("beta", "gamma", "moving_mean", "moving_variance")),
            ("norm_out", ("beta", "gamma", "moving_mean", "moving_variance")),
          )
          for leaf in leaves
        ]
      ),
    )
    self.assertEqual(
      [(v.name, v.shape.as_list()) for v in networks.MLP(3, 6, hidden_units=(8,), name="m").variables],
      [
        ("m/bias_0:0", [8]),
        ("m/kernel_0:0", [3, 8]),
        ("m/output_bias:0", [6]),
        ("m/output_kernel:0", [8, 6]),
      ],
    )

  @parameterized.named_parameters(
    ("vector_context", (5,), 1, 16),
    ("image_context", (4, 4, 3), 1, 3),
    ("image_context_squeezed", (8, 8, 1), 2, 4),
  )
  def test_conditional_resnet_is_zero_at_start_and_then_depends_on_the_context(
    self, context_shape, block_size, context_channels
  ):
    resnet = networks.ConditionalResNet(
      2, 6, context_shape, num_blocks=1, num_filters=8, context_block_size=block_size
    )
    self.assertEqual(resnet.conv_in.direction.shape, [3, 3, 2 + context_channels, 8])
    x = tf.random.normal([3, 4, 4, 2])
    context = tf.random.normal([3, *context_shape])
    out = resnet(x, conditional_input=context, training=True)
    self.assertEqual(out.shape, [3, 4, 4, 6])
    self.assertAllEqual(out, tf.zeros_like(out))
    for variable in resnet.trainable_variables:
      variable.assign_add(0.3 * tf.random.normal(variable.shape))
    self.assertNotAllClose(resnet(x, conditional_input=context), resnet(x, conditional_input=context + 1.0))
    # Row by row: each image sees its own context.
    self.assertAllClose(
      resnet(x, conditional_input=context)[1:2], resnet(x[1:2], conditional_input=context[1:2])
    )

  def test_conditional_mlp_is_zero_at_start_and_then_depends_on_the_context(self):
    mlp = networks.ConditionalMLP(3, 6, (2, 2), hidden_units=(8,))
    self.assertEqual(mlp.kernels[0].shape, [3 + 4, 8])
    x, context = tf.random.normal([5, 3]), tf.random.normal([5, 2, 2])
    self.assertAllEqual(mlp(x, conditional_input=context), tf.zeros([5, 6]))
    for variable in mlp.trainable_variables:
      variable.assign_add(0.3 * tf.random.normal(variable.shape))
    self.assertNotAllClose(mlp(x, conditional_input=context), mlp(x, conditional_input=-context))

  def test_missing_or_misshaped_context_and_bad_arguments(self):
    resnet = networks.ConditionalResNet(2, 4, (3,), num_blocks=1, num_filters=8, name="net")
    x = tf.zeros([2, 4, 4, 2])
    with self.assertRaisesRegex(
      ValueError, r"`net` is conditional.*pass the context as `conditional_input` of shape `\[batch, 3\]`"
    ):
      resnet(x, conditional_input=None)
    with self.assertRaisesRegex(ValueError, r"`conditional_input`.*`\[batch, 3\]`; got shape \[2, 4\]"):
      resnet(x, conditional_input=tf.zeros([2, 4]))
    with self.assertRaisesRegex(TypeError, r"`conditional_input` must have a floating dtype; got int32"):
      resnet(x, conditional_input=tf.zeros([2, 3], tf.int32))
    image = networks.ConditionalResNet(2, 4, (8, 8, 1), num_blocks=1, num_filters=8)
    with self.assertRaisesRegex(ValueError, r"`conditional_input`.*space-to-depth.*\[8, 8\].*\[4, 4\]"):
      image(x, conditional_input=tf.zeros([2, 8, 8, 1]))
    with self.assertRaisesRegex(ValueError, r"`conditional_shape` must be `\(features,\)` or"):
      networks.ConditionalResNet(2, 4, (3, 3))
    with self.assertRaisesRegex(ValueError, r"`context_block_size=3` must divide"):
      networks.ConditionalResNet(2, 4, (8, 8, 1), context_block_size=3)
    with self.assertRaisesRegex(ValueError, r"`conditional_shape` must be a non-empty"):
      networks.ConditionalMLP(2, 4, ())


if __name__ == "__main__":
  tf.test.main()
