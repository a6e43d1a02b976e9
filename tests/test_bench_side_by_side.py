"""`bench/side_by_side.py`'s parts that need neither torch nor the real data: the workers' command lines and
flags, the equal-time clock, the curve file, the PNG, the definition check and the summary."""

import dataclasses
import json
import os
import sys
import tempfile
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import training_testing

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, _BENCH_DIR)
import side_by_side  # noqa: E402
import side_by_side_ours  # noqa: E402
import side_by_side_peer  # noqa: E402
import side_by_side_protocol as protocol  # noqa: E402

from tfp_realnvp.bijectors import LogitTransform  # noqa: E402


def _settings(**changes):
  settings = side_by_side.Settings(
    reference_dir="/peer",
    reference_python="/torch/bin/python",
    dataset="idx:/data",
    train_split="train[:50000]",
    valid_split="train[50000:52000]",
    test_split="test",
    importance_split="test[:1000]",
    num_importance_samples=100,
    minutes=30.0,
    eval_every_minutes=2.0,
    schedule="sequential",
    first="ours",
    our_mode="bfloat16",
    peer_mode="autocast_bf16",
    our_dequantization="uniform",
    peer_num_scales=2,
    peer_num_blocks=4,
    peer_mid_channels=32,
    batch_size=64,
    learning_rate=1e-3,
    seed=0,
    workdir="/runs/sbs",
    png="/runs/sbs/curves.png",
    timeout_minutes=90.0,
  )
  return dataclasses.replace(settings, **changes)


class _FakeTime:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _train(clock, fake_time, step_seconds, evaluations):
  """Steps of `step_seconds` each until the clock is done; an evaluation (which takes 100 s of wall time,
  not counted) whenever one is due. Returns the training seconds at each evaluation."""
  while not clock.done():
    with clock.step():
      fake_time.now += step_seconds
    if clock.evaluation_due():
      evaluations.append(clock.train_s)
      fake_time.now += 100.0
  return evaluations


class TrainClockTest(tf.test.TestCase):
  def test_counts_steps_not_evaluations_and_stops_at_the_budget(self):
    fake_time = _FakeTime()
    clock = protocol.TrainClock(10.0, 4.0, uncounted_steps=0, time_fn=fake_time)
    evaluations = _train(clock, fake_time, 1.0, [])
    self.assertEqual(clock.steps, 10)
    self.assertEqual(clock.train_s, 10.0)
    # Every 4 training seconds, and once at the budget; the 300 s of evaluations are not counted.
    self.assertEqual(evaluations, [4.0, 8.0, 10.0])
    self.assertEqual(fake_time.now, 10.0 + 3 * 100.0)
    self.assertFalse(clock.evaluation_due())

  def test_the_first_step_is_start_up_timed_apart(self):
    fake_time = _FakeTime()
    clock = protocol.TrainClock(3.0, 10.0, time_fn=fake_time)
    with clock.step():
      fake_time.now += 20.0  # tracing
    self.assertEqual((clock.steps, clock.train_s, clock.first_steps_s), (1, 0.0, 20.0))
    self.assertFalse(clock.done())
    while not clock.done():
      with clock.step():
        fake_time.now += 0.5
    figures = clock.figures(batch_size=64)
    self.assertEqual(figures["steps"], 7)
    self.assertEqual(figures["train_s"], 3.0)
    self.assertEqual(figures["first_steps_s"], 20.0)
    self.assertEqual(figures["images_per_s"], 6 * 64 / 3.0)  # the counted steps only

  def test_a_slow_step_crossing_several_intervals_gives_one_point(self):
    fake_time = _FakeTime()
    clock = protocol.TrainClock(100.0, 2.0, uncounted_steps=0, time_fn=fake_time)
    with clock.step():
      fake_time.now += 7.0
    self.assertTrue(clock.evaluation_due())
    self.assertFalse(clock.evaluation_due())
    with clock.step():
      fake_time.now += 0.5  # 7.5: the next point is due at 8
    self.assertFalse(clock.evaluation_due())

  def test_equal_budgets_give_equal_training_time_whatever_the_speed(self):
    for step_seconds in (0.3, 1.7):
      fake_time = _FakeTime()
      clock = protocol.TrainClock(60.0, 20.0, time_fn=fake_time)
      evaluations = _train(clock, fake_time, step_seconds, [])
      # The last step ends at most one step past the budget, and the curve ends there.
      self.assertBetween(clock.train_s, 60.0, 60.0 + step_seconds)
      self.assertEqual(evaluations[-1], clock.train_s)
      self.assertLen(evaluations, 3)

  def test_refuses_a_budget_that_is_not_a_positive_number(self):
    for budget in (0, -1.0, float("inf"), float("nan")):
      with self.assertRaisesRegex(ValueError, "budget_s"):
        protocol.TrainClock(budget, 1.0)
    with self.assertRaisesRegex(ValueError, "eval_every_s"):
      protocol.TrainClock(1.0, 0.0)


