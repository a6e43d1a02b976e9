"""`bench/bench_reference.py`'s arithmetic and checks, on canned worker results: no torch, no peer checkout."""

import os
import sys
import tempfile
import time

import pytest
import tensorflow as tf

from tests import training_testing
from tfp_realnvp.internal import cpu_features

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, _BENCH_DIR)
import bench_reference  # noqa: E402
import common_flags  # noqa: E402
from phase_timing import time_calls, time_phases  # noqa: E402

_CPU = dict(cpu="Test CPU", amx_bf16=True, avx512_bf16=True)


def _run(implementation, mode, round_index, train, log_prob, gflop_per_image, peak_rss_train_mb):
  """A canned worker result: `train` and `log_prob` images/s; a train step costs 3x a `log_prob`."""
  return dict(
    implementation=implementation,
    model="small",
    mode=mode,
    round=round_index,
    train=dict(images_per_s=train, gflop_per_image=3 * gflop_per_image),
    log_prob=dict(images_per_s=log_prob, gflop_per_image=gflop_per_image),
    peak_rss_train_mb=peak_rss_train_mb,
    load_average=1.0 + round_index,
  )


# Ours costs 1.2 GFLOP an image, the peer 1.6; round 1 was slowed down for ours fp32 and the peer's autocast.
_RESULTS = [
  _run("ours", "fp32", 0, 60.0, 190.0, 1.2, 2300),
  _run("peer", "fp32", 0, 40.0, 140.0, 1.6, 2100),
  _run("ours", "bf16", 0, 120.0, 600.0, 1.2, 1900),
  _run("peer", "autocast_bf16", 0, 80.0, 300.0, 1.6, 2200),
  _run("peer", "fp32", 1, 38.0, 136.0, 1.6, 2150),
  _run("ours", "fp32", 1, 50.0, 180.0, 1.2, 2350),
  _run("peer", "autocast_bf16", 1, 75.0, 310.0, 1.6, 2250),
  _run("ours", "bf16", 1, 126.0, 590.0, 1.2, 1950),
  dict(implementation="peer", model="cifar10", mode="fp32", round=0, error="timed out after 1800 s"),
]


class SummaryTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.small, self.cifar10 = bench_reference.summarize(_RESULTS, ["train", "log_prob"], _CPU)

  def test_takes_each_runs_best_over_the_rounds(self):
    self.assertEqual(
      self.small["train"]["images_per_s"],
      dict(ours_fp32=60.0, peer_fp32=40.0, ours_bf16=126.0, peer_autocast_bf16=80.0),
    )
    self.assertEqual(self.small["log_prob"]["images_per_s"]["peer_autocast_bf16"], 310.0)
    self.assertEqual(self.small["rounds"], 2)
    self.assertEqual(self.small["load_average_max"], 2.0)

  def test_ratios_are_of_the_best_modes_and_of_same_precision(self):
    train = self.small["train"]
    self.assertEqual((train["ours_best"], train["peer_best"]), ("bf16", "autocast_bf16"))
    self.assertEqual(train["best_vs_best"], round(126.0 / 80.0, 2))
    self.assertEqual(train["fp32_vs_fp32"], round(60.0 / 40.0, 2))
    self.assertEqual(train["bf16_vs_autocast_bf16"], round(126.0 / 80.0, 2))
    # Per round, the best of ours over the best of the peer's in that round.
    self.assertEqual(train["best_vs_best_by_round"], [round(120.0 / 80.0, 2), round(126.0 / 75.0, 2)])
    log_prob = self.small["log_prob"]
    self.assertEqual(log_prob["best_vs_best"], round(600.0 / 310.0, 2))

  def test_an_extra_mode_is_compared_with_the_peers_best_apart_from_best_vs_best(self):
    extra = [_run("ours", "bf16_onednn_bf16_math", 0, 192.0, 700.0, 1.2, 1900)]
    (small, _) = bench_reference.summarize(_RESULTS + extra, ["train"], _CPU, ["bf16_onednn_bf16_math"])
    self.assertEqual(small["train"]["ours_best"], "bf16")
    self.assertEqual(small["train"]["best_vs_best"], self.small["train"]["best_vs_best"])
    self.assertEqual(small["train"]["best_vs_best_by_round"], self.small["train"]["best_vs_best_by_round"])
    self.assertEqual(small["train"]["bf16_onednn_bf16_math_vs_peer_best"], 2.4)  # 192 / 80
    self.assertEqual(
      small["train"]["matched_flop_bf16_onednn_bf16_math_vs_peer_best"], 1.8
    )  # 192 x 1.2 / (80 x 1.6)

  def test_matched_flop_ratio_weighs_images_by_their_cost(self):
    train = self.small["train"]
    # (our images/s x our GFLOP/image) / (the peer's images/s x its GFLOP/image).
    self.assertEqual(train["matched_flop_best_vs_best"], round(126.0 * 3.6 / (80.0 * 4.8), 2))
    self.assertEqual(train["matched_flop_fp32_vs_fp32"], round(60.0 * 3.6 / (40.0 * 4.8), 2))
    self.assertAllClose(train["gflops"]["ours_bf16"], 126.0 * 3.6)
    self.assertAllClose(train["gflops"]["peer_autocast_bf16"], 80.0 * 4.8)

  def test_peak_rss_is_compared_mode_by_mode(self):
    self.assertEqual(
      self.small["peak_rss_train_mb"],
      dict(ours_fp32=2350, peer_fp32=2150, ours_bf16=1950, peer_autocast_bf16=2250),
    )
    self.assertEqual(self.small["peak_rss_train_fp32_vs_fp32"], round(2350 / 2150, 2))
    self.assertEqual(self.small["peak_rss_train_bf16_vs_autocast_bf16"], round(1950 / 2250, 2))

  def test_names_the_cpu_and_lists_failed_runs_without_ratios(self):
    self.assertEqual((self.small["cpu"], self.small["amx_bf16"]), ("Test CPU", True))
    self.assertNotIn("errors", self.small)
    self.assertEqual(self.cifar10["errors"], ["peer fp32 round 0: timed out after 1800 s"])
    self.assertNotIn("best_vs_best", self.cifar10["train"])


