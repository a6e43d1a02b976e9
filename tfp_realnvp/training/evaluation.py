"""A trained flow's test figures over a dataset: bits/dim bounds at `K = 1` and importance-weighted at `K > 1`
draws, and for a class-conditional flow the marginal and conditional bits/dim, accuracy and class log loss.

```python
evaluator = evaluation.Evaluator(strategy=strategy, flow=flow, dequantizer=dequantizer)
evaluator.evaluate(eval_dataset)                              # {"bits_per_dim": ..., "num_examples": ...}
evaluator.evaluate(eval_dataset, num_importance_samples=100)  # the importance-weighted bound
```

Every figure bounds the discrete images' `-log2 P(v) / D`, `v = floor(x)` for the dequantized batches `x`:
at `K = 1` with the dequantizer's offsets for the batch's own noise `x - v`, at `K > 1` over that noise and
`K - 1` rotations of it (`dequantization.rotated_noise` with `IMPORTANCE_SEED`), so an image's figure does not
depend on its batch or replica. The trainer evaluates with it (`train_lib.Trainer.evaluate_metrics`), and a
class-conditional run's prior `p(y)` is `train_label_counts` for evaluation and the export's `classify` alike.
"""

import functools

import tensorflow as tf

from tfp_realnvp import classifier, data, dequantization
from tfp_realnvp.internal import bits
from tfp_realnvp.internal.checks import positive_int
from tfp_realnvp.training import flow_builder

__all__ = [
  "IMPORTANCE_SEED",
  "Evaluator",
  "class_conditional_sums",
  "discrete_log_likelihoods",
  "label_log_prior",
  "train_label_counts",
  "unconditional_sums",
]

# The rotations of every importance-weighted evaluation (`dequantization.rotated_noise`).
IMPORTANCE_SEED = (2019, 2)


def train_label_counts(config, spec=None):
  """How many images of `config`'s training split have each label (`data.label_counts`), int64
  `[num_classes]`: a class-conditional run's prior `p(y)`, in its evaluation and its export's `classify`.

  `spec` (default `flow_builder.dataset_spec(config)`) gives the training split. Raises what
  `data.label_counts` raises for data that cannot be read.
  """
  spec = spec or flow_builder.dataset_spec(config)
  return data.label_counts(config.dataset, spec.train_split, data_dir=config.data_dir)


def label_log_prior(label_counts):
  """`log p(y)` of `label_counts` (`classifier.log_prior_of_counts`) as a float64 constant; None for None."""
  if label_counts is None:
    return None
  return tf.constant(classifier.log_prior_of_counts(label_counts), tf.float64)


def discrete_log_likelihoods(images, *, log_prob_fn, dequantizer, num_samples):
  """The bound on `log P(v)`, `v = floor(images)`, float64 (`[batch]`, or as `log_prob_fn` gives): from the
  images' own noise `images - v` alone (`num_samples == 1`), or importance-weighted over it and
  `num_samples - 1` rotations of it."""
  levels = tf.floor(images)
  noise = images - levels
  if num_samples == 1:
    return tf.cast(dequantization.log_weights(log_prob_fn, dequantizer, levels, noise), tf.float64)
  noises = dequantization.rotated_noise(noise, num_samples, tf.constant(IMPORTANCE_SEED, tf.int32))
  return dequantization.importance_weighted_log_prob(log_prob_fn, dequantizer, levels, noises)


def unconditional_sums(images, *, flow, dequantizer, num_samples):
  """`{"bits_per_dim", "num_examples"}` of one batch, float64 sums over its images."""
  if num_samples == 1:  # with the uniform dequantizer exactly `flow.bits_per_dim(images)`
    bits_per_dim = tf.cast(dequantization.variational_bits_per_dim(flow, dequantizer, images), tf.float64)
  else:
    log_likelihoods = discrete_log_likelihoods(
      images, log_prob_fn=flow.log_prob, dequantizer=dequantizer, num_samples=num_samples
    )
    bits_per_dim = bits.bits_per_dim(log_likelihoods, flow.num_dims)
  return {
    "bits_per_dim": tf.reduce_sum(bits_per_dim),
    "num_examples": tf.cast(tf.size(bits_per_dim), tf.float64),
  }


