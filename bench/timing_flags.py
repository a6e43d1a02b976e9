"""The flags every timing benchmark shares (`bench_flow.py`, `bench_reference.py`), and the timing of our
workloads under them."""

import functools
import os
import time

import common_flags
import numpy as np
import tensorflow as tf
import workloads
from absl import flags
from flop_count import graph_flops
from phase_timing import time_phases
from workloads import PHASES

__all__ = [
  "BATCH_SIZE",
  "PHASES_TO_TIME",
  "THREADS",
  "TIMED_RUNS",
  "TIMEOUT",
  "WARMUP_RUNS",
  "time_our_workload",
]

PHASES_TO_TIME = flags.DEFINE_list("phases", list(PHASES), "Phases, in this order.")
BATCH_SIZE = common_flags.BATCH_SIZE
THREADS = flags.DEFINE_integer(
  "threads",
  2,
  "Intra-op threads (TensorFlow's `set_intra_op_parallelism_threads`; torch's `set_num_threads`).",
)
WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 2, "Untimed runs after the first call.")
TIMED_RUNS = flags.DEFINE_integer("timed_runs", 5, "Timed runs; throughput uses their median.")
TIMEOUT = flags.DEFINE_integer("timeout", 1800, "Seconds allowed to each worker subprocess.")


def time_our_workload(workload_model, mode, inter_op_threads=0, **identity):
  """Builds `workloads.build(workload_model, mode)` under the flags above and times each phase: the JSON-able result.

  Each phase's figures come from `phase_timing.time_phases` plus its `trace_s` (Python tracing of the
  `tf.function`); `identity` (e.g. `model=...`) heads the result.
  """
  load_average = os.getloadavg()[0]
  workloads.configure(mode, THREADS.value, inter_op_threads)
  start = time.perf_counter()
  workload = workloads.build(workload_model, mode, BATCH_SIZE.value)
  result = dict(
    **identity,
    mode=mode,
    batch_size=BATCH_SIZE.value,
    threads=THREADS.value,
    num_parameters=int(sum(v.shape.num_elements() for v in workload.flow.trainable_variables)),
    load_average=round(load_average, 2),
    build_s=round(time.perf_counter() - start, 2),
  )
  trace_s = {}

  def count_flops(phase):
    start = time.perf_counter()
    concrete = workload.phases[phase].get_concrete_function(*workload.arguments[phase])
    trace_s[phase] = round(time.perf_counter() - start, 2)
    return graph_flops(concrete)

  calls = {
    phase: functools.partial(_call, workload.phases[phase], workload.arguments[phase])
    for phase in PHASES_TO_TIME.value
  }
  result.update(time_phases(calls, count_flops, BATCH_SIZE.value, WARMUP_RUNS.value, TIMED_RUNS.value))
  for phase in PHASES_TO_TIME.value:
    result[phase]["trace_s"] = trace_s[phase]
  result["tensorflow"] = tf.__version__
  return result


def _call(function, arguments):
  np.asarray(function(*arguments))  # returns once the step is done
