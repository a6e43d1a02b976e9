"""Conditioner networks for affine couplings: the paper's weight-normalized ResNet, and an MLP.

Both are `tf.Module`s, so every variable is tracked by the coupling bijector, the distribution, checkpoints and
SavedModels. Both take `training` at call time (batch statistics and dropout), and both end in a layer whose
output is exactly zero at initialization, so every coupling starts as the identity. `ConditionalResNet` and
`ConditionalMLP` are the same networks with a context as a second input, `conditional_input`, for the
couplings of a conditional flow `p(x | c)`.
"""

import numpy as np
import tensorflow as tf

from tfp_realnvp.internal import checks, contexts
from tfp_realnvp.internal.moments import assign_moving_averages, moments_for_mode, moving_average_variable

__all__ = [
  "BatchNormalization",
  "ConditionalMLP",
  "ConditionalResNet",
  "MLP",
  "ResNet",
  "WeightNormConv2D",
  "is_regularized",
  "plus_shortcut",
]

# The paper applies L2 regularization (5e-5) to the weight-norm scales and the couplings' tanh scales only.
REGULARIZED_VARIABLE_NAMES = ("weight_scale", "tanh_scale")

# Activation dtypes of TensorFlow's fused batch-norm kernel (its parameters and statistics are float32).
_FUSED_BATCH_NORM_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def is_regularized(variable):
  """True for the variables the paper's L2 penalty applies to: weight-norm scales and tanh scales."""
  leaf = variable.name.split("/")[-1].split(":")[0]
  return leaf.startswith(REGULARIZED_VARIABLE_NAMES)


# Kept over `tf_keras.layers.BatchNormalization(synchronized=True)`: its one-pass `E[x^2] - E[x]^2` variance was
# off by 25 in output at mean 300 / std 0.1 on 2 replicas, ours 7.6e-4 (bench/bench_library_parts.py).
class BatchNormalization(tf.Module):
  """Batch normalization over all axes but the last: `gamma * (x - mean) / sqrt(var + eps) + beta`.

  Training uses batch statistics (pooled across replicas) and updates the running averages with
  `avg <- momentum * avg + (1 - momentum) * batch_stat`; inference uses the running averages. The parameters
  and statistics stay in their own dtype whatever the dtype of `x` (e.g. bfloat16 activations), and the output
  has the dtype of `x`. With `fused=True` (the default), rank-4 inputs on one replica use TensorFlow's fused
  kernel: one op forward and one backward instead of a dozen elementwise passes (see `docs/speed.md`).
  `fused=False` always takes the composite path, which computes the same values; benchmarks use it to
  measure the kernel.
  """

  def __init__(self, num_features, momentum=0.99, epsilon=1e-4, fused=True, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.momentum = momentum
    self.epsilon = epsilon
    self.fused = bool(fused)
    with self.name_scope:
      self.gamma = tf.Variable(tf.ones([num_features], dtype), name="gamma")
      self.beta = tf.Variable(tf.zeros([num_features], dtype), name="beta")
      self.moving_mean = moving_average_variable(tf.zeros([num_features], dtype), "moving_mean")
      self.moving_variance = moving_average_variable(tf.ones([num_features], dtype), "moving_variance")

  def __call__(self, x, training=False):
    if self._takes_fused_kernel(x, training):
      return self._fused(x, training)
    # Cross-replica batch statistics, or a rank or dtype the fused kernel does not take: composite ops in
    # the parameters' dtype, folded into one scale and offset applied in the dtype of `x`.
    mean, variance = moments_for_mode(
      tf.cast(x, self.gamma.dtype), self.moving_mean, self.moving_variance, self.momentum, training
    )
    scale = self.gamma * tf.math.rsqrt(variance + self.epsilon)
    offset = self.beta - mean * scale
    return x * tf.cast(scale, x.dtype) + tf.cast(offset, x.dtype)

  def _fused(self, x, training):
    if not training:
      y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x,
        self.gamma,
        self.beta,
        mean=self.moving_mean,
        variance=self.moving_variance,
        epsilon=self.epsilon,
        is_training=False,
      )
      return y
    y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
      x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
    )
    self._update_moving_averages(x, mean, unbiased_variance)
    return y

  def relu_conv2d(self, x, kernel, training=False, shortcut=None):
    """`conv2d(relu(self(x, training)), kernel)`, 'SAME' with stride 1, in the dtype of `kernel`; plus
    `shortcut` when given (a residual connection), added in a way oneDNN folds into the convolution.

    In training on the fused kernel, the gradient keeps only `x` and the batch statistics, not the ReLU
    output: it recomputes `relu(batch_norm(x))` with the fused kernel in inference mode on the saved batch
    statistics, which gives the training output bit for bit, so values and gradients are those of the
    composition. One activation tensor fewer per convolution, for one more elementwise pass each: a few
    percent of the train step for about a quarter of its peak memory (docs/results/speed.md).
    """
    if not (training and self._takes_fused_kernel(x, training)):
      z = tf.nn.conv2d(
        tf.cast(tf.nn.relu(self(x, training)), kernel.dtype), kernel, strides=1, padding="SAME"
      )
      return z if shortcut is None else plus_shortcut(z, shortcut, kernel)
    z, mean, unbiased_variance = _recomputing_relu_conv2d(
      x, self.gamma, self.beta, kernel, self.epsilon, shortcut
    )
    self._update_moving_averages(x, mean, unbiased_variance)
    return z

  def _takes_fused_kernel(self, x, training):
    return (
      self.fused
      and x.shape.rank == 4
      and self.gamma.dtype == tf.float32
      and x.dtype in _FUSED_BATCH_NORM_DTYPES
      and not (training and _num_replicas_in_sync() > 1)
    )

  def _update_moving_averages(self, x, mean, unbiased_variance):
    # The kernel normalizes with the biased variance but returns the unbiased one; average the biased one,
    # as `moments_for_mode` does.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), unbiased_variance.dtype)
    variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
    assign_moving_averages(self.moving_mean, self.moving_variance, mean, variance, self.momentum, count)


