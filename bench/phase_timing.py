"""Times one benchmark phase and reads the process's peak RSS (no flags, no TensorFlow, no torch).

Shared by `bench_flow.py` and the workers of `bench_reference.py`, ours (TensorFlow) and the peer's
(`reference_worker.py`, torch), so both sides are timed by the same code.
"""

import resource
import statistics
import time

__all__ = ["peak_rss_mb", "time_calls", "time_phases"]


def peak_rss_mb():
  """This process's peak resident set size so far, in MiB (`ru_maxrss`; Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_calls(call, batch_size, warmup_runs, timed_runs):
  """First call, `warmup_runs` untimed calls, then `timed_runs` timed calls of `call()`.

  `call` must return only once its work is done (e.g. it converts its result to NumPy or a Python float).
  Throughput is `batch_size` over the median time; `cpu_per_wall` is process CPU seconds per wall second
  while timed (about the thread count when the cores were ours, less when other processes took them).
  """
  start = time.perf_counter()
  call()
  first_call_s = time.perf_counter() - start
  for _ in range(warmup_runs):
    call()
  times, cpu = [], 0.0
  for _ in range(timed_runs):
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    call()
    times.append(time.perf_counter() - start)
    cpu += _cpu_seconds() - start_cpu
  return dict(
    images_per_s=round(batch_size / statistics.median(times), 2),
    step_s=[round(t, 4) for t in times],
    first_call_s=round(first_call_s, 2),
    cpu_per_wall=round(cpu / sum(times), 2),
  )


def time_phases(calls, count_flops, batch_size, warmup_runs, timed_runs):
  """`time_calls` of each phase in `calls` (name to call, timed in order), with its FLOPs and peak RSS.

  `count_flops(name)` gives the floating-point operations of one call of phase `name`. Adds
  `gflop_per_image` and achieved `gflops` to each phase's figures, `peak_rss_train_mb` after the "train" phase,
  and `peak_rss_mb` at the end.
  """
  result = {}
  for phase, call in calls.items():
    flops = count_flops(phase)
    figures = time_calls(call, batch_size, warmup_runs, timed_runs)
    figures["gflop_per_image"] = round(flops / batch_size / 1e9, 6)
    figures["gflops"] = round(figures["images_per_s"] * figures["gflop_per_image"], 2)
    result[phase] = figures
    if phase == "train":
      result["peak_rss_train_mb"] = round(peak_rss_mb())
  result["peak_rss_mb"] = round(peak_rss_mb())
  return result
