r"""Out-of-distribution scores for image flows: where raw likelihood fails, and what works instead.

A flow trained on one image dataset often gives *higher* likelihood to images of another, simpler one (a Glow
trained on Fashion-MNIST rates MNIST digits more likely than its own test images; Nalisnick et al. 2019), so
`-log p(x)` alone flags the wrong inputs. The likelihood is dominated by how *complex* an image is (how many
bits any lossless code needs), not by whether it looks like the training data. Serrà et al. (2020) subtract
that complexity, measured by a general-purpose lossless compressor:

`complexity_corrected_score(x) = discrete_bits_per_dim(x) - png_bits_per_dim(x)`

in bits/dim (per dimension rather than their total: the same ranking for one image size). It is what a
likelihood ratio against a universal model (the compressor) measures: how many more bits the flow needs than
a code that knows nothing of the training data. Higher is more unusual. PNG comes from `tf.io.encode_png`, a
core TensorFlow op, so the score runs inside an exported graph (the `ood_score` signature).

Per input, for any image flow (`flow.num_bits` not None) and a dequantizer of its images:

- `discrete_bits_per_dim(flow, dequantizer, levels)`: the raw score, the bound on `-log2 P(levels) / D` with
  one draw (`K = 1`) of the dequantization noise, the same noise image for every row, so a row's score depends
  on the row alone.
- `png_bits_per_dim(levels, num_bits)`: `L(x)`, the bits/dim of the image's PNG encoding.
- `complexity_corrected_score(...)`: their difference.

For a batch: `typicality_test` (Nalisnick et al. 2019b) asks whether a batch's mean bits/dim is as far from
the in-distribution mean as held-out batches of its size are. For scores: `threshold_at_false_positive_rate`
(the threshold that flags a stated share of held-out in-distribution scores), and the detection metrics
`auroc`, `aupr` and `false_positive_rate_at_true_positive_rate`, with the outliers the positive class and a
higher score meaning more unusual. Only NumPy is needed for those.

Levels are integer pixel levels in `[0, 2**num_bits)`; `pixel_levels` takes them from dequantized pixel values
`v + u` as `data.load` yields them (`floor`).

#### References

[1]: Eric Nalisnick, Akihiro Matsukawa, Yee Whye Teh, Dilan Gorur and Balaji Lakshminarayanan. Do Deep
     Generative Models Know What They Don't Know? In _ICLR_, 2019. https://arxiv.org/abs/1810.09136
[2]: Eric Nalisnick, Akihiro Matsukawa, Yee Whye Teh and Balaji Lakshminarayanan. Detecting
     Out-of-Distribution Inputs to Deep Generative Models Using Typicality. arXiv, 2019.
     https://arxiv.org/abs/1906.02994
[3]: Joan Serrà, David Álvarez, Vicenç Gómez, Olga Slizovskaia, José F. Núñez and Jordi Luque. Input
     Complexity and Out-of-Distribution Detection with Likelihood-Based Generative Models. In _ICLR_, 2020.
     https://arxiv.org/abs/1909.11480
[4]: Jie Ren, Peter J. Liu, Emily Fertig, Jasper Snoek, Ryan Poplin, Mark A. DePristo, Joshua V. Dillon and
     Balaji Lakshminarayanan. Likelihood Ratios for Out-of-Distribution Detection. In _NeurIPS_, 2019.
     https://arxiv.org/abs/1906.02845
"""

import math
import typing

import numpy as np
import tensorflow as tf

from tfp_realnvp import classifier, dequantization
from tfp_realnvp.internal import bits

__all__ = [
  "DEFAULT_FALSE_POSITIVE_RATE",
  "DEFAULT_PNG_COMPRESSION",
  "NOISE_SEED",
  "TypicalityTest",
  "aupr",
  "auroc",
  "complexity_corrected_score",
  "discrete_bits_per_dim",
  "false_positive_rate_at_true_positive_rate",
  "pixel_levels",
  "png_bits_per_dim",
  "threshold_at_false_positive_rate",
  "typicality_test",
]