def _recomputing_relu_conv2d(x, gamma, beta, kernel, epsilon, shortcut=None):
  """`(conv2d(relu(bn(x)), kernel) [+ shortcut], batch mean, unbiased batch variance)` of a training-mode fused
  batch norm, with a gradient that recomputes `relu(bn(x))` instead of keeping it.

  The gradient is TensorFlow's own for each op (`FusedBatchNormGradV3`, `ReluGrad`, `Cast`,
  `Conv2DBackpropInput`, `Conv2DBackpropFilter`), fed with the recomputed ReLU output.
  """
  strides = [1, 1, 1, 1]

  @tf.custom_gradient
  def forward(x, gamma, beta, kernel, *shortcuts):
    y, mean, unbiased_variance, batch_mean, batch_variance, workspace = _fused_batch_norm(
      x, gamma, beta, epsilon
    )
    z = tf.nn.conv2d(tf.cast(tf.nn.relu(y), kernel.dtype), kernel, strides=1, padding="SAME")
    for shortcut in shortcuts:  # inside, so that the convolution and the addition stay adjacent
      z = plus_shortcut(z, shortcut, kernel)

    def gradient(dz, *unused_statistics_gradients):
      del unused_statistics_gradients  # the statistics only move the running averages, under stop_gradient
      # Not before the backward pass reaches here: run as soon as its inputs exist, the recomputation would
      # hold its output through the rest of the forward pass, as the plain gradient does.
      # The dependency sits on an identity of `x`, not on the batch norm: grappler fuses a batch norm and
      # its ReLU into one oneDNN kernel (`_FusedBatchNormEx`) only when neither has control inputs.
      with tf.control_dependencies([dz]):
        x_after_dz = tf.identity(x)
      y = _fused_batch_norm(x_after_dz, gamma, beta, epsilon, statistics=(batch_mean, batch_variance))[0]
      activation = tf.nn.relu(y)
      conv_input = tf.cast(activation, kernel.dtype)
      d_input = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(conv_input), filter=kernel, out_backprop=dz, strides=strides, padding="SAME"
      )
      d_kernel = tf.raw_ops.Conv2DBackpropFilter(
        input=conv_input, filter_sizes=tf.shape(kernel), out_backprop=dz, strides=strides, padding="SAME"
      )
      d_y = tf.raw_ops.ReluGrad(gradients=tf.cast(d_input, activation.dtype), features=activation)
      d_x, d_gamma, d_beta = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=d_y,
        x=x,
        scale=gamma,
        reserve_space_1=batch_mean,
        reserve_space_2=batch_variance,
        reserve_space_3=workspace,
        epsilon=epsilon,
        is_training=True,
      )[:3]
      return (d_x, d_gamma, d_beta, d_kernel, *[dz for _ in shortcuts])

    return (z, mean, unbiased_variance), gradient

  shortcuts = () if shortcut is None else (shortcut,)
  return forward(x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta), kernel, *shortcuts)


