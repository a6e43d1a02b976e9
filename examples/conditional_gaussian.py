"""Conditional density estimation with a known answer: a conditional RealNVP `q(theta | x)` on a linear-Gaussian model.

    python examples/conditional_gaussian.py --output conditional_gaussian.png

The simulator draws `theta ~ N(0, I_d)` and `x = A theta + noise`, `noise ~ N(0, sigma^2 I_m)`, so the
posterior is Gaussian in closed form:

`p(theta | x) = N(mu(x), S)`,  `S = (I + A^T A / sigma^2)^-1`,  `mu(x) = S A^T x / sigma^2`.

A conditional vector flow (`conditional_event_shape=(m,)`) is fitted by maximum likelihood on simulated
pairs `(theta, x)`, which makes `q(theta | x)` approach `p(theta | x)` for every `x`, as in neural
posterior estimation. The script reports the mean over held-out `x` of
`KL(p(theta | x) || q(theta | x)) = E_p[log p(theta | x) - log q(theta | x)]`, by Monte Carlo with samples
from the true posterior, and saves the true and learned posteriors for a few contexts (`--output`). The
defaults (d = 2, m = 3, 20000 pairs) run in about a minute on 2 CPU cores.
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

from tfp_realnvp import RealNVP  # noqa: E402

tfd = tfp.distributions


class LinearGaussian:
  """`theta ~ N(0, I_d)`, `x = A theta + N(0, sigma^2 I_m)`, and its exact posterior `p(theta | x)`."""

  def __init__(self, dims, observed_dims, noise_scale, seed):
    rng = np.random.default_rng(seed)
    self.matrix = rng.normal(size=(observed_dims, dims)).astype(np.float32)
    self.noise_scale = noise_scale
    precision = np.eye(dims) + self.matrix.T @ self.matrix / noise_scale**2
    self.covariance = np.linalg.inv(precision).astype(np.float32)

  def simulate(self, num_pairs, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(num_pairs, self.matrix.shape[1])).astype(np.float32)
    noise = self.noise_scale * rng.normal(size=(num_pairs, self.matrix.shape[0]))
    return theta, (theta @ self.matrix.T + noise).astype(np.float32)

  def posterior(self, x):
    """`p(theta | x)` for a batch of `x`, a batch of `tfd.MultivariateNormalTriL`."""
    mean = x @ (self.covariance @ self.matrix.T / self.noise_scale**2).T
    return tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(self.covariance).astype(np.float32))


def fit(flow, theta, x, num_steps, batch_size, learning_rate, seed=0, log_every=500):
  """Fits the conditional flow `q(theta | x)` to the pairs `(theta, x)` by maximum likelihood, with Adam on a
  cosine-decayed learning rate, printing the training loss every `log_every` steps."""
  schedule = tfk.optimizers.schedules.CosineDecay(learning_rate, num_steps)
  optimizer = tfk.optimizers.Adam(schedule)
  dataset = (
    tf.data.Dataset.from_tensor_slices((theta, x)).shuffle(len(theta), seed=seed).repeat().batch(batch_size)
  )

  @tf.function
  def train_step(theta, x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(flow.log_prob(theta, training=True, conditional_input=x))
    optimizer.apply_gradients(zip(tape.gradient(loss, flow.trainable_variables), flow.trainable_variables))
    return loss

  start = time.time()
  for step, (theta_batch, x_batch) in enumerate(dataset.take(num_steps), start=1):
    loss = train_step(theta_batch, x_batch)
    if step % log_every == 0 or step == num_steps:
      print(
        f"train | step: {step} | steps/sec: {step / (time.time() - start):.1f} | nll: {float(loss):.3f}",
        flush=True,
      )


def add_fit_arguments(parser, num_pairs, num_couplings):
  """Adds the flags of the training pairs, the flow and `fit` (shared with `sbi_conditioned.py`)."""
  parser.add_argument("--num_pairs", type=int, default=num_pairs, help="simulated training pairs")
  parser.add_argument("--num_steps", type=int, default=4000)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--num_couplings", type=int, default=num_couplings)
  parser.add_argument("--hidden_units", type=int, default=64)


def fit_new_flow(args, theta, x, shuffle_seed):
  """A conditional vector flow `q(theta | x)` built from the flags of `add_fit_arguments` (initialized from
  `--seed`) and fitted to the pairs `(theta, x)`."""
  tf.random.set_seed(args.seed)
  flow = RealNVP(
    event_shape=(theta.shape[-1],),
    num_couplings=args.num_couplings,
    hidden_units=(args.hidden_units, args.hidden_units),
    conditional_event_shape=(x.shape[-1],),
  )
  fit(flow, theta, x, args.num_steps, args.batch_size, args.learning_rate, shuffle_seed)
  return flow


def mean_kl(flow, model, x, num_samples, seed):
  """Per context, `E_p[log p(theta | x) - log q(theta | x)]` from `num_samples` true-posterior draws."""
  posterior = model.posterior(x)
  theta = posterior.sample(num_samples, seed=tf.constant([seed, 0]))  # [num_samples, contexts, d]
  log_q = flow.log_prob(theta, conditional_input=x)  # the contexts broadcast over the samples
  return tf.reduce_mean(posterior.log_prob(theta) - log_q, axis=0).numpy()


def plot(flow, model, contexts, kls, output):
  means = model.posterior(contexts).mean().numpy()
  fig, axes = plt.subplots(2, len(contexts), figsize=(3.2 * len(contexts), 6.4), squeeze=False)
  for column, (x, mean, kl) in enumerate(zip(contexts, means, kls)):
    half_width = 3.5 * np.sqrt(np.diag(model.covariance)[:2]).max()
    grid_0 = np.linspace(mean[0] - half_width, mean[0] + half_width, 150, dtype=np.float32)
    grid_1 = np.linspace(mean[1] - half_width, mean[1] + half_width, 150, dtype=np.float32)
    points = np.stack(np.meshgrid(grid_0, grid_1), axis=-1).reshape(-1, 2)
    extent = [grid_0[0], grid_0[-1], grid_1[0], grid_1[-1]]
    # The first two coordinates: the true marginal, and the flow's density (d = 2) or samples (d > 2).
    true_marginal = tfd.MultivariateNormalTriL(mean[:2], np.linalg.cholesky(model.covariance[:2, :2]))
    true_density = true_marginal.prob(points).numpy().reshape(150, 150)
    axes[0, column].imshow(true_density, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[0, column].set_title(f"true p(theta | x{column})")
    learned = axes[1, column]
    if mean.shape[0] == 2:
      density = flow.prob(points, conditional_input=x).numpy().reshape(150, 150)
      learned.imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    else:
      samples = flow.sample(3000, seed=tf.constant([column, 1]), conditional_input=x).numpy()
      learned.hist2d(samples[:, 0], samples[:, 1], bins=60, range=[extent[:2], extent[2:]], cmap="viridis")
    learned.contour(grid_0, grid_1, true_density, levels=4, colors="white", linewidths=0.8)
    learned.set_title(f"learned q (KL {kl:.3f} nats)")
  save_figure(
    fig, axes, ("theta[0]", "theta[1]"), "Conditional RealNVP posterior (white: true contours)", output
  )


def save_figure(fig, axes, axis_labels, title, output):
  """Labels the x and y axes of every panel in `axes` with `axis_labels`, titles `fig` and saves it."""
  for ax in axes.flat:
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(output, dpi=90)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dims", type=int, default=2, help="d, the dimension of theta")
  parser.add_argument("--observed_dims", type=int, default=3, help="m, the dimension of x")
  parser.add_argument("--noise_scale", type=float, default=0.5)
  add_fit_arguments(parser, num_pairs=20000, num_couplings=4)
  parser.add_argument("--num_test_contexts", type=int, default=200)
  parser.add_argument("--num_kl_samples", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="conditional_gaussian.png")
  args = parser.parse_args()
  if args.dims < 2:
    parser.error("`--dims` must be at least 2 (a coupling flow splits theta in two).")

  start = time.time()
  model = LinearGaussian(args.dims, args.observed_dims, args.noise_scale, seed=args.seed)
  theta, x = model.simulate(args.num_pairs, seed=args.seed + 1)
  _, test_x = model.simulate(args.num_test_contexts, seed=args.seed + 2)
  flow = fit_new_flow(args, theta, x, shuffle_seed=0)
  kls = mean_kl(flow, model, test_x, args.num_kl_samples, seed=args.seed + 3)
  elapsed = time.time() - start
  print(
    f"mean KL(p(theta | x) || q(theta | x)): {kls.mean():.4f} nats over {len(test_x)} held-out x "
    f"(d={args.dims}, m={args.observed_dims}, {args.num_pairs} training pairs, {args.num_steps} steps, "
    f"{elapsed:.0f} s)"
  )
  plot(flow, model, test_x[:3], kls[:3], args.output)
  print(f"saved {args.output}")


if __name__ == "__main__":
  main()