# The share of held-out in-distribution inputs an `ood_score` threshold flags by default.
DEFAULT_FALSE_POSITIVE_RATE = 0.05
# zlib's level for `png_bits_per_dim`, chosen on validation data (docs/ood.md; figures in docs/results/ood.md).
DEFAULT_PNG_COMPRESSION = 6
# The stateless seed of the one dequantization-noise image every row of `discrete_bits_per_dim` shares.
NOISE_SEED = (0, 0)


def pixel_levels(pixels):
  """`floor(pixels)` as float32: the integer levels `v` of dequantized pixel values `v + u`, `u in [0, 1)`
  (integer levels stay as they are)."""
  return tf.floor(tf.cast(pixels, tf.float32))


def _marginal_log_prob_fn(flow, label_log_prior):
  """`x -> log p(x)` in inference mode: the flow's own, or for a flow conditioned on one-hot labels
  (`conditional_event_shape=(num_classes,)`) the marginal `logsumexp_y log p(x | y) + log p(y)` with
  `label_log_prior` `log p(y)` (None: uniform), `num_classes` flow evaluations per row."""
  if flow.conditional_event_shape is None:
    return lambda x: flow.log_prob(x, training=False)
  (num_classes,) = flow.conditional_event_shape
  return lambda x: classifier.marginal_log_prob(flow, x, num_classes, label_log_prior)


def discrete_bits_per_dim(flow, dequantizer, levels, seed=NOISE_SEED, label_log_prior=None):
  """The raw score: the one-draw bound on `-log2 P(levels) / D`, float32 `[batch]`, in inference mode.

  `log p(v + u) - log q(u | v)` for `u` from one noise image `e ~ U[0, 1)^D` (`tf.random.stateless_uniform`
  with `seed`) that every row shares, so a row's score does not depend on its batch; with a
  `UniformDequantizer` it is `flow.bits_per_dim(levels + e)`. A row outside the flow's support scores `+inf`.
  `levels` `[batch, *event_shape]` are integer pixel levels (see `pixel_levels`). For a flow conditioned on
  one-hot labels, `p(x)` is the marginal over the labels with the prior `label_log_prior` (`log p(y)`; None:
  uniform), a flow evaluation per row and class.
  """
  levels = tf.convert_to_tensor(levels, flow.dtype)
  event_shape = tf.TensorShape(flow.event_shape).as_list()
  noise = tf.random.stateless_uniform(event_shape, seed, dtype=flow.dtype)
  noise = tf.broadcast_to(noise, tf.shape(levels))
  log_weights = dequantization.log_weights(
    _marginal_log_prob_fn(flow, label_log_prior), dequantizer, levels, noise
  )
  return tf.cast(bits.bits_per_dim(log_weights, math.prod(event_shape)), tf.float32)


def png_bits_per_dim(levels, num_bits, compression=DEFAULT_PNG_COMPRESSION):
  """`L(x)`: the bits per dimension of each image's PNG encoding (`tf.io.encode_png`), float32 `[batch]`.

  `levels` `[batch, H, W, C]` are integer pixel levels in `[0, 2**num_bits)`, encoded as they are (8-bit PNG up
  to 8 bits, 16-bit beyond); images of 1 to 4 channels are PNG's grey, grey + alpha, RGB and RGBA, others are
  encoded as one grey image `[H, W * C]`. The count includes PNG's fixed overhead (signature, header and end
  chunks: 57 bytes, plus zlib's 6), the same for every image of one shape, so it shifts every score alike.
  `compression` is zlib's level, -1 (its default) or 0 to 9.
  """
  levels = tf.convert_to_tensor(levels)
  if levels.shape.rank != 4:
    raise ValueError(f"`levels` must be images `[batch, H, W, C]`; got shape {levels.shape.as_list()}.")
  height, width, channels = levels.shape[1:]
  if channels is not None and channels > 4:
    levels = tf.reshape(levels, [-1, height, width * channels, 1])
  pixel_dtype = tf.uint8 if num_bits <= 8 else tf.uint16
  images = tf.cast(levels, pixel_dtype)
  lengths = tf.map_fn(
    lambda image: tf.strings.length(tf.io.encode_png(image, compression=compression)),
    images,
    fn_output_signature=tf.int32,
  )
  num_dims = tf.cast(tf.reduce_prod(tf.shape(levels)[1:]), tf.float32)
  return 8.0 * tf.cast(lengths, tf.float32) / num_dims


