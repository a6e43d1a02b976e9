"""Our side of `side_by_side.py`: trains `train_lib`'s trainer on an IDX folder's split for a training-time budget,
with a validation curve, then scores the test images; prints one JSON line.

  python bench/side_by_side_ours.py --dataset=idx:/usr/share/datasets/fashion-mnist --data=images.npz \
      --budget_s=1800 --eval_every_s=120 --curve=ours.jsonl --mode=bfloat16 --workdir=runs/side_by_side/ours

The config is `configs.get_config(--dataset)` (for `idx:` a 28x28x1 folder: the `mnist` preset, box-exact
preprocessing, EMA 0.999 of the weights for evaluation, a constant learning rate, L2 5e-5, clipping at 100) with
the batch size, learning rate, seed, `compute_dtype` (`--mode`), `dequantization` and splits of the flags; before
each validation point the batch norms' statistics are re-estimated for the evaluated weights
(`batch_norm_batches`), as `train_and_evaluate` does before an evaluation (evaluation time, not counted). The
one adapter between the bench and the trainer is `train_for(run, clock, on_point)`: everything about how ours
trains lives there.

Validation points and the like-for-like test figure are the uniform dequantization bound at K = 1,
`flow.bits_per_dim(v + u)` for the data pipeline's fixed evaluation noise `u` (`evaluation.Evaluator` with a
uniform dequantizer, with the trainer's evaluation weights), whatever dequantizer ours trained with. The test
figures add the run's own bound: its dequantizer at K = 1 (all test images) and importance-weighted at
`--num_importance_samples` draws (`--importance_split`), as `train_and_evaluate` reports them.
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import side_by_side_protocol as protocol

MODES = ("bfloat16", "float32")
EVAL_BATCH_SIZE = 500


def split_levels(dataset, split, data_dir=None):
  """The 8-bit levels of `split` of `dataset`, uint8 `[N, H, W, C]`, as `tfp_realnvp.data` reads them (the floor
  of its evaluation pipeline's dequantized images, in order)."""
  from tfp_realnvp import data

  batches = data.load(dataset, split, batch_size=10_000, training=False, data_dir=data_dir)
  return np.concatenate([np.floor(batch.numpy()).astype(np.uint8) for batch in batches])


def definition_check(preset, levels, noise):
  """Bits/dim per image of our `preset` flow at its initialization (couplings start as identities) with the
  peer's preprocessing, `logit_alpha=0.05`, on `levels + noise`: comparable with
  `protocol.analytic_bits_per_dim`. (Its batch-norm bijectors at initialization scale by `1 / sqrt(1 + eps)`,
  which moves it by about 1e-3 bits/dim.)"""
  from tfp_realnvp.flows import RealNVP

  flow = RealNVP.from_preset(preset, logit_alpha=0.05)
  x = (levels.astype(np.float64) + noise.astype(np.float64)).astype(np.float32)
  return [float(value) for value in flow.bits_per_dim(x).numpy()]


def config_for(args):
  """The run's `TrainConfig`: `--dataset`'s default config with the comparison's settings."""
  from tfp_realnvp.training import configs

  return dataclasses.replace(
    configs.get_config(args.dataset),
    train_split=args.train_split,
    eval_split=args.valid_split,
    compute_dtype=args.mode,
    dequantization=args.dequantization,
    batch_size=args.batch_size,
    learning_rate=args.learning_rate,
    seed=args.seed,
    num_importance_samples=args.num_importance_samples,
  )


def _distributed(strategy, config, split, *, training, batch_size):
  from tfp_realnvp import data

  def dataset_fn(input_context):
    return data.load(
      config.dataset,
      split,
      batch_size=batch_size,
      training=training,
      data_dir=config.data_dir,
      seed=config.seed,
      input_context=input_context,
    )

  return strategy.distribute_datasets_from_function(dataset_fn)


class _Run:
  """The trainer of one run and its evaluation of a split: the uniform bound at K = 1 and the run's own."""

  def __init__(self, config):
    import tensorflow as tf

    from tfp_realnvp import dequantization
    from tfp_realnvp.training import evaluation, flow_builder, train_lib

    self.config = config
    self.strategy = tf.distribute.get_strategy()
    self.spec = flow_builder.dataset_spec(config)
    tf.random.set_seed(config.seed)
    self.trainer = train_lib.build_trainer(config, self.strategy, self.spec)
    flow = self.trainer.flow
    self.uniform = evaluation.Evaluator(
      strategy=self.strategy,
      flow=flow,
      dequantizer=dequantization.make_dequantizer("uniform", flow.event_shape, flow.num_bits, flow.dtype),
    )
    self._datasets = {}

  def dataset(self, split):
    if split not in self._datasets:
      self._datasets[split] = _distributed(
        self.strategy, self.config, split, training=False, batch_size=EVAL_BATCH_SIZE
      )
    return self._datasets[split]

  def uniform_bits_per_dim(self, split):
    """`(bits/dim, images)`: the uniform dequantization bound at K = 1 with the evaluation weights."""
    with self.trainer.evaluation_weights():
      figures = self.uniform.evaluate(self.dataset(split))
    return figures["bits_per_dim"], int(figures["num_examples"])

  def own_bits_per_dim(self, split, num_importance_samples):
    """`(bits/dim, images)` with the run's dequantizer at `num_importance_samples` draws."""
    figures = self.trainer.evaluate_metrics(self.dataset(split), num_importance_samples)
    return figures["bits_per_dim"], int(figures["num_examples"])

  def save(self, workdir, steps):
    """The run as a `train.py` workdir: `config.json` (with `num_train_steps` the steps taken) and the
    checkpoint of the last step, so `train.py --workdir` evaluates or exports it."""
    import tensorflow as tf

    from tfp_realnvp.training import checkpoints, configs

    os.makedirs(workdir, exist_ok=True)
    config = dataclasses.replace(self.config, num_train_steps=max(steps, 1))
    with open(checkpoints.config_path(workdir), "w") as file:
      file.write(configs.to_json(config))
    manager = tf.train.CheckpointManager(self.trainer.checkpoint, checkpoints.checkpoint_dir(workdir), 1)
    manager.save(checkpoint_number=steps)


def train_for(run, clock, on_point):
  """Trains `run`'s trainer (`train_lib.build_trainer(config)`: the flow, loss, optimizer, clipping, L2, EMA and
  dequantizer `train_and_evaluate` trains with, on its data pipeline) until `clock` is done, calling
  `on_point(valid_bits_per_dim, train_bits_per_dim, eval_s)` whenever a validation point is due (`eval_s`: the
  evaluation's seconds, which the clock does not count).

  The loop is `train_lib`'s `_train` without its step count, logs and checkpoints, timed by the bench's
  `TrainClock` rather than `train_and_evaluate(max_train_minutes=...)`: that budget is the training loop's wall
  time, periodic evaluations, sample grids and checkpoints included (`wall_time`), while this comparison counts
  the train steps alone on both sides, so a validation point every few minutes costs neither side training
  time. This is the one place that decides how ours trains here."""
  config = run.config
  batches = iter(
    _distributed(run.strategy, config, run.spec.train_split, training=True, batch_size=config.batch_size)
  )
  skipped = 0
  while not clock.done():
    with clock.step():
      bits_per_dim, applied = run.trainer.train_step(next(batches))
      applied = bool(applied)  # waits for the step
    skipped = 0 if applied else skipped + 1
    if skipped >= config.max_consecutive_non_finite:
      return f"non-finite loss or gradient for {skipped} consecutive steps at step {clock.steps}"
    if clock.evaluation_due():
      start = time.perf_counter()
      _reestimate_batch_norm(run)
      valid_bits_per_dim = run.uniform_bits_per_dim(run.spec.eval_split)[0]
      on_point(valid_bits_per_dim, float(bits_per_dim), time.perf_counter() - start)
  return None


def _reestimate_batch_norm(run):
  """`train_and_evaluate`'s step before an evaluation: the batch norms' running averages re-estimated for the
  evaluated (EMA) weights from `config.batch_norm_batches` training batches of a fixed seed (`Trainer.
  estimate_batch_norm_statistics`; nothing when 0 or already done for this step)."""
  config = run.config
  run.trainer.estimate_batch_norm_statistics(
    lambda: iter(
      _distributed(
        run.strategy,
        dataclasses.replace(config, seed=config.seed + 7_919),
        run.spec.train_split,
        training=True,
        batch_size=config.batch_size,
      )
    )
  )


def run(args):
  load_average = os.getloadavg()[0]
  protocol.pin_to_cpu(args.cpu)
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  if args.cpu is not None:
    tf.config.threading.set_inter_op_parallelism_threads(1)
  config = config_for(args)
  arrays = np.load(args.data) if args.data else {}
  result = dict(side="ours", mode=args.mode, batch_size=args.batch_size, threads=args.threads, cpu=args.cpu)
  if "check_levels" in arrays:
    result["definition_check"] = definition_check(
      config.preset or "mnist", arrays["check_levels"], arrays["check_noise"]
    )
  run_ = _Run(config)
  result.update(
    num_parameters=int(sum(np.prod(v.shape) for v in run_.trainer.flow.trainable_variables)),
    preset=run_.spec.preset if config.preset is None else config.preset,
    config={
      name: getattr(config, name)
      for name in ("dequantization", "logit_alpha", "ema_decay", "l2_coefficient", "learning_rate_decay")
    }
    | {"batch_norm_batches": config.batch_norm_batches},
    images={
      "train": protocol.images_digest(split_levels(config.dataset, run_.spec.train_split, config.data_dir)),
      "valid": protocol.images_digest(split_levels(config.dataset, run_.spec.eval_split, config.data_dir)),
      "test": protocol.images_digest(split_levels(config.dataset, args.test_split, config.data_dir)),
    },
    load_average=round(load_average, 2),
    tensorflow=tf.__version__,
  )
  clock = protocol.TrainClock(args.budget_s, args.eval_every_s)
  eval_s, loads = [0.0], []

  def on_point(valid_bits_per_dim, train_bits_per_dim, eval_time):
    eval_s[0] += eval_time
    loads.append(os.getloadavg()[0])
    point = clock.point("ours", args.batch_size, valid_bits_per_dim, train_bits_per_dim, eval_time)
    protocol.append_point(args.curve, point)

  error = train_for(run_, clock, on_point)
  if error:
    result["error"] = error
  result.update(clock.figures(args.batch_size))
  result["eval_s"] = round(eval_s[0], 2)
  result["load_average_max"] = round(max(loads, default=load_average), 2)
  start = time.perf_counter()
  test = {}
  value, images = run_.uniform_bits_per_dim(args.test_split)
  test["uniform_k1"] = dict(bits_per_dim=round(value, 5), images=images)
  if config.dequantization != "uniform":
    value, images = run_.own_bits_per_dim(args.test_split, 1)
    test[f"{config.dequantization}_k1"] = dict(bits_per_dim=round(value, 5), images=images)
  if args.num_importance_samples > 1:
    split = args.importance_split
    value, images = run_.own_bits_per_dim(split, 1)
    test[f"{config.dequantization}_k1_on_importance_split"] = dict(
      bits_per_dim=round(value, 5), images=images, split=split
    )
    value, images = run_.own_bits_per_dim(split, args.num_importance_samples)
    test[f"{config.dequantization}_k{args.num_importance_samples}"] = dict(
      bits_per_dim=round(value, 5), images=images, split=split
    )
  result["test"] = test
  result["test_eval_s"] = round(time.perf_counter() - start, 2)
  if args.workdir:
    run_.save(args.workdir, clock.steps)
    result["workdir"] = args.workdir
  return result


def parser():
  """The worker's flags: `side_by_side_protocol`'s common ones and ours'."""
  argument_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  protocol.add_common_arguments(argument_parser)
  argument_parser.add_argument("--dataset", required=True, help="idx:PATH (or any tfp_realnvp.data name).")
  argument_parser.add_argument("--train_split", default="train[:50000]")
  argument_parser.add_argument("--valid_split", default="train[50000:52000]")
  argument_parser.add_argument("--test_split", default="test")
  argument_parser.add_argument("--importance_split", default="test[:1000]")
  argument_parser.add_argument("--num_importance_samples", type=int, default=100)
  argument_parser.add_argument("--dequantization", choices=("uniform", "variational"), default="uniform")
  argument_parser.add_argument("--data", default=None, help="The harness's .npz (for the definition check).")
  argument_parser.add_argument("--workdir", default=None, help="Save the run here as a train.py workdir.")
  return argument_parser


def main(argv):
  protocol.worker_main(argv, parser(), run, MODES)


if __name__ == "__main__":
  main(sys.argv[1:])
