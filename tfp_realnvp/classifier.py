"""A class-conditional flow as a generative classifier: `log p(y | x)` and the marginal `log p(x)` by Bayes.

For a flow `p(x | y)` conditioned on the one-hot label (`conditional_event_shape=(num_classes,)`) and a
prior `p(y)`:

`log p(x, y) = log p(x | y) + log p(y)`,  `log p(x) = logsumexp_y log p(x, y)`,
`log p(y | x) = log p(x, y) - log p(x)`.

Each function evaluates the flow in inference mode (`training=False`), so each row's density does not depend on
the others in the batch. A flow whose context enters the couplings (`context_enters='couplings'`) runs once on
`num_classes * batch` rows, every image with every label; one whose context enters only the base
(`context_enters='base'`, `p(x | y) = N(g(x); mu_y, I) |det dg/dx|`) runs once on the batch: with `z = g(x)`,
`log p(x | y) = log p(x | c = 0) + z . mu_y - |mu_y|^2 / 2`, a linear classifier on `z`.

These score dequantized values `x = v + u`; `discrete_joint_log_probs` scores the discrete image `v` itself, by the
importance-weighted bound on `log P(v | y)` with a dequantizer `q(u | v)`.

#### Examples

```python
flow = RealNVP.from_preset('digits', conditional_event_shape=(10,))
log_probs = classifier.class_log_probs(flow, images, num_classes=10)  # [batch, 10]
labels = tf.argmax(log_probs, axis=-1)
```
"""

import numpy as np
import tensorflow as tf

from tfp_realnvp import dequantization
from tfp_realnvp.internal.checks import positive_int

__all__ = [
  "class_conditional_log_probs",
  "class_log_probs",
  "discrete_joint_log_probs",
  "flow_rows_per_image",
  "joint_log_probs",
  "log_prior_of_counts",
  "marginal_log_prob",
]


def joint_log_probs(flow, x, num_classes, log_prior=None):
  """`log p(x, y) = log p(x | y) + log p(y)` for every class `y`: `[batch, num_classes]`.

  Args:
    flow: a conditional `RealNVP` with `conditional_event_shape == (num_classes,)`, conditioned on the
      one-hot label.
    x: data `[batch, *flow.event_shape]`.
    num_classes: the number of classes.
    log_prior: `log p(y)`, shape `[num_classes]`, each finite or `-inf`, their `exp` summing to 1 (within
      1e-4; checked in the graph for a tensor known only when it runs); None for the uniform
      `-log(num_classes)`.

  Raises:
    ValueError: `num_classes` is not a positive integer (2.5 is refused, not truncated), or `log_prior` is
      not a normalized `log p(y)` of shape `[num_classes]`.
  """
  num_classes, x = _checked_classes_and_batch(flow, x, num_classes)
  return class_conditional_log_probs(flow, x, num_classes) + _checked_log_prior(
    log_prior, num_classes, flow.dtype
  )


def discrete_joint_log_probs(flow, dequantizer, levels, num_classes, num_samples, seed, log_prior=None):
  """The importance-weighted bound on `log P(v, y) = log P(v | y) + log p(y)` of the pixel levels `v` for every
  class `y`, float64 `[batch, num_classes]`.

  `log P(v | y) >= log (1/K) sum_k p(v + u_k | y) / q(u_k | v)` (in expectation) over `K = num_samples` draws
  shared by the classes (`dequantization.stateless_noises` with `seed`, as
  `dequantization.discrete_log_prob_bound` draws them), in inference mode. `q` does not depend on `y`, so at
  `K = 1` the posterior `joint - logsumexp(joint)` is `class_log_probs` of the one dequantized image.

  Args:
    flow, num_classes, log_prior: as in `joint_log_probs`.
    dequantizer: a `dequantization.UniformDequantizer` or `VariationalDequantizer` of the flow's pixels.
    levels: integer pixel levels `v`, `[batch, *flow.event_shape]`.
    num_samples: `K`, at least 1 (an int or an int32 scalar tensor).
    seed: the draws' seed, `[2]` ints.
  """
  num_classes, levels = _checked_classes_and_batch(flow, levels, num_classes, name="levels")
  log_prior = _checked_log_prior(log_prior, num_classes, flow.dtype)
  conditional = dequantization.importance_weighted_log_prob(
    lambda x: class_conditional_log_probs(flow, x, num_classes),
    dequantizer,
    levels,
    dequantization.stateless_noises(levels, num_samples, seed),
  )
  return conditional + tf.cast(log_prior, tf.float64)


def class_conditional_log_probs(flow, x, num_classes, training=False):
  """`log p(x | y)` for every class `y`: `[batch, num_classes]` (`joint_log_probs` without the prior).

  Arguments as in `joint_log_probs`; `training=True` evaluates in training mode (batch statistics: of the
  batch for `context_enters='base'`, of every image with every label otherwise), for a training loss.
  """
  num_classes, x = _checked_classes_and_batch(flow, x, num_classes)
  batch_size = tf.shape(x)[0]
  if flow.context_enters == "base":
    # One pass of `g` (`f` under the all-zeros context, which shifts nothing), then each class's Gaussian.
    log_probs, z = flow.log_prob_and_latent(
      x, conditional_input=tf.zeros([batch_size, num_classes], flow.dtype), training=training
    )
    means = tf.reshape(flow.base_mean(tf.eye(num_classes, dtype=flow.dtype)), [num_classes, -1])
    quadratic = tf.matmul(tf.reshape(z, [batch_size, -1]), means, transpose_b=True)
    quadratic -= 0.5 * tf.reduce_sum(tf.square(means), axis=-1)
    # A row scored -inf (outside the support) or NaN keeps that score; its latent is NaN.
    finite = tf.math.is_finite(log_probs)[:, tf.newaxis]
    return log_probs[:, tf.newaxis] + tf.where(finite, quadratic, tf.zeros_like(quadratic))
  # Row `k * batch + i` pairs image `i` with label `k`.
  rows = tf.tile(x, [num_classes] + [1] * len(flow.event_shape))
  labels = tf.one_hot(tf.repeat(tf.range(num_classes), batch_size), num_classes, dtype=flow.dtype)
  log_likelihoods = flow.log_prob(rows, conditional_input=labels, training=training)
  return tf.transpose(tf.reshape(log_likelihoods, [num_classes, batch_size]))


