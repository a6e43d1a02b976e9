"""A training run's workdir: created (or refused) before anything is written, locked, its config checked.

```python
workdirs.create("runs/digits")                          # a ConfigError if it is a file or cannot be written
with workdirs.lock("runs/digits") as stale_holder:      # a ConfigError while another run holds it
  rewrite = workdirs.check_config(config, "runs/digits", allow_config_change=("learning_rate",))
```

The lock is `lock.json` in the workdir, `{"pid": ..., "host": ...}` of the run holding it, created with
`O_CREAT | O_EXCL`; it is removed when the run ends, also on an exception. A lock whose holder is a process of
this host that no longer runs (a killed run) is stale and taken over: under an exclusive `flock` of the
workdir, so that of runs started together on a stale lock exactly one takes it over (the others find it held),
the lock file is read again, removed only if it still names the stale holder, and created with `O_EXCL`. The config check compares a run's config
with the workdir's `config.json` field by field, by each field's `on_resume` (`configs.FIXED`, `WITH_FLAG`,
`FREE`).
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import secrets
import socket

import tensorflow as tf

from tfp_realnvp.training import checkpoints, configs
from tfp_realnvp.training.configs import ConfigError

__all__ = ["check_config", "check_layout", "create", "lock", "lock_path", "write_atomically"]

# What a run writes in its workdir, and whether each is a file or a directory.
_FILES = ("config.json", "metrics.json", "samples.png", "train_seconds.json", "validation.jsonl")
_DIRECTORIES = ("checkpoints", "tensorboard")


def lock_path(workdir):
  """The lock file of the run in `workdir`."""
  return os.path.join(os.fspath(workdir), "lock.json")


def create(workdir):
  """Creates the directory `workdir` if it does not exist.

  Raises:
    ConfigError: `workdir` is a file, or it cannot be created (a path under a file, no permission).
  """
  workdir = os.fspath(workdir)
  if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
    raise ConfigError(f"`workdir` must be a directory; {workdir} is a file.")
  try:
    tf.io.gfile.makedirs(workdir)
  except (OSError, tf.errors.OpError) as error:
    raise ConfigError(f"`workdir` {workdir} cannot be created: {_first_line(error)}") from error


@contextlib.contextmanager
def lock(workdir):
  """Holds the lock of `workdir` (a directory) for the `with` block; yields the holder of the stale lock it
  took over (`{"pid": ..., "host": ...}`), or None.

  Raises:
    ConfigError: another run holds the lock (naming its pid and host), the lock file is unreadable, or it
      cannot be written.
  """
  path = lock_path(workdir)
  holder = {"pid": os.getpid(), "host": socket.gethostname()}
  stale = _acquire(workdir, path, holder)
  try:
    yield stale
  finally:
    with contextlib.suppress(ConfigError, OSError, tf.errors.OpError):
      if _read_holder(path) == holder:  # never another run's lock
        _remove(path)


def _acquire(workdir, path, holder):
  """Creates the lock file `path` for `holder`, taking over a stale one; returns the stale holder or None."""
  for _ in range(100):  # another run's lock can vanish (it ended) between our create and read: try again
    if _create_exclusively(path, holder):
      return None
    found = _read_holder(path)
    if found is None:
      continue
    if not _is_stale(found):
      raise _in_use_error(workdir, path, found)
    with _takeover_guard(workdir):
      # Another run may have taken it over, or it ended, since we read it: only the stale lock we read is
      # removed, and only by one run at a time.
      current = _read_holder(path)
      if current is not None and current != found:
        continue
      if current is not None:
        _remove(path)
      if _create_exclusively(path, holder):
        return current
    # Another run created the lock after the stale one was gone: the next round finds it held.
  raise ConfigError(
    f"`workdir` {os.fspath(workdir)}: its lock {path} keeps changing; is another run starting?"
  )


def _in_use_error(workdir, path, holder):
  return ConfigError(
    f"`workdir` {os.fspath(workdir)} is in use by process {holder['pid']} on host {holder['host']} "
    f"({path}); wait for that run to end, or delete {path} if it is no longer running."
  )


@contextlib.contextmanager
def _takeover_guard(workdir):
  """An exclusive `flock` of the directory `workdir` (local file systems; elsewhere nothing): one takeover at a
  time. The kernel releases it when its holder dies, so it never goes stale."""
  workdir = os.fspath(workdir)
  if "://" in workdir:
    yield
    return
  try:
    descriptor = os.open(workdir, os.O_RDONLY)
  except OSError as error:
    raise ConfigError(f"`workdir` {workdir} cannot be locked: {_first_line(error)}") from error
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    yield
  finally:
    os.close(descriptor)  # releases the flock


def _remove(path):
  try:
    if "://" in path:
      tf.io.gfile.remove(path)
    else:
      os.remove(path)
  except (FileNotFoundError, tf.errors.NotFoundError):
    pass
  except (OSError, tf.errors.OpError) as error:
    raise ConfigError(f"The lock file {path} cannot be removed: {_first_line(error)}") from error


def check_layout(workdir):
  """Raises `ConfigError` (one line) when something in `workdir` is in the way of what a run writes there:
  `config.json`, `metrics.json`, `samples.png`, `train_seconds.json` or `validation.jsonl` that is a directory, `checkpoints` or `tensorboard` that is a
  file. Called before a run writes anything."""
  workdir = os.fspath(workdir)
  for name in _FILES:
    path = os.path.join(workdir, name)
    if tf.io.gfile.isdir(path):
      raise ConfigError(f"{path} must be a file (the run writes it); it is a directory. Move it aside.")
  for name in _DIRECTORIES:
    path = os.path.join(workdir, name)
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      raise ConfigError(f"{path} must be a directory (the run writes in it); it is a file. Move it aside.")


def write_atomically(path, content):
  """Writes `content` (str or bytes) to the file `path` through a private file renamed over it, so `path` is
  either as it was or complete.

  Raises:
    ConfigError: it cannot be written (no space, no permission, a directory in the way), one line; the private
      file is removed.
  """
  path = os.fspath(path)
  private = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
  try:
    with tf.io.gfile.GFile(private, "wb" if isinstance(content, bytes) else "w") as file:
      file.write(content)
    tf.io.gfile.rename(private, path, overwrite=True)
  except (OSError, tf.errors.OpError) as error:
    with contextlib.suppress(OSError, tf.errors.OpError):
      if tf.io.gfile.exists(private):
        tf.io.gfile.remove(private)
    raise ConfigError(f"{path} cannot be written: {_first_line(error)}") from error


def check_config(config, workdir, allow_config_change=()):
  """Whether `workdir/config.json` must be (re)written for a run of `config`: True when it does not exist or
  differs only in fields that may change, False when it is `config`'s.

  Fields whose `on_resume` is `FREE` may change; `WITH_FLAG` fields only when named in `allow_config_change`;
  `FIXED` fields (the model and the data) never.

  Raises:
    ConfigError: a field differs that may not change (one line naming each, with both values), or
      `allow_config_change` names a field that is not a `TrainConfig` field or is `FIXED`.
  """
  fields = {
    field.name: field.metadata.get("on_resume", configs.FIXED) for field in dataclasses.fields(config)
  }
  for name in allow_config_change:
    if fields.get(name, configs.FIXED) == configs.FIXED:
      changeable = sorted(name for name, on_resume in fields.items() if on_resume == configs.WITH_FLAG)
      raise ConfigError(
        f"`allow_config_change` must name fields among {', '.join(changeable)} (the model and the data never "
        f"change on resume); got {name!r}."
      )
  path = checkpoints.config_path(workdir)
  if not tf.io.gfile.exists(path):
    return True
  try:
    with tf.io.gfile.GFile(path) as file:
      text = file.read()
  except (OSError, tf.errors.OpError) as error:
    raise ConfigError(f"{path} cannot be read: {_first_line(error)}") from error
  saved = configs.from_json(text, source=path)
  differ = [name for name in fields if getattr(saved, name) != getattr(config, name)]
  fixed = [name for name in differ if fields[name] == configs.FIXED]
  flagged = [name for name in differ if fields[name] == configs.WITH_FLAG and name not in allow_config_change]
  if fixed or flagged:

    def changes(names):
      return ", ".join(f"{name} {getattr(saved, name)!r} -> {getattr(config, name)!r}" for name in names)

    problems = []
    if fixed:
      problems.append(f"{changes(fixed)} would change the model or the data (use another workdir)")
    if flagged:
      problems.append(
        f"{changes(flagged)} would change the optimization (allow it with "
        f"--allow_config_change={','.join(flagged)})"
      )
    raise ConfigError(f"The config differs from the run in {path}: {'; '.join(problems)}.")
  return bool(differ)


def _create_exclusively(path, holder):
  """Creates the file `path` holding `holder` as JSON; False if it exists. Atomic on local file systems: the
  text is written to a private file first, then linked to `path` (`link` fails if `path` exists, like
  `O_CREAT | O_EXCL`, and a reader never sees the file empty); elsewhere (`gs://...`) a check then a write."""
  text = json.dumps(holder) + "\n"
  try:
    if "://" in path:
      if tf.io.gfile.exists(path):
        return False
      with tf.io.gfile.GFile(path, "w") as file:
        file.write(text)
      return True
    private = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
      with os.fdopen(descriptor, "w") as file:
        file.write(text)
      try:
        os.link(private, path)
      except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
          raise
        # A file system without hard links: `O_EXCL` alone (a reader may then see it empty for a moment).
        with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as file:
          file.write(text)
    finally:
      with contextlib.suppress(OSError):
        os.remove(private)
  except FileExistsError:
    return False
  except (OSError, tf.errors.OpError) as error:
    raise ConfigError(f"`workdir` cannot be written: {path}: {_first_line(error)}") from error
  return True


# Above any process id of Linux (at most 2**22) and macOS: a larger one was not written by a run.
_MAX_PID = 2**31 - 1


def _read_holder(path):
  """The lock file's `{"pid": ..., "host": ...}`; None if there is no lock file (any more)."""
  try:
    if "://" in path:
      with tf.io.gfile.GFile(path) as file:
        text = file.read()
    else:
      with open(path) as file:
        text = file.read()
  except (FileNotFoundError, tf.errors.NotFoundError):
    return None
  except (OSError, tf.errors.OpError) as error:
    raise ConfigError(f"The lock file {path} cannot be read: {_first_line(error)}") from error
  try:
    holder = json.loads(text)
  except ValueError:
    holder = None
  if (
    isinstance(holder, dict)
    and type(holder.get("pid")) is int
    and 0 < holder["pid"] <= _MAX_PID
    and isinstance(holder.get("host"), str)
  ):
    return holder
  raise ConfigError(
    f'The lock file {path} is not a run\'s {{"pid": ..., "host": ...}} (a pid in [1, {_MAX_PID}]); got '
    f"{text.strip()[:100]!r}; delete it if no run uses its workdir."
  )


def _is_stale(holder):
  """Whether `holder` is a process of this host that no longer runs."""
  if holder["host"] != socket.gethostname() or holder["pid"] == os.getpid():
    return False
  try:
    os.kill(holder["pid"], 0)  # signal 0: only checks that the process exists
  except ProcessLookupError:
    return True
  except (PermissionError, OverflowError):  # another user's process; a pid this system cannot have
    return False
  return False


def _first_line(error):
  return (str(error).strip().splitlines() or [type(error).__name__])[0]
