"""The benchmarked models, speed modes and phases, shared by `bench_flow.py` and `profile_flow.py` (no flags).

```python
workload = workloads.build("small", "bf16", batch_size=64)
loss = workload.phases["train"](*workload.arguments["train"])
```
"""

import dataclasses
import os

import tensorflow as tf

from tfp_realnvp.flows import PRESETS, RealNVP
from tfp_realnvp.training import losses, optimization

__all__ = ["MODELS", "MODES", "PHASES", "REFERENCE", "Workload", "build", "configure", "run_description"]

PHASES = ("train", "log_prob", "sample")

# Model shapes; `RealNVP(**MODELS[name])`. `digits` is the preset of the bundled-digits training run.
MODELS = {
  "small": dict(event_shape=(32, 32, 3), num_scales=2, num_blocks=4, num_filters=32),
  "cifar10": dict(event_shape=(32, 32, 3), num_scales=2, num_blocks=8, num_filters=64),  # the paper's
  "digits": PRESETS["digits"],
  "tiny": dict(event_shape=(8, 8, 3), num_scales=2, num_blocks=1, num_filters=8),
}

# Speed modes: conditioner compute dtype, XLA, TensorFlow's automatic oneDNN bfloat16 rewrite, environment
# (set before TensorFlow loads, so only in a fresh process), and an ablation that disables the fused batch norm
# of the ResNet conditioners.
MODES = {
  "fp32": dict(),
  "bf16": dict(compute_dtype="bfloat16"),
  "fp32_xla": dict(jit_compile=True),
  "bf16_xla": dict(compute_dtype="bfloat16", jit_compile=True),
  # The conditioners' output convolutions in bfloat16 too (`full_precision_output=False`): changes the arithmetic.
  "bf16_output": dict(compute_dtype="bfloat16", full_precision_output=False),
  "auto_bf16": dict(auto_bfloat16=True),
  "fp32_no_onednn": dict(env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
  "fp32_onednn_bf16_math": dict(env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
  "fp32_composite_bn": dict(composite_batch_norm=True),
  "bf16_composite_bn": dict(compute_dtype="bfloat16", composite_batch_norm=True),
  # Ablation: every batch norm, ReLU and convolution as the plain composition, without the recomputing gradient.
  "bf16_no_recompute": dict(compute_dtype="bfloat16", plain_relu_conv2d=True),
  # oneDNN and TensorFlow-oneDNN environment settings (TensorFlow 2.21 reads these names).
  "bf16_onednn_bf16_math": dict(compute_dtype="bfloat16", env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
  "bf16_system_allocator": dict(compute_dtype="bfloat16", env={"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}),
  "bf16_caller_thread": dict(compute_dtype="bfloat16", env={"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}),
  "bf16_primitive_memuse_off": dict(compute_dtype="bfloat16", env={"TF_MKL_OPTIMIZE_PRIMITIVE_MEMUSE": "0"}),
  "bf16_primitive_cache_4096": dict(
    compute_dtype="bfloat16", env={"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4096"}
  ),
}

# chrischute/real-nvp (PyTorch) on a machine like this one, batch 64, 2 threads, fp32 (the first figures on
# docs/results/speed.md). Its architecture is larger than ours at the same settings (it doubles the features
# of the channel couplings and adds 1x1 skip convolutions: 2.51M and 19.57M parameters), so `gflop_per_image`
# (2 x multiply-adds of its convolutions, counted from its code) gives the FLOP-normalized comparison.
REFERENCE = {
  "small": dict(train=35.6, log_prob=130.6, sample=118.8, peak_rss_gb=2.1, gflop_per_image=1.654),
  "cifar10": dict(train=6.1, log_prob=20.0, sample=18.9, peak_rss_gb=6.7, gflop_per_image=12.913),
}


@dataclasses.dataclass
class Workload:
  """A flow, its optimizer, and each phase as a `tf.function` with the arguments to call it with."""

  flow: RealNVP
  optimizer: object
  phases: dict
  arguments: dict


def configure(mode, threads, inter_op_threads=0):
  """Process-wide settings of `mode`; call before building anything."""
  settings = MODES[mode]
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  if inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
  if settings.get("auto_bfloat16"):
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})


def build(model, mode, batch_size):
  """`model` in `mode` on a fixed batch of random pixels (uniform on `[0, 2**num_bits)`)."""
  settings = MODES[mode]
  flow = RealNVP(
    **MODELS[model],
    compute_dtype=settings.get("compute_dtype"),
    full_precision_output=settings.get("full_precision_output", True),
    # Ablation only: every batch norm of the conditioners takes the composite path.
    fused_batch_norm=not settings.get("composite_batch_norm", False),
  )
  if settings.get("plain_relu_conv2d"):
    _use_plain_relu_conv2d(flow)
  optimizer = optimization.adam(1e-3)
  optimizer.build(flow.trainable_variables)
  pixels = tf.random.stateless_uniform(
    [batch_size, *flow.event_shape], seed=[7, 11], maxval=2.0**flow.num_bits
  )
  jit_compile = settings.get("jit_compile", False)

  @tf.function(jit_compile=jit_compile)
  def train(images):
    # The loss of every trainer; Adam clipping at global norm 100.
    with tf.GradientTape() as tape:
      loss = losses.bits_per_dim_loss(flow, images, l2_coefficient=5e-5).total
    gradients = tape.gradient(loss, flow.trainable_variables)
    optimizer.apply_gradients(zip(gradients, flow.trainable_variables))
    return loss

  @tf.function(jit_compile=jit_compile)
  def log_prob(images):
    return flow.log_prob(images)

  @tf.function(jit_compile=jit_compile)
  def sample():
    return flow.sample(batch_size, seed=tf.constant([1, 2]))

  return Workload(
    flow=flow,
    optimizer=optimizer,
    phases={"train": train, "log_prob": log_prob, "sample": sample},
    arguments={"train": (pixels,), "log_prob": (pixels,), "sample": ()},
  )


def _use_plain_relu_conv2d(flow):
  """Ablation: every conditioner batch norm's `relu_conv2d` as the plain composition (keeps its ReLU output)."""
  from tfp_realnvp.networks import BatchNormalization, plus_shortcut

  def plain(norm, x, kernel, training=False, shortcut=None):
    z = tf.nn.conv2d(tf.cast(tf.nn.relu(norm(x, training)), kernel.dtype), kernel, strides=1, padding="SAME")
    # The shortcut as the library adds it (oneDNN fuses it into the convolution), so that the ablation changes
    # only the recomputation.
    return z if shortcut is None else plus_shortcut(z, shortcut, kernel)

  for module in flow.submodules:
    if isinstance(module, BatchNormalization):
      module.relu_conv2d = plain.__get__(module)


def run_description(model, mode, phase, batch_size):
  """The fields that head the JSON line of one phase's run, with the 1-minute load average now."""
  return dict(
    model=model, mode=mode, phase=phase, batch_size=batch_size, load_average=round(os.getloadavg()[0], 2)
  )