def plus_shortcut(z, shortcut, kernel):
  """`z + shortcut` for `z = conv2d(..., kernel)`, written as `bias_add(z, zero) + shortcut`: grappler's remapper
  fuses a convolution, a bias and an addition into one oneDNN convolution that accumulates onto `shortcut`
  (one pass less over the activations), but not a convolution and an addition alone. A zero bias it can fold
  into a constant is removed before that, so `zero` comes from `kernel`; it carries no gradient."""
  zero = tf.stop_gradient(kernel[0, 0, 0] * 0)
  return tf.nn.bias_add(z, zero) + shortcut


def _fused_batch_norm(x, gamma, beta, epsilon, statistics=None):
  """All six outputs of TensorFlow's `FusedBatchNormV3`: on the batch statistics when `statistics` is None
  (training mode, as `tf.compat.v1.nn.fused_batch_norm(..., is_training=True)`, whose epsilon floor, 1.001e-5,
  is below any epsilon `BatchNormalization` takes here), else on the given `(mean, variance)` (inference mode).
  """
  is_training = statistics is None
  mean, variance = (tf.constant([], gamma.dtype),) * 2 if is_training else statistics
  return tf.raw_ops.FusedBatchNormV3(
    x=x,
    scale=gamma,
    offset=beta,
    mean=mean,
    variance=variance,
    epsilon=epsilon,
    is_training=is_training,
  )


class WeightNormConv2D(tf.Module):
  """A 2-d convolution with weight normalization: `w = weight_scale * direction / ||direction||`.

  The norm is taken per output channel over `[kernel, kernel, in]` (Salimans & Kingma, 2016). With
  `zero_init=True` the scale starts at 0, so the layer outputs exactly its (zero) bias. `use_bias=False` for a
  convolution whose output only reaches a batch norm, which would cancel a bias (its gradient is zero). The
  kernel is normalized in the variables' dtype and the convolution runs in the dtype of its input (e.g. bfloat16).
  """

  def __init__(
    self,
    in_channels,
    out_channels,
    kernel_size=3,
    zero_init=False,
    use_bias=True,
    dtype=tf.float32,
    name=None,
  ):
    super().__init__(name=name)
    with self.name_scope:
      fan_in = kernel_size * kernel_size * in_channels
      self.direction = tf.Variable(
        tf.random.normal(
          [kernel_size, kernel_size, in_channels, out_channels], stddev=(2.0 / fan_in) ** 0.5, dtype=dtype
        ),
        name="direction",
      )
      initial_scale = (
        tf.zeros([out_channels], dtype)
        if zero_init
        else tf.norm(tf.reshape(self.direction, [-1, out_channels]), axis=0)
      )
      self.weight_scale = tf.Variable(initial_scale, name="weight_scale")
      self.bias = tf.Variable(tf.zeros([out_channels], dtype), name="bias") if use_bias else None

  @property
  def kernel(self):
    return self.weight_scale * tf.math.l2_normalize(self.direction, axis=[0, 1, 2])

  def kernel_in(self, dtype):
    """`kernel` cast to `dtype`, as `__call__` convolves an input of that dtype with it."""
    return tf.cast(self.kernel, dtype)

  def add_bias(self, y):
    """`y + bias` (no bias: `y`), in the dtype of `y`: the convolution's output from `conv2d(x, kernel_in(...))`."""
    return y if self.bias is None else tf.nn.bias_add(y, tf.cast(self.bias, y.dtype))

  def __call__(self, x):
    return self.add_bias(tf.nn.conv2d(x, self.kernel_in(x.dtype), strides=1, padding="SAME"))


