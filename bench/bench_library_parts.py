"""Hand-written parts against the tf_keras ones that could replace them, measured (~1 min, JSON lines).

Usage, from the repository root: `python bench/bench_library_parts.py`.

`optimization.DynamicLossScale` (with the `Trainer`) against `tf_keras.mixed_precision.LossScaleOptimizer`
in a custom loop:

- `loss_scale`: a float16 flow's step on a batch with one pixel outside `[0, 2**num_bits)`: its loss is
  infinite, its gradients finite. Whether each applies the update, how far the weights move, the scale after.

The conditioners' batch norm (`networks.BatchNormalization`) against
`tf_keras.layers.BatchNormalization(synchronized=True)`:

- `exactness`: under `MirroredStrategy` on 2 logical CPUs, each implementation's training-mode output and
  running averages against one device's on the global batch (max abs difference), for activations of
  mean 2 / std 3 and of mean 300 / std 0.1 (where `E[x**2] - E[x]**2` in float32 cancels).
- `speed`: one device, forward + backward of 4 blocks `conv 3x3 -> batch norm -> relu` (batch 64, 16x16x64).
- `checkpoint_keys`: the keys a `tf.train.Checkpoint(batch_norm=...)` writes for each.
"""

import json
import statistics
import tempfile
import time

import tensorflow as tf

tf.config.set_logical_device_configuration(
  tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
tf.config.threading.set_intra_op_parallelism_threads(2)

import numpy as np  # noqa: E402
import tf_keras as tfk  # noqa: E402

from tfp_realnvp import networks  # noqa: E402
from tfp_realnvp.flows import RealNVP  # noqa: E402
from tfp_realnvp.training import losses, optimization, train_lib  # noqa: E402

TINY_MODEL = {"num_scales": 1, "num_blocks": 1, "num_filters": 8, "dropout": 0.0}

EPSILON, MOMENTUM, CHANNELS = 1e-4, 0.5, 8


def ours():
  return networks.BatchNormalization(CHANNELS, momentum=MOMENTUM, epsilon=EPSILON)


def keras_synchronized():
  layer = tfk.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, synchronized=True)
  layer.build([None, 4, 4, CHANNELS])
  return layer


def running_averages(layer):
  return [tf.convert_to_tensor(layer.moving_mean), tf.convert_to_tensor(layer.moving_variance)]


def exactness(strategy, make, x):
  reference = make()  # one device, the global batch
  expected = reference(x, training=True)
  with strategy.scope():
    layer = make()
  half = x.shape[0] // 2
  shards = strategy.experimental_distribute_values_from_function(
    lambda context: x[context.replica_id_in_sync_group * half : (context.replica_id_in_sync_group + 1) * half]
  )
  outputs = strategy.experimental_local_results(
    strategy.run(tf.function(lambda shard: layer(shard, training=True)), args=(shards,))
  )
  output_error = float(tf.reduce_max(tf.abs(tf.concat(outputs, 0) - expected)))
  average_error = max(
    float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(running_averages(layer), running_averages(reference))
  )
  return {"output_max_abs_error": output_error, "running_average_max_abs_error": average_error}


def training_step(make):
  """A `tf.function`: forward + backward of 4 blocks `conv 3x3 -> make(64) -> relu`, warmed up."""
  kernels = [tf.Variable(tf.random.normal([3, 3, 64, 64], stddev=0.06)) for _ in range(4)]
  layers = [make(64) for _ in range(4)]
  x = tf.random.normal([64, 16, 16, 64])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      h = x
      for kernel, layer in zip(kernels, layers):
        h = tf.nn.relu(layer(tf.nn.conv2d(h, kernel, 1, "SAME"), training=True))
      loss = tf.reduce_mean(tf.square(h))
    variables = kernels + [v for layer in layers for v in layer.trainable_variables]
    return tape.gradient(loss, variables)

  for _ in range(3):
    step()
  return step


