"""The learned-prior examples run end to end (shortened) and print consistent numbers."""

import math
import os
import re
import tempfile
import unittest

import numpy as np
import pytest

from tests.training_testing import run_script
from tfp_realnvp import data

pytestmark = pytest.mark.slow

NUMBER = r"(-?[\d.]+(?:e[-+]\d+)?)"


def _run_example(name, *arguments):
  result = run_script(os.path.join("examples", name), *arguments, timeout=300)
  if result.returncode != 0:
    raise AssertionError(f"{name} exited with {result.returncode}:\n{result.stderr[-3000:]}")
  return result.stdout


class VaePriorExampleTest(unittest.TestCase):
  def test_prints_ordered_bounds_for_every_prior_and_saves_a_png(self):
    output = os.path.join(tempfile.mkdtemp(), "samples.png")
    stdout = _run_example(
      "vae_prior.py", "--num_steps", "60", "--log_every", "30", "--num_eval_samples", "10", "--output", output
    )
    self.assertIn("train | prior: conditional_realnvp | step: 60/60", stdout)
    figures = {}
    for prior, figure in (
      ("standard normal", "-log p(x)"),
      ("RealNVP", "-log p(x)"),
      ("class-conditional RealNVP", "-log p(x)"),
      ("class-conditional RealNVP", "-log p(x \\| y), true y"),
    ):
      match = re.search(
        rf"^\| {prior} \| {re.escape(figure)} \| {NUMBER} \({NUMBER}\) \| {NUMBER} \({NUMBER}\) \|$",
        stdout,
        re.MULTILINE,
      )
      self.assertIsNotNone(match, stdout)
      negative_elbo, elbo_bits, negative_log_likelihood, _ = map(float, match.groups())
      self.assertTrue(math.isfinite(negative_elbo) and math.isfinite(negative_log_likelihood), match.group(0))
      # The importance-weighted bound uses the ELBO's samples, so it is never looser.
      self.assertLessEqual(negative_log_likelihood, negative_elbo)
      self.assertAlmostEqual(elbo_bits, negative_elbo / (64 * math.log(2.0)), places=2)
      figures[prior, figure] = negative_elbo, negative_log_likelihood
    # With the same latents, summing out the label only adds to the true label's term `p(y) p(x, z | y)`:
    # the marginal is at most `mean_i -log p(y_i)` above `-log p(x | y)`, for both bounds.
    train_counts, test_counts = data.label_counts("digits", "train"), data.label_counts("digits", "test")
    mean_label_surprise = float(test_counts @ -np.log(train_counts / train_counts.sum()) / test_counts.sum())
    marginal = figures["class-conditional RealNVP", "-log p(x)"]
    given_label = figures["class-conditional RealNVP", "-log p(x \\| y), true y"]
    for marginal_bound, conditional_bound in zip(marginal, given_label):
      self.assertLessEqual(marginal_bound, conditional_bound + mean_label_surprise + 0.01)
    match = re.search(rf"test accuracy {NUMBER}$", stdout, re.MULTILINE)
    self.assertIsNotNone(match, stdout)
    self.assertTrue(0.0 <= float(match.group(1)) <= 1.0, match.group(0))
    with open(output, "rb") as png:
      self.assertEqual(png.read(8), b"\x89PNG\r\n\x1a\n")


class JointDistributionExamplesTest(unittest.TestCase):
  def test_joint_scores_prior_plus_likelihood_and_the_flow_denoises(self):
    stdout = _run_example("joint_distribution.py", "--num_steps", "300", "--num_test_points", "300")
    match = re.search(r"log p\(z, x\) = \[(.*)\] \(prior \+ likelihood: \[(.*)\]\)", stdout)
    self.assertIsNotNone(match, stdout)
    self.assertEqual(match.group(1).split(), match.group(2).split())
    errors = dict(re.findall(rf"^  (.+): {NUMBER}$", stdout, re.MULTILINE))
    self.assertLess(float(errors["RealNVP prior, posterior mean"]), float(errors["noisy observations"]))

  def test_restored_prior_matches_the_flow_in_memory(self):
    stdout = _run_example("exported_prior.py", "--num_steps", "200")
    match = re.search(rf"log_prob, restored vs in memory: max \|difference\| {NUMBER} nats", stdout)
    self.assertIsNotNone(match, stdout)
    self.assertLess(float(match.group(1)), 1e-4)
    match = re.search(rf"posterior mean: .* \(max \|difference\| {NUMBER}\)", stdout)
    self.assertIsNotNone(match, stdout)
    self.assertLess(float(match.group(1)), 1e-4)


if __name__ == "__main__":
  unittest.main()
