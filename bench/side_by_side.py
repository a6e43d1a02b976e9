"""How does ours compare with the PyTorch port on Fashion-MNIST at equal CPU time? Both trained for the same
training time on the same images, validated as they train, then scored once on the same test images.

  python bench/side_by_side.py --reference_dir=/path/to/real-nvp --reference_python=/path/to/torchvenv/bin/python
  python bench/side_by_side.py --reference_dir=... --reference_python=... --minutes=1 --eval_every_minutes=0.25 \
      --test_split='test[:500]' --importance_split='test[:100]' --num_importance_samples=4       # a smoke run

Ours (`side_by_side_ours.py`: `train_lib`'s trainer with `configs.get_config(--dataset)`, the `mnist` preset for
a 28x28x1 IDX folder, batch 64, Adam 1e-3) and chrischute/real-nvp (`side_by_side_peer.py`: a user's checkout,
its `RealNVP`, `RealNVPLoss`, L2 and clipping as its `train.py` uses them, batch 64, Adam 1e-3) each train for
`--minutes` of training time on `--train_split` (default the first 50,000 Fashion-MNIST training images, read by
`tfp_realnvp.data`; the peer gets the same 8-bit images as an array, its `ToTensor()` scaling applied), each in
its mode (`--our_mode`: bfloat16 or float32; `--peer_mode`: autocast_bf16 or fp32). Training time is the sum
of the train steps' times, batch fetching included; start-up (each side's first step too: ours traces its graph
then), evaluation and checkpointing are not counted (`side_by_side_protocol.TrainClock`, the same code on both
sides).

Every `--eval_every_minutes` of training time, and when the budget is spent, each side scores the same
`--valid_split` images (default 2,000 of the 10,000 held-out training images) with uniform dequantization at
K = 1 in inference mode: `-log2 p(v + u) / D` for the 8-bit levels `v`, the density on the 8-bit scale (the
peer's `RealNVPLoss` subtracts `D log 256`, and its log-det includes its logit preprocessing's, so it is the
same quantity). A definition check shows it: on 8 images with fixed noise, each side's model with identity
couplings (ours at initialization, the peer's with its couplings bypassed) against the analytic value of the
logit preprocessing and a standard normal (`protocol.analytic_bits_per_dim`). Then each scores `--test_split`
(default all 10,000 test images) the same way, like for like, and ours adds its own bound: its dequantizer
(`--our_dequantization`) at K = 1 and importance-weighted at `--num_importance_samples` draws on
`--importance_split`.

Schedules (`--schedule`):

- `sequential` (the default): one side after the other, each with both cores (2 threads), as a user would run
  either. It is the simpler one to explain: each side had the whole machine for `--minutes`. Its weakness is
  that the two periods may see different background load: each line reports the load averages and
  `cpu_per_wall` (close to 2 when the cores were the worker's).
- `concurrent`: both at once, each pinned to one core (`os.sched_setaffinity`) with one thread (TensorFlow's
  intra- and inter-op pools, `torch.set_num_threads(1)`): the same conditions for both, half the wall time, but
  each side's one-thread speed is not its two-thread speed, and the two share the caches and memory bandwidth.

Prints one JSON line per side (steps, training seconds, images/s, `cpu_per_wall`, load averages, validation
and test figures, the digests of the images it read), then a summary line (the CPU's model name, model number
and bfloat16 flags, wall times, the test figures side by side, `peer_minus_ours`, the definition check), and
writes one PNG of both validation curves against training time (`--png`). The curve files, the images given to
the peer and our run's workdir (a `train.py` workdir: `train.py --workdir=...` evaluates or exports it) are in
`--workdir`; a rerun replaces those of the sides it trains (`--sides`: both by default, or one, such as ours
again with `--our_dequantization=variational` in another `--workdir`).
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time

import common_flags
import numpy as np
import side_by_side_protocol as protocol
from absl import app, flags
from worker_process import run_worker

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH_DIR)
SCHEDULES = ("sequential", "concurrent")
OUR_MODES = ("bfloat16", "float32")
PEER_MODES = ("autocast_bf16", "fp32")
DEQUANTIZATIONS = ("uniform", "variational")
# Bits/dim within which the definition check calls the two sides' definitions the same. Ours at initialization
# is not exactly the analytic flow (its batch-norm bijectors scale by `1 / sqrt(1 + 1e-4)`, and its latents
# differ from the logits by up to ~1e-3): measured 0.0015-0.003 below it on Fashion-MNIST. A different
# definition (nats, another pixel scale, a missing log-det) would be off by 0.1 to several bits/dim.
DEFINITION_TOLERANCE = 0.01
CHECK_IMAGES = 8
# A side whose process CPU per training second fell below this share of its threads did not have its cores: the
# peer's OpenMP threads collapse under load (measured here at nice 19 beside another training: 2 threads gave
# 1.7 images/s, 1 pinned thread 36).
TRUSTED_CPU_SHARE = 0.75

_REFERENCE_DIR = common_flags.REFERENCE_DIR
_REFERENCE_PYTHON = common_flags.REFERENCE_PYTHON
_DATASET = flags.DEFINE_string(
  "dataset", "idx:/usr/share/datasets/fashion-mnist", "The images, a tfp_realnvp.data name (idx:PATH)."
)
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train[:50000]", "Both sides train on these images.")
_VALID_SPLIT = flags.DEFINE_string(
  "valid_split", "train[50000:52000]", "Both sides' validation curve scores these images."
)
_TEST_SPLIT = flags.DEFINE_string("test_split", "test", "Both sides are scored once on these images.")
_IMPORTANCE_SPLIT = flags.DEFINE_string(
  "importance_split",
  "test[:1000]",
  "Our importance-weighted bound is taken on these images (it costs K passes).",
)
_NUM_IMPORTANCE_SAMPLES = flags.DEFINE_integer(
  "num_importance_samples", 100, "Draws K of our importance-weighted bound (1: none)."
)
_MINUTES = flags.DEFINE_float("minutes", 30.0, "Training minutes each side (30 or more for a real run).")
_EVAL_EVERY_MINUTES = flags.DEFINE_float(
  "eval_every_minutes", 2.0, "Training minutes between validation points."
)
_SCHEDULE = flags.DEFINE_enum(
  "schedule",
  "sequential",
  SCHEDULES,
  "sequential: one after the other, both cores each; concurrent: both at once, one core and one thread each.",
)
_FIRST = flags.DEFINE_enum("first", "ours", ("ours", "peer"), "The side that trains first (sequential).")
_OUR_MODE = flags.DEFINE_enum("our_mode", "bfloat16", OUR_MODES, "Our compute_dtype.")
_PEER_MODE = flags.DEFINE_enum("peer_mode", "autocast_bf16", PEER_MODES, "The peer's precision.")
_OUR_DEQUANTIZATION = flags.DEFINE_enum(
  "our_dequantization",
  "uniform",
  DEQUANTIZATIONS,
  "What ours trains with: uniform (the peer's objective, the default) or variational (its own best bound; the "
  "like-for-like figures stay uniform K = 1).",
)
_PEER_NUM_SCALES = flags.DEFINE_integer("peer_num_scales", None, "The peer's scales (None: our preset's).")
_PEER_NUM_BLOCKS = flags.DEFINE_integer("peer_num_blocks", None, "The peer's residual blocks (None: ours').")
_PEER_MID_CHANNELS = flags.DEFINE_integer("peer_mid_channels", None, "The peer's features (None: ours').")
_BATCH_SIZE = common_flags.BATCH_SIZE
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Both sides' Adam learning rate.")
_SEED = flags.DEFINE_integer("seed", 0, "Both sides' seed.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/side_by_side", "Curve files, the peer's images, our run.")
_PNG = flags.DEFINE_string("png", None, "The curves' PNG (None: <workdir>/curves.png).")
_SIDES = flags.DEFINE_list(
  "sides",
  ["ours", "peer"],
  "The sides to train: both, or one (e.g. ours again with --our_dequantization=variational, beside a peer "
  "already run with the same flags).",
)
_TIMEOUT_MINUTES = flags.DEFINE_float(
  "timeout_minutes",
  90.0,
  "Minutes a worker may take beyond its training budget (start-up, evaluations, test).",
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The flags a run needs, resolved (the peer's architecture filled in from our preset)."""

  reference_dir: str
  reference_python: str
  dataset: str
  train_split: str
  valid_split: str
  test_split: str
  importance_split: str
  num_importance_samples: int
  minutes: float
  eval_every_minutes: float
  schedule: str
  first: str
  our_mode: str
  peer_mode: str
  our_dequantization: str
  peer_num_scales: int
  peer_num_blocks: int
  peer_mid_channels: int
  batch_size: int
  learning_rate: float
  seed: int
  workdir: str
  png: str
  timeout_minutes: float
  sides: tuple = ("ours", "peer")

  def path(self, name):
    return os.path.join(self.workdir, name)


