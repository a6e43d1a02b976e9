"""The benchmark's measuring tools: FLOP counts from first principles, and one end-to-end bench run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp import networks
from tfp_realnvp.bijectors import AffineCoupling
from tfp_realnvp.flows import RealNVP

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, _BENCH_DIR)
import workloads  # noqa: E402
from flop_count import graph_flops  # noqa: E402


def _conv_flops_per_image(flow):
  """`2 * multiply-adds` of every conditioner convolution in one pass of one image, counted by hand."""
  total = 0
  for coupling in flow.submodules:
    if not isinstance(coupling, AffineCoupling):
      continue
    height, width = coupling.mask.shape[:2]
    for conv in coupling.conditioner.submodules:
      if isinstance(conv, networks.WeightNormConv2D):
        total += 2 * height * width * conv.direction.shape.num_elements()
  return total


class FlopCountTest(tf.test.TestCase):
  def test_convolution_forward_and_backward(self):
    kernel = tf.Variable(tf.random.normal([3, 3, 4, 5]))
    images = tf.random.normal([2, 6, 6, 4])
    forward = 2 * 2 * 6 * 6 * 3 * 3 * 4 * 5

    @tf.function
    def convolve(images):
      return tf.nn.conv2d(images, kernel, 1, "SAME")

    @tf.function
    def gradients(images):
      with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = tf.nn.conv2d(images, kernel, 1, "SAME")
      return tape.gradient(outputs, [images, kernel])

    self.assertEqual(graph_flops(convolve.get_concrete_function(images)), forward)
    # Forward, gradient of the input and gradient of the kernel: three times the forward.
    self.assertEqual(graph_flops(gradients.get_concrete_function(images)), 3 * forward)

  def test_flow_log_prob_is_its_convolutions_plus_a_little_elementwise_work(self):
    flow = RealNVP(event_shape=(8, 8, 3), num_scales=2, num_blocks=1, num_filters=8)
    images = tf.random.uniform([4, 8, 8, 3], maxval=256.0)
    counted = graph_flops(tf.function(flow.log_prob).get_concrete_function(images)) / 4
    by_hand = _conv_flops_per_image(flow)
    self.assertGreater(counted, by_hand)
    self.assertLess(counted, 1.1 * by_hand)


@pytest.mark.slow
class BenchFlowTest(tf.test.TestCase):
  def test_one_run_prints_consistent_figures(self):
    command = [
      sys.executable,
      os.path.join(_BENCH_DIR, "bench_flow.py"),
      "--models=tiny",
      "--modes=fp32",
      "--phases=log_prob,sample",
      "--batch_size=8",
      "--warmup_runs=0",
      "--timed_runs=2",
    ]
    completed = subprocess.run(
      command, capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    )
    self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    result, summary = lines[0], lines[-1]["summary"]
    self.assertNotIn("error", result)
    self.assertEqual((result["model"], result["mode"], result["batch_size"]), ("tiny", "fp32", 8))
    for phase in ("log_prob", "sample"):
      figures = result[phase]
      self.assertLen(figures["step_s"], 2)
      self.assertAllClose(figures["images_per_s"], 8 / (sum(figures["step_s"]) / 2), rtol=0.05)  # median of 2
      self.assertAllClose(figures["gflops"], figures["images_per_s"] * figures["gflop_per_image"], rtol=0.05)
    # Sampling runs the same conditioners as the density, in the other direction.
    self.assertAllClose(result["sample"]["gflop_per_image"], result["log_prob"]["gflop_per_image"], rtol=0.05)
    self.assertGreater(result["peak_rss_mb"], 100)
    self.assertEqual(summary["tiny/fp32"]["log_prob_vs_fp32"], 1.0)


@pytest.mark.slow
class BenchConvTest(tf.test.TestCase):
  def test_the_kernel_gradient_as_a_forward_convolution_is_tensorflows_kernel_gradient(self):
    # In a subprocess: bench_conv defines absl flags that other bench modules define too.
    code = (
      "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, tensorflow as tf, bench_conv; "
      "x = tf.random.stateless_normal([3, 7, 6, 4], seed=[1, 2]); "
      "dy = tf.random.stateless_normal([3, 7, 6, 5], seed=[3, 4]); "
      "expected = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, 4, 5], out_backprop=dy, "
      "strides=[1, 1, 1, 1], padding='SAME'); "
      "np.save(sys.argv[2], np.stack([expected, bench_conv.kernel_gradient_as_forward(x, dy)]))"
    )
    output = os.path.join(self.get_temp_dir(), "kernel_gradients.npy")
    completed = subprocess.run(
      [sys.executable, "-c", code, _BENCH_DIR, output], capture_output=True, text=True, timeout=300
    )
    self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
    expected, rewritten = np.load(output)
    self.assertEqual(expected.shape, (3, 3, 4, 5))
    self.assertGreater(np.abs(expected).min(), 0.0)
    self.assertAllClose(rewritten, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
class WorkloadsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters("bf16_no_recompute", "bf16_composite_bn", "bf16_output")
  def test_an_ablation_mode_takes_the_train_step_of_its_base_mode(self, mode):
    # Same initial weights, same batch: the loss of the first step, taken before the update, is the same
    # function computed another way (the modes' arithmetic differs only by rounding).
    losses = []
    for built_mode in ("bf16", mode):
      tf.random.set_seed(3)
      workload = workloads.build("tiny", built_mode, batch_size=4)
      # Non-trivial couplings: move the zero-initialized layers.
      for variable in workload.flow.trainable_variables:
        variable.assign_add(0.05 * tf.random.stateless_normal(variable.shape, seed=[1, variable.shape.rank]))
      losses.append(float(workload.phases["train"](*workload.arguments["train"])))
    self.assertAllClose(losses[0], losses[1], rtol=5e-3)

  def test_the_no_recompute_ablation_keeps_the_fusable_residual_additions(self):
    # Only the recomputation may differ: every residual addition stays convolution -> bias -> add.
    def fusable_additions(mode):
      workload = workloads.build("tiny", mode, batch_size=4)
      graph = workload.phases["train"].get_concrete_function(*workload.arguments["train"]).graph
      return sum(
        1
        for op in graph.get_operations()
        if op.type == "AddV2"
        and any(t.op.type == "BiasAdd" and t.op.inputs[0].op.type == "Conv2D" for t in op.inputs)
      )

    expected = fusable_additions("bf16")
    self.assertGreater(expected, 0)
    self.assertEqual(fusable_additions("bf16_no_recompute"), expected)


@pytest.mark.slow
class BenchAccuracyTest(tf.test.TestCase):
  def test_a_runs_init_seed_is_its_configs_seed(self):
    # `train_and_evaluate` seeds TensorFlow with `config.seed`, so that is where the init seed must go. In a
    # subprocess: bench_accuracy defines absl flags that other bench modules define too.
    code = (
      "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_accuracy; "
      "from tfp_realnvp.training import configs; base = configs.get_config(); "
      "runs = [bench_accuracy.run_config(base, 'bf16', 3, 5), bench_accuracy.run_config(base, 'fp32', 1)]; "
      "print(json.dumps([[c.seed, c.num_train_steps, c.eval_every_steps, c.model_overrides] for c in runs] "
      "+ [base.seed, base.num_train_steps]))"
    )
    completed = subprocess.run(
      [sys.executable, "-c", code, _BENCH_DIR], capture_output=True, text=True, timeout=300
    )
    self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
    bf16, fp32, base_seed, base_steps = json.loads(completed.stdout.splitlines()[-1])
    self.assertEqual(base_seed, 0)
    self.assertEqual(bf16[:3], [3, 5, 0])
    self.assertEqual(bf16[3]["compute_dtype"], "bfloat16")
    self.assertEqual(fp32[:3], [1, base_steps, 0])
    self.assertNotIn("compute_dtype", fp32[3])


if __name__ == "__main__":
  tf.test.main()
