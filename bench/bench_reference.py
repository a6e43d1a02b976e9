"""Speed against the peer, chrischute/real-nvp (PyTorch), side by side in one run, with same-run ratios.

Usage, from the repository root (see `bench/REFERENCE.md` for getting torch and the peer's checkout):

  python bench/bench_reference.py --reference_dir=PATH --reference_python=/path/to/torch/venv/bin/python
  python bench/bench_reference.py --reference_dir=PATH --models=small --rounds=1 --timed_runs=2

For each model, each round runs four workers, each in a fresh subprocess (so each peak RSS is its own),
alternating ours and the peer's: ours fp32, peer fp32, ours bf16 (`workloads` mode "bf16",
`compute_dtype=bfloat16`), peer under `torch.autocast("cpu", torch.bfloat16)`; odd rounds start with the
peer. The peer runs in `--reference_python` from `--reference_dir`, a user's own checkout, nothing in it
patched on disk (`reference_worker.py`). Both sides take a train step (forward, backward and Adam on a fixed
random batch, each with its own loss: ours `train_lib`'s, the peer's `RealNVPLoss` and L2), `log_prob` and
`sample`, at the same architecture (`workloads.MODELS`: scales, residual blocks, features) and batch, timed
by the same code (`phase_timing.time_calls`).

Prints one JSON line per worker (per phase `images_per_s`, `gflop_per_image`, `gflops`, `step_s`,
`cpu_per_wall`; `peak_rss_train_mb`, `peak_rss_mb`), then one summary line per model: the best images/s of
each (implementation, mode) over the rounds (load only ever slows a run down), `best_vs_best` (our best
mode over the peer's best), `fp32_vs_fp32`, `bf16_vs_autocast_bf16`, the matched-FLOP ratios (GFLOP/s over
GFLOP/s: `images/s x GFLOP/image`, ours from TensorFlow's profiler, the peer's from its convolutions), peak
RSS ratios per mode, the highest 1-minute load average before a worker (`load_average_max`), and the CPU's
model name and whether it has AMX-BF16 and AVX512-BF16.
"""

import json
import os
import subprocess
import sys

import common_flags
import timing_flags
import workloads
from absl import app, flags
from worker_process import run_worker
from workloads import MODELS, PHASES

from tfp_realnvp.internal import cpu_features

_REFERENCE_DIR = common_flags.REFERENCE_DIR
_REFERENCE_PYTHON = common_flags.REFERENCE_PYTHON
_MODELS = flags.DEFINE_list(
  "models", ["small", "cifar10"], "Models (`workloads.MODELS`): small, cifar10, tiny."
)
_ROUNDS = flags.DEFINE_integer(
  "rounds", 2, "Rounds of the four runs per model; the summary takes each run's best."
)
_EXTRA_MODES = flags.DEFINE_list(
  "extra_modes",
  [],
  "More of our `workloads.MODES` (e.g. an opt-in environment setting), run after each round's four runs and "
  "compared apart with the peer's best: `<mode>_vs_peer_best`; `best_vs_best` stays over fp32 and bf16.",
)
_WORKER = flags.DEFINE_string("worker", None, "Internal: run ours in this mode, in this process.")

# Each round's runs, as (implementation, mode) pairs; the peer's mode of the same precision follows ours.
OUR_MODES = ("fp32", "bf16")
PEER_MODES = ("fp32", "autocast_bf16")
RUNS = tuple(run for modes in zip(OUR_MODES, PEER_MODES) for run in (("ours", modes[0]), ("peer", modes[1])))

# The model settings the peer has a counterpart for: `RealNVP(num_scales, in_channels, mid_channels, num_blocks)`.
_PEER_SETTINGS = {"event_shape", "num_scales", "num_blocks", "num_filters"}
_REFERENCE_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_worker.py")


def round_order(round_index):
  """`RUNS` in the order of round `round_index`: odd rounds put the peer first in each pair, so neither side
  always runs first."""
  if round_index % 2 == 0:
    return RUNS
  return tuple(run for pair in zip(RUNS[1::2], RUNS[::2]) for run in pair)


def cpu_description(cpu):
  """The model name and bfloat16 flags of `cpu`, a `cpu_features.CpuInfo`."""
  return dict(
    cpu=cpu.model_name,
    amx_bf16="amx_bf16" in cpu.flags,
    avx512_bf16="avx512_bf16" in cpu.flags,
  )