def complexity_corrected_score(
  flow, dequantizer, levels, compression=DEFAULT_PNG_COMPRESSION, seed=NOISE_SEED, label_log_prior=None
):
  """`discrete_bits_per_dim - png_bits_per_dim` (Serrà et al. 2020, per dimension), float32 `[batch]`: how
  many more bits/dim the flow needs for an image than PNG does; higher is more unusual. `label_log_prior` for
  a class-conditional flow, as for `discrete_bits_per_dim`."""
  levels = tf.convert_to_tensor(levels, tf.float32)
  raw = discrete_bits_per_dim(flow, dequantizer, levels, seed, label_log_prior)
  return raw - png_bits_per_dim(levels, flow.num_bits, compression)


def threshold_at_false_positive_rate(scores, false_positive_rate=DEFAULT_FALSE_POSITIVE_RATE):
  """The threshold `t` above which (`score > t`) at most `false_positive_rate` of `scores` lie, as close to it
  as the scores' ties allow: `scores` are held-out in-distribution scores, so `t` flags about that share of
  new in-distribution inputs. A Python float; `scores` must be finite and non-empty."""
  scores = np.sort(np.asarray(scores, np.float64).ravel())
  if scores.size == 0 or not np.all(np.isfinite(scores)):
    raise ValueError(f"`scores` must be finite and non-empty; got {scores.size} scores, some not finite.")
  if not 0.0 <= false_positive_rate < 1.0:
    raise ValueError(f"`false_positive_rate` must be in [0, 1); got {false_positive_rate!r}.")
  # The k-th largest score, k = floor(rate * n) + 1: the k - 1 scores above it are at most the rate.
  num_flagged = int(math.floor(false_positive_rate * scores.size + 1e-9))
  return float(scores[scores.size - 1 - num_flagged])


def _labels_and_scores(in_scores, out_scores):
  in_scores = np.asarray(in_scores, np.float64).ravel()
  out_scores = np.asarray(out_scores, np.float64).ravel()
  if in_scores.size == 0 or out_scores.size == 0:
    raise ValueError("`in_scores` and `out_scores` must both be non-empty.")
  if np.any(np.isnan(in_scores)) or np.any(np.isnan(out_scores)):
    raise ValueError("`in_scores` and `out_scores` must not hold NaN.")
  return in_scores, out_scores


def auroc(in_scores, out_scores):
  """The area under the ROC curve of detecting `out_scores` (the positives) among `in_scores` by a higher
  score: the probability that an outlier scores above an inlier, ties counted half (Mann-Whitney U).
  0.5 is chance; below 0.5 the score ranks the wrong way."""
  in_scores, out_scores = _labels_and_scores(in_scores, out_scores)
  everything = np.concatenate([in_scores, out_scores])
  order = np.argsort(everything, kind="mergesort")
  ranks = np.empty(everything.size, np.float64)
  ranks[order] = np.arange(1, everything.size + 1)
  # Ties share their mean rank.
  values = everything[order]
  starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
  ends = np.concatenate([starts[1:], [values.size]])
  for start, end in zip(starts, ends):
    if end - start > 1:
      ranks[order[start:end]] = (start + 1 + end) / 2.0
  out_rank_sum = ranks[in_scores.size :].sum()
  u = out_rank_sum - out_scores.size * (out_scores.size + 1) / 2.0
  return float(u / (in_scores.size * out_scores.size))


