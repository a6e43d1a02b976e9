"""Kullback-Leibler divergences for learned priors, where a RealNVP flow may sit on either side.

`tfd.kl_divergence` needs a closed form registered for the pair of distributions, and there is none when either
side is a flow. `monte_carlo_kl_divergence` estimates `KL(q || p)` from samples of `q`, with its standard error;
`kl_divergence` uses TFP's closed form when the pair has one and the Monte-Carlo estimate otherwise. Both take
`conditional_input=c` for a conditional `p` (a `RealNVP` built with `conditional_event_shape`): `KL(q || p(. | c))`.
"""

import math
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["MonteCarloEstimate", "kl_divergence", "monte_carlo_kl_divergence"]

tfd = tfp.distributions


class MonteCarloEstimate(NamedTuple):
  """A Monte-Carlo estimate and its standard error `std(terms) / sqrt(num_samples)`."""

  value: tf.Tensor
  standard_error: tf.Tensor


def monte_carlo_kl_divergence(q, p, num_samples, seed=None, conditional_input=None):
  """`KL(q || p) ~= mean_i [log q(z_i) - log p(z_i)]` over `z_i ~ q`, `i = 1..num_samples`, with its standard error.

  Unbiased for any `q` that can sample and any `p` that can score, flows included. When `q` is reparameterized
  (a Gaussian, a RealNVP), gradients reach the variables of both sides. The standard error is the sample standard
  deviation of the terms over `sqrt(num_samples)`; with one sample it is NaN.

  Args:
    q: a `tfd.Distribution` to sample from.
    p: a `tfd.Distribution` over the same events; its batch shape must broadcast with `q`'s.
    num_samples: positive Python `int`, the number of samples of `q`.
    seed: a TFP seed: None, an `int`, or a stateless `int32[2]` tensor (repeatable).
    conditional_input: None, or the context `c` of a conditional `p`, scored as `p.log_prob(z, conditional_input=c)`;
      its batch dimensions broadcast against `q`'s batch shape.

  Returns:
    A `MonteCarloEstimate` whose tensors have the broadcast batch shape of `q` and `p`.
  """
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"`num_samples` must be a positive Python int; got {num_samples!r}.")
  samples, log_q = q.experimental_sample_and_log_prob(num_samples, seed=seed)
  context_kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
  log_ratios = log_q - p.log_prob(samples, **context_kwargs)
  value = tf.reduce_mean(log_ratios, axis=0)
  if num_samples == 1:
    standard_error = tf.fill(tf.shape(value), tf.constant(math.nan, value.dtype))
  else:
    variance = tf.reduce_sum(tf.square(log_ratios - value), axis=0) / (num_samples - 1)
    standard_error = tf.sqrt(variance / num_samples)
  return MonteCarloEstimate(value, standard_error)


def kl_divergence(q, p, num_samples=1, seed=None, conditional_input=None):
  """`KL(q || p)`: TFP's closed form when one is registered for the pair, else `monte_carlo_kl_divergence`.

  Between two Gaussians this is exact; with a RealNVP on either side, or a context `conditional_input` for a
  conditional `p` (TFP's closed forms take none), it is the Monte-Carlo estimate from `num_samples` samples of
  `q` (unbiased, with gradients as described there).
  """
  if conditional_input is None:
    try:
      return tfd.kl_divergence(q, p)
    except NotImplementedError:
      pass
  return monte_carlo_kl_divergence(q, p, num_samples, seed, conditional_input).value
