"""Simulation-based inference end to end, with the posterior as an ordinary TFP distribution: `flow.condition(x)`.

    python examples/sbi_conditioned.py --output sbi_conditioned.png

The simulator has a bimodal posterior that is known (up to a constant, normalized on a grid):

    theta ~ N(0, I_2),   x_0 = theta_0**2 + noise,   x_1 = theta_0 + theta_1 + noise,   noise ~ N(0, sigma^2)

`x_0` tells `theta_0` only up to its sign, so `p(theta | x)` has two modes, at `theta_0 = +-sqrt(x_0)` (a Gaussian
posterior approximation cannot hold it). The script

1. simulates `(theta, x)` pairs and fits a conditional vector flow `q(theta | x)` by maximum likelihood (neural
   posterior estimation),
2. conditions on observations: `posterior = flow.condition(x_observed)`, a `tfd.Distribution` with batch shape
   `[num_observations]` that samples and scores with no context argument,
3. uses it as TFP's machinery would: `posterior.sample`, `posterior.log_prob`, and a posterior predictive
   `tfd.JointDistributionNamed(dict(theta=posterior, x=lambda theta: simulator(theta)))`,
4. compares with the true posterior: `KL(p || q)` on the grid, the share of `q`'s samples in the mode
   `theta_0 > 0` against the true share, and the posterior predictive mean against the observation.

It prints the figures as JSON on the last line and saves the true and learned posteriors (`--output`).
"""

import argparse
import json
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from conditional_gaussian import add_fit_arguments, fit_new_flow, save_figure  # noqa: E402

tfd = tfp.distributions

GRID_HALF_WIDTH = 4.5
GRID_SIZE = 241


class Simulator:
  """`theta ~ N(0, I_2)`, `x = (theta_0**2, theta_0 + theta_1) + N(0, sigma^2 I_2)`."""

  def __init__(self, noise_scale):
    self.noise_scale = noise_scale

  def prior(self):
    return tfd.Sample(tfd.Normal(0.0, 1.0), 2)

  def likelihood(self, theta):
    """`p(x | theta)`, a distribution over `x` with the batch shape of `theta`'s rows."""
    mean = tf.stack([theta[..., 0] ** 2, theta[..., 0] + theta[..., 1]], axis=-1)
    return tfd.Independent(tfd.Normal(mean, self.noise_scale), 1)

  def simulate(self, num_pairs, seed):
    theta_seed, x_seed = tfp.random.split_seed(seed)
    theta = self.prior().sample(num_pairs, seed=theta_seed)
    return theta, self.likelihood(theta).sample(seed=x_seed)

  def grid_posterior(self, x):
    """`(grid points [G*G, 2], cell area, log p(theta | x) [contexts, G*G])`, normalized on the grid."""
    axis = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_SIZE, dtype=np.float32)
    points = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)
    cell = float((axis[1] - axis[0]) ** 2)
    theta = tf.constant(points)[:, tf.newaxis]  # [G*G, 1, 2] against the contexts
    log_joint = self.prior().log_prob(theta) + self.likelihood(theta).log_prob(x)  # [G*G, contexts]
    log_joint = tf.transpose(log_joint)
    log_posterior = log_joint - tf.reduce_logsumexp(log_joint, axis=-1, keepdims=True) - np.log(cell)
    return points, cell, log_posterior.numpy()


