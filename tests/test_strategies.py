"""Strategies by name, and distributed training that computes what one device computes.

The distributed cases run `tests/distributed_programs.py` in fresh processes: logical devices and collective ops
must be configured before TensorFlow's first op.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests.training_testing import PROGRAM_TIMEOUT_S, PROGRAMS, program_environment, run_program
from tfp_realnvp.training import strategies


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for sock in sockets:
    sock.bind(("127.0.0.1", 0))
  ports = [sock.getsockname()[1] for sock in sockets]
  for sock in sockets:
    sock.close()
  return ports


class GetStrategyTest(tf.test.TestCase):
  def test_default_is_one_replica(self):
    strategy = strategies.get_strategy("default")
    self.assertIs(strategy, tf.distribute.get_strategy())
    self.assertEqual(strategy.num_replicas_in_sync, 1)

  def test_one_device_runs_on_the_cpu(self):
    strategy = strategies.get_strategy("one_device")
    self.assertEqual(strategy.num_replicas_in_sync, 1)
    self.assertIn("CPU:0", strategy.extended.worker_devices[0])

  def test_unknown_name_lists_the_choices(self):
    with self.assertRaisesRegex(
      ValueError,
      r"`strategy` must be one of default, one_device, mirrored, "
      r"multi_worker_mirrored, tpu; got 'gpu'",
    ):
      strategies.get_strategy("gpu")

  def test_malformed_tf_config_is_named(self):
    with mock.patch.dict(os.environ, {"TF_CONFIG": '{"cluster": {}}'}):
      with self.assertRaisesRegex(ValueError, "`TF_CONFIG` must be JSON like"):
        strategies.get_strategy("multi_worker_mirrored")
    bad_index = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}})
    with mock.patch.dict(os.environ, {"TF_CONFIG": bad_index}):
      with self.assertRaisesRegex(ValueError, r"task index must be in \[0, 1\).*got 3"):
        strategies.get_strategy("multi_worker_mirrored")

  def test_tpu_without_a_tpu_says_so(self):
    with self.assertRaisesRegex(ValueError, "`strategy=tpu` found no TPU at `tpu_address=None`"):
      strategies.get_strategy("tpu")

  def test_cpu_devices_after_start_up_is_a_clear_error(self):
    tf.constant(1.0)  # the runtime is running
    strategies.configure_cpu_devices(len(tf.config.list_logical_devices("CPU")))  # unchanged: fine
    with self.assertRaisesRegex(ValueError, "must be set before TensorFlow runs its first op"):
      strategies.configure_cpu_devices(len(tf.config.list_logical_devices("CPU")) + 1)
    with self.assertRaisesRegex(ValueError, "`num_cpu_devices` must be a positive integer; got 0"):
      strategies.configure_cpu_devices(0)


@pytest.mark.slow
class MirroredTrainingTest(tf.test.TestCase):
  def test_mirrored_on_two_cpus_matches_one_device(self):
    report = run_program("mirrored", os.path.join(self.get_temp_dir(), "mirrored.json"))
    self.assertEqual(report["replicas"], [1, 2])
    # Same global batches, so the same losses: batch norm pools the moments of both replicas.
    self.assertLess(report["loss_difference"], 1e-5)
    # Trained (SGD is linear in the gradient: a loss not averaged over the global batch would be off by 2x)...
    self.assertGreater(report["weight_change"], 1e-2)
    # ... to the same weights and running averages.
    self.assertLess(report["weight_difference"], 1e-5)
    self.assertLess(report["running_average_difference"], 1e-5)
    keras_loss = report["keras_mirrored_loss"]
    self.assertLess(keras_loss[-1], keras_loss[0])


@pytest.mark.slow
class MirroredWeightAverageTest(tf.test.TestCase):
  """Its own class, so that pytest-xdist's `--dist loadscope` can run it beside the other distributed tests."""

  def test_mirrored_averages_are_identical_across_replicas_and_equal_one_devices(self):
    report = run_program("ema_mirrored", os.path.join(self.get_temp_dir(), "ema_mirrored.json"))
    self.assertEqual(report["replica_copies"], [1, 2])
    self.assertEqual(report["num_updates"], [6, 6])
    self.assertGreater(report["average_change"], 1e-3)  # the averages moved ...
    self.assertEqual(report["replica_difference"], 0.0)  # ... identically on both replicas ...
    self.assertLess(report["strategy_difference"], 1e-5)  # ... and as on one device
    self.assertAllClose(report["bits_per_dim"][0], report["bits_per_dim"][1], rtol=1e-5)


@pytest.mark.slow
class MultiWorkerTrainingTest(tf.test.TestCase):
  """Its own class, so that pytest-xdist's `--dist loadscope` can run it beside the mirrored test."""

  def test_two_workers_on_localhost_end_with_identical_weights(self):
    workdir = os.path.join(self.get_temp_dir(), "workdir")
    ports = _free_ports(2)
    outputs = [os.path.join(self.get_temp_dir(), f"worker{index}.npz") for index in range(2)]
    logs = [tempfile.TemporaryFile() for _ in range(2)]
    workers = [
      subprocess.Popen(
        [
          "timeout",
          "-k",
          "5",
          str(PROGRAM_TIMEOUT_S),
          sys.executable,
          PROGRAMS,
          "worker",
          str(index),
          str(ports[0]),
          str(ports[1]),
          workdir,
          outputs[index],
        ],
        env=program_environment(),
        stdout=logs[index],
        stderr=subprocess.STDOUT,
      )
      for index in range(2)
    ]
    try:
      for worker in workers:
        worker.wait(timeout=PROGRAM_TIMEOUT_S + 10)
    finally:
      for worker in workers:
        if worker.poll() is None:
          worker.kill()
          worker.wait()
    for index, worker in enumerate(workers):
      logs[index].seek(0)
      self.assertEqual(worker.returncode, 0, logs[index].read().decode()[-3000:])
    first, second = (np.load(path) for path in outputs)
    self.assertEqual(int(first["step"]), 3)
    self.assertEqual(int(second["step"]), 3)
    self.assertEqual(float(first["test_bits_per_dim"]), float(second["test_bits_per_dim"]))
    weights = [name for name in first.files if name.startswith("arr_")]
    self.assertNotEmpty(weights)
    for name in weights:
      self.assertAllEqual(first[name], second[name])
    # The chief writes the outputs and keeps the checkpoints; the other worker's copies are deleted.
    self.assertEqual(
      tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")),
      os.path.join(workdir, "checkpoints", "ckpt-3"),
    )
    with open(os.path.join(workdir, "metrics.json")) as file:
      self.assertEqual(json.load(file)["step"], 3)


if __name__ == "__main__":
  tf.test.main()
