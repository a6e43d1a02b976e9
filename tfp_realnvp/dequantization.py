"""Dequantizers `q(u | v)` for discrete images, and the (importance-weighted) bound on `-log2 P(v)` per dim.

A density `p` over dequantized values `x = v + u` (`v` the integer pixel levels, `u in [0, 1)^D`) bounds the
discrete likelihood `P(v) = int_{[0,1)^D} p(v + u) du` for any density `q(u | v)` on `[0, 1)^D`:

`log P(v) >= E_{u ~ q} [log p(v + u) - log q(u | v)]`  (the variational bound, Ho et al. 2019), and with `K`
draws `log P(v) >= E log (1/K) sum_k p(v + u_k) / q(u_k | v)` (importance weighting, Burda et al. 2016), which
is tighter on average as `K` grows. `UniformDequantizer` is `q = 1` (the bound of the usual uniform noise);
`VariationalDequantizer` is a learned `q(u | v)`, trained jointly with `p` to tighten it.

Both dequantizers map uniform noise `e ~ U[0, 1)^D` to `u` with `offsets_and_log_prob(levels, noise)`, so a
batch of dequantized training data `x = v + e` (as `data.load` yields) gives `v = floor(x)` and its noise
`e = x - v`; `sample_and_log_prob(levels, seed)` draws the noise itself.

```python
dequantizer = VariationalDequantizer(event_shape=(8, 8, 1), num_bits=4)
bits = variational_bits_per_dim(flow, dequantizer, images, training=True)        # the training loss, [batch]
bits_k100 = importance_weighted_bits_per_dim(flow, dequantizer, levels, 100, seed=[1, 2])  # float64 [batch]
```

#### References

[1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel. Flow++: Improving Flow-Based
     Generative Models with Variational Dequantization and Architecture Design. In _ICML_, 2019.
     https://arxiv.org/abs/1902.00275
[2]: Yuri Burda, Roger Grosse and Ruslan Salakhutdinov. Importance Weighted Autoencoders. In _ICLR_, 2016.
     https://arxiv.org/abs/1509.00519
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import data, networks
from tfp_realnvp.bijectors import AffineCoupling, KeywordChain
from tfp_realnvp.internal import bits
from tfp_realnvp.internal.checks import positive_int, positive_ints

__all__ = [
  "UniformDequantizer",
  "VariationalDequantizer",
  "discrete_log_prob_bound",
  "importance_weighted_bits_per_dim",
  "importance_weighted_log_prob",
  "log_weights",
  "make_dequantizer",
  "rotated_noise",
  "stateless_noises",
  "variational_bits_per_dim",
]

tfb = tfp.bijectors


class _Dequantizer(tf.Module):
  """What both dequantizers share: the event shape, the checks and `sample_and_log_prob`."""

  def __init__(self, event_shape, name):
    super().__init__(name=name)
    self.event_shape = positive_ints("event_shape", event_shape)

  @property
  def num_dims(self):
    """`D`, the number of dimensions of one event."""
    return int(np.prod(self.event_shape))

  @property
  def regularized_variables(self):
    """The variables the paper's L2 penalty applies to (tanh scales of couplings), as for the flow."""
    return tuple(v for v in self.trainable_variables if networks.is_regularized(v))

  def sample_and_log_prob(self, levels, seed, training=False):
    """`(u, log q(u | v))` for one draw per image, with noise `tf.random.stateless_uniform(seed=seed)`."""
    levels = self._check_levels(levels)
    return self.offsets_and_log_prob(
      levels, tf.random.stateless_uniform(tf.shape(levels), seed, dtype=levels.dtype), training
    )

  def _check_levels(self, levels, arg_name="levels"):
    levels = tf.convert_to_tensor(levels, dtype_hint=tf.float32)
    if not levels.dtype.is_floating:
      levels = tf.cast(levels, tf.float32)
    shape = levels.shape
    rank = len(self.event_shape)
    if shape.rank is not None and (
      shape.rank < rank or not shape[shape.rank - rank :].is_compatible_with(self.event_shape)
    ):
      raise ValueError(
        f"`{arg_name}` must have shape `[..., {', '.join(map(str, self.event_shape))}]` (batch dimensions, "
        f"then the event shape); got shape {shape.as_list()}."
      )
    return levels


