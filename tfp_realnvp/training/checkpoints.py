"""Checkpoints of training runs: restoring one into a `Trainer`'s objects, or a run's flow from its workdir.

```python
flow, checkpoint = checkpoints.restore_flow("runs/digits")      # the latest checkpoint of the run
flow, dequantizer, checkpoint = checkpoints.restore_run("runs/digits")  # with the run's dequantizer
```

A training workdir (`train_lib.train_and_evaluate`) holds `config.json` (`config_path`) and the checkpoints
of `tf.train.Checkpoint(flow=..., optimizer=..., step=...)` (with `weight_average` for a run with `ema_decay`,
`dequantizer` for a variational one and `batch_norm_statistics` for one with `batch_norm_batches`) under
`checkpoints/` (`checkpoint_dir`).
A checkpoint whose files cannot be read whole (a truncated `.index` or `.data` file) is skipped by
`newest_intact` and refused by `restore`, with one line naming the file.
"""

import collections
import os
import typing

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tfp_realnvp import dequantization
from tfp_realnvp.training import batch_norm_statistics, configs, flow_builder, weight_averaging
from tfp_realnvp.training.configs import ConfigError

__all__ = [
  "BATCH_NORM_STATISTICS",
  "Run",
  "checkpoint_dir",
  "config_path",
  "holds",
  "newest_intact",
  "read_error",
  "restore",
  "restore_flow",
  "restore_run",
]

# The `tf.train.Checkpoint` children whose variables must match the model's both ways: the flow, and a
# variational run's dequantizer (a uniform one has no variables and is not saved).
_FLOW = "flow"
_DEQUANTIZER = "dequantizer"
# The child holding the batch norms' running averages re-estimated for the evaluated weights
# (`batch_norm_statistics.BatchNormStatistics`), with the step they are for.
BATCH_NORM_STATISTICS = "batch_norm_statistics"
# Children a checkpoint may hold that change what the run computes: restoring it into objects without them
# would silently drop them (a config.json edited to `dequantization=uniform` or `ema_decay=0`).
_NOT_DROPPED = {_DEQUANTIZER: "a learned dequantizer", "weight_average": "weight averages (`ema_decay`)"}


def config_path(workdir):
  """The training config of the run in `workdir`, as `configs.to_json` wrote it."""
  return os.path.join(os.fspath(workdir), "config.json")


def checkpoint_dir(workdir):
  """The directory of the run's checkpoints (`tf.train.latest_checkpoint(checkpoint_dir(workdir))`)."""
  return os.path.join(os.fspath(workdir), "checkpoints")


def read_error(path):
  """None when every value of the checkpoint `path` (a prefix such as `.../ckpt-3`) reads back whole, else one
  line naming the file that does not (its `.index`, or its `.data-*` shards) and why."""
  try:
    reader = tf.train.load_checkpoint(path)
  except (ValueError, tf.errors.OpError) as error:
    return f"{path}.index cannot be read: {_first_line(error)}"
  try:
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)  # checks the length and checksum of every value
  except (IndexError, ValueError, tf.errors.OpError) as error:  # a truncated shard is an IndexError
    shards = " ".join(sorted(tf.io.gfile.glob(f"{path}.data-*"))) or f"{path}.data-*"
    return f"{shards} cannot be read: {_first_line(error)}"
  return None


def numbered_checkpoints(directory):
  """The checkpoints `ckpt-N` in `directory` whose `.index` file exists, oldest (smallest N) first, whatever
  the state file `checkpoint` says (it may be missing or garbled)."""
  found = {}
  for index in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index")):
    prefix = index[: -len(".index")]
    number = os.path.basename(prefix)[len("ckpt-") :]
    if number.isdigit():
      found[int(number)] = prefix
  return [found[number] for number in sorted(found)]


def state_error(directory):
  """None when `directory`'s state file `checkpoint` lists its `ckpt-N` checkpoints (or there are none), else
  one line saying what is wrong with it (missing, garbled, or naming none of them)."""
  found = numbered_checkpoints(directory)
  if not found:
    return None
  path = os.path.join(directory, "checkpoint")
  try:
    state = tf.train.get_checkpoint_state(directory)
  except (ValueError, tf.errors.OpError) as error:  # a garbled text proto
    return f"{path} cannot be read: {_first_line(error)}"
  if state is None:
    return f"{path} is missing"
  listed = {os.path.basename(p) for p in (*state.all_model_checkpoint_paths, state.model_checkpoint_path)}
  if os.path.basename(found[-1]) not in listed:
    return f"{path} does not list the newest checkpoint, {found[-1]}"
  return None