def usage_error(values):
  """The first problem with the flag `values` (a dict by flag name) as one `error: --flag ...` line, or None."""
  problem = common_flags.reference_dir_error(values.get("reference_dir"))
  if problem:
    return problem
  for name in ("minutes", "eval_every_minutes", "learning_rate", "timeout_minutes"):
    value = values.get(name)
    if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
      return f"error: --{name}={value}; expected a positive number"
  if values["eval_every_minutes"] > values["minutes"]:
    return (
      f"error: --eval_every_minutes={values['eval_every_minutes']} is longer than --minutes={values['minutes']}; "
      "expected at most the training budget"
    )
  for name in ("batch_size", "num_importance_samples"):
    value = values.get(name)
    if not (isinstance(value, int) and value >= 1):
      return f"error: --{name}={value}; expected an integer >= 1"
  for name in ("peer_num_scales", "peer_num_blocks", "peer_mid_channels"):
    value = values.get(name)
    if value is not None and not (isinstance(value, int) and value >= 1):
      return f"error: --{name}={value}; expected an integer >= 1"
  sides = values.get("sides") or []
  if not sides or set(sides) - {"ours", "peer"} or len(set(sides)) != len(sides):
    return f"error: --sides={','.join(sides)}; expected ours, peer or ours,peer"
  for name in ("train_split", "valid_split", "test_split", "importance_split"):
    if not values.get(name):
      return f"error: --{name} is empty; expected a split such as test or train[:50000]"
  return None


