"""What `side_by_side.py` and its two workers share (no TensorFlow, no torch: the peer's worker runs in the torch
interpreter): the workers' common flags, the training clock that gives both sides the same training time, the
curve file, the analytic bits/dim of the definition check, and a digest that shows both read the same images.

A worker trains until `TrainClock.done()`, evaluating the validation images whenever `evaluation_due()`, and
appends one JSON line per evaluation to its curve file (`append_point`):

    {"side": "ours", "step": 1200, "train_s": 181.4, "images": 76800, "valid_bits_per_dim": 3.41, "eval_s": 6.2}

`train_s` is the training time so far: the sum of the train steps' times, each with the fetching of its batch;
evaluation, checkpointing and start-up are not counted. Then it prints one JSON line with its final figures.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import sys
import time

import numpy as np

__all__ = [
  "TrainClock",
  "add_common_arguments",
  "analytic_bits_per_dim",
  "append_point",
  "images_digest",
  "pin_to_cpu",
  "read_curve",
]


class TrainClock:
  """Training time against a budget, and when the next validation point is due.

  `budget_s` seconds of training (the steps' own time, `step()`), a validation point every `eval_every_s`
  seconds of it: `evaluation_due()` is true once per crossed multiple of `eval_every_s`, and once more when the
  budget is spent, so the curve always ends at the budget. The first `uncounted_steps` steps are start-up, timed
  apart (`first_steps_s`) and not counted: ours' first step traces and optimizes its graph (about 20 s), the
  peer's first allocates; both sides get the same number of them. `time_fn` is the clock (tests pass a fake).
  """

  def __init__(self, budget_s, eval_every_s, uncounted_steps=1, time_fn=time.perf_counter):
    if not (budget_s > 0 and math.isfinite(budget_s)):
      raise ValueError(f"`budget_s` must be a positive finite number of seconds; got {budget_s!r}.")
    if not (eval_every_s > 0 and math.isfinite(eval_every_s)):
      raise ValueError(f"`eval_every_s` must be a positive finite number of seconds; got {eval_every_s!r}.")
    self.budget_s = float(budget_s)
    self.eval_every_s = float(eval_every_s)
    self.train_s = 0.0
    self.first_steps_s = 0.0
    self.steps = 0
    self.uncounted_steps = uncounted_steps
    self._time = time_fn
    self._next_eval_s = self.eval_every_s
    self._final_point_given = False
    self._cpu_s = 0.0

  @contextlib.contextmanager
  def step(self):
    """Times one train step (the block): its wall time and its process CPU time count."""
    start, cpu_start = self._time(), _process_cpu_s()
    yield
    if self.steps < self.uncounted_steps:
      self.first_steps_s += self._time() - start
    else:
      self.train_s += self._time() - start
      self._cpu_s += _process_cpu_s() - cpu_start
    self.steps += 1

  def done(self):
    """Whether the budget is spent (checked before a step: the last step may end past it)."""
    return self.train_s >= self.budget_s

  def evaluation_due(self):
    """True once per `eval_every_s` of training time crossed, and once when the budget is spent."""
    if self.done():
      if self._final_point_given:
        return False
      self._final_point_given = True
      return True
    if self.train_s >= self._next_eval_s:
      while self._next_eval_s <= self.train_s:
        self._next_eval_s += self.eval_every_s
      return True
    return False

  def cpu_per_wall(self):
    """Process CPU seconds per training second (about the thread count when the cores were the worker's)."""
    return round(self._cpu_s / self.train_s, 2) if self.train_s else None

  def figures(self, batch_size):
    """`steps` (all), `train_s` and `images_per_s` (the counted steps), `first_steps_s`, `cpu_per_wall`."""
    counted = max(self.steps - self.uncounted_steps, 0)
    return dict(
      steps=self.steps,
      train_s=round(self.train_s, 2),
      images_per_s=round(counted * batch_size / self.train_s, 2) if self.train_s else None,
      first_steps_s=round(self.first_steps_s, 2),
      cpu_per_wall=self.cpu_per_wall(),
    )

  def point(self, side, batch_size, valid_bits_per_dim, train_bits_per_dim, eval_s):
    """One validation point of `side`'s curve (`append_point`) at the current step."""
    return dict(
      side=side,
      step=self.steps,
      train_s=round(self.train_s, 2),
      images=self.steps * batch_size,
      valid_bits_per_dim=round(valid_bits_per_dim, 5),
      train_bits_per_dim=round(train_bits_per_dim, 5),
      eval_s=round(eval_s, 2),
    )


def _process_cpu_s():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def append_point(path, point):
  """Appends `point` (a dict) to the curve file `path` as one JSON line, flushed at once."""
  with open(path, "a") as curve:
    curve.write(json.dumps(point) + "\n")


def read_curve(path):
  """The points of the curve file `path`, in order; a missing file is an empty curve, a partly written last
  line (a worker killed while writing) is left out."""
  if not os.path.exists(path):
    return []
  points = []
  with open(path) as curve:
    for line in curve:
      try:
        points.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return points


def images_digest(images):
  """A short digest of uint8 images `[N, H, W, C]`: both sides report it, so a run shows they saw the same."""
  images = np.ascontiguousarray(images, dtype=np.uint8)
  return f"{images.shape[0]}:{hashlib.sha256(images.tobytes()).hexdigest()[:16]}"


def analytic_bits_per_dim(levels, noise, alpha, num_bits=8):
  """`-log2 p(levels + noise) / D` per image for the flow made of the logit preprocessing alone and a standard
  normal: `p = alpha + (1 - 2 alpha) x / 2**num_bits`, `y = logit(p)`, `log p(x) = log N(y; 0, 1) +
  log((1 - 2 alpha) / 2**num_bits) - log p - log(1 - p)` summed over the `D` values. Float64 `[N]`.

  Both implementations are this flow when their couplings are identities (the peer's `_pre_process` with
  `data_constraint = 0.9` is `alpha = 0.05`, and its `RealNVPLoss` subtracts `D log 256`, the density of the
  8-bit scale): the definition check compares each with it.
  """
  x = np.asarray(levels, np.float64) + np.asarray(noise, np.float64)
  p = alpha + (1.0 - 2.0 * alpha) * x / 2.0**num_bits
  y = np.log(p) - np.log1p(-p)
  log_density = (
    -0.5 * y**2
    - 0.5 * np.log(2.0 * np.pi)
    + np.log((1.0 - 2.0 * alpha) / 2.0**num_bits)
    - np.log(p)
    - np.log1p(-p)
  )
  log_density = log_density.reshape(x.shape[0], -1)
  return -log_density.sum(axis=1) / (log_density.shape[1] * np.log(2.0))


def pin_to_cpu(cpu):
  """Pins this process (and the threads it starts afterwards) to the one CPU `cpu`; None leaves it as it is.

  Call before TensorFlow or torch start their thread pools."""
  if cpu is not None:
    os.sched_setaffinity(0, {cpu})


def _positive_float(text):
  value = float(text)
  if not (value > 0 and math.isfinite(value)):
    raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
  return value


def add_common_arguments(parser):
  """The flags both workers take from `side_by_side.py`: budget, validation interval, curve file, threads, CPU,
  mode, batch size, learning rate, seed."""
  parser.add_argument("--budget_s", type=_positive_float, required=True, help="Training seconds.")
  parser.add_argument(
    "--eval_every_s", type=_positive_float, required=True, help="Training seconds between validation points."
  )
  parser.add_argument("--curve", required=True, help="The curve file (JSON lines) to append points to.")
  parser.add_argument("--threads", type=int, default=2, help="Intra-op threads (inter-op: 1 with --cpu).")
  parser.add_argument(
    "--cpu", type=int, default=None, help="Pin the worker to this CPU (concurrent schedule)."
  )
  parser.add_argument("--mode", required=True, help="The side's precision mode.")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  return parser


def worker_main(argv, parser, run, modes):
  """A worker's command line: parse `argv` with `parser`, refuse a `--mode` not in `modes`, print `run(args)` as
  one JSON line."""
  args = parser.parse_args(argv)
  if args.mode not in modes:
    sys.exit(f"error: --mode={args.mode}; expected one of {list(modes)}")
  print(json.dumps(run(args)), flush=True)
