"""Flags that several bench commands share, defined once (absl refuses a flag defined twice in one process, and
the tests import the commands side by side): the peer's checkout and interpreter, and the batch size."""

import sys

from absl import flags

REFERENCE_DIR = flags.DEFINE_string(
  "reference_dir", None, "A checkout of https://github.com/chrischute/real-nvp (required)."
)
REFERENCE_PYTHON = flags.DEFINE_string(
  "reference_python", sys.executable, "A Python interpreter with torch (2.13.0 CPU measured) for the peer."
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step (each side's, where there are two).")
