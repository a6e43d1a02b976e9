"""The paper's optimizer: Adam, L2 on the weight-norm and tanh scales, clipping by global norm.

```python
optimizer = optimization.adam(learning_rate=optimization.learning_rate_schedule(1e-3, 3000))
loss = data_loss + optimization.l2_penalty(flow.regularized_variables, 5e-5)
```
"""

import tensorflow as tf
import tf_keras as tfk

__all__ = ["adam", "l2_penalty", "learning_rate_schedule"]


def adam(learning_rate=1e-3, clip_global_norm=100.0):
  """tf_keras Adam (`beta_1=0.9, beta_2=0.999, epsilon=1e-8`) clipping gradients to
  `clip_global_norm`.

  Under a `tf.distribute` strategy the optimizer sums the replicas' gradients before clipping,
  so the clipped gradient is the one a single device computes on the global batch.
  """
  return tfk.optimizers.Adam(
    learning_rate=learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
    global_clipnorm=clip_global_norm,
  )


def learning_rate_schedule(learning_rate, num_train_steps, warmup_steps=0, decay="constant"):
  """Linear warm-up from 0 over `warmup_steps`, then `learning_rate` held (`decay='constant'`)
  or cosine-decayed to 0 at `num_train_steps` (`decay='cosine'`)."""
  if decay not in ("constant", "cosine"):
    raise ValueError(f"`decay` must be one of constant, cosine; got {decay!r}.")
  if decay == "constant" and warmup_steps == 0:
    return learning_rate
  decay_steps = max(num_train_steps - warmup_steps, 1) if decay == "cosine" else 10**12
  return tfk.optimizers.schedules.CosineDecay(
    initial_learning_rate=0.0 if warmup_steps else learning_rate,
    decay_steps=decay_steps,
    alpha=0.0 if decay == "cosine" else 1.0,
    warmup_target=learning_rate if warmup_steps else None,
    warmup_steps=warmup_steps,
  )


def l2_penalty(variables, coefficient):
  """`coefficient * sum_v ||v||^2` over `variables` (the paper regularizes only the weight-norm
  scales and the coupling tanh scales: pass `flow.regularized_variables`)."""
  if not variables or coefficient == 0:
    return tf.constant(0.0)
  return coefficient * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