class ResidualBlock(tf.Module):
  """Pre-activation residual block: `h + conv(dropout(relu(bn(conv(relu(bn(h)))))))`.

  Its convolutions have no bias: each output reaches the rest of the network only through a batch norm.
  `fused_batch_norm` is `BatchNormalization`'s `fused`.
  """

  def __init__(
    self,
    num_filters,
    dropout=0.0,
    batch_norm_momentum=0.99,
    fused_batch_norm=True,
    dtype=tf.float32,
    name=None,
  ):
    super().__init__(name=name)
    self.dropout = dropout
    with self.name_scope:
      self.norm_in = BatchNormalization(
        num_filters, batch_norm_momentum, fused=fused_batch_norm, dtype=dtype, name="norm_in"
      )
      self.conv_in = WeightNormConv2D(num_filters, num_filters, use_bias=False, dtype=dtype, name="conv_in")
      self.norm_out = BatchNormalization(
        num_filters, batch_norm_momentum, fused=fused_batch_norm, dtype=dtype, name="norm_out"
      )
      self.conv_out = WeightNormConv2D(num_filters, num_filters, use_bias=False, dtype=dtype, name="conv_out")

  def __call__(self, h, training=False):
    residual = self.norm_in.relu_conv2d(h, self.conv_in.kernel_in(h.dtype), training)
    if training and self.dropout > 0:
      residual = tf.nn.dropout(tf.nn.relu(self.norm_out(residual, training)), rate=self.dropout)
      return h + self.conv_out(residual)
    # `conv_out` has no bias: the sum is `h + conv_out(relu(norm_out(residual)))`.
    return self.norm_out.relu_conv2d(residual, self.conv_out.kernel_in(h.dtype), training, shortcut=h)


class ResNet(tf.Module):
  """The paper's conditioner for image events: `[N, H, W, in_channels] -> [N, H, W, out_channels]`.

  A 3x3 weight-normalized input convolution to `num_filters` features, `num_blocks` pre-activation residual
  blocks, batch norm and ReLU, and a zero-initialized 3x3 output convolution. Every path from a hidden
  convolution to the output passes a batch norm, so only the output convolution has a bias.

  With `compute_dtype=tf.bfloat16` (mixed precision) the convolutions, batch norms and activations run in
  bfloat16 while the variables, batch statistics and running averages stay in `dtype`; the output convolution
  runs in the dtype of the input, which is also the output's, unless `full_precision_output=False`: then it
  runs in `compute_dtype` too and only its output is cast back (its bias is added after the cast).
  `fused_batch_norm=False` makes every batch norm take the composite path instead of TensorFlow's fused kernel
  (same values; see `BatchNormalization`).
  """

  def __init__(
    self,
    in_channels,
    out_channels,
    num_blocks=4,
    num_filters=32,
    dropout=0.0,
    batch_norm_momentum=0.99,
    fused_batch_norm=True,
    dtype=tf.float32,
    compute_dtype=None,
    full_precision_output=True,
    name=None,
  ):
    super().__init__(name=name)
    _check_positive(
      num_blocks=num_blocks, num_filters=num_filters, in_channels=in_channels, out_channels=out_channels
    )
    _check_rate(dropout)
    self.compute_dtype = _check_compute_dtype(compute_dtype, dtype)
    self.full_precision_output = checks.boolean("full_precision_output", full_precision_output)
    with self.name_scope:
      self.conv_in = WeightNormConv2D(in_channels, num_filters, use_bias=False, dtype=dtype, name="conv_in")
      self.blocks = [
        ResidualBlock(
          num_filters, dropout, batch_norm_momentum, fused_batch_norm, dtype=dtype, name=f"block_{i}"
        )
        for i in range(num_blocks)
      ]
      self.norm_out = BatchNormalization(
        num_filters, batch_norm_momentum, fused=fused_batch_norm, dtype=dtype, name="norm_out"
      )
      self.conv_out = WeightNormConv2D(
        num_filters, out_channels, zero_init=True, dtype=dtype, name="conv_out"
      )

  def __call__(self, x, training=False):
    if x.shape[0] is None or x.shape[0] == 0:
      # TF 2.21's oneDNN `conv2d` returns an empty batch with its input's channel count, which breaks the
      # next layer: a batch that may be empty gets one zero row when it is, and the output drops it.
      # The filler row runs in inference mode, so an empty training batch moves no running average.
      batch_size = tf.shape(x)[0]
      filler = tf.zeros(tf.concat([[1 - tf.minimum(batch_size, 1)], tf.shape(x)[1:]], 0), x.dtype)
      padded = tf.concat([x, filler], 0)
      if not training:
        return self._apply(padded, False)[:batch_size]
      return tf.cond(
        batch_size > 0,
        lambda: self._apply(padded, True)[:batch_size],
        lambda: self._apply(padded, False)[:batch_size],
      )
    return self._apply(x, training)

  def _apply(self, x, training):
    h = self.conv_in(tf.cast(x, self.compute_dtype))
    for block in self.blocks:
      h = block(h, training)
    # By default the output convolution (a few percent of the FLOPs) runs in the input's dtype, so the shift
    # and log-scale are accumulated at full precision.
    dtype = x.dtype if self.full_precision_output else self.compute_dtype
    y = self.norm_out.relu_conv2d(h, self.conv_out.kernel_in(dtype), training)
    return self.conv_out.add_bias(tf.cast(y, x.dtype))


