"""The ceiling: GFLOP/s of the conditioners' 3x3 convolutions alone, per pass, dtype and memory layout.

Usage, from the repository root:

  python bench/bench_conv.py
  python bench/bench_conv.py --dtypes=float32,bfloat16 --layouts=NHWC,NCHW --shapes=32x32x32,16x16x64

For every (shape `HxWxC`, dtype, layout) a chain of `--depth` same-size convolutions runs forward, then forward
and backward (input and kernel gradients); one JSON line each with the median GFLOP/s of `--timed_runs` runs
(`2 * multiply-adds` per convolution, 3 convolutions' worth for forward+backward). For NHWC the line also has
each pass of one convolution alone (`pass_gflops`): `forward`, `input_gradient` (`Conv2DBackpropInput`),
`kernel_gradient` (`Conv2DBackpropFilter`, the slowest pass of a train step) and
`kernel_gradient_as_forward`, the same kernel gradient computed as a forward convolution with the batch and
channel axes swapped: the rewrite that would pay if the forward kernel ran faster on that shape. The default
shapes are the residual-block convolutions of the small model (scale 0: 32x32x32; scale 1 and the channel
couplings: 16x16x64, 16x16x32); cifar10 doubles their channels.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

_SHAPES = flags.DEFINE_list(
  "shapes", ["32x32x32", "16x16x64", "32x32x64", "16x16x128"], "`HxWxC` feature maps."
)
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_LAYOUTS = flags.DEFINE_list("layouts", ["NHWC", "NCHW"], "Memory layouts.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per call.")
_DEPTH = flags.DEFINE_integer("depth", 8, "Convolutions per chain.")
_THREADS = flags.DEFINE_integer("threads", 2, "Intra-op threads.")
_TIMED_RUNS = flags.DEFINE_integer(
  "timed_runs", 5, "Timed runs after two warm-up runs; GFLOP/s uses the median."
)


def _median_seconds(function, argument, timed_runs):
  for _ in range(2):
    np.asarray(function(argument))
  times = []
  for _ in range(timed_runs):
    start = time.perf_counter()
    np.asarray(function(argument))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def kernel_gradient_as_forward(images, output_gradient, kernel_size=3):
  """`Conv2DBackpropFilter` of a 'SAME', stride-1 convolution of NHWC `images` as one forward convolution.

  `dW[i, j, c, d] = sum_{n, h, w} x[n, h + i - p, w + j - p, c] * dy[n, h, w, d]` (`p = kernel_size // 2`) is a
  'VALID' convolution of the padded `x` with channels as its batch, `[C, H + 2p, W + 2p, N]`, by the filter
  `dy` as `[H, W, N, D]`; its `[C, k, k, D]` output is `dW` transposed.
  """
  pad = kernel_size // 2
  swapped_images = tf.pad(tf.transpose(images, [3, 1, 2, 0]), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  swapped_filter = tf.transpose(output_gradient, [1, 2, 0, 3])
  return tf.transpose(tf.nn.conv2d(swapped_images, swapped_filter, 1, "VALID"), [1, 2, 0, 3])


def _one_convolution_passes(height, width, channels, dtype):
  """GFLOP/s of each pass of one NHWC 3x3 convolution alone, one op a call."""
  batch_size = _BATCH_SIZE.value
  shape = [batch_size, height, width, channels]
  images = tf.cast(tf.random.stateless_normal(shape, seed=[1, 2]), dtype)
  output_gradient = tf.cast(tf.random.stateless_normal(shape, seed=[4, 5]), dtype)
  kernel = tf.cast(tf.random.stateless_normal([3, 3, channels, channels], seed=[3, 0]) * 0.05, dtype)
  strides = [1, 1, 1, 1]
  passes = {
    "forward": tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME")),
    "input_gradient": tf.function(
      lambda dy: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=shape, filter=kernel, out_backprop=dy, strides=strides, padding="SAME"
      )
    ),
    "kernel_gradient": tf.function(
      lambda dy: tf.raw_ops.Conv2DBackpropFilter(
        input=images, filter_sizes=kernel.shape, out_backprop=dy, strides=strides, padding="SAME"
      )
    ),
    "kernel_gradient_as_forward": tf.function(lambda dy: kernel_gradient_as_forward(images, dy)),
  }
  flops = 2 * batch_size * height * width * 9 * channels * channels
  result = {}
  for name, function in passes.items():
    seconds = _median_seconds(function, images if name == "forward" else output_gradient, _TIMED_RUNS.value)
    result[name] = round(flops / seconds / 1e9, 1)
  return result


def _measure(height, width, channels, dtype, layout):
  batch_size, depth = _BATCH_SIZE.value, _DEPTH.value
  shape = [batch_size, height, width, channels] if layout == "NHWC" else [batch_size, channels, height, width]
  images = tf.cast(tf.random.stateless_normal(shape, seed=[1, 2]), dtype)
  kernels = [
    tf.Variable(tf.cast(tf.random.stateless_normal([3, 3, channels, channels], seed=[3, i]) * 0.05, dtype))
    for i in range(depth)
  ]

  def chain(x):
    for kernel in kernels:
      x = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME", data_format=layout))
    return x

  @tf.function
  def forward(x):
    return tf.reduce_sum(tf.cast(chain(x), tf.float32))

  @tf.function
  def forward_backward(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.cast(chain(x), tf.float32))
    input_gradient, *kernel_gradients = tape.gradient(loss, [x, *kernels])
    return tf.reduce_sum(tf.cast(input_gradient, tf.float32)) + tf.add_n(
      [tf.reduce_sum(tf.cast(g, tf.float32)) for g in kernel_gradients]
    )

  flops = 2 * batch_size * height * width * 9 * channels * channels * depth
  result = dict(shape=f"{height}x{width}x{channels}", dtype=dtype, layout=layout, batch_size=batch_size)
  for name, function, multiple in (("forward", forward, 1), ("forward_backward", forward_backward, 3)):
    try:
      seconds = _median_seconds(function, images, _TIMED_RUNS.value)
      result[f"{name}_gflops"] = round(multiple * flops / seconds / 1e9, 1)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as error:
      result[f"{name}_error"] = str(error).splitlines()[0][:200]
  if layout == "NHWC":
    result["pass_gflops"] = _one_convolution_passes(height, width, channels, dtype)
  return result


def main(argv):
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  print(json.dumps(dict(load_average=round(os.getloadavg()[0], 2), threads=_THREADS.value)), flush=True)
  for shape in _SHAPES.value:
    height, width, channels = (int(size) for size in shape.split("x"))
    for dtype in _DTYPES.value:
      for layout in _LAYOUTS.value:
        print(json.dumps(_measure(height, width, channels, dtype, layout)), flush=True)


if __name__ == "__main__":
  app.run(main)
