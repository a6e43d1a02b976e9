"""A probe, not kept: an unconditional flow plus a free linear classifier on its latent (Nalisnick et al. 2019).

`loss = bits/dim (variational, K = 1) + w * -log softmax(W z + b)[label]`, `z = f(v + u)` from the same pass;
`HEAD_DIMS=deep` puts the classifier on the last scale's 392 latents only. Fashion-MNIST, the hybrid recipe of
docs/results/quality.md (bf16, cosine over STEPS, EMA 0.99 of the flow and the classifier, batch norms
re-estimated); validation accuracy and bits/dim every EVAL_EVERY steps.

usage: python bench/latent_head_probe.py W STEPS OUT_DIR [SPLIT: evaluate the newest checkpoint only]
"""

import dataclasses
import functools
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from tfp_realnvp import data
from tfp_realnvp.internal import bits
from tfp_realnvp.training import configs, flow_builder, optimization, train_lib, weight_averaging

weight, steps, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
DEEP = os.environ.get("HEAD_DIMS") == "deep"
eval_every = int(os.environ.get("EVAL_EVERY", 1000))
os.makedirs(out, exist_ok=True)

data_config = dataclasses.replace(
  configs.get_config("idx:/usr/share/datasets/fashion-mnist"),
  train_split="train[:50000]",
  eval_split="train[50000:52000]",
  condition="label",
  compute_dtype="bfloat16",
  num_train_steps=steps,
  learning_rate_decay="cosine",
  warmup_steps=100,
  ema_decay=0.99,
  batch_norm_batches=25,
)
flow_config = dataclasses.replace(data_config, condition=None)
spec = flow_builder.dataset_spec(flow_config)


class Head(tf.Module):
  def __init__(self, num_dims, num_classes):
    super().__init__(name="head")
    self.kernel = tf.Variable(tf.zeros([num_dims, num_classes]), name="kernel")
    self.bias = tf.Variable(tf.zeros([num_classes]), name="bias")

  def __call__(self, z):
    z = tf.cast(z, tf.float32)
    if DEEP:  # the last scale's latent: channels [2, 4) of the squeezed [14, 14, 4]
      z = tf.nn.space_to_depth(z, 2)[..., 2:]
    flat = tf.reshape(z, [tf.shape(z)[0], -1])
    return flat @ self.kernel + self.bias


class HeadTrainer(train_lib.Trainer):
  def __init__(self, *args, ema_decay, **kwargs):
    self.head = Head(392 if DEEP else 784, 10)
    super().__init__(*args, ema_decay=0.0, **kwargs)
    self.weight_average = weight_averaging.WeightAverage(
      (*self.flow.trainable_variables, *self.head.trainable_variables), ema_decay
    )

  @property
  def trainable_variables(self):
    return (
      *self.flow.trainable_variables,
      *self.dequantizer.trainable_variables,
      *self.head.trainable_variables,
    )

  def _replica_loss_terms(self, batch):
    images, labels = batch
    images = tf.convert_to_tensor(images, self.flow.dtype)
    levels = tf.floor(images)
    offsets, log_q = self.dequantizer.offsets_and_log_prob(levels, images - levels, True)
    log_p, z = self.flow.log_prob_and_latent(data.dequantize(levels, offsets), training=True)
    bpd = bits.bits_per_dim(log_p - tf.cast(log_q, log_p.dtype), self.flow.num_dims)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, self.head(z))
    mean = tf.nn.compute_average_loss(bpd, global_batch_size=self.global_batch_size)
    regularized = (
      *self.flow.regularized_variables,
      *self.dequantizer.regularized_variables,
      self.head.kernel,
    )
    penalty = optimization.l2_penalty(regularized, self.l2_coefficient)
    total = mean + penalty + weight * tf.nn.compute_average_loss(ce, global_batch_size=self.global_batch_size)
    return train_lib.losses.BitsPerDimLoss(total=total, mean_bits_per_dim=mean, bits_per_dim=bpd)


learning_rate = optimization.learning_rate_schedule(
  flow_config.learning_rate, steps, flow_config.warmup_steps, flow_config.learning_rate_decay
)
tf.random.set_seed(flow_config.seed)
trainer = HeadTrainer(
  tf.distribute.get_strategy(),
  functools.partial(flow_builder.build_flow, flow_config, spec),
  global_batch_size=flow_config.batch_size,
  make_optimizer=functools.partial(optimization.adam, learning_rate, flow_config.clip_global_norm),
  l2_coefficient=flow_config.l2_coefficient,
  ema_decay=0.99,
  dequantization="variational",
  batch_norm_batches=25,
)
checkpoint = tf.train.Checkpoint(
  trainer=trainer.checkpoint, head=trainer.head, average=trainer.weight_average
)
manager = tf.train.CheckpointManager(checkpoint, os.path.join(out, "ckpt"), max_to_keep=2)
if manager.latest_checkpoint:
  checkpoint.restore(manager.latest_checkpoint)


@tf.function
def eval_batch(images, labels):
  levels = tf.floor(images)
  offsets, log_q = trainer.dequantizer.offsets_and_log_prob(levels, images - levels, False)
  log_p, z = trainer.flow.log_prob_and_latent(data.dequantize(levels, offsets))
  bpd = bits.bits_per_dim(log_p - tf.cast(log_q, log_p.dtype), trainer.flow.num_dims)
  right = tf.cast(tf.argmax(trainer.head(z), -1, output_type=labels.dtype) == labels, tf.float64)
  return (
    tf.reduce_sum(tf.cast(bpd, tf.float64)),
    tf.reduce_sum(right),
    tf.cast(tf.shape(images)[0], tf.float64),
  )


def evaluate(split):
  trainer.estimate_batch_norm_statistics(
    train_lib.statistics_batches(trainer, data_config, data_config.train_split)
  )
  sums = np.zeros(3)
  dataset = train_lib.load_split(data_config, split, None, training=False, seed=data_config.seed)
  with trainer.evaluation_weights():
    for images, labels in dataset:
      sums += np.array([float(t) for t in eval_batch(images, labels)])
  return {"bits_per_dim": sums[0] / sums[2], "accuracy": sums[1] / sums[2], "num": int(sums[2])}


if len(sys.argv) > 4:  # evaluate only, on the named split
  print(
    json.dumps({"split": sys.argv[4], "step": int(trainer.step.numpy()), **evaluate(sys.argv[4])}), flush=True
  )
  sys.exit()

train = iter(
  train_lib.load_split(data_config, data_config.train_split, None, training=True, seed=data_config.seed)
)
start = time.time()
while int(trainer.step.numpy()) < steps:
  bpd, applied = trainer.train_step(next(train))
  step = int(trainer.step.numpy())
  if step % 100 == 0:
    print(
      json.dumps({"step": step, "train_bpd": float(bpd), "seconds": round(time.time() - start)}), flush=True
    )
  if step % eval_every == 0 or step == steps:
    manager.save(checkpoint_number=step)
    print(json.dumps({"step": step, "split": "validation", **evaluate(data_config.eval_split)}), flush=True)
