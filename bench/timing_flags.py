"""The flags every timing benchmark shares (`bench_flow.py`, `bench_reference.py`): what is timed and how."""

from absl import flags
from workloads import PHASES

__all__ = ["BATCH_SIZE", "PHASES_TO_TIME", "THREADS", "TIMED_RUNS", "WARMUP_RUNS"]

PHASES_TO_TIME = flags.DEFINE_list("phases", list(PHASES), "Phases, in this order.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.")
THREADS = flags.DEFINE_integer(
  "threads",
  2,
  "Intra-op threads (TensorFlow's `set_intra_op_parallelism_threads`; torch's `set_num_threads`).",
)
WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 2, "Untimed runs after the first call.")
TIMED_RUNS = flags.DEFINE_integer("timed_runs", 5, "Timed runs; throughput uses their median.")
