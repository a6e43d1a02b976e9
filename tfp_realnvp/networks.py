"""Conditioner networks for affine couplings: the paper's weight-normalized ResNet, and an MLP.

Both are `tf.Module`s, so every variable is tracked by the coupling bijector, the distribution, checkpoints and
SavedModels. Both take `training` at call time (batch statistics and dropout), and both end in a layer whose
output is exactly zero at initialization, so every coupling starts as the identity.
"""

import tensorflow as tf

from tfp_realnvp.moments import moments_for_mode, moving_average_variable

__all__ = ["BatchNormalization", "MLP", "ResNet", "WeightNormConv2D", "is_regularized"]

# The paper applies L2 regularization (5e-5) to the weight-norm scales and the couplings' tanh scales only.
REGULARIZED_VARIABLE_NAMES = ("weight_scale", "tanh_scale")


def is_regularized(variable):
  """True for the variables the paper's L2 penalty applies to: weight-norm scales and tanh scales."""
  leaf = variable.name.split("/")[-1].split(":")[0]
  return leaf.startswith(REGULARIZED_VARIABLE_NAMES)


class BatchNormalization(tf.Module):
  """Batch normalization over all axes but the last: `gamma * (x - mean) / sqrt(var + eps) + beta`.

  Training uses batch statistics (pooled across replicas) and updates the running averages with
  `avg <- momentum * avg + (1 - momentum) * batch_stat`; inference uses the running averages.
  """

  def __init__(self, num_features, momentum=0.99, epsilon=1e-4, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.momentum = momentum
    self.epsilon = epsilon
    with self.name_scope:
      self.gamma = tf.Variable(tf.ones([num_features], dtype), name="gamma")
      self.beta = tf.Variable(tf.zeros([num_features], dtype), name="beta")
      self.moving_mean = moving_average_variable(tf.zeros([num_features], dtype), "moving_mean")
      self.moving_variance = moving_average_variable(tf.ones([num_features], dtype), "moving_variance")

  def __call__(self, x, training=False):
    mean, variance = moments_for_mode(
        x, self.moving_mean, self.moving_variance, self.momentum, training)
    return tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)