def _ratio(numerator, denominator):
  return round(numerator / denominator, 2) if numerator and denominator else None


def _phase_summary(runs, phase, extra_modes=()):
  """Best images/s of each run over the rounds, its GFLOP/s, and the ratios between ours and the peer's; each of
  `extra_modes` (ours) against the peer's best, apart from `best_vs_best`."""
  best = {}
  for run in runs:
    key = f"{run['implementation']}_{run['mode']}"
    if phase in run and (key not in best or run[phase]["images_per_s"] > best[key]["images_per_s"]):
      best[key] = run[phase]
  speed = {key: figures["images_per_s"] for key, figures in best.items()}
  gflops = {key: figures["images_per_s"] * figures["gflop_per_image"] for key, figures in best.items()}
  ours = [f"ours_{mode}" for mode in OUR_MODES if f"ours_{mode}" in speed]
  peers = [f"peer_{mode}" for mode in PEER_MODES if f"peer_{mode}" in speed]
  entry = dict(
    images_per_s=speed,
    gflop_per_image={key: figures["gflop_per_image"] for key, figures in best.items()},
    gflops={key: round(value, 1) for key, value in gflops.items()},
  )
  if not ours or not peers:
    return entry
  our_best, peer_best = max(ours, key=speed.get), max(peers, key=speed.get)
  entry.update(ours_best=our_best.removeprefix("ours_"), peer_best=peer_best.removeprefix("peer_"))
  entry["best_vs_best"] = _ratio(speed[our_best], speed[peer_best])
  entry["matched_flop_best_vs_best"] = _ratio(gflops[our_best], gflops[peer_best])
  for our_mode, peer_mode in zip(OUR_MODES, PEER_MODES):
    ours_key, peer_key = f"ours_{our_mode}", f"peer_{peer_mode}"
    if ours_key in speed and peer_key in speed:
      entry[f"{our_mode}_vs_{peer_mode}"] = _ratio(speed[ours_key], speed[peer_key])
      entry[f"matched_flop_{our_mode}_vs_{peer_mode}"] = _ratio(gflops[ours_key], gflops[peer_key])
  by_round = []
  for round_index in sorted({run["round"] for run in runs}):
    in_round = [run for run in runs if run["round"] == round_index and phase in run]
    ours_speed = [
      run[phase]["images_per_s"]
      for run in in_round
      if run["implementation"] == "ours" and run["mode"] in OUR_MODES
    ]
    peer_speed = [run[phase]["images_per_s"] for run in in_round if run["implementation"] == "peer"]
    if ours_speed and peer_speed:
      by_round.append(_ratio(max(ours_speed), max(peer_speed)))
  entry["best_vs_best_by_round"] = by_round
  for mode in extra_modes:
    if f"ours_{mode}" in speed:
      entry[f"{mode}_vs_peer_best"] = _ratio(speed[f"ours_{mode}"], speed[peer_best])
      entry[f"matched_flop_{mode}_vs_peer_best"] = _ratio(gflops[f"ours_{mode}"], gflops[peer_best])
  return entry


def summarize(results, phases, cpu, extra_modes=()):
  """One summary per model of the worker `results` (those with an `error` are listed, not used); `extra_modes`
  as `--extra_modes`."""
  summaries = []
  for model in dict.fromkeys(result["model"] for result in results):
    of_model = [result for result in results if result["model"] == model]
    runs = [result for result in of_model if "error" not in result]
    summary = dict(summary=model, **cpu, rounds=len({result["round"] for result in of_model}))
    # Other processes slow the peer's OpenMP threads far more than TensorFlow's: trust ratios taken idle.
    summary["load_average_max"] = max((run["load_average"] for run in runs), default=None)
    for phase in phases:
      summary[phase] = _phase_summary(runs, phase, extra_modes)
    peak_rss = {}
    for run in runs:
      key = f"{run['implementation']}_{run['mode']}"
      if "peak_rss_train_mb" in run:
        peak_rss[key] = max(peak_rss.get(key, 0), run["peak_rss_train_mb"])
    if peak_rss:
      summary["peak_rss_train_mb"] = peak_rss
      for our_mode, peer_mode in zip(OUR_MODES, PEER_MODES):
        ratio = _ratio(peak_rss.get(f"ours_{our_mode}"), peak_rss.get(f"peer_{peer_mode}"))
        if ratio:
          summary[f"peak_rss_train_{our_mode}_vs_{peer_mode}"] = ratio
    errors = [
      f"{r['implementation']} {r['mode']} round {r['round']}: {r['error']}" for r in of_model if "error" in r
    ]
    if errors:
      summary["errors"] = errors
    summaries.append(summary)
  return summaries