class UniformDequantizer(_Dequantizer):
  """`q(u | v) = 1` on `[0, 1)^D`: `u` is the noise itself and `log q = 0` (the usual uniform dequantization).

  It has no variables; with it, `variational_bits_per_dim` is exactly `flow.bits_per_dim` of `v + noise`.
  """

  def __init__(self, event_shape, name="uniform_dequantizer"):
    super().__init__(event_shape, name)

  def offsets_and_log_prob(self, levels, noise, training=False):
    """`(noise, zeros [batch])`: the offsets `u` and `log q(u | v)` for noise `e ~ U[0, 1)^D`."""
    del training
    levels = self._check_levels(levels)
    noise = tf.convert_to_tensor(noise, levels.dtype)
    return noise, tf.zeros(tf.shape(noise)[: noise.shape.rank - len(self.event_shape)], noise.dtype)

  def log_prob(self, offsets, levels):
    """`log q(u | v) = 0` for `u` in `[0, 1)^D` (`-inf` outside), `[batch]`."""
    offsets = self._check_levels(offsets, "offsets")
    axes = list(range(-len(self.event_shape), 0))
    inside = tf.reduce_all((offsets >= 0.0) & (offsets < 1.0), axis=axes)
    del levels
    return tf.where(inside, tf.zeros([], offsets.dtype), tf.constant(-np.inf, offsets.dtype))


class VariationalDequantizer(_Dequantizer):
  """A learned `q(u | v)` on `(0, 1)^D`: a conditional flow of the noise, `u = T(e; v)`, `e ~ U(0, 1)^D`.

  `T = sigmoid o g_K o ... o g_1 o logit` on the flattened event: `logit(e)` is a standard logistic draw on
  `R^D`; the `g_i` are `num_couplings` alternating half-mask `AffineCoupling`s whose `networks.ConditionalMLP`
  conditioners also see the context `c = v / 2**num_bits - 1/2` (the discrete image, rescaled to
  `[-1/2, 1/2)`); the sigmoid maps back onto `(0, 1)^D`. So `log q(u | v) = -log|det dT/de|`, exact: the sum of
  the couplings' log-scales and of the two elementwise log-dets.

  The base is the standard logistic rather than a normal because `sigmoid(logistic)` is exactly `U(0, 1)`:
  the couplings start as the identity (zero-initialized output layers), so `q` starts as the uniform
  dequantizer (`log q = 0`) and training starts from the uniform bound, not below it (a normal base would
  start `0.19` nats/dim worse, `KL(logit-normal(0, 1) || U(0, 1))`).

  Noise within `2**-24` of 0 or 1 is moved to that distance (its logit would be infinite); `u` may round to
  1 in float32, and `v + u` is kept below `v + 1` by `data.dequantize`.
  """

  def __init__(
    self,
    event_shape,
    num_bits,
    num_couplings=4,
    hidden_units=(128, 128),
    dtype=tf.float32,
    name="variational_dequantizer",
  ):
    """Builds `q(u | v)`.

    Args:
      event_shape: the image shape `(height, width, channels)` (any event shape with at least 2 elements).
      num_bits: bits per pixel: levels lie in `{0, ..., 2**num_bits - 1}`.
      num_couplings: the number of affine couplings; consecutive ones transform complementary halves.
      hidden_units: the widths of each coupling's MLP conditioner.
      dtype: float dtype of the offsets and variables.
      name: Python `str` name.
    """
    super().__init__(event_shape, name)
    if self.num_dims < 2:
      raise ValueError(
        f"`event_shape` must have at least 2 elements (for the couplings); got {event_shape!r}."
      )
    self.num_bits = positive_int("num_bits", num_bits)
    positive_int("num_couplings", num_couplings)
    self.dtype = tf.as_dtype(dtype)
    dims = self.num_dims
    with self.name_scope:
      couplings = [
        AffineCoupling(
          networks.ConditionalMLP(
            dims, 2 * dims, self.event_shape, hidden_units=hidden_units, dtype=dtype, name=f"coupling{i}_mlp"
          ),
          (dims,),
          "half",
          parity=i % 2,
          dtype=dtype,
          name=f"coupling{i}",
        )
        for i in range(num_couplings)
      ]
      # Applied right to left: logit, the couplings in order, sigmoid.
      self.noise_to_offsets = KeywordChain(
        [tfb.Sigmoid(), *reversed(couplings), tfb.Invert(tfb.Sigmoid())], name="noise_to_offsets"
      )

  def context(self, levels):
    """The conditioners' context `v / 2**num_bits - 1/2`, shaped like `levels`."""
    return tf.cast(levels, self.dtype) / 2.0**self.num_bits - 0.5

  def offsets_and_log_prob(self, levels, noise, training=False):
    """`(u, log q(u | v))` for noise `e ~ U[0, 1)^D`: `u = T(e; v)` shaped like `levels`, `log q` `[batch]`."""
    levels = self._check_levels(levels)
    noise = tf.convert_to_tensor(noise, self.dtype)
    eps = 2.0**-24
    flat_noise = self._flat_events(tf.clip_by_value(noise, eps, 1.0 - eps))
    kwargs = {"training": training, "conditional_input": self.context(levels)}
    flat_offsets = self.noise_to_offsets.forward(flat_noise, **kwargs)
    log_det = self.noise_to_offsets.forward_log_det_jacobian(flat_noise, event_ndims=1, **kwargs)
    return tf.reshape(flat_offsets, tf.shape(noise)), -log_det

  def log_prob(self, offsets, levels):
    """`log q(u | v)` `[batch]` for offsets `u` in `(0, 1)^D` (inference mode): `log|det dT^{-1}/du|`."""
    offsets = self._check_levels(offsets, "offsets")
    levels = self._check_levels(levels)
    return self.noise_to_offsets.inverse_log_det_jacobian(
      self._flat_events(tf.cast(offsets, self.dtype)),
      event_ndims=1,
      training=False,
      conditional_input=self.context(levels),
    )

  def _flat_events(self, x):
    rank = len(self.event_shape)
    return tf.reshape(x, tf.concat([tf.shape(x)[: tf.rank(x) - rank], [self.num_dims]], 0))


