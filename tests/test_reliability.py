"""Adversarial cases: every served request bounded, the workdir owned by one run, every bad input refused by
name, no invalid row given a confident answer."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import fixtures
from tests.test_export import SAVED_MODEL_CLI, pixels, small_image_flow, small_vector_flow
from tfp_realnvp import RealNVP, dequantization
from tfp_realnvp.serving import export, serving_module


class TempDirTestCase(tf.test.TestCase):
  def make_dir(self):
    path = tempfile.mkdtemp(prefix=f"{type(self).__name__}_")
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class ServedWorkIsBoundedTest(TempDirTestCase):
  """Every signature refuses a request beyond the export's limits, in the graph, before doing the work."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workspace = tempfile.mkdtemp(prefix="ServedWorkIsBoundedTest_")
    cls.flow = small_image_flow()
    dequantizer = dequantization.make_dequantizer("uniform", cls.flow.event_shape, cls.flow.num_bits)
    # Default limits: for this small flow, `MAX_FLOW_EVALUATIONS_CAP` rows and 4096 samples.
    cls.path = export.export_saved_model(cls.flow, cls.workspace, "default", dequantizer=dequantizer)
    cls.small_path = export.export_saved_model(
      cls.flow, cls.workspace, "small", max_num_samples=50, max_flow_evaluations=40, dequantizer=dequantizer
    )
    cls.loaded = tf.saved_model.load(cls.path)
    cls.small = tf.saved_model.load(cls.small_path)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.workspace, ignore_errors=True)
    super().tearDownClass()

  def assert_refused_quickly(self, function, limit_text, **inputs):
    start = time.perf_counter()
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, limit_text):
      function(**inputs)
    self.assertLess(time.perf_counter() - start, 1.0)

  def test_a_huge_discrete_bits_per_dim_request_is_refused_in_under_a_second(self):
    # 4 MiB of levels (16384 digits rows) at K = 256: 4.2M flow evaluations (was 3.3 GB RSS and > 60 s).
    levels = np.floor(pixels([16384, 8, 8, 1], 4, seed=0))
    signature = self.loaded.signatures["discrete_bits_per_dim"]
    signature(levels=tf.constant(levels[:1]), num_samples=tf.constant(1), seed=tf.constant([1, 2]))  # warm-up
    self.assert_refused_quickly(
      signature,
      "times `num_samples` \\(K\\) must be at most `max_flow_evaluations`, set at export to 16384",
      levels=tf.constant(levels),
      num_samples=tf.constant(256),
      seed=tf.constant([1, 2]),
    )
    # Within the limit it answers: 64 rows x 256 draws.
    outputs = signature(levels=tf.constant(levels[:64]), num_samples=tf.constant(256), seed=tf.constant([1, 2]))
    self.assertTrue(np.all(np.isfinite(outputs["bits_per_dim"].numpy())))

  def test_every_signature_refuses_work_beyond_max_flow_evaluations(self):
    signatures = self.small.signatures
    x = pixels([41, 8, 8, 1], 4, seed=1)
    signatures["log_prob"](x=tf.constant(x[:1]))  # the first call of a loaded function also loads it
    limit = "must be at most `max_flow_evaluations`, set at export to 40"
    for name, inputs in {
      "log_prob": {"x": x},
      "serving_default": {"x": x},
      "encode": {"x": x},
      "decode": {"z": x},
      "discrete_bits_per_dim": {"levels": np.floor(x[:21]), "num_samples": 2, "seed": [1, 2]},
      "sample": {"num_samples": 41, "temperature": 1.0, "seed": [1, 2]},
    }.items():
      with self.subTest(signature=name):
        self.assert_refused_quickly(signatures[name], limit, **{k: tf.constant(v) for k, v in inputs.items()})
    # At the limit every signature answers.
    self.assertEqual(signatures["log_prob"](x=tf.constant(x[:40]))["log_prob"].shape, [40])
    outputs = signatures["discrete_bits_per_dim"](
      levels=tf.constant(np.floor(x[:20])), num_samples=tf.constant(2), seed=tf.constant([1, 2])
    )
    self.assertEqual(outputs["bits_per_dim"].shape, [20])
    samples = signatures["sample"](num_samples=tf.constant(40), temperature=tf.constant(1.0), seed=tf.constant([1, 2]))
    self.assertEqual(samples["samples"].shape, [40, 8, 8, 1])

  def test_the_limits_are_returned_and_shown_by_saved_model_cli(self):
    limits = {"max_num_samples": 50, "max_flow_evaluations": 40}
    self.assertEqual({k: int(v) for k, v in self.small.limits(limits).items()}, limits)
    if not SAVED_MODEL_CLI:
      self.skipTest("needs saved_model_cli")
    shown = subprocess.run(
      [SAVED_MODEL_CLI, "show", "--dir", self.small_path, "--all"], capture_output=True, text=True, timeout=120
    )
    self.assertIn("Function Name: 'limits'", shown.stdout)
    self.assertIn("'max_flow_evaluations': 40, 'max_num_samples': 50", shown.stdout)

  def test_the_default_limit_scales_with_the_flow_s_cost(self):
    # The cifar10 preset's 9.5 GFLOP a row: 104 samples per request (256 took 18 s before the limit).
    with mock.patch.object(serving_module, "flops_per_row", return_value=9_523_869_277):
      self.assertEqual(serving_module.default_max_flow_evaluations(self.flow), 104)
    small, large = small_image_flow(), small_image_flow(num_filters=16, num_blocks=2)
    self.assertLess(serving_module.flops_per_row(small), serving_module.flops_per_row(large))
    self.assertEqual(serving_module.default_max_flow_evaluations(small), serving_module.MAX_FLOW_EVALUATIONS_CAP)
    # A smaller `max_flow_evaluations` than `max_num_samples` is the one `sample` names.
    module = serving_module.ServingModule(small_vector_flow(), max_num_samples=100, max_flow_evaluations=10)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`max_flow_evaluations`, set at export to 10"):
      module.sample(tf.constant(11), tf.constant(1.0), tf.constant([1, 2]))

  def test_classify_counts_rows_times_classes(self):
    flow = RealNVP.from_preset("digits", **fixtures.TINY_MODEL, conditional_event_shape=(10,))
    module = serving_module.ServingModule(flow, label_log_prior=np.log(np.full(10, 0.1)), max_flow_evaluations=30)
    self.assertEqual(module.classify(tf.constant(pixels([3, 8, 8, 1], 4, 2)))["label"].shape, [3])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "times the 10 classes must be at most"):
      module.classify(tf.constant(pixels([4, 8, 8, 1], 4, 2)))

  def test_bad_max_flow_evaluations_names_the_argument(self):
    for value in (0, -1, True, 2.5, "8", 2**31):
      with self.assertRaisesRegex(ValueError, "`max_flow_evaluations` must be None .* or an integer"):
        serving_module.ServingModule(small_vector_flow(), max_flow_evaluations=value)