def class_conditional_sums(images, labels, *, flow, dequantizer, label_log_prior, num_samples):
  """`{"bits_per_dim", "conditional_bits_per_dim", "accuracy", "class_log_loss", "num_examples"}` of one
  labelled batch, float64 sums over its images, for a flow conditioned on one-hot labels with prior
  `label_log_prior` (`log p(y)`, float64 `[num_classes]`).

  `bits_per_dim` is the marginal `-log2(sum_y p(x | y) p(y)) / D`, `conditional_bits_per_dim`
  `-log2 p(x | label) / D`, `accuracy` counts the images whose label is the argmax of `p(y | x)`, and
  `class_log_loss` sums `-log p(label | x)` in nats.
  """
  (num_classes,) = label_log_prior.shape
  # `log p(x | y)` for every class `y`, `[batch, num_classes]`, then `log p(x, y)` with the prior.
  log_likelihoods = discrete_log_likelihoods(
    images,
    log_prob_fn=lambda x: classifier.class_conditional_log_probs(flow, x, num_classes),
    dequantizer=dequantizer,
    num_samples=num_samples,
  )
  joint = log_likelihoods + label_log_prior
  predictions = tf.argmax(joint, axis=-1, output_type=labels.dtype)
  log_marginals = tf.reduce_logsumexp(joint, axis=-1)
  return {
    "bits_per_dim": bits.bits_per_dim(tf.reduce_sum(log_marginals), flow.num_dims),
    "conditional_bits_per_dim": bits.bits_per_dim(
      tf.reduce_sum(tf.gather(log_likelihoods, labels, batch_dims=1)), flow.num_dims
    ),
    "accuracy": tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float64)),
    # `-log p(label | x)`, nats: unlike the accuracy it still ranks models that classify every image right.
    "class_log_loss": tf.reduce_sum(log_marginals - tf.gather(joint, labels, batch_dims=1)),
    "num_examples": tf.cast(tf.size(labels), tf.float64),
  }


class Evaluator:
  """Evaluates `flow` with `dequantizer` over distributed datasets of `strategy`, in inference mode.

  With `label_log_prior` (`log p(y)`, float64 `[num_classes]`, see `label_log_prior`) the flow is conditioned
  on one-hot labels and the datasets yield `(images, labels)` (`class_conditional_sums`); without, images
  (`unconditional_sums`). One `tf.function` is traced per dataset element spec and `K`, so it serves full
  and partial batches alike.
  """

  def __init__(self, *, strategy, flow, dequantizer, label_log_prior=None):
    self.strategy = strategy
    self.flow = flow
    self.dequantizer = dequantizer
    self.label_log_prior = label_log_prior
    self._functions = {}

  def evaluate(self, dataset, num_importance_samples=1):
    """`{"bits_per_dim", ..., "num_examples"}` over one pass of the distributed `dataset`: each figure is a
    sum over the examples of all replicas and workers divided by their number (`unconditional_sums` or
    `class_conditional_sums` at `K = num_importance_samples` draws).

    Raises:
      ValueError: `dataset` is empty, or `num_importance_samples` is not a positive int.
    """
    num_samples = positive_int("num_importance_samples", num_importance_samples)
    key = (dataset.element_spec, num_samples)
    if key not in self._functions:
      self._functions[key] = tf.function(
        functools.partial(self._global_sums, num_samples=num_samples), input_signature=[dataset.element_spec]
      )
    totals = {}
    for batch in dataset:
      for name, value in self._functions[key](batch).items():
        totals[name] = totals.get(name, 0.0) + float(value)
    count = totals.pop("num_examples", 0.0)
    if not count:
      raise ValueError("The evaluation dataset is empty.")
    return {**{name: total / count for name, total in totals.items()}, "num_examples": int(count)}

  def _global_sums(self, batch, *, num_samples):
    sums = self.strategy.run(functools.partial(self._replica_sums, num_samples=num_samples), args=(batch,))
    return {
      name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for name, value in sums.items()
    }

  def _replica_sums(self, batch, *, num_samples):
    common = {"flow": self.flow, "dequantizer": self.dequantizer, "num_samples": num_samples}
    if self.label_log_prior is None:
      return unconditional_sums(batch, **common)
    images, labels = batch
    return class_conditional_sums(images, labels, label_log_prior=self.label_log_prior, **common)