def newest_intact(directory):
  """`(path, skipped)`: the newest checkpoint in `directory` whose files read back whole (None if there is
  none), and `[(path, read_error(path))]` for the newer ones that do not.

  The checkpoints are those `tf.train.CheckpointManager` lists in the state file `checkpoint` and every
  `ckpt-N` beside it, so a missing or garbled state file does not hide them (`state_error` says when it is)."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except (ValueError, tf.errors.OpError):  # garbled: the files beside it still count
    state = None
  paths = [] if state is None else list(state.all_model_checkpoint_paths)
  if state is not None and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  listed = {os.path.basename(path) for path in paths}
  paths += [path for path in numbered_checkpoints(directory) if os.path.basename(path) not in listed]
  paths.sort(key=_checkpoint_number)
  skipped = []
  for path in reversed(paths):  # newest first
    error = read_error(path)
    if error is None:
      return path, skipped
    skipped.append((path, error))
  return None, skipped


def holds(path, name):
  """Whether the checkpoint file `path` holds a variable under its root's child `name`."""
  return bool(_saved_variable_keys(path, name))


def restore(checkpoint, path, mismatch, whole_run=False):
  """Restores the checkpoint file `path` into `checkpoint`, a `tf.train.Checkpoint`; returns the load status.

  Every object `checkpoint` holds must be found in the file, and the file must hold no variable of the flow
  (`checkpoint`'s `flow`), nor of the dequantizer when `checkpoint` holds one (its `dequantizer`), that
  `checkpoint` lacks; with `whole_run` (restoring a run to go on with it, or to export it) the file must hold
  no learned dequantizer or weight averages that `checkpoint` lacks either. Other values in the file that
  `checkpoint` does not hold
  (the optimizer and step, when only the flow is restored) are skipped without warnings. Under a
  `tf.distribute` strategy, call it in the `strategy.scope()` the objects were built in.

  Raises:
    ConfigError: the file cannot be read whole (`read_error`), or does not hold exactly `checkpoint`'s flow
      (and dequantizer): `"{mismatch}: {reason}"`, one line.
  """
  error = read_error(path) if tf.io.gfile.exists(f"{path}.index") else None  # a missing one fails below
  if error is not None:
    raise ConfigError(f"The checkpoint {path} is corrupt: {error}")
  children = tf.train.TrackableView(checkpoint).children(checkpoint)
  if tf.io.gfile.exists(f"{path}.index"):
    # Checked before restoring: a failed restore leaves TensorFlow to log every value it did not restore.
    for name, what in _NOT_DROPPED.items() if whole_run else ():
      if name not in children and _saved_variable_keys(path, name):
        raise ConfigError(
          f"{mismatch}: the checkpoint holds {what}, which this config's model does not have and would drop"
        )
    for name in children:
      mismatched = _shape_mismatch(path, name, children[name])
      if mismatched:
        raise ConfigError(f"{mismatch}: {mismatched}")
  try:
    status = checkpoint.restore(path)
    status.expect_partial()  # a mismatch raises below; unused values are expected
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    raise ConfigError(f"{mismatch}: {_first_line(error)}") from error
  for name, what in ((_FLOW, "flow"), (_DEQUANTIZER, "dequantizer")):
    if name in children:
      left_over = sorted(set(_saved_variable_keys(path, name)) - set(_variables(children[name], name)))
      if left_over:
        raise ConfigError(
          f"{mismatch}: the checkpoint holds {len(left_over)} variable(s) of a larger {what} than this one, "
          f"such as {left_over[0]}"
        )
  return status


class Run(typing.NamedTuple):
  """What `restore_run` restored: the run's flow (with the weights its evaluation used), its dequantizer
  (`dequantization.UniformDequantizer` or `VariationalDequantizer`) and the checkpoint they came from."""

  flow: typing.Any
  dequantizer: typing.Any
  checkpoint: str