class MLP(tf.Module):
  """A ReLU multilayer perceptron for vector events, `[N, in_features] -> [N, out_features]`.

  He-initialized hidden layers, optional dropout after each, and a zero-initialized output layer. With
  `compute_dtype` (e.g. `tf.bfloat16`) the hidden layers compute in it; the output layer runs in the dtype of
  the input, which is also the output's, unless `full_precision_output=False` (as in `ResNet`).
  """

  def __init__(
    self,
    in_features,
    out_features,
    hidden_units=(64, 64),
    dropout=0.0,
    dtype=tf.float32,
    compute_dtype=None,
    full_precision_output=True,
    name=None,
  ):
    super().__init__(name=name)
    _check_positive(in_features=in_features, out_features=out_features)
    hidden_units = checks.positive_ints("hidden_units", hidden_units)
    _check_rate(dropout)
    self.dropout = dropout
    self.compute_dtype = _check_compute_dtype(compute_dtype, dtype)
    self.full_precision_output = checks.boolean("full_precision_output", full_precision_output)
    with self.name_scope:
      sizes = [in_features, *hidden_units]
      self.kernels = [
        tf.Variable(
          tf.random.normal([fan_in, fan_out], stddev=(2.0 / fan_in) ** 0.5, dtype=dtype), name=f"kernel_{i}"
        )
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))
      ]
      self.biases = [
        tf.Variable(tf.zeros([units], dtype), name=f"bias_{i}") for i, units in enumerate(hidden_units)
      ]
      self.output_kernel = tf.Variable(tf.zeros([sizes[-1], out_features], dtype), name="output_kernel")
      self.output_bias = tf.Variable(tf.zeros([out_features], dtype), name="output_bias")

  def __call__(self, x, training=False):
    dtype = self.compute_dtype
    h = tf.cast(x, dtype)
    for kernel, bias in zip(self.kernels, self.biases):
      h = tf.nn.relu(tf.matmul(h, tf.cast(kernel, dtype)) + tf.cast(bias, dtype))
      if training and self.dropout > 0:
        h = tf.nn.dropout(h, rate=self.dropout)
    # As in `ResNet`, the output layer runs in the input's dtype by default.
    output_dtype = x.dtype if self.full_precision_output else dtype
    y = tf.matmul(tf.cast(h, output_dtype), tf.cast(self.output_kernel, output_dtype))
    return tf.cast(y, x.dtype) + self.output_bias


class ConditionalResNet(ResNet):
  """`ResNet` with a context: `[N, H, W, in_channels]` and `[N, *conditional_shape]` -> `[N, H, W, out_channels]`.

  The context joins the input as extra channels of the input convolution:

  - a vector context `(features,)` through a learned projection `c @ context_kernel + context_bias` to
    `context_features` channels, broadcast over height and width;
  - an image context `(height, width, channels)` as it is, space-to-depth'ed by `context_block_size` first
    (`tf.nn.space_to_depth`, as the multi-scale flow squeezes its data), so that a coupling at a coarser
    scale sees the context at its own resolution: `context_block_size**2 * channels` channels.

  Concatenation rather than FiLM (a per-block scale and shift computed from the context): one mechanism for
  both kinds of context, a single projection instead of one per block, and the residual blocks after the
  input convolution still compute any nonlinear function of data and context jointly. The output
  convolution is still zero-initialized, so a conditional coupling also starts as the identity. Other
  arguments as in `ResNet`.
  """

  def __init__(
    self,
    in_channels,
    out_channels,
    conditional_shape,
    context_features=16,
    context_block_size=1,
    name=None,
    **resnet_kwargs,
  ):
    self.conditional_shape = _check_conditional_shape(conditional_shape, allowed_ranks=(1, 3))
    self.context_block_size = checks.positive_int("context_block_size", context_block_size)
    context_features = checks.positive_int("context_features", context_features)
    if len(self.conditional_shape) == 3:
      height, width, channels = self.conditional_shape
      if height % self.context_block_size or width % self.context_block_size:
        raise ValueError(
          f"`context_block_size={context_block_size}` must divide the height and width of "
          f"`conditional_shape={self.conditional_shape}`."
        )
      context_channels = self.context_block_size**2 * channels
    else:
      context_channels = context_features
    super().__init__(in_channels + context_channels, out_channels, name=name, **resnet_kwargs)
    if len(self.conditional_shape) == 1:
      dtype = self.conv_in.direction.dtype
      (features,) = self.conditional_shape
      with self.name_scope:
        self.context_kernel = tf.Variable(
          tf.random.normal([features, context_channels], stddev=features**-0.5, dtype=dtype),
          name="context_kernel",
        )
        self.context_bias = tf.Variable(tf.zeros([context_channels], dtype), name="context_bias")

  def __call__(self, x, conditional_input, training=False):
    context = _check_context(self, conditional_input)
    return super().__call__(tf.concat([x, self._context_channels(context, x)], axis=-1), training)

  def _context_channels(self, context, x):
    """The context as channels at the resolution of `x`: `[N, H, W, context channels]`, dtype of `x`."""
    context = tf.cast(context, x.dtype)
    if len(self.conditional_shape) == 1:
      kernel, bias = tf.cast(self.context_kernel, x.dtype), tf.cast(self.context_bias, x.dtype)
      projected = tf.matmul(context, kernel) + bias
      return tf.broadcast_to(
        projected[:, tf.newaxis, tf.newaxis, :], tf.concat([tf.shape(x)[:-1], tf.shape(projected)[-1:]], 0)
      )
    if self.context_block_size > 1:
      context = tf.nn.space_to_depth(context, self.context_block_size)
    if x.shape[1:3].is_fully_defined() and context.shape[1:3] != x.shape[1:3]:
      raise ValueError(
        f"`conditional_input` of shape {list(self.conditional_shape)}, space-to-depth'ed by "
        f"`context_block_size={self.context_block_size}`, has height and width "
        f"{context.shape[1:3].as_list()}, but the input has {x.shape[1:3].as_list()}."
      )
    return context


