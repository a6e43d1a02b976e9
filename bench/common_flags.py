"""Flags that several bench commands share, defined once (absl refuses a flag defined twice in one process, and
the tests import the commands side by side): the peer's checkout and interpreter, and the batch size; and the
check of the checkout."""

import os
import sys

from absl import flags

REFERENCE_DIR = flags.DEFINE_string(
  "reference_dir", None, "A checkout of https://github.com/chrischute/real-nvp (required)."
)
REFERENCE_PYTHON = flags.DEFINE_string(
  "reference_python", sys.executable, "A Python interpreter with torch (2.13.0 CPU measured) for the peer."
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step (each side's, where there are two).")

# A file every checkout of the peer has.
PEER_MODEL_FILE = os.path.join("models", "real_nvp", "real_nvp.py")


def reference_dir_error(reference_dir):
  """Why `reference_dir` is not a checkout of the peer (one `error: --reference_dir ...` line), or None when it is."""
  if not reference_dir:
    return (
      "error: --reference_dir is required: the path of a checkout of chrischute/real-nvp "
      "(git clone https://github.com/chrischute/real-nvp); got none"
    )
  if not os.path.isfile(os.path.join(reference_dir, PEER_MODEL_FILE)):
    return (
      f"error: --reference_dir={reference_dir} is not a checkout of chrischute/real-nvp: "
      f"expected {PEER_MODEL_FILE} in it"
    )
  return None