def restore_run(workdir, checkpoint=None):
  """Rebuilds the flow and the dequantizer of the training run in `workdir` and restores a checkpoint into
  them; returns a `Run`.

  The flow is built from `workdir/config.json` by `flow_builder.build_flow`, as training built it, and the
  dequantizer by `dequantization.make_dequantizer(config.dequantization, ...)` for the flow's images
  (`'uniform'` for a config.json older than the field); `checkpoint` (a checkpoint prefix such as
  `workdir/checkpoints/ckpt-3000`) defaults to the latest in `workdir/checkpoints`. A run with `ema_decay`
  gives the flow its averaged weights (the checkpoint's `weight_average`), the ones its evaluation and samples
  used; the dequantizer, which training does not average, gets its trained weights (a uniform one has none).
  A run with `batch_norm_batches` gives every batch norm (the flow's and the dequantizer's) the running averages
  re-estimated for those weights at the checkpoint's step (`batch_norm_statistics`), as its evaluation used
  them; without them (or with none for that step) the training's own running averages stay.

  Raises:
    FileNotFoundError: no config or no checkpoint.
    ConfigError: the config is not a `TrainConfig`'s JSON or cannot build a flow, the checkpoint does not hold
      exactly this flow's and dequantizer's variables (a config.json changed after training), or it is
      corrupt (for the latest: naming the newest intact one to pass as `checkpoint`).
  """
  path = config_path(workdir)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"`workdir` must be a training run's directory with a config.json; {path} does not exist."
    )
  with tf.io.gfile.GFile(path) as file:
    config = configs.from_json(file.read(), source=path)
  if checkpoint is None:
    checkpoint, skipped = newest_intact(checkpoint_dir(workdir))
    if skipped:
      fallback = f"pass checkpoint={checkpoint}, the newest intact one" if checkpoint else "none is intact"
      raise ConfigError(f"The latest checkpoint is corrupt: {skipped[0][1]}; {fallback}.")
    if checkpoint is None:
      raise FileNotFoundError(f"`workdir` {os.fspath(workdir)} has no checkpoint under checkpoints/.")
  flow = flow_builder.build_flow(config)
  dequantizer = dequantization.make_dequantizer(
    config.dequantization, flow.event_shape, flow.num_bits, flow.dtype
  )
  average = _weight_average(flow, config.ema_decay)
  objects = {"flow": flow}
  if average is not None:
    objects["weight_average"] = average
  if dequantizer.variables:  # as the `Trainer` saves it
    objects[_DEQUANTIZER] = dequantizer
  mismatch = f"`checkpoint` {checkpoint} does not hold the flow that {path} describes"
  if (
    not dequantizer.variables
    and tf.io.gfile.exists(f"{checkpoint}.index")
    and read_error(checkpoint) is None
    and _saved_variable_keys(checkpoint, _DEQUANTIZER)
  ):
    raise ConfigError(
      f"{mismatch}: the checkpoint holds a learned dequantizer, but the config says "
      f"`dequantization={config.dequantization!r}`"
    )
  statistics = None
  if (
    tf.io.gfile.exists(f"{checkpoint}.index")
    and read_error(checkpoint) is None
    and holds(checkpoint, BATCH_NORM_STATISTICS)
  ):
    statistics = batch_norm_statistics.BatchNormStatistics(
      [variable for variable in (*flow.variables, *dequantizer.variables) if not variable.trainable]
    )
    objects[BATCH_NORM_STATISTICS] = statistics
    objects["step"] = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  restore(tf.train.Checkpoint(**objects), checkpoint, mismatch, whole_run=True)
  if average is not None:
    average.assign_to_weights()
  if statistics is not None and statistics.is_for(int(objects["step"].numpy())):
    statistics.assign_to_running_averages()
  return Run(flow, dequantizer, checkpoint)


def restore_flow(workdir, checkpoint=None):
  """`(flow, checkpoint)` of `restore_run(workdir, checkpoint)`: the training run's flow, with the weights its
  evaluation and samples used, and the checkpoint restored; raises as `restore_run` does."""
  flow, _, checkpoint = restore_run(workdir, checkpoint)
  return flow, checkpoint


def _weight_average(flow, decay):
  """The `WeightAverage` of `flow`'s trainable weights that a run with `ema_decay=decay` saved; None for 0."""
  return weight_averaging.WeightAverage(flow.trainable_variables, decay) if decay else None


def _checkpoint_number(path):
  """N of a `.../ckpt-N` prefix (-1 for another name, which sorts first)."""
  number = os.path.basename(path).rpartition("-")[2]
  return int(number) if number.isdigit() else -1


def _first_line(error):
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _variables(root, name):
  """`{object-graph path: variable}` (`name/child/...`) of the variables a checkpoint of `root` under `name`
  saves."""
  found, seen, queue = {}, {id(root)}, collections.deque([(root, name)])
  while queue:
    trackable, trackable_path = queue.popleft()
    if isinstance(trackable, tf.Variable):
      found[trackable_path] = trackable
    for child_name, child in tf.train.TrackableView(trackable).children(trackable).items():
      if id(child) not in seen:
        seen.add(id(child))
        queue.append((child, f"{trackable_path}/{child_name}"))
  return found


def _saved_variable_keys(path, name):
  """`{object-graph path: checkpoint key}` of the variables the checkpoint file `path` holds under its root's
  child `name`."""
  reader = tf.train.load_checkpoint(path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  roots = [child.node_id for child in graph.nodes[0].children if child.local_name == name]
  keys, seen, queue = {}, set(roots), collections.deque((node_id, name) for node_id in roots)
  while queue:
    node_id, node_path = queue.popleft()
    node = graph.nodes[node_id]
    for attribute in node.attributes:
      if attribute.name == "VARIABLE_VALUE":
        keys[node_path] = attribute.checkpoint_key
    for child in node.children:
      if child.node_id not in seen:
        seen.add(child.node_id)
        queue.append((child.node_id, f"{node_path}/{child.local_name}"))
  return keys


def _shape_mismatch(path, name, root):
  """None, or one line naming the first variable of `root` (the checkpoint's child `name`) whose shape in the
  checkpoint file `path` differs."""
  shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  saved = _saved_variable_keys(path, name)
  for variable_path, variable in sorted(_variables(root, name).items()):
    key = saved.get(variable_path)
    if key is not None and key in shapes and list(shapes[key]) != variable.shape.as_list():
      return (
        f"{variable_path} has shape {list(shapes[key])} in the checkpoint but {variable.shape.as_list()} in "
        "this model"
      )
  return None
