"""Where the time goes: TensorFlow-profiler op times of one flow phase, grouped by op type and by stage.

Usage, from the repository root:

  python bench/profile_flow.py --model=small --mode=bf16 --phase=train

Traces and warms up the phase as `bench_flow.py` does, records `--steps` steps with `tf.profiler`, and prints
one JSON line: milliseconds per step by op type (`_MklNative*` are oneDNN kernels) and by stage (conditioner
convolutions forward/backward, batch norms, optimizer, the rest), with each one's share of the op time.
With `--inter_op_threads=1` (the default here) ops run one at a time, so `op_ms_per_step` is about the step's
wall time and the shares are shares of it; with TensorFlow's default, independent ops (the two backward passes
of a convolution) overlap and their times count twice. Under load the shares stay meaningful while the
milliseconds grow.
"""

import collections
import glob
import json
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import workloads
from absl import app, flags
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from workloads import MODELS, MODES, PHASES

_MODEL = flags.DEFINE_enum("model", "small", list(MODELS), "Model.")
_MODE = flags.DEFINE_enum("mode", "fp32", [m for m in MODES if not MODES[m].get("env")], "Speed mode.")
_PHASE = flags.DEFINE_enum("phase", "train", list(PHASES), "Phase to profile.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.")
_THREADS = flags.DEFINE_integer("threads", 2, "Intra-op threads.")
_INTER_OP_THREADS = flags.DEFINE_integer(
  "inter_op_threads", 1, "Inter-op threads; 1 (the default here) runs one op at a time, so op times add up."
)
_STEPS = flags.DEFINE_integer("steps", 2, "Profiled steps, after two warm-up steps.")
_TOP = flags.DEFINE_integer("top", 20, "Op types listed.")

# Stage of an op, from its type and name: first match wins.
_STAGES = (
  ("conv_backward_filter", lambda kind, name: "BackpropFilter" in kind),
  ("conv_backward_input", lambda kind, name: "BackpropInput" in kind),
  ("conv_forward", lambda kind, name: "Conv2D" in kind),
  ("batch_norm", lambda kind, name: "BatchNorm" in kind or "batch_norm" in name or "/norm_" in name),
  ("optimizer", lambda kind, name: "Adam" in name or "clip" in name.lower() or "global_norm" in name),
  ("relu", lambda kind, name: kind.startswith("Relu")),
  ("weight_norm", lambda kind, name: "l2_normalize" in name),
  ("casts", lambda kind, name: kind == "Cast"),
)


def _op_times(trace_dir):
  """`{(op type, op name): picoseconds}` and `{(op type, op name): executions}` from the profiler's XSpace."""
  (path,) = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb"))
  space = xplane_pb2.XSpace()
  with open(path, "rb") as file:
    space.ParseFromString(file.read())
  times, counts = collections.Counter(), collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        # TensorFlow op events are named `op_name:OpType`; executor (`Class::Method`) and Python events are not.
        op_name, _, kind = name.rpartition(":")
        if op_name and kind.isidentifier() and "::" not in name and not name.startswith(("$", " ")):
          times[(kind, op_name)] += event.duration_ps
          counts[(kind, op_name)] += 1
  return times, counts


def main(argv):
  del argv
  workloads.configure(_MODE.value, _THREADS.value, _INTER_OP_THREADS.value)
  workload = workloads.build(_MODEL.value, _MODE.value, _BATCH_SIZE.value)
  step, arguments = workload.phases[_PHASE.value], workload.arguments[_PHASE.value]
  for _ in range(2):
    np.asarray(step(*arguments))
  with tempfile.TemporaryDirectory() as trace_dir:
    tf.profiler.experimental.start(trace_dir)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      np.asarray(step(*arguments))
    wall_s = (time.perf_counter() - start) / _STEPS.value
    tf.profiler.experimental.stop()
    times, counts = _op_times(trace_dir)
  per_step_ms = 1e-9 / _STEPS.value  # picoseconds of all steps -> milliseconds per step
  total = sum(times.values())
  by_kind, by_stage = collections.Counter(), collections.Counter()
  for (kind, name), picoseconds in times.items():
    by_kind[kind] += picoseconds
    by_stage[next((stage for stage, matches in _STAGES if matches(kind, name)), "other")] += picoseconds

  def table(counter, top):
    return {
      key: [round(value * per_step_ms, 1), round(value / total, 3)] for key, value in counter.most_common(top)
    }

  result = dict(
    **workloads.run_description(_MODEL.value, _MODE.value, _PHASE.value, _BATCH_SIZE.value),
    wall_ms_per_step=round(wall_s * 1e3, 1),
    op_ms_per_step=round(total * per_step_ms, 1),
    ops_per_step=round(sum(counts.values()) / _STEPS.value),
    by_stage_ms_share=table(by_stage, None),
    by_op_type_ms_share=table(by_kind, _TOP.value),
  )
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