def _common_flags():
  return [
    f"--phases={','.join(timing_flags.PHASES_TO_TIME.value)}",
    f"--batch_size={timing_flags.BATCH_SIZE.value}",
    f"--threads={timing_flags.THREADS.value}",
    f"--warmup_runs={timing_flags.WARMUP_RUNS.value}",
    f"--timed_runs={timing_flags.TIMED_RUNS.value}",
  ]


def _run(implementation, model, mode, round_index):
  """One worker subprocess; its result with the run's identity, or the identity and an `error`."""
  identity = dict(implementation=implementation, model=model, mode=mode, round=round_index)
  if implementation == "ours":
    command = [sys.executable, os.path.abspath(__file__), f"--worker={mode}", f"--models={model}"]
    environment = workloads.MODES[mode].get("env")
  else:
    settings = MODELS[model]
    command = [
      _REFERENCE_PYTHON.value,
      _REFERENCE_WORKER,
      f"--reference_dir={os.path.abspath(_REFERENCE_DIR.value)}",
      f"--mode={mode}",
      f"--num_scales={settings['num_scales']}",
      f"--num_blocks={settings['num_blocks']}",
      f"--mid_channels={settings['num_filters']}",
      f"--image_shape={','.join(str(n) for n in settings['event_shape'])}",
    ]
    environment = None
  result = run_worker(command + _common_flags(), timing_flags.TIMEOUT.value, identity, env=environment)
  return dict(identity, **result)


def _usage_error():
  """The first problem with the flags as an `error:` line, or None."""
  problem = common_flags.reference_dir_error(_REFERENCE_DIR.value)
  if problem:
    return problem
  unknown = [model for model in _MODELS.value if model not in MODELS]
  unmatched = [model for model in _MODELS.value if model in MODELS and set(MODELS[model]) - _PEER_SETTINGS]
  if unknown or unmatched:
    comparable = sorted(model for model in MODELS if not set(MODELS[model]) - _PEER_SETTINGS)
    return f"error: --models has {unknown + unmatched}; expected some of {comparable} (settings the peer has)"
  unknown_modes = [mode for mode in _EXTRA_MODES.value if mode not in workloads.MODES]
  if unknown_modes:
    return f"error: --extra_modes has {unknown_modes}; expected some of {sorted(workloads.MODES)}"
  if [phase for phase in timing_flags.PHASES_TO_TIME.value if phase not in PHASES]:
    return f"error: --phases={','.join(timing_flags.PHASES_TO_TIME.value)}; expected some of {list(PHASES)}"
  try:
    probe = subprocess.run([_REFERENCE_PYTHON.value, "-c", "import torch"], capture_output=True, text=True)
    reason = (probe.stderr.strip().splitlines() or ["no output"])[-1] if probe.returncode else None
  except OSError as error:
    reason = str(error)
  if reason:
    return f"error: --reference_python={_REFERENCE_PYTHON.value} cannot import torch ({reason})"
  return None


def main(argv):
  del argv
  if _WORKER.value:
    print(
      json.dumps(timing_flags.time_our_workload(_MODELS.value[0], _WORKER.value, implementation="ours")),
      flush=True,
    )
    return
  problem = _usage_error()
  if problem:
    sys.exit(problem)
  cpu = cpu_description(cpu_features.read_cpu_info())
  results = []
  for model in _MODELS.value:
    for round_index in range(_ROUNDS.value):
      for implementation, mode in round_order(round_index) + tuple(("ours", m) for m in _EXTRA_MODES.value):
        results.append(_run(implementation, model, mode, round_index))
        print(json.dumps(results[-1]), flush=True)
  for summary in summarize(results, timing_flags.PHASES_TO_TIME.value, cpu, _EXTRA_MODES.value):
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
