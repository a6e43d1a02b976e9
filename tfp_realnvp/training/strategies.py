"""`tf.distribute` strategies by name, and logical CPU devices for mirrored training on a CPU.

```python
strategies.configure_cpu_devices(2)        # before any TensorFlow op runs
strategy = strategies.get_strategy("mirrored")
strategy.num_replicas_in_sync              # 2: one replica per logical CPU
```
"""

import json
import os

import tensorflow as tf

from tfp_realnvp.internal.checks import positive_int

__all__ = ["STRATEGY_NAMES", "configure_cpu_devices", "get_strategy"]

STRATEGY_NAMES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def configure_cpu_devices(num_devices):
  """Splits the physical CPU into `num_devices` logical devices `/cpu:0 .. /cpu:{n-1}`.

  Must run before the TensorFlow runtime initializes (before the first op). Calling it again
  with the number already configured is a no-op; `num_devices=1` leaves the CPU whole.
  """
  num_devices = positive_int("num_cpu_devices", num_devices)
  (cpu,) = tf.config.list_physical_devices("CPU")
  configured = tf.config.get_logical_device_configuration(cpu)
  if len(configured or [None]) == num_devices:
    return
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError as error:
    raise ValueError(
      f"`num_cpu_devices={num_devices}` must be set before TensorFlow runs its first op "
      f"(the runtime already has {len(tf.config.list_logical_devices('CPU'))} CPU "
      "device(s)); set it at the start of the process."
    ) from error


def get_strategy(name, tpu_address=None):
  """Returns the `tf.distribute.Strategy` called `name`.

  Args:
    name: one of `STRATEGY_NAMES`. `default`: no distribution; `one_device`: the first GPU, else
      the CPU; `mirrored`: all local GPUs, else all logical CPUs (see `configure_cpu_devices`);
      `multi_worker_mirrored`: the cluster in the `TF_CONFIG` environment variable (a single
      worker when it is unset); `tpu`: the TPU at `tpu_address`.
    tpu_address: TPU name or `grpc://` address for `tpu` (`None`: the TPU of this VM).

  Raises:
    ValueError: unknown `name`, malformed `TF_CONFIG`, or no TPU reachable.
  """
  if name not in STRATEGY_NAMES:
    raise ValueError(f"`strategy` must be one of {', '.join(STRATEGY_NAMES)}; got {name!r}.")
  if name == "default":
    return tf.distribute.get_strategy()
  # Listing devices starts the runtime, which a multi-worker or TPU strategy must configure first.
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(_local_devices()[0])
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(_local_devices())
  if name == "multi_worker_mirrored":
    _check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()
  return _tpu_strategy(tpu_address)


def _local_devices():
  """The local GPUs, or the logical CPUs where there is none."""
  gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
  return gpus or [device.name for device in tf.config.list_logical_devices("CPU")]


def _check_tf_config():
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return
  try:
    tf_config = json.loads(raw)
    task_type, task_index = tf_config["task"]["type"], int(tf_config["task"]["index"])
    num_tasks = len(tf_config["cluster"][task_type])
  except (ValueError, KeyError, TypeError) as error:
    raise ValueError(
      "`TF_CONFIG` must be JSON like "
      '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
      f"; got {raw!r}."
    ) from error
  if not 0 <= task_index < num_tasks:
    raise ValueError(
      f"`TF_CONFIG` task index must be in [0, {num_tasks}) for its {num_tasks} "
      f"{task_type!r} address(es); got {task_index}."
    )


def _tpu_strategy(tpu_address):
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as error:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ValueError(f"`strategy=tpu` found no TPU at `tpu_address={tpu_address!r}`: {reason}") from error
  return tf.distribute.TPUStrategy(resolver)
