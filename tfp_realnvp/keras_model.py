"""`FlowModel`: a tf_keras `Model` around a flow, so `model.fit(dataset)` trains it by maximum likelihood.

```python
strategy = tf.distribute.MirroredStrategy()      # or none at all
with strategy.scope():
  model = keras_model.FlowModel(RealNVP.from_preset("digits"))
  model.compile()                                 # the paper's Adam unless you pass an optimizer
model.fit(data.load("digits", "train", batch_size=64, training=True), steps_per_epoch=100, epochs=5,
          callbacks=[tfk.callbacks.TensorBoard("runs/keras"),
                     tfk.callbacks.ModelCheckpoint("runs/keras/ckpt", save_weights_only=True)])
model.evaluate(data.load("digits", "test", batch_size=64, training=False))   # {"bits_per_dim": ...}
```

`FlowModel.from_train_config(configs.get_config())` builds the flow a `TrainConfig` describes, as
`train_lib` does, so the two paths train (and checkpoint) the same flow.
"""

import tensorflow as tf
import tf_keras as tfk

from tfp_realnvp import flow_builder, losses, optimization

__all__ = ["FlowModel"]


class FlowModel(tfk.Model):
  """Trains `flow` on batches of images (or `(images, labels)` pairs, labels ignored) with `fit`.

  The loss is `losses.bits_per_dim_loss`: the mean bits/dim of the batch plus `l2_coefficient * sum ||v||^2`
  over `flow.regularized_variables`; under a strategy it is averaged over the global batch, so N replicas take
  the step one device takes. `call(x)` returns the per-example bits/dim. `fit` reports `loss` and `bits_per_dim`,
  `evaluate` reports `bits_per_dim` in inference mode (batch-norm running averages, no dropout).
  Build the model, and compile it, inside `strategy.scope()`.
  """

  def __init__(self, flow, l2_coefficient=5e-5, **kwargs):
    super().__init__(**kwargs)
    if flow.num_bits is None:
      raise ValueError(
        f"`flow` must be an image flow over pixel values with `num_bits` (bits/dim is the loss); got {flow!r}."
      )
    self.flow = flow
    self.l2_coefficient = l2_coefficient
    self._loss_tracker = tfk.metrics.Mean(name="loss")
    self._bits_per_dim_tracker = tfk.metrics.Mean(name="bits_per_dim")

  @classmethod
  def from_train_config(cls, config, spec=None, **kwargs):
    """The model of `config`, a `configs.TrainConfig`: its flow (`flow_builder.build_flow(config, spec)`) and
    `l2_coefficient`. Compile it with the optimizer of your choice (default: `optimization.adam()`).

    Raises:
      ConfigError: `config` cannot build a flow for its dataset.
    """
    return cls(flow_builder.build_flow(config, spec), l2_coefficient=config.l2_coefficient, **kwargs)

  def compile(self, optimizer=None, **kwargs):
    """`tfk.Model.compile`, with the paper's optimizer (`optimization.adam()`) as the default."""
    super().compile(optimizer=optimizer or optimization.adam(), **kwargs)

  @property
  def metrics(self):
    return [self._loss_tracker, self._bits_per_dim_tracker]

  def call(self, images, training=False):
    return self.flow.bits_per_dim(images, training=training)

  def train_step(self, batch):
    images = _images(batch)
    variables = self.flow.trainable_variables
    with tf.GradientTape() as tape:
      # The flow directly, not `self(...)`: Keras' first `__call__` may run `call` an extra time on one replica,
      # and batch norm's cross-replica all-reduce would then no longer pair up across replicas. The loss is
      # this replica's share of the global batch's: the optimizer sums the replicas' gradients.
      loss_terms = losses.bits_per_dim_loss(self.flow, images, self.l2_coefficient)
    loss = loss_terms.total
    gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    self.optimizer.apply_gradients(zip(gradients, variables))
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    self._loss_tracker.update_state(loss * num_replicas)
    self._bits_per_dim_tracker.update_state(loss_terms.bits_per_dim)
    return {metric.name: metric.result() for metric in self.metrics}

  def test_step(self, batch):
    self._bits_per_dim_tracker.update_state(self.flow.bits_per_dim(_images(batch), training=False))
    return {"bits_per_dim": self._bits_per_dim_tracker.result()}


def _images(batch):
  return batch[0] if isinstance(batch, (tuple, list)) else batch
