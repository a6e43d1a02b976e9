"""The training's wall time across the runs of one workdir: its clock, its record, and the validation curve
against it.

```python
from tfp_realnvp.training import wall_time
curve = wall_time.validation_curve("runs/fashion")   # [{"step", "train_seconds", "bits_per_dim", ...}, ...]
```

`train_seconds` is the wall time of the training loops (train steps, periodic evaluations, sample grids and
checkpoints; not start-up, nor the final evaluation) of every run of the workdir up to a step. The trainer records
it at every checkpoint in `train_seconds.json` (`{step: seconds}`), so a resumed run continues the clock from
its checkpoint's step, and every evaluation appends a line to `validation.jsonl`.
"""

import json
import os
import time

import tensorflow as tf

from tfp_realnvp.training import workdirs

__all__ = [
  "RECORD_FILE",
  "VALIDATION_FILE",
  "Clock",
  "append_validation",
  "read_record",
  "record",
  "seconds_at",
  "truncate_validation",
  "validation_curve",
]

RECORD_FILE = "train_seconds.json"
VALIDATION_FILE = "validation.jsonl"


class Clock:
  """The training seconds of a workdir's runs: `start_seconds` (earlier runs' up to the step resumed from) plus
  the wall time since `start()`."""

  def __init__(self, start_seconds=0.0):
    self.start_seconds = float(start_seconds)
    self._started = self._stopped = None

  def start(self):
    self._started, self._stopped = time.perf_counter(), None

  def stop(self):
    """Stops the clock (the final evaluation is not training time)."""
    if self._started is not None and self._stopped is None:
      self._stopped = time.perf_counter()

  def seconds(self):
    """The training seconds so far (`start_seconds` until `start()`, and no more after `stop()`)."""
    if self._started is None:
      return self.start_seconds
    end = self._stopped if self._stopped is not None else time.perf_counter()
    return self.start_seconds + end - self._started


def read_record(workdir):
  """`{step: seconds}` of `workdir`'s `train_seconds.json` (empty when there is none, or it is not readable)."""
  path = os.path.join(os.fspath(workdir), RECORD_FILE)
  try:
    with tf.io.gfile.GFile(path) as file:
      return {int(step): float(seconds) for step, seconds in json.loads(file.read()).items()}
  except (tf.errors.NotFoundError, ValueError, AttributeError, TypeError):
    return {}


def seconds_at(workdir, step):
  """The training seconds recorded for `step` (the checkpoint a run resumes from): the record's entry for the
  newest step not after it, 0 without one (a workdir older than the record)."""
  earlier = {s: seconds for s, seconds in read_record(workdir).items() if s <= step}
  return earlier[max(earlier)] if earlier else 0.0


def record(workdir, step, seconds):
  """Adds `{step: seconds}` to `workdir`'s record (written atomically), dropping entries after `step` (of a run
  that went further than the checkpoint resumed from)."""
  entries = {s: value for s, value in read_record(workdir).items() if s < step}
  entries[int(step)] = round(float(seconds), 3)
  text = json.dumps({str(s): entries[s] for s in sorted(entries)}, indent=1) + "\n"
  workdirs.write_atomically(os.path.join(os.fspath(workdir), RECORD_FILE), text)


def append_validation(workdir, line):
  """Appends the JSON object `line` to `workdir`'s `validation.jsonl` (the file rewritten atomically: it stays
  whole, on any file system `tf.io.gfile` writes)."""
  path = os.path.join(os.fspath(workdir), VALIDATION_FILE)
  lines = _lines(path) if tf.io.gfile.exists(path) else []
  _write_lines(path, [*lines, line])


def truncate_validation(workdir, step):
  """Drops the lines of `validation.jsonl` after `step`, and its final evaluation of `step`: a run resuming from
  the checkpoint of `step` evaluates those again."""
  path = os.path.join(os.fspath(workdir), VALIDATION_FILE)
  if not tf.io.gfile.exists(path):
    return
  kept = [
    line for line in _lines(path) if line["step"] < step or (line["step"] == step and not line["final"])
  ]
  _write_lines(path, kept)


def validation_curve(workdir):
  """The evaluations of the run in `workdir`, oldest first: a dict per evaluation with `step`,
  `train_seconds`, `bits_per_dim` (the eval split's, K = 1, with the evaluated weights), `examples`, for a
  class-conditional run `conditional_bits_per_dim`, `accuracy` and `class_log_loss`, and `final` (the evaluation at
  the end of a run), as `train_lib` appended them to `validation.jsonl`.

  Raises:
    FileNotFoundError: the workdir has no `validation.jsonl` (no evaluation yet, or written before it existed).
  """
  path = os.path.join(os.fspath(workdir), VALIDATION_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist: the run in {os.fspath(workdir)} has not evaluated yet.")
  return _lines(path)


def _lines(path):
  with tf.io.gfile.GFile(path) as file:
    return [json.loads(line) for line in file.read().splitlines() if line.strip()]


def _write_lines(path, lines):
  workdirs.write_atomically(path, "".join(json.dumps(line, allow_nan=False) + "\n" for line in lines))
