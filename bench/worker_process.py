"""Runs one benchmark worker in a fresh Python process and reads back its JSON result (no flags, no TensorFlow)."""

import json
import os
import subprocess

__all__ = ["run_worker"]


def run_worker(command, timeout, identity, env=None):
  """The last JSON line `command` prints, or `identity` plus an `error` when it fails or times out.

  `env` adds to this process's environment; TensorFlow's C++ log is quieted to errors.
  """
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  try:
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)
  except subprocess.TimeoutExpired:
    return dict(identity, error=f"timed out after {timeout} s")
  lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
  if completed.returncode or not lines:
    return dict(identity, error=completed.stderr.strip().splitlines()[-1:] or "no output")
  return json.loads(lines[-1])