def peer_shape_error(image_shape, num_scales):
  """Why the peer's `RealNVP(num_scales, ...)` cannot take images of `image_shape` `(H, W, C)`, or None.

  Each scale but the last squeezes 2x2 twice over the same size (channel couplings, then the split), so the
  height and width must divide by `2**(num_scales - 1)`: 28x28 takes 1 to 3 scales (28, 14, 7), not 4."""
  height, width, _ = image_shape
  factor = 2 ** (num_scales - 1)
  if height % factor or width % factor:
    possible = [n for n in range(1, 8) if not height % 2 ** (n - 1) and not width % 2 ** (n - 1)]
    return (
      f"error: --peer_num_scales={num_scales} does not fit {height}x{width} images: each scale but the last "
      f"halves them, so they must divide by {factor}; expected one of {possible}"
    )
  return None


def _flags(settings, names, prefix=""):
  """`--name=value` for each of `names`, the value from the field `prefix + name` of `settings`."""
  return [f"--{name}={getattr(settings, prefix + name)}" for name in names]


def worker_commands(settings):
  """`{side: (command, env)}` of both workers: the same budget, validation interval, batch, learning rate and
  seed; with the concurrent schedule each pinned to its own CPU with one thread."""
  concurrent_run = settings.schedule == "concurrent"
  common = [
    f"--budget_s={settings.minutes * 60.0}",
    f"--eval_every_s={settings.eval_every_minutes * 60.0}",
    *_flags(settings, ("batch_size", "learning_rate", "seed")),
    f"--threads={1 if concurrent_run else 2}",
  ]

  def command(python, side, mode, *flags):
    script = os.path.join(_BENCH_DIR, f"side_by_side_{side}.py")
    return [python, script, *common, f"--curve={settings.path(side + '.jsonl')}", f"--mode={mode}", *flags]

  data_names = "dataset train_split valid_split test_split importance_split num_importance_samples".split()
  ours = command(
    sys.executable,
    "ours",
    settings.our_mode,
    *_flags(settings, data_names),
    f"--dequantization={settings.our_dequantization}",
    f"--data={settings.path('images.npz')}",
    f"--workdir={settings.path('ours')}",
  )
  peer = command(
    settings.reference_python,
    "peer",
    settings.peer_mode,
    f"--reference_dir={os.path.abspath(settings.reference_dir)}",
    f"--data={settings.path('images.npz')}",
    *_flags(settings, ("num_scales", "num_blocks", "mid_channels"), prefix="peer_"),
  )
  if concurrent_run:
    ours.append("--cpu=0")
    peer.append("--cpu=1")
  pythonpath = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))
  return {"ours": (ours, {"PYTHONPATH": pythonpath}), "peer": (peer, None)}