def _precision_recall_steps(in_scores, out_scores):
  """`(recall, precision)` at each distinct threshold, from the highest score down."""
  scores = np.concatenate([in_scores, out_scores])
  positives = np.concatenate([np.zeros(in_scores.size), np.ones(out_scores.size)])
  order = np.argsort(-scores, kind="mergesort")
  scores, positives = scores[order], positives[order]
  last_of_value = np.flatnonzero(np.concatenate([scores[1:] != scores[:-1], [True]]))
  true_positives = np.cumsum(positives)[last_of_value]
  flagged = last_of_value + 1.0
  return true_positives, flagged - true_positives


def aupr(in_scores, out_scores):
  """The area under the precision-recall curve with the outliers (`out_scores`) the positives, as average
  precision: `sum_n (R_n - R_{n-1}) P_n` over the thresholds from the highest score down (scikit-learn's
  `average_precision_score`). Chance is the share of outliers."""
  in_scores, out_scores = _labels_and_scores(in_scores, out_scores)
  true_positives, false_positives = _precision_recall_steps(in_scores, out_scores)
  precision = true_positives / (true_positives + false_positives)
  recall = true_positives / out_scores.size
  return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def false_positive_rate_at_true_positive_rate(in_scores, out_scores, true_positive_rate=0.95):
  """The share of inliers flagged by the highest threshold that flags at least `true_positive_rate` of the
  outliers (`score >= threshold`): FPR at 95% TPR by default. Lower is better."""
  in_scores, out_scores = _labels_and_scores(in_scores, out_scores)
  true_positives, false_positives = _precision_recall_steps(in_scores, out_scores)
  reached = np.flatnonzero(true_positives / out_scores.size >= true_positive_rate - 1e-12)
  return float(false_positives[reached[0]] / in_scores.size)


class TypicalityTest(typing.NamedTuple):
  """What `typicality_test` found: the batch's `statistic` `|mean bits/dim - entropy|`, the in-distribution
  `entropy` estimate, the threshold `epsilon`, and `is_atypical` (`statistic > epsilon`)."""

  statistic: float
  entropy: float
  epsilon: float
  is_atypical: bool


def typicality_test(
  batch_bits,
  train_bits,
  validation_bits,
  false_positive_rate=0.01,
  num_bootstraps=5000,
  seed=0,
):
  """Nalisnick et al.'s (2019b) typicality test of a batch of `M` inputs, from their bits/dim.

  A batch drawn from the training distribution has a mean `-log p` near the distribution's entropy, estimated
  by the mean of `train_bits` (bits/dim of training inputs); an out-of-distribution batch is atypical whether
  its likelihood is lower *or higher* (MNIST under a Fashion-MNIST flow). `epsilon` is the `1 -
  false_positive_rate` quantile of the statistic over `num_bootstraps` batches of `M` rows drawn with
  replacement from `validation_bits` (held-out in-distribution bits/dim), so in-distribution batches of `M`
  are flagged at about that rate. Works for one batch; it says nothing about a single input unless `M = 1`.
  """
  batch_bits = np.asarray(batch_bits, np.float64).ravel()
  train_bits = np.asarray(train_bits, np.float64).ravel()
  validation_bits = np.asarray(validation_bits, np.float64).ravel()
  for name, values in (
    ("batch_bits", batch_bits),
    ("train_bits", train_bits),
    ("validation_bits", validation_bits),
  ):
    if values.size == 0 or not np.all(np.isfinite(values)):
      raise ValueError(f"`{name}` must be finite and non-empty.")
  entropy = float(train_bits.mean())
  rows = np.random.default_rng(seed).integers(0, validation_bits.size, [num_bootstraps, batch_bits.size])
  bootstrap = np.abs(validation_bits[rows].mean(axis=1) - entropy)
  epsilon = float(np.quantile(bootstrap, 1.0 - false_positive_rate))
  statistic = float(abs(batch_bits.mean() - entropy))
  return TypicalityTest(statistic, entropy, epsilon, statistic > epsilon)
