"""Does inference mode lag training on real images? Validation bits/dim of one run, four ways, as it trains.

Trains `RealNVP.from_preset("mnist", compute_dtype=bfloat16, batch_norm_momentum=M)` with Adam (learning rate
`LR`, global-norm clipping at 100, no L2, no schedule), batch 64, uniform dequantization, on the first 50,000
images of an IDX folder's `train` file (Fashion-MNIST: `apt-get install dataset-fashion-mnist`), and every
`EVERY` steps scores 2,000 images of `train[50000:52000]` (fixed noise) in four ways, one JSON line each time:

- `running`: inference mode, the running averages of every batch norm (what evaluation and export use);
- `batch`: the batch statistics of each 500-image validation batch (the running averages are restored after);
- `reest`: the running averages re-estimated for the current weights (200 training-mode passes over training
  batches, then inference mode; restored after);
- `ema_running`: the exponential moving average (0.999, warmed up) of the weights, with the training
  flow's running averages.

    python bench/batch_norm_drift.py [STEPS [EVERY [LR [M]]]]      # default 3000 250 1e-3 0.99

The figures and what they show are on docs/results/quality.md.
"""

import gzip
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras as tfk

import tfp_realnvp as trn

IDX_FOLDER = os.environ.get("IDX_FOLDER", "/usr/share/datasets/fashion-mnist")


def read_images(path):
  """The uint8 images of an IDX3 file, `[count, rows, cols, 1]`, as float32."""
  with gzip.open(path) as file:
    content = file.read()
  count, rows, cols = (int.from_bytes(content[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
  return np.frombuffer(content, np.uint8, offset=16).reshape(count, rows, cols, 1).astype(np.float32)


def main(steps=3000, every=250, learning_rate=1e-3, momentum=0.99):
  images = read_images(os.path.join(IDX_FOLDER, "train-images-idx3-ubyte.gz"))
  train, valid = images[:50000], images[50000:52000]
  tf.random.set_seed(0)
  flow = trn.RealNVP.from_preset("mnist", compute_dtype=tf.bfloat16, batch_norm_momentum=momentum)
  average = trn.RealNVP.from_preset("mnist", compute_dtype=tf.bfloat16, batch_norm_momentum=momentum)
  flow.log_prob(train[:2])
  average.log_prob(train[:2])
  for average_variable, variable in zip(average.variables, flow.variables):
    average_variable.assign(variable)
  optimizer = tfk.optimizers.Adam(learning_rate)

  @tf.function
  def train_step(x):
    x = x + tf.random.uniform(tf.shape(x))
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(flow.bits_per_dim(x, training=True))
    gradients, _ = tf.clip_by_global_norm(tape.gradient(loss, flow.trainable_variables), 100.0)
    optimizer.apply_gradients(zip(gradients, flow.trainable_variables))
    return loss

  @tf.function
  def bits_per_dim(model, x, training):
    return model.bits_per_dim(x, training=training)

  running_averages = [v for v in flow.variables if not v.trainable]
  rng = np.random.default_rng(0)
  valid = valid + rng.uniform(size=valid.shape).astype(np.float32)

  def evaluate(model, training=False):
    return float(
      np.mean(
        np.concatenate([bits_per_dim(model, valid[i : i + 500], training) for i in range(0, 2000, 500)])
      )
    )

  losses, start = [], time.time()
  for step in range(1, steps + 1):
    losses.append(float(train_step(tf.constant(train[rng.integers(0, 50000, 64)]))))
    decay = min(0.999, (1 + step) / (10 + step))
    for average_variable, variable in zip(average.trainable_variables, flow.trainable_variables):
      average_variable.assign(decay * average_variable + (1 - decay) * variable)
    if step % every:
      continue
    line = {
      "step": step,
      "wall_s": round(time.time() - start, 1),
      "train_loss": round(np.mean(losses[-every:]), 4),
    }
    line["running"] = round(evaluate(flow), 4)
    saved = [v.numpy() for v in running_averages]
    line["batch"] = round(evaluate(flow, training=True), 4)
    for variable, value in zip(running_averages, saved):
      variable.assign(value)
    for _ in range(200):
      batch = train[rng.integers(0, 50000, 64)]
      bits_per_dim(flow, tf.constant(batch + rng.uniform(size=batch.shape).astype(np.float32)), True)
    line["reest"] = round(evaluate(flow), 4)
    for variable, value in zip(running_averages, saved):
      variable.assign(value)
    for average_variable, variable in zip(
      [v for v in average.variables if not v.trainable], running_averages
    ):
      average_variable.assign(variable)
    line["ema_running"] = round(evaluate(average), 4)
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  arguments = sys.argv[1:]
  kinds = (int, int, float, float)
  main(*(kind(value) for kind, value in zip(kinds, arguments)))
