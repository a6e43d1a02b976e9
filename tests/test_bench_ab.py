"""`ab_summary.summarize` (of `bench_ab.py`): best and median images/s per tree:mode:batch_size variant and their ratios to the first variant."""

import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import ab_summary  # noqa: E402


def _run(tree, speed, rss=1000, mode="bf16"):
  return dict(tree=tree, mode=mode, batch_size=64, train={"images_per_s": speed}, peak_rss_train_mb=rss)


class SummarizeTest(tf.test.TestCase):
  def test_best_and_median_ratios_to_the_first_pair(self):
    results = [_run("a", 50.0), _run("b", 60.0, 900), _run("b", 66.0, 950), _run("a", 40.0), _run("a", 55.0)]
    summary = ab_summary.summarize(results, ["a:bf16:64", "b:bf16:64"], ["train"])
    baseline, change = summary["phases"]["train"]["a:bf16:64"], summary["phases"]["train"]["b:bf16:64"]
    self.assertEqual((baseline["best"], baseline["median"], baseline["best_ratio"]), (55.0, 50.0, 1.0))
    self.assertEqual((change["best"], change["median"]), (66.0, 63.0))
    self.assertEqual((change["best_ratio"], change["median_ratio"]), (1.2, 1.26))
    self.assertEqual(summary["peak_rss_train_mb"], {"a:bf16:64": 1000, "b:bf16:64": 950})

  def test_failed_workers_are_left_out_and_a_variant_without_runs_has_no_ratios(self):
    results = [_run("a", 50.0), dict(tree="b", mode="bf16", batch_size=64, error="timed out")]
    summary = ab_summary.summarize(results, ["a:bf16:64", "b:bf16:64"], ["train"])
    self.assertEqual(summary["phases"], {})
    self.assertEqual(summary["peak_rss_train_mb"], {"a:bf16:64": 1000, "b:bf16:64": None})


if __name__ == "__main__":
  tf.test.main()