def make_dequantizer(dequantization, event_shape, num_bits, dtype=tf.float32):
  """The dequantizer `dequantization` names (`'uniform'` or `'variational'`) for images of `event_shape`."""
  if dequantization == "uniform":
    return UniformDequantizer(event_shape)
  if dequantization == "variational":
    return VariationalDequantizer(event_shape, num_bits, dtype=dtype)
  raise ValueError(f"`dequantization` must be one of uniform, variational; got {dequantization!r}.")


def log_weights(log_prob_fn, dequantizer, levels, noise, training=False):
  """`log p(v + u) - log q(u | v)` with `u` from `noise`: `[batch]`, or `[batch, ...]` as `log_prob_fn` gives.

  `log_prob_fn(x)` is the continuous log-density of the dequantized images `x = v + u` (kept in their bins by
  `data.dequantize`), e.g. `flow.log_prob`; extra trailing axes (one per class) each get the same `log q`.
  """
  offsets, log_q = dequantizer.offsets_and_log_prob(levels, noise, training)
  log_p = log_prob_fn(data.dequantize(levels, offsets))
  log_q = tf.cast(log_q, log_p.dtype)
  for _ in range(log_p.shape.rank - log_q.shape.rank):
    log_q = log_q[..., tf.newaxis]
  return log_p - log_q


def variational_bits_per_dim(flow, dequantizer, images, training=False, conditional_input=None):
  """The one-draw bound `-(log p(v + u) - log q(u | v)) / (D ln 2)` for dequantized `images`, `[batch]`.

  `v = floor(images)`, and `u` comes from the images' own noise `images - v`: with `UniformDequantizer` it is
  `flow.bits_per_dim(images)` exactly. Its gradient reaches both the flow and the dequantizer.
  """
  images = tf.convert_to_tensor(images, flow.dtype)
  levels = tf.floor(images)
  weights = log_weights(
    lambda x: flow.log_prob(x, training=training, conditional_input=conditional_input),
    dequantizer,
    levels,
    images - levels,
    training,
  )
  return bits.bits_per_dim(weights, flow.num_dims)