class RoundOrderTest(tf.test.TestCase):
  def test_alternates_ours_and_the_peer_and_swaps_who_starts(self):
    for round_index in range(4):
      order = bench_reference.round_order(round_index)
      self.assertCountEqual(order, bench_reference.RUNS)
      implementations = [implementation for implementation, _ in order]
      first = "ours" if round_index % 2 == 0 else "peer"
      second = "peer" if first == "ours" else "ours"
      self.assertEqual(implementations, [first, second, first, second])
      # Each pair is one precision: fp32 with fp32, then bf16 with autocast bf16.
      self.assertEqual({mode for _, mode in order[:2]}, {"fp32"})
      self.assertEqual({mode for _, mode in order[2:]}, {"bf16", "autocast_bf16"})


class CpuDescriptionTest(tf.test.TestCase):
  def test_reads_lscpu(self):
    text = (
      "Architecture:            x86_64\n"
      "Model name:              Intel(R) Xeon(R) Platinum 8480+\n"
      "    BIOS Model name:     pc-q35\n"
      "Flags:                   fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    )
    self.assertEqual(
      bench_reference.cpu_description(cpu_features.parse_cpu_info(text)),
      dict(cpu="Intel(R) Xeon(R) Platinum 8480+", amx_bf16=True, avx512_bf16=True),
    )

  def test_reads_proc_cpuinfo_and_absent_flags(self):
    text = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\n"
    self.assertEqual(
      bench_reference.cpu_description(cpu_features.parse_cpu_info(text)),
      dict(cpu="AMD EPYC 9B14", amx_bf16=False, avx512_bf16=False),
    )
    self.assertEqual(bench_reference.cpu_description(cpu_features.parse_cpu_info(""))["cpu"], "unknown")


class ReferenceDirTest(tf.test.TestCase):
  def test_names_the_flag_and_what_it_expects(self):
    self.assertStartsWith(common_flags.reference_dir_error(None), "error: --reference_dir is required")
    with tempfile.TemporaryDirectory() as directory:
      problem = common_flags.reference_dir_error(directory)
      self.assertIn(f"--reference_dir={directory}", problem)
      self.assertIn(os.path.join("models", "real_nvp", "real_nvp.py"), problem)
      os.makedirs(os.path.join(directory, "models", "real_nvp"))
      open(os.path.join(directory, "models", "real_nvp", "real_nvp.py"), "w").close()
      self.assertIsNone(common_flags.reference_dir_error(directory))

  @pytest.mark.slow
  def test_the_command_without_it_prints_an_error_line_and_fails(self):
    completed = training_testing.run_script("bench/bench_reference.py", timeout=300)
    self.assertNotEqual(completed.returncode, 0)
    self.assertStartsWith(completed.stderr.strip().splitlines()[-1], "error: --reference_dir is required")
    self.assertEqual(completed.stdout.strip(), "")


class TimeCallsTest(tf.test.TestCase):
  def test_counts_calls_and_reports_the_median(self):
    calls = []

    def call():
      calls.append(None)
      time.sleep(0.01)

    figures = time_calls(call, batch_size=8, warmup_runs=2, timed_runs=3)
    self.assertLen(calls, 1 + 2 + 3)  # first call, warm-up, timed
    self.assertLen(figures["step_s"], 3)
    self.assertAllClose(figures["images_per_s"], 8 / sorted(figures["step_s"])[1], rtol=0.05)
    self.assertLess(figures["cpu_per_wall"], 0.5)  # sleeping takes no CPU

  def test_phases_get_their_flops_and_the_train_phase_its_peak_rss(self):
    calls = dict(train=lambda: time.sleep(0.01), log_prob=lambda: time.sleep(0.01))
    flops = dict(train=3 * 8e9, log_prob=8e9)  # for the whole batch of 8
    result = time_phases(calls, flops.get, batch_size=8, warmup_runs=0, timed_runs=1)
    self.assertEqual(list(result), ["train", "peak_rss_train_mb", "log_prob", "peak_rss_mb"])
    self.assertEqual(result["train"]["gflop_per_image"], 3.0)
    self.assertEqual(result["log_prob"]["gflop_per_image"], 1.0)
    self.assertAllClose(result["log_prob"]["gflops"], result["log_prob"]["images_per_s"], rtol=0.01)
    self.assertGreater(result["peak_rss_mb"], 10)


if __name__ == "__main__":
  tf.test.main()
