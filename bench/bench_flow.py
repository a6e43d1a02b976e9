"""Flow speed: train-step, log_prob and sample images/s, trace time, peak RSS and achieved GFLOP/s.

Usage, from the repository root:

  python bench/bench_flow.py                                  # small and cifar10, fp32 and bf16
  python bench/bench_flow.py --models=small --modes=fp32,bf16,fp32_xla,bf16_xla,auto_bf16,fp32_composite_bn

Each (model, mode) runs in a fresh subprocess, so its peak RSS is its own, on random pixel data at batch 64
with 2 intra-op threads. Each phase is traced, run `--warmup_runs` times, then timed `--timed_runs` times;
throughput is the batch over the median time. One JSON line per (model, mode), then one summary line with
every mode's ratio to the first mode of its model and to the reference PyTorch figures (`workloads.REFERENCE`).

Fields: `images_per_s`; `trace_s` (Python tracing of the `tf.function`); `first_call_s` (graph optimization
or XLA compilation plus one step); `gflop_per_image` (TensorFlow's profiler on the traced graph) and `gflops`
achieved; `cpu_per_wall` (process CPU seconds per wall second while timed: about `--threads` when the cores
were ours, less when other processes took them); `peak_rss_train_mb` (MiB, after the train phase, which runs
first) and `peak_rss_mb` (at the end); `load_average` (1-minute, before the run).
"""

import json
import os
import sys

import timing_flags
from absl import app, flags
from worker_process import run_worker
from workloads import MODELS, MODES, PHASES, REFERENCE

_MODELS = flags.DEFINE_list("models", ["small", "cifar10"], "Models: small, cifar10, digits, tiny (tests).")
_MODES = flags.DEFINE_list(
  "modes", ["fp32", "bf16"], "Speed modes (see `workloads.MODES`); the first is the baseline."
)
_INTER_OP_THREADS = flags.DEFINE_integer(
  "inter_op_threads", 0, "Inter-op threads; 0 is TensorFlow's default."
)
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run one (model, mode) in this process.")


def _run_in_subprocess(model, mode):
  """Runs one (model, mode) in a fresh Python and returns its result (or an `error`)."""
  command = [sys.executable, os.path.abspath(__file__), "--worker", f"--models={model}", f"--modes={mode}"]
  for flag in (
    timing_flags.PHASES_TO_TIME,
    timing_flags.BATCH_SIZE,
    timing_flags.THREADS,
    _INTER_OP_THREADS,
    timing_flags.WARMUP_RUNS,
    timing_flags.TIMED_RUNS,
  ):
    value = flag.value
    command.append(f"--{flag.name}={','.join(value) if isinstance(value, list) else value}")
  return run_worker(
    command, timing_flags.TIMEOUT.value, dict(model=model, mode=mode), env=MODES[mode].get("env")
  )


def _summary(results):
  """Ratios of every mode to its model's baseline (the first mode) and to the reference figures."""
  summary = {}
  for result in results:
    if "error" in result:
      continue
    model, mode = result["model"], result["mode"]
    baseline = next(r for r in results if r["model"] == model and "error" not in r)
    reference = REFERENCE.get(model, {})
    entry = {}
    for phase in timing_flags.PHASES_TO_TIME.value:
      speed = result[phase]["images_per_s"]
      entry[f"{phase}_vs_{baseline['mode']}"] = round(speed / baseline[phase]["images_per_s"], 2)
      if phase in reference:
        entry[f"{phase}_vs_reference"] = round(speed / reference[phase], 2)
        reference_gflops = reference[phase] * reference["gflop_per_image"] * (3 if phase == "train" else 1)
        entry[f"{phase}_gflops_vs_reference"] = round(result[phase]["gflops"] / reference_gflops, 2)
    if "peak_rss_gb" in reference and "peak_rss_train_mb" in result:
      # MiB to GB (10^9 bytes): if the reference's GB were GiB, our ratio would be 6% lower.
      entry["peak_rss_train_vs_reference"] = round(
        result["peak_rss_train_mb"] * 2**20 / 1e9 / reference["peak_rss_gb"], 2
      )
    summary[f"{model}/{mode}"] = entry
  return summary


def main(argv):
  del argv
  unknown = [m for m in _MODELS.value if m not in MODELS] + [m for m in _MODES.value if m not in MODES]
  unknown += [p for p in timing_flags.PHASES_TO_TIME.value if p not in PHASES]
  if unknown:
    raise app.UsageError(
      f"Unknown models, modes or phases {unknown}; models: {sorted(MODELS)}, modes: "
      f"{sorted(MODES)}, phases: {list(PHASES)}."
    )
  if _WORKER.value:
    print(
      json.dumps(
        timing_flags.time_our_workload(
          _MODELS.value[0], _MODES.value[0], _INTER_OP_THREADS.value, model=_MODELS.value[0]
        )
      ),
      flush=True,
    )
    return
  results = []
  for model in _MODELS.value:
    for mode in _MODES.value:
      results.append(_run_in_subprocess(model, mode))
      print(json.dumps(results[-1]), flush=True)
  print(json.dumps({"summary": _summary(results)}), flush=True)


if __name__ == "__main__":
  app.run(main)
