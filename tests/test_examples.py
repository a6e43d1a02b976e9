"""The examples run end to end (shortened) and learn something."""

import os
import re
import tempfile
import unittest

import pytest

from tests.training_testing import run_script

pytestmark = pytest.mark.slow


class TwoMoonsTest(unittest.TestCase):
  def test_fits_better_than_the_base_and_saves_a_png(self):
    output = os.path.join(tempfile.mkdtemp(), "moons.png")
    result = run_script("examples/two_moons.py", "--num_steps", "500", "--output", output, timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    match = re.search(
      r"held-out negative log-likelihood: ([\d.]+) nats \(standard normal: ([\d.]+)\)", result.stdout
    )
    self.assertIsNotNone(match, result.stdout)
    flow_nll, normal_nll = map(float, match.groups())
    self.assertLess(flow_nll, normal_nll - 0.8)
    with open(output, "rb") as png:
      self.assertEqual(png.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
  unittest.main()
