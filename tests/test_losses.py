"""`bits_per_dim_loss`: the training loss, by hand on a perturbed flow, and its share per replica."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.bijector_testing import perturb
from tests.training_testing import TINY_MODEL, script_environment
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training import losses

IMAGES = np.random.default_rng(4).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)

# One process with 2 logical CPUs (configured before TensorFlow's first op): the loss of a global batch on one
# device, and the replicas' shares of it under MirroredStrategy. Prints a JSON report.
MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np
from tfp_realnvp.training import strategies
strategies.configure_cpu_devices(2)
import tensorflow as tf
from tests.bijector_testing import perturb
from tfp_realnvp.training import losses
from tfp_realnvp.flows import RealNVP

overrides = json.loads(sys.argv[1])
images = np.random.default_rng(4).uniform(0, 16, size=[8, 8, 8, 1]).astype(np.float32)
report = {}
for name in ("default", "mirrored"):
  strategy = strategies.get_strategy(name)
  with strategy.scope():
    tf.random.set_seed(3)
    flow = RealNVP.from_preset("digits", **overrides)
  perturb(flow, stddev=0.1)
  batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(images))))
  def step(images):
    loss = losses.bits_per_dim_loss(flow, images, 1e-2, global_batch_size=8)
    return loss.total, loss.mean_bits_per_dim
  total, mean = tf.function(lambda batch: strategy.run(step, args=(batch,)))(batch)
  report[name] = dict(
    replicas=strategy.num_replicas_in_sync,
    total=[float(t) for t in strategy.experimental_local_results(total)],
    mean_bits_per_dim=[float(m) for m in strategy.experimental_local_results(mean)],
  )
print(json.dumps(report))
"""


def tiny_flow():
  tf.random.set_seed(3)
  flow = RealNVP.from_preset("digits", **TINY_MODEL)
  flow.log_prob(IMAGES, training=True)
  perturb(flow, stddev=0.1)
  return flow


class BitsPerDimLossTest(tf.test.TestCase):
  def test_equals_the_hand_computed_loss_on_a_perturbed_flow(self):
    flow = tiny_flow()
    l2_coefficient = 1e-2  # large enough for the penalty to show
    loss = losses.bits_per_dim_loss(flow, IMAGES, l2_coefficient)
    # Batch statistics (training mode, no dropout): the same values on every call.
    bits_per_dim = -flow.log_prob(IMAGES, training=True).numpy() / (8 * 8 * 1 * math.log(2.0))
    penalty = l2_coefficient * sum(np.sum(np.square(v.numpy())) for v in flow.regularized_variables)
    self.assertNotEmpty(flow.regularized_variables)
    self.assertGreater(penalty, 1e-3)
    self.assertAllClose(loss.bits_per_dim, bits_per_dim, rtol=1e-6)
    self.assertAllClose(loss.mean_bits_per_dim, bits_per_dim.mean(), rtol=1e-6)
    self.assertAllClose(loss.total, bits_per_dim.mean() + penalty, rtol=1e-6)

  def test_a_replica_of_a_larger_global_batch_takes_its_share_of_the_data_term(self):
    flow = tiny_flow()
    whole = losses.bits_per_dim_loss(flow, IMAGES, 1e-2)
    share = losses.bits_per_dim_loss(flow, IMAGES, 1e-2, global_batch_size=4 * len(IMAGES))
    self.assertAllClose(share.mean_bits_per_dim, whole.mean_bits_per_dim / 4, rtol=1e-6)
    penalty = whole.total - whole.mean_bits_per_dim
    self.assertAllClose(share.total - share.mean_bits_per_dim, penalty, rtol=1e-5)  # one replica: all of it

  @pytest.mark.slow
  def test_the_replicas_shares_under_mirrored_add_up_to_the_one_device_loss(self):
    completed = subprocess.run(
      [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(TINY_MODEL)],
      env=script_environment(),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
    )
    self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    one, two = report["default"], report["mirrored"]
    self.assertEqual((one["replicas"], two["replicas"]), (1, 2))
    # Batch norm pools the moments of both replicas, so the halves score as in the whole batch.
    self.assertAllClose(sum(two["mean_bits_per_dim"]), one["mean_bits_per_dim"][0], rtol=1e-5)
    self.assertAllClose(sum(two["total"]), one["total"][0], rtol=1e-5)
    self.assertNotAllClose(two["total"][0], one["total"][0], rtol=0.1)  # each replica holds a share only


if __name__ == "__main__":
  tf.test.main()
