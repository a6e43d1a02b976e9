"""Checkpoints of training runs: restoring one into a `Trainer`'s objects, or a run's flow from its workdir.

```python
flow, checkpoint = checkpoints.restore_flow("runs/digits")      # the latest checkpoint of the run
```

A training workdir (`train_lib.train_and_evaluate`) holds `config.json` (`config_path`) and the checkpoints
of `tf.train.Checkpoint(flow=..., optimizer=..., step=...)` under `checkpoints/` (`checkpoint_dir`).
"""

import os

import tensorflow as tf

from tfp_realnvp import configs, flow_builder
from tfp_realnvp.configs import ConfigError

__all__ = ["checkpoint_dir", "config_path", "restore", "restore_flow"]


def config_path(workdir):
  """The training config of the run in `workdir`, as `configs.to_json` wrote it."""
  return os.path.join(os.fspath(workdir), "config.json")


def checkpoint_dir(workdir):
  """The directory of the run's checkpoints (`tf.train.latest_checkpoint(checkpoint_dir(workdir))`)."""
  return os.path.join(os.fspath(workdir), "checkpoints")


def restore(checkpoint, path, mismatch):
  """Restores the checkpoint file `path` into `checkpoint`, a `tf.train.Checkpoint`; returns the load status.

  Every object `checkpoint` holds must be found in the file; values in the file that `checkpoint` does not hold
  (the optimizer and step, when only the flow is restored) are skipped without warnings. Under a
  `tf.distribute` strategy, call it in the `strategy.scope()` the objects were built in.

  Raises:
    ConfigError: the file does not hold `checkpoint`'s objects, or cannot be read: `"{mismatch}: {reason}"`,
      one line.
  """
  try:
    status = checkpoint.restore(path)
    status.expect_partial()  # a mismatch raises below; unused values are expected
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise ConfigError(f"{mismatch}: {reason}") from error
  return status


def restore_flow(workdir, checkpoint=None):
  """Rebuilds the flow of the training run in `workdir` and restores a checkpoint into it.

  The flow is built from `workdir/config.json` by `flow_builder.build_flow`, as training built it;
  `checkpoint` (a checkpoint prefix such as `workdir/checkpoints/ckpt-3000`) defaults to the latest in
  `workdir/checkpoints`. Returns `(flow, checkpoint)`.

  Raises:
    FileNotFoundError: no config or no checkpoint.
    ConfigError: the config cannot build a flow, or the checkpoint does not hold this flow's variables.
  """
  path = config_path(workdir)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"`workdir` must be a training run's directory with a config.json; {path} does not exist."
    )
  with tf.io.gfile.GFile(path) as file:
    config = configs.from_json(file.read())
  if checkpoint is None:
    checkpoint = tf.train.latest_checkpoint(checkpoint_dir(workdir))
    if checkpoint is None:
      raise FileNotFoundError(f"`workdir` {os.fspath(workdir)} has no checkpoint under checkpoints/.")
  flow = flow_builder.build_flow(config)
  restore(
    tf.train.Checkpoint(flow=flow),
    checkpoint,
    f"`checkpoint` {checkpoint} does not hold the flow that {path} describes",
  )
  return flow, checkpoint
