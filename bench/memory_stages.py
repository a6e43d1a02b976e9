"""What holds the peak RSS of a phase: resident and peak memory after each stage of one worker.

Usage, from the repository root:

  python bench/memory_stages.py --model=small --mode=bf16 --phase=train

Prints one JSON line with `rss_mb` (resident now, `/proc/self/status` VmRSS) and `peak_rss_mb` (VmHWM, what
`bench_flow.py` reports) after: importing TensorFlow, building the flow and optimizer, tracing the phase's
`tf.function` (Python graph building), its first call (graph optimization plus one step), and `--steps` more
steps. Linux only.
"""

import json

from absl import app, flags
from workloads import MODELS, MODES, PHASES

_MODEL = flags.DEFINE_enum("model", "small", list(MODELS), "Model.")
_MODE = flags.DEFINE_enum("mode", "fp32", [m for m in MODES if not MODES[m].get("env")], "Speed mode.")
_PHASE = flags.DEFINE_enum("phase", "train", list(PHASES), "Phase.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.")
_THREADS = flags.DEFINE_integer("threads", 2, "Intra-op threads.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps after the first call.")


def _memory_mb():
  """`(VmRSS, VmHWM)` of this process in MiB."""
  values = {}
  with open("/proc/self/status") as status:
    for line in status:
      key, _, value = line.partition(":")
      if key in ("VmRSS", "VmHWM"):
        values[key] = round(int(value.split()[0]) / 1024)
  return values["VmRSS"], values["VmHWM"]


def main(argv):
  del argv
  import numpy as np  # noqa: PLC0415 (after absl parsed the flags: the first stage is the bare interpreter)

  stages = {"start": _memory_mb()}
  import tensorflow as tf  # noqa: PLC0415
  import workloads  # noqa: PLC0415

  workloads.configure(_MODE.value, _THREADS.value)
  tf.constant(0.0) + 1.0  # initializes the runtime
  stages["tensorflow"] = _memory_mb()
  workload = workloads.build(_MODEL.value, _MODE.value, _BATCH_SIZE.value)
  stages["built"] = _memory_mb()
  step, arguments = workload.phases[_PHASE.value], workload.arguments[_PHASE.value]
  step.get_concrete_function(*arguments)
  stages["traced"] = _memory_mb()
  np.asarray(step(*arguments))
  stages["first_call"] = _memory_mb()
  for _ in range(_STEPS.value):
    np.asarray(step(*arguments))
  stages[f"after_{_STEPS.value}_steps"] = _memory_mb()
  result = dict(
    **workloads.run_description(_MODEL.value, _MODE.value, _PHASE.value, _BATCH_SIZE.value),
    rss_mb={stage: rss for stage, (rss, _) in stages.items()},
    peak_rss_mb={stage: peak for stage, (_, peak) in stages.items()},
  )
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
