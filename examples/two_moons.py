"""Fits a vector RealNVP to scikit-learn's two moons and saves the learned density beside samples.

    python examples/two_moons.py --output two_moons.png

Runs in about a minute on 2 CPU cores and prints the held-out negative log-likelihood as it goes.
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras as tfk  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402

from tfp_realnvp import RealNVP  # noqa: E402

tfd = tfp.distributions


def moons(num_points, seed):
  points, _ = make_moons(num_points, noise=0.05, random_state=seed)
  # Centre and scale so the data sit where a standard normal base puts its mass.
  return ((points - [0.5, 0.25]) / [0.87, 0.5]).astype(np.float32)


def fit(flow, train, test, num_steps, batch_size, learning_rate, log_every=250):
  optimizer = tfk.optimizers.Adam(learning_rate)
  dataset = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=0).repeat().batch(batch_size)

  @tf.function
  def train_step(batch):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(flow.log_prob(batch, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, flow.trainable_variables), flow.trainable_variables))
    return loss

  start = time.time()
  for step, batch in enumerate(dataset.take(num_steps), start=1):
    loss = train_step(batch)
    if step % log_every == 0 or step == num_steps:
      test_nll = -float(tf.reduce_mean(flow.log_prob(test)))
      print(
        f"train | step: {step} | steps/sec: {step / (time.time() - start):.1f} | "
        f"train nll: {float(loss):.3f} | test nll: {test_nll:.3f}",
        flush=True,
      )
  return test_nll


def plot(flow, data, output):
  grid = np.linspace(-3.0, 3.0, 300, dtype=np.float32)
  points = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
  density = flow.prob(points).numpy().reshape(len(grid), len(grid))
  samples = flow.sample(2000, seed=tf.constant([0, 1])).numpy()
  # Constrained layout leaves room for the titles and the colour bar.
  figure, axes = plt.subplots(1, 3, figsize=(14.5, 4.9), sharex=True, sharey=True, layout="constrained")
  figure.get_layout_engine().set(h_pad=0.1)  # inches between the titles and the edge
  axes[0].scatter(*data.T, s=2, color="black")
  axes[0].set_title("data: two moons (test split)")
  image = axes[1].imshow(density, extent=(-3, 3, -3, 3), origin="lower", cmap="viridis")
  axes[1].set_title("RealNVP density p(x)")
  figure.colorbar(image, ax=axes[1], label="p(x)", shrink=0.9)
  axes[2].scatter(*samples.T, s=2, color="tab:orange")
  axes[2].set_title("RealNVP samples")
  for axis in axes:
    axis.set_xlim(-3, 3)
    axis.set_ylim(-3, 3)
    axis.set_aspect("equal")
  figure.savefig(output, dpi=100)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", default="two_moons.png", help="where to save the PNG")
  parser.add_argument("--num_steps", type=int, default=3000)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  args = parser.parse_args()

  tf.random.set_seed(0)
  train, test = moons(4000, seed=0), moons(1000, seed=1)
  flow = RealNVP(event_shape=(2,), num_couplings=8, hidden_units=(64, 64))
  test_nll = fit(flow, train, test, args.num_steps, args.batch_size, args.learning_rate)
  plot(flow, test, args.output)
  standard_normal_nll = -float(tf.reduce_mean(tfd.Sample(tfd.Normal(0.0, 1.0), [2]).log_prob(test)))
  print(
    f"held-out negative log-likelihood: {test_nll:.3f} nats (standard normal: {standard_normal_nll:.3f}); "
    f"saved {args.output}"
  )


if __name__ == "__main__":
  main()
