"""Does a speed mode change what training learns? Test bits/dim on the bundled digits after a fixed run.

Usage, from the repository root:

  python bench/bench_accuracy.py                       # fp32:0, bf16:0 and fp32:1 (mode:init seed)
  python bench/bench_accuracy.py --runs=fp32:0,bf16:0 --num_train_steps=1000

Every run (mode, init seed) trains the digits headline config (`configs.get_config()`, its `num_train_steps`
unless overridden, evaluating only at the end) through `train_lib.train_and_evaluate`, in a fresh subprocess, with
the init seed as `config.seed` (which seeds the initial weights, dropout and batches), so two modes with the same
init seed start from the same weights and see the same batches: they differ only by arithmetic. One JSON line
per run, then a summary with each run's test bits/dim minus the first run's. The default's fp32 run with a
second init seed shows how far two fp32 runs land apart: the yardstick for a mode's difference.
"""

import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import app, flags
from worker_process import run_worker

_RUNS = flags.DEFINE_list(
  "runs",
  ["fp32:0", "bf16:0", "fp32:1"],
  "`mode:init_seed` runs; the first is the baseline. Modes: see MODES; the init seed is "
  "`config.seed` (initial weights, dropout and batches).",
)
_NUM_TRAIN_STEPS = flags.DEFINE_integer(
  "num_train_steps", None, "Training steps of every run (default: the config's)."
)
_THREADS = flags.DEFINE_integer("threads", 2, "Intra-op threads.")
_TIMEOUT = flags.DEFINE_integer("timeout", 3600, "Seconds allowed to each run.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: `mode:seed` to run in this process.")

# Model overrides of each mode, on top of the digits config's own.
MODES = {
  "fp32": {},
  "bf16": {"compute_dtype": "bfloat16"},
  "bf16_output": {"compute_dtype": "bfloat16", "full_precision_output": False},
}


def run_config(config, mode, seed, num_train_steps=None):
  """`config` for the run `mode:seed`: `seed` as `config.seed` (`train_and_evaluate` seeds TensorFlow with
  it, so a global seed set beforehand would be overridden), the mode's model overrides, `num_train_steps`
  (None: the config's) and one evaluation, at the end."""
  num_train_steps = num_train_steps or config.num_train_steps
  return dataclasses.replace(
    config,
    seed=seed,
    num_train_steps=num_train_steps,
    eval_every_steps=0,
    checkpoint_every_steps=num_train_steps,
    log_every_steps=num_train_steps,
    model_overrides={**config.model_overrides, **MODES[mode]},
  )


def _worker(mode, seed):
  import tensorflow as tf  # noqa: PLC0415 (workers only: the driver stays light)

  from tfp_realnvp.training import configs, train_lib  # noqa: PLC0415

  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  config = run_config(configs.get_config(), mode, seed, _NUM_TRAIN_STEPS.value)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    result = train_lib.train_and_evaluate(config, workdir)
  return dict(
    mode=mode,
    init_seed=seed,
    dataset=config.dataset,
    num_train_steps=result.step,
    test_bits_per_dim=round(result.metrics["test_bits_per_dim"], 4),
    model_overrides=config.model_overrides,
    wall_s=round(time.perf_counter() - start, 1),
    load_average=round(os.getloadavg()[0], 2),
  )


def _run_in_subprocess(mode, seed):
  command = [
    sys.executable,
    os.path.abspath(__file__),
    f"--worker={mode}:{seed}",
    f"--threads={_THREADS.value}",
  ] + ([f"--num_train_steps={_NUM_TRAIN_STEPS.value}"] if _NUM_TRAIN_STEPS.value else [])
  return run_worker(command, _TIMEOUT.value, dict(mode=mode, init_seed=seed))


def _parse_run(run):
  mode, _, seed = run.partition(":")
  if mode not in MODES or not seed.isdigit():
    raise app.UsageError(f"A run must be `mode:init_seed` with a mode in {sorted(MODES)}; got {run!r}.")
  return mode, int(seed)


def main(argv):
  del argv
  runs = [_parse_run(run) for run in ([_WORKER.value] if _WORKER.value else _RUNS.value)]
  if _WORKER.value:
    print(json.dumps(_worker(*runs[0])), flush=True)
    return
  results = []
  for mode, seed in runs:
    results.append(_run_in_subprocess(mode, seed))
    print(json.dumps(results[-1]), flush=True)
  finished = [r for r in results if "error" not in r]
  if finished:
    baseline = finished[0]
    print(
      json.dumps(
        {
          "summary": {
            f"{r['mode']}/seed{r['init_seed']}_minus_{baseline['mode']}/seed{baseline['init_seed']}": round(
              r["test_bits_per_dim"] - baseline["test_bits_per_dim"], 4
            )
            for r in finished[1:]
          }
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