def flow_rows_per_image(flow, num_classes):
  """How many rows of the flow this module's functions evaluate per image: 1 when its context enters only the base,
  else `num_classes` (every image with every label)."""
  return 1 if flow.context_enters == "base" else num_classes


def class_log_probs(flow, x, num_classes, log_prior=None):
  """`log p(y | x)` for every class, `[batch, num_classes]`; each row's `exp` sums to 1.

  Arguments as in `joint_log_probs`.
  """
  joint = joint_log_probs(flow, x, num_classes, log_prior)
  return joint - tf.reduce_logsumexp(joint, axis=-1, keepdims=True)


def marginal_log_prob(flow, x, num_classes, log_prior=None):
  """The marginal `log p(x) = logsumexp_y (log p(x | y) + log p(y))`, `[batch]`.

  Arguments as in `joint_log_probs`.
  """
  return tf.reduce_logsumexp(joint_log_probs(flow, x, num_classes, log_prior), axis=-1)


def log_prior_of_counts(label_counts):
  """`log p(y)`, float64 numpy `[num_classes]`, of the class frequencies `label_counts` (`-inf` for a class
  counted 0 times), such as `data.label_counts` of a training split gives.

  Raises:
    ValueError: `label_counts` is not a non-empty vector of non-negative counts, not all 0.
  """
  try:
    counts = np.asarray(label_counts, np.float64)
  except (TypeError, ValueError):
    counts = np.full([0], np.nan)
  if (
    counts.ndim != 1
    or not len(counts)
    or not np.all(np.isfinite(counts))
    or np.any(counts < 0)
    or not counts.sum()
  ):
    raise ValueError(
      "`label_counts` must be finite non-negative class counts [num_classes], not all 0; got "
      f"{label_counts!r}."
    )
  with np.errstate(divide="ignore"):
    return np.log(counts / counts.sum())


# How far `logsumexp(log_prior)` may be from 0 (float32 round-off of a prior of many classes stays far below).
_PRIOR_TOLERANCE = 1e-4


def _normalized(log_prior):
  """`log_prior`, checked to be `log p(y)`: no NaN or `+inf`, `logsumexp` 0 within `_PRIOR_TOLERANCE`. A
  value known now is checked now (`ValueError`); a graph tensor by an assertion when the graph runs."""
  total = tf.reduce_logsumexp(log_prior)
  valid = tf.reduce_all(~tf.math.is_nan(log_prior) & (log_prior < np.inf))
  valid = valid & (tf.abs(total) <= _PRIOR_TOLERANCE)
  message = "`log_prior` must be log-probabilities `log p(y)` (each finite or -inf, their `exp` summing to 1)"
  if tf.executing_eagerly() or tf.get_static_value(valid) is not None:
    if not bool(tf.get_static_value(valid)):
      raise ValueError(
        f"{message}; got {np.asarray(tf.get_static_value(log_prior)).tolist()}, whose `exp` sums to "
        f"{float(np.exp(tf.get_static_value(total)))}."
      )
    return log_prior
  with tf.control_dependencies([tf.debugging.Assert(valid, [message, log_prior])]):
    return tf.identity(log_prior)


def _checked_log_prior(log_prior, num_classes, dtype):
  """`log_prior` as a `dtype` tensor checked to be `log p(y)` of shape `[num_classes]` (`_normalized`); None
  for the uniform `-log(num_classes)`."""
  if log_prior is None:
    return tf.fill([num_classes], -tf.math.log(tf.cast(num_classes, dtype)))
  log_prior = tf.convert_to_tensor(log_prior, dtype)
  if log_prior.shape != [num_classes]:
    raise ValueError(
      f"`log_prior` must have shape [{num_classes}] (`log p(y)` per class); got shape {log_prior.shape.as_list()}."
    )
  return _normalized(log_prior)


def _checked_classes_and_batch(flow, x, num_classes, name="x"):
  """`(num_classes, x)` checked: a positive int the flow's one-hot contexts match, and a batch of events
  (`name` names `x` in the error)."""
  num_classes = positive_int("num_classes", num_classes)
  if flow.conditional_event_shape != (num_classes,):
    raise ValueError(
      f"The flow must be conditioned on one-hot labels, `conditional_event_shape=({num_classes},)` for "
      f"`num_classes={num_classes}`; its `conditional_event_shape` is {flow.conditional_event_shape}."
    )
  x = tf.convert_to_tensor(x, flow.dtype)
  event_rank = len(flow.event_shape)
  if x.shape.rank != event_rank + 1:
    raise ValueError(
      f"`{name}` must be a batch `[batch, {', '.join(map(str, flow.event_shape))}]`; got shape "
      f"{x.shape.as_list()}."
    )
  return num_classes, x
