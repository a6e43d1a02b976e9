"""Tiny models and configs the training tests share, and runners for the repository's scripts and for
`distributed_programs.py` in fresh processes.

Free of TensorFlow at import, so that `distributed_programs.py` can still configure devices and
collectives after importing it.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading

from tfp_realnvp.training import configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(REPO_ROOT, "tests", "distributed_programs.py")
# How long a program of `PROGRAMS` may run before it stops itself (a worker whose peer never starts would
# otherwise wait forever).
PROGRAM_TIMEOUT_S = 240

# `RealNVP.from_preset("digits", **TINY_MODEL)`: one scale, one residual block of 8 filters, no dropout.
TINY_MODEL = {"num_scales": 1, "num_blocks": 1, "num_filters": 8, "dropout": 0.0}
# What `tiny_config` changes in the digits config.
_TINY_RUN = {
  "batch_size": 16,
  "num_train_steps": 6,
  "warmup_steps": 0,
  "log_every_steps": 2,
  "checkpoint_every_steps": 3,
  "eval_every_steps": 4,
  "num_samples": 4,
  "num_importance_samples": 2,
  "model_overrides": TINY_MODEL,
}


def tiny_config(**changes):
  """The digits config with `TINY_MODEL`, batch 16, 6 steps, a log line every 2 steps, a checkpoint every 3
  and an evaluation every 4, 2 importance-weighted draws at the end, with `changes` applied."""
  return dataclasses.replace(configs.get_config(), **{**_TINY_RUN, **changes})


def short_run(num_train_steps):
  """Config changes for a run of `num_train_steps` steps with one checkpoint, at the end, and no evaluation
  before it."""
  return dict(num_train_steps=num_train_steps, checkpoint_every_steps=num_train_steps, eval_every_steps=0)


def short_config(num_train_steps, **changes):
  """`tiny_config` with `short_run(num_train_steps)` and `changes`."""
  return tiny_config(**short_run(num_train_steps), **changes)


def script_environment(**variables):
  """The environment of a fresh interpreter that runs this checkout's code: `PYTHONPATH` the repository,
  TensorFlow's C++ logging at warnings and above, and `variables`."""
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT, **variables}


def program_environment():
  """`script_environment` for `PROGRAMS`, with their time limit."""
  return script_environment(TEST_PROGRAM_TIMEOUT_S=str(PROGRAM_TIMEOUT_S))


def _script_process(path, arguments):
  """The `subprocess.Popen` arguments that run the repository's script `path` with `arguments` in a fresh
  interpreter, from the repository root with this checkout on `PYTHONPATH`, in text mode."""
  command = [sys.executable, os.path.join(REPO_ROOT, path), *arguments]
  return dict(args=command, text=True, cwd=REPO_ROOT, env=script_environment())


def run_script(path, *arguments, timeout):
  """Runs the repository's script `path` (e.g. `train.py`, `examples/two_moons.py`) with `arguments` in a
  fresh interpreter, from the repository root with this checkout on `PYTHONPATH`; returns the
  `subprocess.CompletedProcess` (text stdout and stderr)."""
  return subprocess.run(**_script_process(path, arguments), capture_output=True, timeout=timeout)


def start_script(path, *arguments):
  """Starts `path` with `arguments` as `run_script` runs it, without waiting; returns the `subprocess.Popen`,
  with text pipes for its stdout and stderr.

  SIGINT reaches the script as a terminal's Ctrl-C would even when this process runs with SIGINT ignored (as
  `nohup pytest ... &` starts it): an ignored signal stays ignored across `exec`, a handled one does not, so
  the process is started while this one handles SIGINT.
  """
  in_main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main_thread else None
  try:
    return subprocess.Popen(
      **_script_process(path, arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
  finally:
    if previous is not None:  # None: a handler not set from Python, left as it was
      signal.signal(signal.SIGINT, previous)


def run_program(name, out_path):
  """Runs `distributed_programs.py name out_path` in a fresh process; returns the JSON report it wrote."""
  subprocess.run(
    [sys.executable, PROGRAMS, name, out_path],
    env=program_environment(),
    check=True,
    timeout=PROGRAM_TIMEOUT_S + 10,
    capture_output=True,
  )
  with open(out_path) as file:
    return json.load(file)
