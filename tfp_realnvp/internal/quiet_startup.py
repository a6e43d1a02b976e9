"""Keeps TensorFlow's C++ start-up logging off a command line's screen, unless the user asked for logging.

```python
from tfp_realnvp.internal import quiet_startup  # imports no TensorFlow

quiet_startup.import_tensorflow_quietly(sys.argv)  # before anything imports TensorFlow
```

Measured with TensorFlow 2.21 on a CPU-only machine: importing TensorFlow prints the `port.cc` (oneDNN) and
`cudart_stub.cc` INFO lines twice, through C++ absl logging before it is initialized, whatever
`TF_CPP_MIN_LOG_LEVEL` says; the first device lookup then logs `E0000 ... failed call to cuInit`, an ERROR
that only `TF_CPP_MIN_LOG_LEVEL=3` hides. So the import and the device lookup run with the process's stderr
(file descriptor 2) sent to a temporary file, shown again only if they raise; `TF_CPP_MIN_LOG_LEVEL=2` then
keeps C++ INFO and WARNING lines out of the rest of the run and lets its errors through.
"""

import os
import re
import sys
import tempfile

__all__ = ["import_tensorflow_quietly", "user_asked_for_logging"]

_VERBOSITY_FLAG = re.compile(r"--?(v|verbosity)(=.*)?")


def user_asked_for_logging(argv):
  """True when `TF_CPP_MIN_LOG_LEVEL` is set or `argv` has absl's `--verbosity` (`-v`) flag."""
  return "TF_CPP_MIN_LOG_LEVEL" in os.environ or any(_VERBOSITY_FLAG.fullmatch(arg) for arg in argv[1:])


def import_tensorflow_quietly(argv):
  """Imports TensorFlow and looks up its devices with their start-up logging hidden, and sets
  `TF_CPP_MIN_LOG_LEVEL=2` for the rest of the run; does only the import when `user_asked_for_logging(argv)`."""
  if user_asked_for_logging(argv):
    import tensorflow  # noqa: F401

    return
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf

      tf.config.list_physical_devices()
    except BaseException:
      sys.stderr.flush()
      os.dup2(saved_stderr, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved_stderr, 2)
      os.close(saved_stderr)