def speed(makers, repeats=21):
  """Median seconds per step of each, timed in alternation (so a busy machine slows both alike)."""
  steps = {name: training_step(make) for name, make in makers.items()}
  times = {name: [] for name in steps}
  for _ in range(repeats):
    for name, step in steps.items():
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), step())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


def checkpoint_keys(layer):
  path = tf.train.Checkpoint(batch_norm=layer).write(tempfile.mkdtemp() + "/ckpt")
  return sorted(name for name, _ in tf.train.list_variables(path) if name.startswith("batch_norm/"))


def loss_scale():
  images = np.random.default_rng(3).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)
  outside = images.copy()
  outside[0, 0, 0, 0] = 17.0  # past the support (-0.889, 16.889): log p = -inf for that row, finite gradients
  make_flow = lambda: RealNVP.from_preset("digits", **TINY_MODEL, compute_dtype="float16")  # noqa: E731

  tf.random.set_seed(6)
  flow = make_flow()
  optimizer = tfk.mixed_precision.LossScaleOptimizer(optimization.adam(), initial_scale=2.0**15)
  optimizer.build(flow.trainable_variables)

  @tf.function
  def keras_step(x):
    with tf.GradientTape() as tape:
      loss = losses.bits_per_dim_loss(flow, x, 5e-5).total
      scaled = optimizer.get_scaled_loss(loss)
    gradients = tape.gradient(scaled, flow.trainable_variables, unconnected_gradients="zero")
    gradients = optimizer.get_unscaled_gradients(gradients)
    optimizer.apply_gradients(zip(gradients, flow.trainable_variables))
    return loss, tf.linalg.global_norm(gradients)

  tf.random.set_seed(6)
  trainer = train_lib.Trainer(tf.distribute.get_strategy(), make_flow, global_batch_size=8)
  results = {}
  for name, variables, step in (
    ("keras_loss_scale_optimizer", flow.variables, keras_step),
    ("trainer_dynamic_loss_scale", trainer.flow.variables, trainer.train_step),
  ):
    for _ in range(2):  # the zero-initialized output layers pass no gradient at first
      step(tf.constant(images))
    before = [variable.numpy() for variable in variables]
    loss, second = step(tf.constant(outside))
    moved = max(float(np.max(np.abs(a - v.numpy()))) for a, v in zip(before, variables))
    scale = optimizer.loss_scale if name.startswith("keras") else trainer.loss_scale.scale
    results[name] = {"loss": float(loss), "weights_moved": moved, "scale_after": float(scale)}
    if name.startswith("keras"):
      results[name]["gradient_norm"] = float(second)
    else:
      results[name]["applied"] = bool(second)
  return results


def main():
  print(json.dumps({"loss_scale": loss_scale()}), flush=True)
  implementations = {"ours": ours, "keras_synchronized": keras_synchronized}
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one: collective keys are per strategy
  for mean, std in ((2.0, 3.0), (300.0, 0.1)):
    x = mean + std * tf.random.stateless_normal([8, 4, 4, CHANNELS], seed=[1, 2])
    for name, make in implementations.items():
      print(
        json.dumps({"exactness": name, "mean": mean, "std": std, **exactness(strategy, make, x)}), flush=True
      )
  makers = {
    "ours": lambda channels: networks.BatchNormalization(channels, momentum=MOMENTUM, epsilon=EPSILON),
    "keras_synchronized": lambda channels: tfk.layers.BatchNormalization(
      momentum=MOMENTUM, epsilon=EPSILON, synchronized=True
    ),
  }
  seconds = speed(makers)
  print(json.dumps({"speed": seconds, "keras_over_ours": seconds["keras_synchronized"] / seconds["ours"]}))
  print(
    json.dumps({"checkpoint_keys": {name: checkpoint_keys(make()) for name, make in implementations.items()}})
  )


if __name__ == "__main__":
  main()
