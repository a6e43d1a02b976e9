"""A/B in one run: the same model timed from several source trees, modes and batch sizes, alternating.

Usage, from the repository root:

  python bench/bench_ab.py --trees=/tmp/main,. --models=small --modes=bf16 --phases=train --rounds=3
  python bench/bench_ab.py --modes=fp32,bf16,auto_bf16 --phases=train,log_prob --rounds=2
  python bench/bench_ab.py --modes=bf16 --batch_sizes=64,32,128 --phases=train

Every variant `tree:mode:batch_size` of a round runs `bench_flow.py --worker` of that tree, with that tree
first on `PYTHONPATH`, in a fresh subprocess; odd rounds run the variants in reverse order, so none always
runs first. Other processes only ever slow a run down, so the summary compares each variant's best images/s
over the rounds (and the medians): ratios to the first variant. Prints one JSON line per worker, then a
summary line per model with the CPU (model name, bfloat16 flags) and the 1-minute load averages before the
workers.
"""

import json
import os
import sys

import timing_flags
from ab_summary import summarize
from absl import app, flags
from worker_process import run_worker
from workloads import MODELS, MODES

from tfp_realnvp.internal import cpu_features

_TREES = flags.DEFINE_list("trees", ["."], "Source trees (repository roots); the first is the baseline.")
_MODELS = flags.DEFINE_list("models", ["small"], "Models (see `workloads.MODELS`).")
_MODES = flags.DEFINE_list("modes", ["bf16"], "Speed modes (see `workloads.MODES`).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64"], "Images per step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each runs every variant once.")


def _run(tree, model, mode, batch_size):
  root = os.path.abspath(tree)
  command = [sys.executable, os.path.join(root, "bench", "bench_flow.py"), "--worker"]
  command += [
    f"--models={model}",
    f"--modes={mode}",
    f"--phases={','.join(timing_flags.PHASES_TO_TIME.value)}",
  ]
  command.append(f"--batch_size={batch_size}")
  for flag in (
    timing_flags.THREADS,
    timing_flags.WARMUP_RUNS,
    timing_flags.TIMED_RUNS,
  ):
    command.append(f"--{flag.name}={flag.value}")
  env = dict(MODES[mode].get("env", {}), PYTHONPATH=root)
  return run_worker(
    command,
    timing_flags.TIMEOUT.value,
    dict(tree=tree, model=model, mode=mode, batch_size=batch_size),
    env=env,
  )


def main(argv):
  del argv
  unknown = [m for m in _MODELS.value if m not in MODELS] + [m for m in _MODES.value if m not in MODES]
  if unknown:
    raise app.UsageError(
      f"Unknown models or modes {unknown}; models: {sorted(MODELS)}, modes: {sorted(MODES)}."
    )
  cpu = cpu_features.read_cpu_info()
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  triples = [(tree, mode, batch) for tree in _TREES.value for mode in _MODES.value for batch in batch_sizes]
  variants = [f"{tree}:{mode}:{batch}" for tree, mode, batch in triples]
  for model in _MODELS.value:
    results = []
    for round_index in range(_ROUNDS.value):
      for tree, mode, batch in triples if round_index % 2 == 0 else triples[::-1]:
        result = dict(_run(tree, model, mode, batch), tree=tree, batch_size=batch, round=round_index)
        results.append(result)
        print(json.dumps(result), flush=True)
    summary = dict(model=model, **summarize(results, variants, timing_flags.PHASES_TO_TIME.value))
    summary.update(
      cpu=cpu.model_name,
      bfloat16_flags=list(cpu.bfloat16_flags),
      load_averages=[r.get("load_average") for r in results],
    )
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
  app.run(main)
