"""The summary of `bench_ab.py`: each variant's best and median images/s and their ratios (no flags, no TensorFlow)."""

import statistics

__all__ = ["summarize", "variant"]


def variant(result):
  """`tree:mode:batch_size` of a worker's result."""
  return f"{result['tree']}:{result['mode']}:{result['batch_size']}"


def summarize(results, variants, phases):
  """Best and median images/s of each variant (`variant(result)`, in `variants`, the first the baseline) per phase
  over `results` (the JSON of its workers), their ratios to the baseline's, and the highest peak RSS of a train
  step of each."""
  runs = {name: [r for r in results if variant(r) == name and "error" not in r] for name in variants}
  summary = {}
  for phase in phases:
    speeds = {name: [r[phase]["images_per_s"] for r in variant_runs] for name, variant_runs in runs.items()}
    if not all(speeds.values()):
      continue
    baseline = speeds[variants[0]]
    summary[phase] = {
      name: dict(
        best=max(speed),
        median=statistics.median(speed),
        best_ratio=round(max(speed) / max(baseline), 3),
        median_ratio=round(statistics.median(speed) / statistics.median(baseline), 3),
        runs=speed,
      )
      for name, speed in speeds.items()
    }
  rss = {
    name: max((r["peak_rss_train_mb"] for r in variant_runs if "peak_rss_train_mb" in r), default=None)
    for name, variant_runs in runs.items()
  }
  return dict(phases=summary, peak_rss_train_mb=rss)
