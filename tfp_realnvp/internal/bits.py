"""Bits per dimension, the unit the paper reports densities of `D`-dimensional data in."""

import math

__all__ = ["bits_per_dim"]


def bits_per_dim(log_prob, num_dims):
  """`-log_prob / (num_dims ln 2)`: a log-density of one event, in nats, as bits per dimension.

  `log_prob` is a tensor, an array or a number; `num_dims` is `D`, the size of one event. For pixel levels in
  `[0, 2**num_bits)`, a uniform density over the pixel box is `num_bits` bits/dim.
  """
  return -log_prob / (num_dims * math.log(2.0))
