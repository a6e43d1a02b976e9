"""Tiny models and configs the training tests share, and a runner for the repository's scripts.

Free of TensorFlow at import, so that `distributed_programs.py` can still configure devices and
collectives after importing it.
"""

import dataclasses
import os
import subprocess
import sys

from tfp_realnvp.training import configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `RealNVP.from_preset("digits", **TINY_MODEL)`: one scale, one residual block of 8 filters, no dropout.
TINY_MODEL = {"num_scales": 1, "num_blocks": 1, "num_filters": 8, "dropout": 0.0}


def tiny_config(**changes):
  """The digits config with `TINY_MODEL`, batch 16, 6 steps, a log line every 2 steps, a checkpoint every 3
  and an evaluation every 4, 2 importance-weighted draws at the end, with `changes` applied."""
  values = dict(
    batch_size=16,
    num_train_steps=6,
    warmup_steps=0,
    log_every_steps=2,
    checkpoint_every_steps=3,
    eval_every_steps=4,
    num_samples=4,
    num_importance_samples=2,
    model_overrides=TINY_MODEL,
  )
  return dataclasses.replace(configs.get_config(), **{**values, **changes})


def run_script(path, *arguments, timeout):
  """Runs the repository's script `path` (e.g. `train.py`, `examples/two_moons.py`) with `arguments` in a
  fresh interpreter, from the repository root with this checkout on `PYTHONPATH`; returns the
  `subprocess.CompletedProcess` (text stdout and stderr)."""
  return subprocess.run(
    [sys.executable, os.path.join(REPO_ROOT, path), *arguments],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=REPO_ROOT,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT},
  )