def run_order(settings):
  """The sides of `settings.sides` in the order they start."""
  order = ("ours", "peer") if settings.first == "ours" else ("peer", "ours")
  return tuple(side for side in order if side in settings.sides)


def _run_side(side, command, env, timeout):
  start = time.perf_counter()
  result = run_worker(command, timeout, dict(side=side), env=env)
  return dict(result, side=side, wall_s=round(time.perf_counter() - start, 1))


def run_workers(settings, commands, runner=_run_side):
  """Runs both workers by `settings.schedule` (sequential in `run_order`, or concurrent); their results by side."""
  timeout = (settings.minutes + settings.timeout_minutes) * 60.0
  order = run_order(settings)
  if settings.schedule == "sequential":
    return {side: runner(side, *commands[side], timeout) for side in order}
  with concurrent.futures.ThreadPoolExecutor(max(len(order), 1)) as pool:
    futures = {side: pool.submit(runner, side, *commands[side], timeout) for side in order}
    return {side: future.result() for side, future in futures.items()}


def definition_check(levels, noise, results):
  """The definition check's summary: the analytic value per image, each side's largest difference from it,
  and whether both are within `DEFINITION_TOLERANCE`."""
  analytic = protocol.analytic_bits_per_dim(levels, noise, alpha=0.05)
  summary = dict(analytic=[round(float(value), 5) for value in analytic])
  agree = True
  for side in ("ours", "peer"):
    values = results.get(side, {}).get("definition_check")
    if values is None:
      summary[f"{side}_max_difference"] = None
      agree = False
      continue
    difference = float(np.max(np.abs(np.asarray(values) - analytic)))
    summary[f"{side}_max_difference"] = round(difference, 6)
    agree = agree and difference <= DEFINITION_TOLERANCE
  summary["tolerance"] = DEFINITION_TOLERANCE
  summary["agree"] = agree
  return summary


def write_curves_png(curves, path, title):
  """A PNG at `path` of each `{label: points}` curve's `valid_bits_per_dim` against `train_s` in minutes."""
  from matplotlib import figure
  from matplotlib.backends import backend_agg

  chart = figure.Figure(figsize=(7, 4.5), dpi=100)
  backend_agg.FigureCanvasAgg(chart)
  axes = chart.add_subplot(1, 1, 1)
  for label, points in curves.items():
    points = [p for p in points if p.get("valid_bits_per_dim") is not None]
    axes.plot(
      [p["train_s"] / 60.0 for p in points],
      [p["valid_bits_per_dim"] for p in points],
      marker="o",
      markersize=3,
      label=label,
    )
  axes.set_xlabel("training time (minutes; evaluation not counted)")
  axes.set_ylabel("validation bits/dim (uniform, K = 1)")
  axes.set_title(title, fontsize=9)
  axes.grid(True, alpha=0.3)
  if curves:
    axes.legend()
  buffer = io.BytesIO()
  chart.savefig(buffer, format="png")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "wb") as file:
    file.write(buffer.getvalue())
  return path