class ConditionalMLP(MLP):
  """`MLP` with a context: `[N, in_features]` and `[N, *conditional_shape]` -> `[N, out_features]`.

  The context is flattened and concatenated to the input, so the first hidden layer is its learned
  projection (`kernel_0` has `in_features + prod(conditional_shape)` rows); the output layer is still
  zero-initialized. Other arguments as in `MLP`.
  """

  def __init__(self, in_features, out_features, conditional_shape, name=None, **mlp_kwargs):
    self.conditional_shape = _check_conditional_shape(conditional_shape)
    super().__init__(
      in_features + int(np.prod(self.conditional_shape)), out_features, name=name, **mlp_kwargs
    )

  def __call__(self, x, conditional_input, training=False):
    context = _check_context(self, conditional_input)
    flat_context = tf.reshape(tf.cast(context, x.dtype), [-1, int(np.prod(self.conditional_shape))])
    return super().__call__(tf.concat([x, flat_context], axis=-1), training)


def _check_conditional_shape(conditional_shape, allowed_ranks=None):
  """`conditional_shape` as a tuple of positive Python ints (of a rank in `allowed_ranks`, when given)."""
  shape = checks.positive_ints("conditional_shape", conditional_shape)
  if allowed_ranks and len(shape) not in allowed_ranks:
    raise ValueError(
      "`conditional_shape` must be `(features,)` or `(height, width, channels)` with positive sizes; got "
      f"{conditional_shape!r}."
    )
  return shape


def _check_context(network, conditional_input):
  """`conditional_input` as a floating tensor `[N, *network.conditional_shape]` (`contexts.check`)."""
  return contexts.check(
    conditional_input,
    network.conditional_shape,
    None,
    f"`{network.name}`",
    shape_name="conditional_shape",
    batch_rank=1,
  )


def _check_compute_dtype(compute_dtype, dtype):
  """`compute_dtype` as a `tf.DType` (`dtype` when None); raises unless it is a floating dtype."""
  if compute_dtype is None:
    return tf.as_dtype(dtype)
  allowed = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
  try:
    as_dtype = tf.as_dtype(compute_dtype)
  except TypeError:
    as_dtype = None
  if as_dtype not in allowed:
    raise ValueError(
      f"`compute_dtype` must be None or one of {', '.join(d.name for d in allowed)}; got {compute_dtype!r}."
    )
  return as_dtype


def _num_replicas_in_sync():
  context = tf.distribute.get_replica_context()
  return 1 if context is None else context.num_replicas_in_sync


def _check_positive(**values):
  for name, value in values.items():
    checks.positive_int(name, value)


def _check_rate(dropout):
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"`dropout` must be in [0, 1); got {dropout!r}.")