class CurveFileTest(tf.test.TestCase):
  def test_appends_and_reads_back_in_order_leaving_out_a_torn_last_line(self):
    path = os.path.join(self.get_temp_dir(), "curve.jsonl")
    self.assertEqual(protocol.read_curve(path), [])
    points = [dict(side="ours", step=10 * i, train_s=1.5 * i, valid_bits_per_dim=4.0 - i) for i in range(3)]
    for point in points:
      protocol.append_point(path, point)
    with open(path, "a") as curve:
      curve.write('{"side": "ours", "st')  # a worker killed while writing
    self.assertEqual(protocol.read_curve(path), points)


class WorkerCommandTest(tf.test.TestCase):
  """The harness's command lines are what the workers' own parsers accept, with equal settings for both."""

  def _parsed(self, settings):
    commands = side_by_side.worker_commands(settings)
    ours_command, ours_env = commands["ours"]
    peer_command, peer_env = commands["peer"]
    self.assertEqual(ours_command[1], os.path.join(_BENCH_DIR, "side_by_side_ours.py"))
    self.assertEqual(
      peer_command[:2], ["/torch/bin/python", os.path.join(_BENCH_DIR, "side_by_side_peer.py")]
    )
    self.assertIn(os.path.dirname(_BENCH_DIR), ours_env["PYTHONPATH"].split(os.pathsep))
    self.assertIsNone(peer_env)
    return side_by_side_ours.parser().parse_args(ours_command[2:]), side_by_side_peer.parser().parse_args(
      peer_command[2:]
    )

  def test_both_sides_get_the_same_budget_interval_batch_rate_and_seed(self):
    ours, peer = self._parsed(_settings(minutes=31.0, eval_every_minutes=1.5, seed=3))
    for name in ("budget_s", "eval_every_s", "batch_size", "learning_rate", "seed", "threads", "cpu"):
      self.assertEqual(getattr(ours, name), getattr(peer, name), name)
    self.assertEqual((ours.budget_s, ours.eval_every_s, ours.threads, ours.cpu), (1860.0, 90.0, 2, None))
    self.assertEqual((ours.mode, peer.mode), ("bfloat16", "autocast_bf16"))
    self.assertEqual(ours.data, peer.data)  # the definition check's images and noise
    self.assertNotEqual(ours.curve, peer.curve)
    self.assertEqual((peer.num_scales, peer.num_blocks, peer.mid_channels), (2, 4, 32))
    self.assertEqual(
      (ours.train_split, ours.valid_split, ours.test_split), ("train[:50000]", "train[50000:52000]", "test")
    )
    self.assertIn(peer.mode, side_by_side_peer.MODES)
    self.assertIn(ours.mode, side_by_side_ours.MODES)

  def test_the_concurrent_schedule_pins_each_to_its_own_cpu_with_one_thread(self):
    ours, peer = self._parsed(_settings(schedule="concurrent"))
    self.assertEqual((ours.cpu, peer.cpu), (0, 1))
    self.assertEqual((ours.threads, peer.threads), (1, 1))

  def test_a_worker_refuses_an_unknown_mode_naming_the_flag(self):
    command, _ = side_by_side.worker_commands(_settings(peer_mode="fp16"))["peer"]
    with self.assertRaisesRegex(SystemExit, r"--mode=fp16"):
      side_by_side_peer.main(command[2:])