def diagnose(simulator, posterior, observed, num_samples, seed):
  """The learned posterior (the conditioned view) against the grid posterior, per observation."""
  points, cell, log_p = simulator.grid_posterior(observed)
  log_q = posterior.log_prob(points[:, np.newaxis]).numpy().T  # [contexts, G*G]: `points` against the batch
  p = np.exp(log_p) * cell
  kl = np.sum(p * (log_p - np.maximum(log_q, -1e4)), axis=-1)  # KL(p || q) on the grid, nats
  sample_seed, predictive_seed = tfp.random.split_seed(seed)
  samples = posterior.sample(num_samples, seed=sample_seed).numpy()  # [num_samples, contexts, 2]
  q_positive = np.mean(samples[..., 0] > 0, axis=0)
  p_positive = np.sum(p * (points[:, 0] > 0), axis=-1)
  # The posterior predictive: a joint distribution whose `theta` is the conditioned view.
  predictive = tfd.JointDistributionNamed(dict(theta=posterior, x=lambda theta: simulator.likelihood(theta)))
  draws = predictive.sample(num_samples, seed=predictive_seed)
  log_prob_gap = float(
    tf.reduce_max(
      tf.abs(
        predictive.log_prob(draws)
        - posterior.log_prob(draws["theta"])
        - simulator.likelihood(draws["theta"]).log_prob(draws["x"])
      )
    )
  )
  predictive_mean = tf.reduce_mean(draws["x"], axis=0).numpy()
  return dict(
    kl=kl,
    q_positive=q_positive,
    p_positive=p_positive,
    samples=samples,
    log_p=log_p,
    points=points,
    predictive_mean=predictive_mean,
    joint_log_prob_gap=log_prob_gap,
  )


def plot(observed, result, output):
  count = len(observed)
  fig, axes = plt.subplots(2, count, figsize=(3.2 * count, 6.2), squeeze=False)
  extent = [-GRID_HALF_WIDTH, GRID_HALF_WIDTH] * 2
  for column in range(count):
    density = np.exp(result["log_p"][column]).reshape(GRID_SIZE, GRID_SIZE)
    axes[0, column].imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    x0, x1 = observed[column]
    axes[0, column].set_title(f"true p(theta | x=({x0:.1f}, {x1:.1f}))", fontsize=9)
    samples = result["samples"][:, column]
    axes[1, column].hist2d(
      samples[:, 0], samples[:, 1], bins=80, range=[extent[:2], extent[2:]], cmap="viridis"
    )
    axis = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_SIZE)
    axes[1, column].contour(axis, axis, density, levels=4, colors="white", linewidths=0.7)
    axes[1, column].set_title(f"flow.condition(x).sample: KL {result['kl'][column]:.3f}", fontsize=9)
  title = "Neural posterior estimation with a conditioned RealNVP (white: true contours)"
  save_figure(fig, axes, ("theta_0", "theta_1"), title, output)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--noise_scale", type=float, default=0.3)
  add_fit_arguments(parser, num_pairs=50000, num_couplings=8)
  parser.add_argument("--num_samples", type=int, default=4000, help="posterior samples per observation")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="sbi_conditioned.png")
  args = parser.parse_args(argv)

  start = time.time()
  simulator = Simulator(args.noise_scale)
  theta, x = simulator.simulate(args.num_pairs, seed=[args.seed, 1])
  flow = fit_new_flow(args, theta.numpy(), x.numpy(), shuffle_seed=args.seed)
  train_seconds = time.time() - start

  # Observations: the simulator's output for a few true parameters (both modes near and far apart).
  observed = np.array([[1.0, 0.5], [2.0, -1.0], [0.3, 1.5], [4.0, 0.0]], np.float32)
  posterior = flow.condition(observed)  # an ordinary tfd.Distribution, batch shape [4], event shape [2]
  result = diagnose(simulator, posterior, observed, args.num_samples, seed=[args.seed, 2])
  plot(observed, result, args.output)
  figures = dict(
    batch_shape=posterior.batch_shape.as_list(),
    kl_p_q=[round(float(v), 4) for v in result["kl"]],
    mean_kl_p_q=round(float(np.mean(result["kl"])), 4),
    share_theta0_positive_q=[round(float(v), 3) for v in result["q_positive"]],
    share_theta0_positive_p=[round(float(v), 3) for v in result["p_positive"]],
    predictive_mean=np.round(result["predictive_mean"], 3).tolist(),
    observed=observed.tolist(),
    joint_log_prob_gap=result["joint_log_prob_gap"],
    train_seconds=round(train_seconds, 1),
    wall_seconds=round(time.time() - start, 1),
    output=args.output,
  )
  print(json.dumps(figures))
  return figures


if __name__ == "__main__":
  main()
