"""`train.py` opens with the project's own lines: TensorFlow's C++ start-up logging is hidden unless asked for."""

import os
import re
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import pytest

from tfp_realnvp.internal import quiet_startup

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl/glog C++ log lines (`I0000 00:00:1796113148.676943 20647 port.cc:153] ...`) and absl's pre-init notice.
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit", re.MULTILINE)


@pytest.mark.slow
class TrainStartupTest(unittest.TestCase):
  def test_a_run_prints_no_tensorflow_start_up_logging(self):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    with tempfile.TemporaryDirectory() as workdir:
      completed = subprocess.run(
        [
          sys.executable,
          os.path.join(REPO_ROOT, "train.py"),
          f"--workdir={workdir}",
          "--num_train_steps=1",
          "--model=num_blocks=1",
          "--model=num_filters=4",
          "--eval_every_steps=0",
          "--num_samples=1",
        ],
        env={**env, "PYTHONPATH": REPO_ROOT},
        capture_output=True,
        text=True,
        timeout=600,
      )
    self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
    self.assertIsNone(CPP_LOG_LINE.search(completed.stderr), completed.stderr[-3000:])
    self.assertTrue(completed.stdout.startswith("train | step: 1 | "), completed.stdout)


class UserAskedForLoggingTest(unittest.TestCase):
  def test_an_environment_variable_or_verbosity_flag_asks(self):
    with mock.patch.dict(os.environ, {"TF_CPP_MIN_LOG_LEVEL": "0"}):
      self.assertTrue(quiet_startup.user_asked_for_logging(["train.py"]))
    with mock.patch.dict(os.environ):
      os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
      self.assertFalse(quiet_startup.user_asked_for_logging(["train.py", "--num_train_steps=5"]))
      for flag in ("--verbosity=1", "--verbosity", "-v", "-v=0", "--v=2"):
        self.assertTrue(quiet_startup.user_asked_for_logging(["train.py", flag]), flag)
      self.assertFalse(quiet_startup.user_asked_for_logging(["train.py", "--vae=1", "--model=verbosity=1"]))


if __name__ == "__main__":
  unittest.main()