class WeightNormConv2D(tf.Module):
  """A 2-d convolution with weight normalization: `w = weight_scale * direction / ||direction||`.

  The norm is taken per output channel over `[kernel, kernel, in]` (Salimans & Kingma, 2016). With
  `zero_init=True` the scale starts at 0, so the layer outputs exactly its (zero) bias.
  """

  def __init__(self, in_channels, out_channels, kernel_size=3, zero_init=False, dtype=tf.float32,
               name=None):
    super().__init__(name=name)
    with self.name_scope:
      fan_in = kernel_size * kernel_size * in_channels
      self.direction = tf.Variable(
          tf.random.normal([kernel_size, kernel_size, in_channels, out_channels],
                           stddev=(2.0 / fan_in) ** 0.5, dtype=dtype),
          name="direction")
      initial_scale = (tf.zeros([out_channels], dtype) if zero_init
                       else tf.norm(tf.reshape(self.direction, [-1, out_channels]), axis=0))
      self.weight_scale = tf.Variable(initial_scale, name="weight_scale")
      self.bias = tf.Variable(tf.zeros([out_channels], dtype), name="bias")

  @property
  def kernel(self):
    return self.weight_scale * tf.math.l2_normalize(self.direction, axis=[0, 1, 2])

  def __call__(self, x):
    return tf.nn.bias_add(tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME"), self.bias)


class ResidualBlock(tf.Module):
  """Pre-activation residual block: `h + conv(dropout(relu(bn(conv(relu(bn(h)))))))`."""

  def __init__(self, num_filters, dropout=0.0, batch_norm_momentum=0.99, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.dropout = dropout
    with self.name_scope:
      self.norm_in = BatchNormalization(num_filters, batch_norm_momentum, dtype=dtype, name="norm_in")
      self.conv_in = WeightNormConv2D(num_filters, num_filters, dtype=dtype, name="conv_in")
      self.norm_out = BatchNormalization(num_filters, batch_norm_momentum, dtype=dtype, name="norm_out")
      self.conv_out = WeightNormConv2D(num_filters, num_filters, dtype=dtype, name="conv_out")

  def __call__(self, h, training=False):
    residual = self.conv_in(tf.nn.relu(self.norm_in(h, training)))
    residual = tf.nn.relu(self.norm_out(residual, training))
    if training and self.dropout > 0:
      residual = tf.nn.dropout(residual, rate=self.dropout)
    return h + self.conv_out(residual)


class ResNet(tf.Module):
  """The paper's conditioner for image events: `[N, H, W, in_channels] -> [N, H, W, out_channels]`.

  A 3x3 weight-normalized input convolution to `num_filters` features, `num_blocks` pre-activation residual
  blocks, batch norm and ReLU, and a zero-initialized 3x3 output convolution.
  """

  def __init__(self, in_channels, out_channels, num_blocks=4, num_filters=32, dropout=0.0,
               batch_norm_momentum=0.99, dtype=tf.float32, name=None):
    super().__init__(name=name)
    _check_positive(num_blocks=num_blocks, num_filters=num_filters, in_channels=in_channels,
                    out_channels=out_channels)
    _check_rate(dropout)
    with self.name_scope:
      self.conv_in = WeightNormConv2D(in_channels, num_filters, dtype=dtype, name="conv_in")
      self.blocks = [
          ResidualBlock(num_filters, dropout, batch_norm_momentum, dtype=dtype, name=f"block_{i}")
          for i in range(num_blocks)
      ]
      self.norm_out = BatchNormalization(num_filters, batch_norm_momentum, dtype=dtype, name="norm_out")
      self.conv_out = WeightNormConv2D(num_filters, out_channels, zero_init=True, dtype=dtype,
                                       name="conv_out")

  def __call__(self, x, training=False):
    h = self.conv_in(x)
    for block in self.blocks:
      h = block(h, training)
    return self.conv_out(tf.nn.relu(self.norm_out(h, training)))


class MLP(tf.Module):
  """A ReLU multilayer perceptron for vector events, `[N, in_features] -> [N, out_features]`.

  He-initialized hidden layers, optional dropout after each, and a zero-initialized output layer.
  """

  def __init__(self, in_features, out_features, hidden_units=(64, 64), dropout=0.0, dtype=tf.float32,
               name=None):
    super().__init__(name=name)
    _check_positive(in_features=in_features, out_features=out_features)
    if not hidden_units or any(int(units) <= 0 for units in hidden_units):
      raise ValueError(f"`hidden_units` must be a non-empty sequence of positive integers; got {hidden_units!r}.")
    _check_rate(dropout)
    self.dropout = dropout
    with self.name_scope:
      sizes = [in_features, *hidden_units]
      self.kernels = [
          tf.Variable(tf.random.normal([fan_in, fan_out], stddev=(2.0 / fan_in) ** 0.5, dtype=dtype),
                      name=f"kernel_{i}")
          for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))
      ]
      self.biases = [tf.Variable(tf.zeros([units], dtype), name=f"bias_{i}")
                     for i, units in enumerate(hidden_units)]
      self.output_kernel = tf.Variable(tf.zeros([sizes[-1], out_features], dtype), name="output_kernel")
      self.output_bias = tf.Variable(tf.zeros([out_features], dtype), name="output_bias")

  def __call__(self, x, training=False):
    h = x
    for kernel, bias in zip(self.kernels, self.biases):
      h = tf.nn.relu(tf.matmul(h, kernel) + bias)
      if training and self.dropout > 0:
        h = tf.nn.dropout(h, rate=self.dropout)
    return tf.matmul(h, self.output_kernel) + self.output_bias


def _check_positive(**values):
  for name, value in values.items():
    if int(value) <= 0:
      raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def _check_rate(dropout):
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"`dropout` must be in [0, 1); got {dropout!r}.")