def cpu_description():
  """The CPU's model name and model number, and whether it has AMX-BF16 and AVX512-BF16."""
  from tfp_realnvp.internal import cpu_features

  cpu = cpu_features.read_cpu_info()
  return dict(
    cpu=cpu.model_name,
    cpu_model_number=cpu.model_number,
    amx_bf16="amx_bf16" in cpu.flags,
    avx512_bf16="avx512_bf16" in cpu.flags,
  )


# What the summary keeps of each side's result (None where the side did not report it).
_SIDE_FIGURES = (
  "mode threads steps train_s images_per_s cpu_per_wall wall_s load_average load_average_max num_parameters "
  "test error"
).split()


def summarize(settings, results, check, cpu, wall_s):
  """The summary line: the CPU, the schedule, each side's training and test figures, `peer_minus_ours`."""
  ours, peer = results.get("ours", {}), results.get("peer", {})
  summary = dict(summary="side_by_side", **cpu, schedule=settings.schedule, minutes=settings.minutes)
  for side, result in (("ours", ours), ("peer", peer)):
    summary[side] = {name: result.get(name) for name in _SIDE_FIGURES}
  ours_test = (ours.get("test") or {}).get("uniform_k1", {}).get("bits_per_dim")
  peer_test = (peer.get("test") or {}).get("uniform_k1", {}).get("bits_per_dim")
  summary["test_uniform_k1"] = dict(ours=ours_test, peer=peer_test, images=settings.test_split)
  summary["peer_minus_ours"] = round(peer_test - ours_test, 5) if ours_test and peer_test else None
  digests = [ours.get("images"), peer.get("images")]
  summary["same_images"] = bool(digests[0]) and digests[0] == digests[1]
  summary["definition_check"] = check
  summary["had_its_cores"] = {side: had_its_cores(summary[side]) for side in ("ours", "peer")}
  summary["wall_s"] = round(wall_s, 1)
  summary["curves"] = dict(
    ours=settings.path("ours.jsonl"), peer=settings.path("peer.jsonl"), png=settings.png
  )
  return summary


def had_its_cores(figures):
  """Whether a side's `cpu_per_wall` reached `TRUSTED_CPU_SHARE` of its threads while it trained (None when
  it did not report them): when not, its speed, and so its curve and test figure at equal time, are the
  machine's load's, not its own."""
  if figures.get("cpu_per_wall") is None or not figures.get("threads"):
    return None
  return figures["cpu_per_wall"] >= TRUSTED_CPU_SHARE * figures["threads"]


def _settings_from_flags():
  from tfp_realnvp.flows import PRESETS

  preset = PRESETS["mnist"]
  workdir = _WORKDIR.value
  return Settings(
    reference_dir=_REFERENCE_DIR.value,
    reference_python=_REFERENCE_PYTHON.value,
    dataset=_DATASET.value,
    train_split=_TRAIN_SPLIT.value,
    valid_split=_VALID_SPLIT.value,
    test_split=_TEST_SPLIT.value,
    importance_split=_IMPORTANCE_SPLIT.value,
    num_importance_samples=_NUM_IMPORTANCE_SAMPLES.value,
    minutes=_MINUTES.value,
    eval_every_minutes=_EVAL_EVERY_MINUTES.value,
    schedule=_SCHEDULE.value,
    first=_FIRST.value,
    our_mode=_OUR_MODE.value,
    peer_mode=_PEER_MODE.value,
    our_dequantization=_OUR_DEQUANTIZATION.value,
    peer_num_scales=_PEER_NUM_SCALES.value or preset["num_scales"],
    peer_num_blocks=_PEER_NUM_BLOCKS.value or preset["num_blocks"],
    peer_mid_channels=_PEER_MID_CHANNELS.value or preset["num_filters"],
    batch_size=_BATCH_SIZE.value,
    learning_rate=_LEARNING_RATE.value,
    seed=_SEED.value,
    workdir=workdir,
    png=_PNG.value or os.path.join(workdir, "curves.png"),
    timeout_minutes=_TIMEOUT_MINUTES.value,
    sides=tuple(_SIDES.value),
  )