class RunWorkersTest(tf.test.TestCase):
  def test_sequential_runs_in_order_one_side_alone_and_concurrent_both_at_once(self):
    started = []

    def runner(side, command, env, timeout):
      started.append(side)
      return dict(side=side, timeout=timeout)

    commands = {"ours": (["ours"], None), "peer": (["peer"], None)}
    results = side_by_side.run_workers(_settings(first="peer", minutes=2.0), commands, runner)
    self.assertEqual(started, ["peer", "ours"])
    self.assertEqual(results["ours"]["timeout"], (2.0 + 90.0) * 60.0)

    started.clear()
    side_by_side.run_workers(_settings(sides=("ours",)), commands, runner)
    self.assertEqual(started, ["ours"])

    barrier = threading.Barrier(2, timeout=30)

    def waiting_runner(side, command, env, timeout):
      barrier.wait()  # passes only when both run at the same time
      return dict(side=side)

    results = side_by_side.run_workers(_settings(schedule="concurrent"), commands, waiting_runner)
    self.assertEqual(set(results), {"ours", "peer"})


class UsageErrorTest(tf.test.TestCase):
  def _values(self, reference_dir, **changes):
    values = dict(
      reference_dir=reference_dir,
      minutes=30.0,
      eval_every_minutes=2.0,
      learning_rate=1e-3,
      timeout_minutes=90.0,
      batch_size=64,
      num_importance_samples=100,
      peer_num_scales=None,
      peer_num_blocks=None,
      peer_mid_channels=None,
      train_split="train[:50000]",
      valid_split="train[50000:]",
      test_split="test",
      importance_split="test[:1000]",
      sides=["ours", "peer"],
    )
    values.update(changes)
    return values

  def test_each_bad_flag_is_one_error_line_naming_it(self):
    with tempfile.TemporaryDirectory() as checkout:
      self.assertStartsWith(
        side_by_side.usage_error(self._values(None)), "error: --reference_dir is required"
      )
      self.assertIn("--reference_dir=", side_by_side.usage_error(self._values(checkout)))
      os.makedirs(os.path.join(checkout, "models", "real_nvp"))
      open(os.path.join(checkout, "models", "real_nvp", "real_nvp.py"), "w").close()
      self.assertIsNone(side_by_side.usage_error(self._values(checkout)))
      for name, value in (
        ("minutes", 0.0),
        ("minutes", float("nan")),
        ("eval_every_minutes", -1.0),
        ("eval_every_minutes", 45.0),
        ("batch_size", 0),
        ("num_importance_samples", 0),
        ("peer_num_blocks", 0),
        ("test_split", ""),
        ("sides", ["ours", "theirs"]),
        ("sides", []),
      ):
        problem = side_by_side.usage_error(self._values(checkout, **{name: value}))
        self.assertStartsWith(problem, f"error: --{name}", (name, value))
        self.assertNotIn("\n", problem)

  def test_the_peers_scales_must_fit_the_images(self):
    for num_scales in (1, 2, 3):
      self.assertIsNone(side_by_side.peer_shape_error((28, 28, 1), num_scales))
    problem = side_by_side.peer_shape_error((28, 28, 1), 4)
    self.assertStartsWith(problem, "error: --peer_num_scales=4")
    self.assertIn("[1, 2, 3]", problem)

  @pytest.mark.slow
  def test_the_command_without_a_checkout_prints_an_error_line_and_fails(self):
    completed = training_testing.run_script("bench/side_by_side.py", "--minutes=0", timeout=300)
    self.assertNotEqual(completed.returncode, 0)
    self.assertStartsWith(completed.stderr.strip().splitlines()[-1], "error: --reference_dir is required")
    self.assertEqual(completed.stdout.strip(), "")


class DefinitionTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    self.levels = rng.integers(0, 256, (3, 4, 4, 1)).astype(np.uint8)
    self.noise = rng.uniform(size=self.levels.shape).astype(np.float32)

  def test_analytic_value_is_our_logit_transform_under_a_standard_normal(self):
    for alpha in (0.05, 0.0):
      distribution = tfp.distributions.TransformedDistribution(
        tfp.distributions.Sample(tfp.distributions.Normal(0.0, 1.0), [4, 4, 1]),
        tfp.bijectors.Invert(LogitTransform(alpha=alpha, num_bits=8)),
      )
      x = (self.levels.astype(np.float64) + self.noise).astype(np.float32)
      expected = -distribution.log_prob(x).numpy() / (16 * np.log(2.0))
      self.assertAllClose(protocol.analytic_bits_per_dim(self.levels, self.noise, alpha), expected, atol=1e-4)

  def test_the_middle_level_has_its_closed_form(self):
    # x = 128 with no noise, alpha = 0: p = 0.5, y = logit(p) = 0, so per value
    # -log p(x) = 0.5 log(2 pi) - log(1 / 256) + log(0.5) + log(0.5), in bits.
    values = protocol.analytic_bits_per_dim(np.full((1, 2, 2, 1), 128, np.uint8), np.zeros((1, 2, 2, 1)), 0.0)
    self.assertAllClose(values, [(0.5 * np.log(2 * np.pi) + np.log(256.0) - 2 * np.log(2.0)) / np.log(2.0)])

  def test_the_summary_agrees_only_when_both_sides_are_within_the_tolerance(self):
    analytic = protocol.analytic_bits_per_dim(self.levels, self.noise, 0.05)
    results = dict(
      ours=dict(definition_check=list(analytic + 0.003)), peer=dict(definition_check=list(analytic - 1e-6))
    )
    check = side_by_side.definition_check(self.levels, self.noise, results)
    self.assertTrue(check["agree"])
    self.assertAllClose(check["ours_max_difference"], 0.003, atol=1e-6)
    # In nats instead of bits: off by a factor ln 2.
    results["peer"]["definition_check"] = list(analytic * np.log(2.0))
    self.assertFalse(side_by_side.definition_check(self.levels, self.noise, results)["agree"])
    self.assertFalse(
      side_by_side.definition_check(self.levels, self.noise, dict(ours=results["ours"]))["agree"]
    )


class SummaryAndPngTest(tf.test.TestCase):
  def test_summary_compares_the_test_figures_and_the_images_read(self):
    images = dict(train="50000:aa", valid="2000:bb", test="10000:cc")
    ours = dict(mode="bfloat16", steps=900, test=dict(uniform_k1=dict(bits_per_dim=3.3)), images=images)
    peer = dict(mode="autocast_bf16", steps=500, test=dict(uniform_k1=dict(bits_per_dim=3.55)), images=images)
    cpu = dict(cpu="Test CPU", cpu_model_number="207", amx_bf16=True, avx512_bf16=True)
    summary = side_by_side.summarize(_settings(), dict(ours=ours, peer=peer), {"agree": True}, cpu, 12.0)
    self.assertAllClose(summary["peer_minus_ours"], 0.25)
    self.assertTrue(summary["same_images"])
    self.assertEqual(summary["ours"]["steps"], 900)
    self.assertEqual(summary["cpu_model_number"], "207")
    json.dumps(summary)
    self.assertEqual(summary["had_its_cores"], dict(ours=None, peer=None))
    peer["images"] = dict(images, test="10000:dd")
    del peer["test"]
    summary = side_by_side.summarize(_settings(), dict(ours=ours, peer=peer), {}, cpu, 12.0)
    self.assertFalse(summary["same_images"])
    self.assertIsNone(summary["peer_minus_ours"])

  def test_a_side_that_did_not_get_its_cores_is_flagged(self):
    self.assertTrue(side_by_side.had_its_cores(dict(cpu_per_wall=1.9, threads=2)))
    self.assertFalse(side_by_side.had_its_cores(dict(cpu_per_wall=0.88, threads=2)))
    self.assertTrue(side_by_side.had_its_cores(dict(cpu_per_wall=0.95, threads=1)))
    self.assertIsNone(side_by_side.had_its_cores(dict(cpu_per_wall=None, threads=2)))

  def test_writes_a_png_of_both_curves_and_of_none(self):
    curves = {
      "ours": [dict(train_s=60.0 * i, valid_bits_per_dim=4.0 - 0.1 * i) for i in range(1, 5)],
      "peer": [dict(train_s=50.0 * i, valid_bits_per_dim=4.2 - 0.1 * i) for i in range(1, 5)],
    }
    for name, drawn in (("both.png", curves), ("none.png", {})):
      path = os.path.join(self.get_temp_dir(), "sub", name)
      self.assertEqual(side_by_side.write_curves_png(drawn, path, "title"), path)
      with open(path, "rb") as png:
        content = png.read()
      self.assertStartsWith(content, b"\x89PNG\r\n\x1a\n")
      self.assertEqual(tf.io.decode_png(content).shape, (450, 700, 4))


if __name__ == "__main__":
  tf.test.main()
