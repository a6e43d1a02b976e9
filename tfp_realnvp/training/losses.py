"""The training loss of every trainer (`Trainer`, `FlowModel`, the benchmarks): bits/dim plus the paper's L2 term,
and the classification term `-log p(label | x)` of a class-conditional flow's hybrid objective.

```python
with tf.GradientTape() as tape:
  loss = losses.bits_per_dim_loss(flow, images, l2_coefficient=5e-5)
gradients = tape.gradient(loss.total, flow.trainable_variables)
```
"""

import typing

import tensorflow as tf

from tfp_realnvp import classifier, dequantization
from tfp_realnvp.training import optimization

__all__ = ["BitsPerDimLoss", "bits_per_dim_loss", "class_log_loss", "nats_per_dim_loss"]


class BitsPerDimLoss(typing.NamedTuple):
  """`total`, the value to minimize; `mean_bits_per_dim`, its data term; `bits_per_dim`, per example."""

  total: tf.Tensor
  mean_bits_per_dim: tf.Tensor
  bits_per_dim: tf.Tensor


def bits_per_dim_loss(
  flow, images, l2_coefficient, global_batch_size=None, conditional_input=None, dequantizer=None
):
  """`sum(bits_per_dim) / global_batch_size + l2_coefficient * sum_v ||v||^2 / num_replicas`, in training mode.

  `bits_per_dim = flow.bits_per_dim(images, training=True, conditional_input=conditional_input)` (batch
  statistics, dropout; `conditional_input` the context of a conditional flow, None for none) and `v` ranges over
  `flow.regularized_variables` (`optimization.l2_penalty`). With a `dequantizer` (`dequantization`), the
  data term is the variational bound `-(log p(v + u) - log q(u | v)) / (D ln 2)` of
  `dequantization.variational_bits_per_dim`, `u` the dequantizer's offsets for the images' own noise, and `v`
  also ranges over `dequantizer.regularized_variables`: `flow` and `dequantizer` train jointly (with
  `UniformDequantizer` it is the loss without one). In a replica of a `tf.distribute` strategy both
  terms are this replica's share (`tf.nn.compute_average_loss`, `tf.nn.scale_regularization_loss`): the
  replicas' shares add up to the loss one device computes on the global batch, and the optimizer sums their
  gradients, so N replicas take the step one device takes. `global_batch_size` defaults to the size of
  `images` times the number of replicas.
  """
  if dequantizer is None:
    bits_per_dim = flow.bits_per_dim(images, training=True, conditional_input=conditional_input)
    regularized = flow.regularized_variables
  else:
    bits_per_dim = dequantization.variational_bits_per_dim(
      flow, dequantizer, images, training=True, conditional_input=conditional_input
    )
    regularized = (*flow.regularized_variables, *dequantizer.regularized_variables)
  return _with_l2_penalty(bits_per_dim, regularized, l2_coefficient, global_batch_size)


def nats_per_dim_loss(flow, x, l2_coefficient, global_batch_size=None, conditional_input=None):
  """`bits_per_dim_loss` for a flow over `R^D` (no pixels, so no bits/dim): `-log_prob(x) / D` in nats.

  Returns a `BitsPerDimLoss` whose `mean_bits_per_dim` and `bits_per_dim` hold nats per dimension; the
  averaging over the global batch and the L2 term are `bits_per_dim_loss`'s.
  """
  nats_per_dim = -flow.log_prob(x, training=True, conditional_input=conditional_input) / flow.num_dims
  return _with_l2_penalty(nats_per_dim, flow.regularized_variables, l2_coefficient, global_batch_size)


def class_log_loss(flow, images, labels, *, log_prior, dequantizer, global_batch_size=None):
  """`sum(-log p(label | x)) / global_batch_size`, nats per image, for a flow conditioned on one-hot labels: the
  classification term of the hybrid objective `bits/dim + weight * class_log_loss` (`train_lib.Trainer`).

  `log p(y | x) = softmax_y(log p(v + u | y) + log p(y))`, `v = floor(images)`, `u` the `dequantizer`'s offsets
  for the images' own noise (`log q(u | v)` is the same for every class and cancels), computed as the
  classifier's evaluation computes it, in inference mode (`classifier.class_conditional_log_probs`: batch norms
  use their running averages, so the rows' batch statistics never differ from what evaluation uses); gradients
  reach the weights. One pass over `num_classes * batch` rows. `log_prior` is `log p(y)`, `[num_classes]`;
  `labels` int `[batch]`; `global_batch_size` as in `bits_per_dim_loss`.
  """
  images = tf.convert_to_tensor(images, flow.dtype)
  log_prior = tf.cast(log_prior, flow.dtype)
  (num_classes,) = log_prior.shape
  levels = tf.floor(images)
  weights = dequantization.log_weights(
    lambda x: classifier.class_conditional_log_probs(flow, x, num_classes),
    dequantizer,
    levels,
    images - levels,
  )
  joint = weights + log_prior
  per_example = tf.reduce_logsumexp(joint, axis=-1) - tf.gather(joint, labels, batch_dims=1)
  return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def _with_l2_penalty(per_example, regularized, l2_coefficient, global_batch_size):
  mean = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
  penalty = optimization.l2_penalty(regularized, l2_coefficient)
  total = mean + tf.nn.scale_regularization_loss(penalty)
  return BitsPerDimLoss(total=total, mean_bits_per_dim=mean, bits_per_dim=per_example)
