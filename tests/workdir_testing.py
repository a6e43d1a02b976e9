"""Training workdirs for tests: a run with the lines it printed, a workdir written by hand, the values a
checkpoint saved, damaged files, and the one-line error of a checkpoint that does not fit its config."""

import contextlib
import io
import os

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tfp_realnvp.training import checkpoints, configs, train_lib

# A `digits` workdir written by an earlier version of the package (see `test_checkpoint_compat.py`).
OLD_DIGITS_WORKDIR = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "data", "digits_workdir_968b41f"
)


def run(config, workdir, allow_config_change=()):
  """`train_lib.train_and_evaluate` and the lines it printed."""
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    result = train_lib.train_and_evaluate(config, workdir, allow_config_change)
  return result, stdout.getvalue().splitlines()


def write_workdir(workdir, config, steps=(3,), **objects):
  """A training workdir as train_lib leaves it: `config`'s config.json and, for each of `steps`, a checkpoint
  of `objects` (e.g. `flow=...`) and the step; returns the path of the last checkpoint."""
  os.makedirs(workdir)
  with open(checkpoints.config_path(workdir), "w") as file:
    file.write(configs.to_json(config))
  step = tf.Variable(0, dtype=tf.int64)
  manager = tf.train.CheckpointManager(
    tf.train.Checkpoint(step=step, **objects), checkpoints.checkpoint_dir(workdir), len(steps)
  )
  for number in steps:
    step.assign(number)
    path = manager.save(number)
  return path


def checkpoint_values_by_name(path):
  """`{variable name: value}` for every variable saved in the checkpoint at `path`."""
  reader = tf.train.load_checkpoint(path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  return {
    attribute.full_name: reader.get_tensor(attribute.checkpoint_key)
    for node in graph.nodes
    for attribute in node.attributes
    if attribute.full_name
  }


def truncate(path):
  """Cuts the file `path` to half its length."""
  with open(path, "r+b") as file:
    file.truncate(os.path.getsize(path) // 2)


def assert_checkpoint_does_not_fit(test, restore, workdir, saved, reason):
  """`restore(workdir)` refuses the checkpoint `saved` with one line: it `does not hold the flow that`
  config.json describes, then `reason` (a regular expression)."""
  with test.assertRaisesRegex(
    configs.ConfigError,
    rf"^`checkpoint` {saved} does not hold the flow that .*config\.json describes{reason}",
  ) as raised:
    restore(workdir)
  test.assertNotIn("\n", str(raised.exception))
