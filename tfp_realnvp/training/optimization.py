"""The paper's optimizer: Adam, L2 on the weight-norm and tanh scales, clipping by global norm.

```python
optimizer = optimization.adam(learning_rate=optimization.learning_rate_schedule(1e-3, 3000))
loss = data_loss + optimization.l2_penalty(flow.regularized_variables, 5e-5)
```
"""

import tensorflow as tf
import tf_keras as tfk

from tfp_realnvp.internal.checks import positive_int

__all__ = ["DynamicLossScale", "FusedAdam", "adam", "l2_penalty", "learning_rate_schedule"]


@tfk.saving.register_keras_serializable(package="tfp_realnvp")
class FusedAdam(tfk.optimizers.Adam):
  """tf_keras `Adam` whose dense update is TensorFlow's fused kernel `ResourceApplyAdam`: one op per variable
  instead of about fifteen, with `Adam.update_step`'s arithmetic (`m += (g - m) * (1 - beta_1)`,
  `v += (g**2 - v) * (1 - beta_2)`, `w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)`)
  and `Adam`'s variables, so checkpoints move between the two. It is faster on a CPU, where the update is
  memory-bound and its many small ops add up (docs/results/speed.md). Sparse gradients, `amsgrad` and
  `adaptive_epsilon` take `Adam`'s own path.
  """

  def update_step(self, gradient, variable):
    if isinstance(gradient, tf.IndexedSlices) or self.amsgrad or getattr(self, "adaptive_epsilon", False):
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    # `Adam` keeps each variable's moments at this index (tf_keras's own lookup in `Adam.update_step`).
    index = self._index_dict[self._var_key(variable)]
    return tf.raw_ops.ResourceApplyAdam(
      var=variable.handle,
      m=self._momentums[index].handle,
      v=self._velocities[index].handle,
      beta1_power=tf.pow(beta_1, step),
      beta2_power=tf.pow(beta_2, step),
      lr=tf.cast(self.learning_rate, dtype),
      beta1=beta_1,
      beta2=beta_2,
      epsilon=tf.cast(self.epsilon, dtype),
      grad=tf.cast(gradient, dtype),
    )


def adam(learning_rate=1e-3, clip_global_norm=100.0):
  """`FusedAdam` (`beta_1=0.9, beta_2=0.999, epsilon=1e-8`) clipping gradients to `clip_global_norm`.

  Under a `tf.distribute` strategy the optimizer sums the replicas' gradients before clipping,
  so the clipped gradient is the one a single device computes on the global batch.
  """
  return FusedAdam(
    learning_rate=learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
    global_clipnorm=clip_global_norm,
  )


def learning_rate_schedule(learning_rate, num_train_steps, warmup_steps=0, decay="constant"):
  """`learning_rate * min(1, step / warmup_steps) * decay(step)`: a linear warm-up from 0, then the rate held
  (`decay='constant'`) or multiplied by `(1 + cos(pi * t)) / 2`, `t` going from 0 at the end of the warm-up to 1
  at `num_train_steps` (`decay='cosine'`, reaching 0 there).

  Returns `learning_rate` itself when constant without warm-up, else a tf_keras schedule: `CosineDecay` (its
  warm-up going from `initial_learning_rate=0` to `warmup_target`), or for a constant rate after a warm-up a
  `PolynomialDecay` from 0 to `learning_rate` over `warmup_steps` with `power=1`, which holds its end value.
  """
  if decay not in ("constant", "cosine"):
    raise ValueError(f"`decay` must be one of constant, cosine; got {decay!r}.")
  schedules = tfk.optimizers.schedules
  if decay == "cosine":
    if not warmup_steps:
      return schedules.CosineDecay(learning_rate, max(num_train_steps, 1))
    return schedules.CosineDecay(
      0.0, max(num_train_steps - warmup_steps, 1), warmup_target=learning_rate, warmup_steps=warmup_steps
    )
  if not warmup_steps:
    return learning_rate
  return schedules.PolynomialDecay(0.0, warmup_steps, end_learning_rate=learning_rate, power=1.0)


def l2_penalty(variables, coefficient):
  """`coefficient * sum_v ||v||^2` over `variables` (the paper regularizes only the weight-norm
  scales and the coupling tanh scales: pass `flow.regularized_variables`)."""
  if not variables or coefficient == 0:
    return tf.constant(0.0)
  return coefficient * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])


# Kept over tf_keras LossScaleOptimizer, which skips on non-finite gradients only: it applied a batch of infinite loss
# and finite gradients (bench/bench_library_parts.py); the Trainer skips both, running averages included.
class DynamicLossScale(tf.Module):
  """Dynamic loss scaling for float16 conditioners: differentiate `scale * loss`, then divide the gradients
  by `scale`, so small float16 gradients do not flush to zero.

  `update(is_finite)` after every step: a step whose gradients were not finite (its update is skipped) halves
  `scale` (never below 1); `growth_interval` finite steps in a row double it. Powers of two keep the scaling
  exact. The state is two variables, so it lives in checkpoints and works under `tf.distribute` (update it in
  cross-replica context with a value every replica agrees on).
  """

  def __init__(self, initial_scale=2.0**15, growth_interval=2000, name=None):
    super().__init__(name=name)
    if not initial_scale >= 1:
      raise ValueError(f"`initial_scale` must be >= 1; got {initial_scale!r}.")
    self.growth_interval = positive_int("growth_interval", growth_interval)
    first_replica = tf.VariableAggregation.ONLY_FIRST_REPLICA
    with self.name_scope:
      self.scale = tf.Variable(float(initial_scale), trainable=False, name="scale", aggregation=first_replica)
      self.finite_steps = tf.Variable(
        0, dtype=tf.int64, trainable=False, name="finite_steps", aggregation=first_replica
      )

  def update(self, is_finite):
    """Halves `scale` after a non-finite step; doubles it after `growth_interval` finite steps in a row."""
    finite_steps = tf.where(is_finite, self.finite_steps + 1, tf.zeros_like(self.finite_steps))
    grow = finite_steps >= self.growth_interval
    scale = tf.convert_to_tensor(self.scale)
    self.scale.assign(tf.where(is_finite, tf.where(grow, 2.0 * scale, scale), tf.maximum(0.5 * scale, 1.0)))
    self.finite_steps.assign(tf.where(grow, tf.zeros_like(finite_steps), finite_steps))