def _torch_error(reference_python):
  try:
    probe = subprocess.run(
      [reference_python, "-c", "import torch, numpy"], capture_output=True, text=True, timeout=300
    )
    reason = (probe.stderr.strip().splitlines() or ["no output"])[-1] if probe.returncode else None
  except (OSError, subprocess.TimeoutExpired) as error:
    reason = str(error)
  if reason:
    return f"error: --reference_python={reference_python} cannot import torch and numpy ({reason})"
  return None


def _prepare_images(settings):
  """Writes the images the peer trains and is scored on (and the definition check's) to `images.npz`; returns
  the check's levels and noise. Fails with an `error:` line naming the flag of a split that cannot be read."""
  import side_by_side_ours

  arrays = {}
  for name, split in (
    ("train", settings.train_split),
    ("valid", settings.valid_split),
    ("test", settings.test_split),
  ):
    try:
      arrays[name] = side_by_side_ours.split_levels(settings.dataset, split)
    except (ValueError, FileNotFoundError) as error:
      sys.exit(f"error: --{name}_split={split} of --dataset={settings.dataset} cannot be read: {error}")
  problem = peer_shape_error(arrays["train"].shape[1:], settings.peer_num_scales)
  if problem:
    sys.exit(problem)
  rng = np.random.default_rng(settings.seed)
  levels = arrays["valid"][:CHECK_IMAGES]
  noise = rng.uniform(size=levels.shape).astype(np.float32)
  np.savez(settings.path("images.npz"), check_levels=levels, check_noise=noise, **arrays)
  return levels, noise


def main(argv):
  del argv
  values = {name: flags.FLAGS[name].value for name in _FLAG_NAMES}
  problem = usage_error(values) or _torch_error(_REFERENCE_PYTHON.value)
  if problem:
    sys.exit(problem)
  settings = _settings_from_flags()
  start = time.perf_counter()
  os.makedirs(settings.workdir, exist_ok=True)
  for side in settings.sides:
    if os.path.exists(settings.path(f"{side}.jsonl")):
      os.remove(settings.path(f"{side}.jsonl"))
  if "ours" in settings.sides and os.path.isdir(settings.path("ours")):
    shutil.rmtree(settings.path("ours"))
  levels, noise = _prepare_images(settings)
  cpu = cpu_description()
  results = run_workers(settings, worker_commands(settings))
  for side in run_order(settings):
    print(json.dumps(results[side]), flush=True)
  check = definition_check(levels, noise, results)
  curves = {
    f"ours ({settings.our_mode}, {settings.our_dequantization})": protocol.read_curve(
      settings.path("ours.jsonl")
    ),
    f"peer ({settings.peer_mode})": protocol.read_curve(settings.path("peer.jsonl")),
  }
  write_curves_png(
    curves,
    settings.png,
    f"Fashion-MNIST validation, {settings.minutes:g} training minutes each, {settings.schedule}; {cpu['cpu']} "
    f"(model {cpu['cpu_model_number']})",
  )
  summary = summarize(settings, results, check, cpu, time.perf_counter() - start)
  print(json.dumps(summary), flush=True)
  for side, trusted in summary["had_its_cores"].items():
    if trusted is False:
      print(
        f"warning: {side} had {summary[side]['cpu_per_wall']} CPU seconds per training second with "
        f"{summary[side]['threads']} thread(s): the machine was not idle; do not trust this comparison",
        file=sys.stderr,
      )


_FLAG_NAMES = {
  "reference_dir",
  "minutes",
  "eval_every_minutes",
  "learning_rate",
  "timeout_minutes",
  "batch_size",
  "num_importance_samples",
  "peer_num_scales",
  "peer_num_blocks",
  "peer_mid_channels",
  "train_split",
  "valid_split",
  "test_split",
  "importance_split",
  "sides",
}


if __name__ == "__main__":
  app.run(main)