def importance_weighted_log_prob(log_prob_fn, dequantizer, levels, noises):
  """`log (1/K) sum_k p(v + u_k) / q(u_k | v)`, float64, over the `K` noises `noises` `[K, batch, *event]`.

  A lower bound on `log P(v)` in expectation whenever each `noises[k]` is `U[0, 1)^D` (they may be
  dependent, e.g. `rotated_noise`). The draws are evaluated one at a time (a `tf.map_fn`), in inference
  mode, and combined by `logsumexp` in float64. `log_prob_fn` as in `log_weights`; the result has its shape.
  """
  noises = tf.convert_to_tensor(noises)
  num_samples = tf.shape(noises)[0]
  weights = tf.map_fn(
    lambda noise: tf.cast(log_weights(log_prob_fn, dequantizer, levels, noise), tf.float64),
    noises,
    fn_output_signature=tf.float64,
  )
  return tf.reduce_logsumexp(weights, axis=0) - tf.math.log(tf.cast(num_samples, tf.float64))


def rotated_noise(noise, num_samples, seed):
  """`K = num_samples` uniform noises from one, `[K, *noise.shape]`: `frac(noise + r_k)`, `r_0 = 0`.

  `r_k` (`k >= 1`, one per event, `tf.random.stateless_uniform` with `seed`) is the same for every image, so
  the draws of an image depend only on its own noise and `seed`, not on the batch it is in (a Cranley-Patterson
  rotation): each draw is exactly `U[0, 1)` when `noise` is, which is all the importance-weighted bound needs.
  """
  noise = tf.convert_to_tensor(noise)
  event_shape = tf.shape(noise)[1:]
  shifts = tf.random.stateless_uniform(
    tf.concat([[num_samples - 1], event_shape], 0), seed, dtype=noise.dtype
  )
  shifts = tf.concat([tf.zeros(tf.concat([[1], event_shape], 0), noise.dtype), shifts], 0)[:, tf.newaxis]
  rotated = noise + shifts
  return rotated - tf.floor(rotated)


def importance_weighted_bits_per_dim(flow, dequantizer, levels, num_samples, seed, conditional_input=None):
  """`-log2 (1/K) sum_k p(v + u_k) / q(u_k | v) / D`, float64 `[batch]`, with `K = num_samples` independent
  draws (`tf.random.stateless_uniform` with `seed`), in inference mode: `discrete_log_prob_bound` in bits/dim.

  `K = 1` is the variational bound (with `UniformDequantizer`, the usual single-draw bits/dim); larger `K`
  is tighter on average (an upper bound on `-log2 P(v) / D` in expectation for every `K`).
  """
  log_prob = discrete_log_prob_bound(flow, dequantizer, levels, num_samples, seed, conditional_input)
  return bits.bits_per_dim(log_prob, flow.num_dims)


def discrete_log_prob_bound(flow, dequantizer, levels, num_samples, seed, conditional_input=None):
  """`log (1/K) sum_k p(v + u_k) / q(u_k | v)`, float64 `[batch]`: the importance-weighted bound on
  `log P(v)` of `importance_weighted_bits_per_dim` (same arguments), in nats."""
  levels = tf.convert_to_tensor(levels, flow.dtype)
  return importance_weighted_log_prob(
    lambda x: flow.log_prob(x, conditional_input=conditional_input),
    dequantizer,
    levels,
    stateless_noises(levels, num_samples, seed),
  )


def stateless_noises(levels, num_samples, seed):
  """`K = num_samples` independent `U[0, 1)` noises for `levels`, `[K, *levels.shape]` of its dtype
  (`tf.random.stateless_uniform` with `seed`): the draws of `discrete_log_prob_bound`."""
  return tf.random.stateless_uniform(
    tf.concat([[num_samples], tf.shape(levels)], 0), seed, dtype=levels.dtype
  )
