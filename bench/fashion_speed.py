"""Fashion-MNIST speed of the `idx:` recipe's trainer, and how many batches batch-norm re-estimation needs.

    python bench/fashion_speed.py speed [STEPS]          # train steps/s and K = 1 evaluation images/s
    python bench/fashion_speed.py batches [STEPS]        # validation bits/dim: batch statistics vs re-estimated

`speed`: for `compute_dtype` bfloat16 and float32 and `dequantization` uniform and variational, the trainer of
`configs.get_config("idx:/usr/share/datasets/fashion-mnist")` (the `mnist` preset, batch 64, `train[:50000]`)
times STEPS (default 40) train steps after 10 warm-up steps, then one K = 1 evaluation of 2,000 images of
`train[50000:]` (after a warm-up pass); one JSON line each.
`batches`: trains the bfloat16 uniform trainer STEPS (default 300) steps, then scores those 2,000 validation
images with each 64-image validation batch's own statistics and with the running averages re-estimated from N training
batches, N = 1, 5, 10, 25, 50, 100, 200; one JSON line. Run under `flock /work/cpu.lock`.
"""

import dataclasses
import functools
import json
import sys
import time

import numpy as np
import tensorflow as tf

from tfp_realnvp.training import configs, flow_builder, train_lib

DATASET = "idx:/usr/share/datasets/fashion-mnist"
VALIDATION = "train[50000:52000]"


def setup(compute_dtype, dequantization, **changes):
  config = dataclasses.replace(
    configs.get_config(DATASET),
    compute_dtype=compute_dtype,
    dequantization=dequantization,
    train_split="train[:50000]",
    eval_split=VALIDATION,
    ema_decay=0.0,
    **changes,
  )
  spec = flow_builder.dataset_spec(config)
  tf.random.set_seed(0)
  trainer = train_lib.build_trainer(config, None, spec)
  strategy = trainer.strategy

  def dataset(split, training, seed=0):
    return strategy.distribute_datasets_from_function(
      functools.partial(train_lib.load_split, config, split, training=training, seed=seed)
    )

  return config, trainer, dataset


def train(trainer, batches, steps):
  start = time.perf_counter()
  losses = [float(trainer.train_step(next(batches))[0]) for _ in range(steps)]
  return time.perf_counter() - start, losses


def speed(steps=40):
  for compute_dtype in ("bfloat16", "float32"):
    for dequantization in ("uniform", "variational"):
      config, trainer, dataset = setup(compute_dtype, dequantization)
      batches = iter(dataset("train[:50000]", True))
      train(trainer, batches, 10)
      seconds, losses = train(trainer, batches, steps)
      validation = dataset(VALIDATION, False)
      trainer.evaluate(validation)  # traces
      start = time.perf_counter()
      _, count = trainer.evaluate(validation)
      eval_seconds = time.perf_counter() - start
      line = dict(
        compute_dtype=compute_dtype,
        dequantization=dequantization,
        batch_size=config.batch_size,
        train_steps_per_sec=round(steps / seconds, 3),
        train_images_per_sec=round(steps * config.batch_size / seconds, 1),
        eval_k1_images_per_sec=round(count / eval_seconds, 1),
        eval_images=count,
        last_loss=round(float(np.mean(losses[-10:])), 3),
      )
      print(json.dumps(line), flush=True)


def batches(steps=300):
  config, trainer, dataset = setup("bfloat16", "uniform", batch_norm_batches=1)
  train_batches = iter(dataset("train[:50000]", True))
  seconds, losses = train(trainer, train_batches, steps)
  validation = dataset(VALIDATION, False)
  running = trainer.evaluate(validation)[0]
  line = dict(steps=steps, train_seconds=round(seconds, 1), train_loss=round(float(np.mean(losses[-50:])), 4))
  line["running_averages"] = round(running, 4)
  # Each validation batch's own statistics (64-image batches), the running averages put back after.
  saved = [v.numpy() for v in trainer._running_averages]
  batch_bits = []
  for images in dataset(VALIDATION, False):
    batch_bits.append(trainer.flow.bits_per_dim(images, training=True).numpy())
  for variable, value in zip(trainer._running_averages, saved):
    variable.assign(value)
  line["batch_statistics"] = round(float(np.mean(np.concatenate(batch_bits))), 4)
  statistics = trainer.batch_norm_statistics
  for num_batches in (1, 5, 10, 25, 50, 100, 200):
    trainer.batch_norm_batches = num_batches
    statistics.step.assign(-1)
    start = time.perf_counter()
    trainer.estimate_batch_norm_statistics(
      lambda: iter(dataset("train[:50000]", True, seed=config.seed + 7_919))
    )
    estimate_seconds = time.perf_counter() - start
    line[f"reestimated_{num_batches}"] = round(trainer.evaluate(validation)[0], 4)
    line[f"seconds_{num_batches}"] = round(estimate_seconds, 1)
  print(json.dumps(line), flush=True)


if __name__ == "__main__":
  mode, *arguments = sys.argv[1:]
  {"speed": speed, "batches": batches}[mode](*(int(a) for a in arguments))
