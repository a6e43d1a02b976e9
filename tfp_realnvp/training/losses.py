"""The training loss of every trainer (`Trainer`, `FlowModel`, the benchmarks): bits/dim plus the paper's L2 term.

```python
with tf.GradientTape() as tape:
  loss = losses.bits_per_dim_loss(flow, images, l2_coefficient=5e-5)
gradients = tape.gradient(loss.total, flow.trainable_variables)
```
"""

import typing

import tensorflow as tf

from tfp_realnvp import classifier, dequantization
from tfp_realnvp.internal import bits
from tfp_realnvp.training import optimization

__all__ = ["BitsPerDimLoss", "bits_per_dim_loss", "hybrid_loss", "nats_per_dim_loss"]


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


def hybrid_loss(
  flow,
  images,
  labels,
  label_log_prior,
  class_loss_weight,
  l2_coefficient,
  global_batch_size=None,
  dequantizer=None,
):
  """`bits_per_dim_loss` of `p(x | label)` plus `class_loss_weight` times the mean `-log p(label | x)` in nats.

  For a flow conditioned on one-hot labels, with `log p(y)` `label_log_prior` `[num_classes]`: both terms come
  from `log p(x | y)` for every class (`classifier.class_conditional_log_probs` in training mode, one pass of the
  flow when `flow.context_enters == 'base'`) on the same dequantized images, `log p(label | x)` by Bayes' rule
  (the dequantizer's `log q(u | v)` cancels in it). `mean_bits_per_dim` and `bits_per_dim` are the bits/dim
  alone; `total` adds the weighted class term and the L2 penalty, averaged over replicas as in
  `bits_per_dim_loss`.
  """
  num_classes = int(label_log_prior.shape[0])
  images = tf.convert_to_tensor(images, flow.dtype)

  def class_log_likelihoods(x):
    return classifier.class_conditional_log_probs(flow, x, num_classes, training=True)

  regularized = flow.regularized_variables
  if dequantizer is None:
    log_likelihoods = class_log_likelihoods(images)
  else:
    levels = tf.floor(images)
    log_likelihoods = dequantization.log_weights(
      class_log_likelihoods, dequantizer, levels, images - levels, training=True
    )
    regularized = (*regularized, *dequantizer.regularized_variables)
  joint = log_likelihoods + tf.cast(label_log_prior, log_likelihoods.dtype)
  bits_per_dim = bits.bits_per_dim(tf.gather(log_likelihoods, labels, batch_dims=1), flow.num_dims)
  class_log_loss = tf.reduce_logsumexp(joint, axis=-1) - tf.gather(joint, labels, batch_dims=1)
  loss = _with_l2_penalty(bits_per_dim, regularized, l2_coefficient, global_batch_size)
  class_term = tf.nn.compute_average_loss(class_log_loss, global_batch_size=global_batch_size)
  return loss._replace(total=loss.total + class_loss_weight * class_term)


def nats_per_dim_loss(flow, x, l2_coefficient, global_batch_size=None, conditional_input=None):
  """`bits_per_dim_loss` for a flow over `R^D` (no pixels, so no bits/dim): `-log_prob(x) / D` in nats.

  Returns a `BitsPerDimLoss` whose `mean_bits_per_dim` and `bits_per_dim` hold nats per dimension; the
  averaging over the global batch and the L2 term are `bits_per_dim_loss`'s.
  """
  nats_per_dim = -flow.log_prob(x, training=True, conditional_input=conditional_input) / flow.num_dims
  return _with_l2_penalty(nats_per_dim, flow.regularized_variables, l2_coefficient, global_batch_size)


def _with_l2_penalty(per_example, regularized, l2_coefficient, global_batch_size):
  mean = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
  penalty = optimization.l2_penalty(regularized, l2_coefficient)
  total = mean + tf.nn.scale_regularization_loss(penalty)
  return BitsPerDimLoss(total=total, mean_bits_per_dim=mean, bits_per_dim=per_example)
