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

# A conditional flow takes `(x, conditional_input)` batches; a flow over R^D reports nats per dimension.
posterior = keras_model.FlowModel(RealNVP(event_shape=(2,), conditional_event_shape=(3,)))
posterior.compile()
posterior.fit(thetas, contexts, batch_size=256, epochs=10)   # {"loss": ..., "nats_per_dim": ...}
```

`FlowModel.from_train_config(configs.get_config())` builds the flow a `TrainConfig` describes, as
`train_lib` does, so the two paths train (and checkpoint) the same flow.

Saving: `model.save("m.keras")` or `model.save("saved_model_dir")`, then `tfk.models.load_model(path)`;
weights with `model.save_weights("ckpt")` (a TF checkpoint, also what `ModelCheckpoint` writes) or
`model.save_weights("w.weights.h5")`. The legacy `.h5`/`.hdf5` formats are refused: they store only Keras
layers, and the flow is a `tf.Module`.
"""

import os

import tensorflow as tf
import tf_keras as tfk

from tfp_realnvp.flows import ImageRealNVP, RealNVP, VectorRealNVP
from tfp_realnvp.training import flow_builder, losses, optimization

__all__ = ["FlowModel"]

_WORKING_FORMATS = (
  "save the weights with `save_weights('w.weights.h5')` or as a TF checkpoint with `save_weights('ckpt')`"
  " (no .h5 suffix), the whole model with `save('m.keras')` or as a SavedModel with `save('saved_model_dir')`"
)


@tfk.utils.register_keras_serializable(package="tfp_realnvp")
class FlowModel(tfk.Model):
  """Trains `flow`, a `RealNVP` (image or vector, conditional or not), by maximum likelihood with `fit`.

  Batches: `x` (or `(x, labels)` pairs, labels ignored) for an unconditional flow; `(x, conditional_input)`
  pairs for a conditional one, the context of shape `[batch, *flow.conditional_event_shape]` (class labels
  as one-hot vectors: `dataset.map(lambda x, y: (x, tf.one_hot(y, 10)))`); `fit(x, conditional_input)` with
  arrays works too. The loss is the mean per-dimension negative log-likelihood plus
  `l2_coefficient * sum ||v||^2` over `flow.regularized_variables`: in bits (`bits_per_dim`,
  `losses.bits_per_dim_loss`) for an image flow, in nats (`nats_per_dim`, `losses.nats_per_dim_loss`) for a
  flow over `R^D`, which has no pixels. Under a strategy it is averaged over the global batch, so N replicas
  take the step one device takes. `call(x)` (`call((x, conditional_input))` when conditional) returns the
  per-example figure. `fit` reports `loss` and the figure (`bits_per_dim` or `nats_per_dim`), `evaluate` the
  figure in inference mode (batch-norm running averages, no dropout). Build the model, and compile it,
  inside `strategy.scope()`. The model is built when constructed (the flow has made its variables), so
  `summary()` and `count_params()` work at once.

  `get_config()` records the flow's constructor arguments (`flow.parameters`), so `.keras` files and
  SavedModels of an `ImageRealNVP` or a `VectorRealNVP` reload with
  `tfk.models.load_model`; another flow raises `NotImplementedError` there (its weights still save with
  `save_weights`).
  """

  def __init__(self, flow, l2_coefficient=5e-5, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(flow, RealNVP):
      raise ValueError(f"`flow` must be a RealNVP (image or vector flow); got {flow!r}.")
    self.flow = flow
    self.l2_coefficient = l2_coefficient
    self.per_dim_name = "nats_per_dim" if flow.num_bits is None else "bits_per_dim"
    self._loss_tracker = tfk.metrics.Mean(name="loss")
    self._per_dim_tracker = tfk.metrics.Mean(name=self.per_dim_name)
    batch_shape = (None, *flow.event_shape)
    if flow.conditional_event_shape is None:
      self.build(batch_shape)
    else:
      self.build((batch_shape, (None, *flow.conditional_event_shape)))

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

  def compile_from_config(self, config):
    """Compiles a reloaded model as it was saved, with its optimizer's variables made so its state loads."""
    self.compile(**tfk.saving.deserialize_keras_object(config))
    self.optimizer.build(self.trainable_variables)

  def build(self, input_shape):
    """Marks the model built for inputs of `input_shape`; creates nothing.

    `input_shape` is `[batch, *flow.event_shape]`, or for a conditional flow the pair of that and
    `[batch, *flow.conditional_event_shape]`.
    """
    event_spec = tf.TensorSpec((None, *self.flow.event_shape), self.flow.dtype)
    if self.flow.conditional_event_shape is None:
      shapes, specs = (input_shape,), event_spec
    else:
      context_spec = tf.TensorSpec((None, *self.flow.conditional_event_shape), self.flow.dtype)
      shapes, specs = tuple(input_shape), (event_spec, context_spec)
    expected = tf.nest.flatten(specs)
    if len(shapes) != len(expected) or any(
      not isinstance(shape, (tuple, list, tf.TensorShape)) or not spec.shape.is_compatible_with(shape)
      for shape, spec in zip(shapes, expected)
    ):
      wanted = " and ".join(str(spec.shape.as_list()) for spec in expected)
      raise ValueError(
        f"`input_shape` must be {wanted} (the flow's events, then its contexts); got {input_shape}."
      )
    # What `model.save` traces `call` with (Keras records it on the first `model(x)`, which `fit` never makes).
    self._set_save_spec(specs)
    # `Layer.build`, not `Model.build`: the latter would trace `call` only to make variables, which exist.
    tfk.layers.Layer.build(self, input_shape)

  def get_config(self):
    """`name`, `l2_coefficient` and `flow`: the `ImageRealNVP` or `VectorRealNVP` arguments that rebuild it."""
    if type(self.flow) not in (ImageRealNVP, VectorRealNVP):
      raise NotImplementedError(
        f"FlowModel's config rebuilds only an ImageRealNVP or a VectorRealNVP, so a model of a "
        f"{type(self.flow).__name__} cannot be saved whole: save its weights with "
        "`save_weights('w.weights.h5')` or as a TF checkpoint with `save_weights('ckpt')`."
      )
    flow_arguments = {
      key: tf.as_dtype(value).name if isinstance(value, tf.DType) else value
      for key, value in self.flow.parameters.items()
    }
    return {"name": self.name, "l2_coefficient": self.l2_coefficient, "flow": flow_arguments}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """The model of `get_config()`: a new flow of the recorded arguments, with fresh weights."""
    config = dict(config)
    flow_arguments = dict(config.pop("flow"))
    for key in ("dtype", "compute_dtype"):
      if flow_arguments.get(key) is not None:
        flow_arguments[key] = tf.as_dtype(flow_arguments[key])
    return cls(RealNVP(**flow_arguments), **config)

  def save(self, filepath, overwrite=True, save_format=None, **kwargs):
    """`tfk.Model.save` to a `.keras` file or a SavedModel directory; the legacy HDF5 format is refused."""
    if _is_legacy_h5(filepath, save_format):
      raise ValueError(f"FlowModel cannot be saved to the legacy HDF5 file {filepath!r}; {_WORKING_FORMATS}.")
    super().save(filepath, overwrite=overwrite, save_format=save_format, **kwargs)

  def save_weights(self, filepath, overwrite=True, save_format=None, options=None):
    """`tfk.Model.save_weights` as a TF checkpoint or a `.weights.h5` file; the legacy HDF5 format is refused."""
    if _is_legacy_h5(filepath, save_format):
      raise ValueError(
        f"FlowModel cannot save its weights to the legacy HDF5 file {filepath!r}: it holds only Keras layers' "
        f"weights, and the flow is a tf.Module; {_WORKING_FORMATS}."
      )
    super().save_weights(filepath, overwrite=overwrite, save_format=save_format, options=options)

  def load_weights(self, filepath, skip_mismatch=False, by_name=False, options=None):
    """`tfk.Model.load_weights`; a TF checkpoint also restores the optimizer's state when compiled.

    A TF checkpoint holds the optimizer's state too: a compiled model makes its optimizer's variables first so
    they take the saved values; an uncompiled one leaves them out (`expect_partial`) instead of warning about
    each one.
    """
    if _is_legacy_h5(filepath, None):
      raise ValueError(
        f"FlowModel cannot load weights from the legacy HDF5 file {filepath!r} (it cannot hold the flow); "
        f"{_WORKING_FORMATS}."
      )
    if self.optimizer is not None:
      self.optimizer.build(self.trainable_variables)
    status = super().load_weights(filepath, skip_mismatch=skip_mismatch, by_name=by_name, options=options)
    if status is not None and self.optimizer is None:
      status.expect_partial()
    return status

  def save_own_variables(self, store):
    """The flow's variables, by their position in `flow.variables` (`.keras` and `.weights.h5` files)."""
    for index, variable in enumerate(self.flow.variables):
      store[str(index)] = variable.numpy()

  def load_own_variables(self, store):
    """Assigns what `save_own_variables` stored; a file of another flow is an error naming the first mismatch."""
    variables = self.flow.variables
    if len(store.keys()) != len(variables):
      raise ValueError(
        f"The saved weights hold {len(store.keys())} flow variables; this model's flow has {len(variables)}."
      )
    for index, variable in enumerate(variables):
      value = store[str(index)]
      if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
          f"The saved flow variable {index} has shape {tuple(value.shape)}; this model's {variable.name} has "
          f"{tuple(variable.shape)}."
        )
      variable.assign(value)

  @property
  def metrics(self):
    return [self._loss_tracker, self._per_dim_tracker]

  def call(self, inputs, training=False):
    if self.flow.conditional_event_shape is None:
      return self._per_dim(inputs, None, training)
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
      raise ValueError(
        "A conditional flow's FlowModel is called on `(x, conditional_input)`; got "
        f"{type(inputs).__name__} {inputs!r:.200}."
      )
    return self._per_dim(*inputs, training)

  def train_step(self, batch):
    x, context = self._unpack(batch)
    variables = self.flow.trainable_variables
    loss_of = losses.nats_per_dim_loss if self.flow.num_bits is None else losses.bits_per_dim_loss
    with tf.GradientTape() as tape:
      # The flow directly, not `self(...)`: Keras' first `__call__` may run `call` an extra time on one replica,
      # and batch norm's cross-replica all-reduce would then no longer pair up across replicas. The loss is
      # this replica's share of the global batch's: the optimizer sums the replicas' gradients.
      loss_terms = loss_of(self.flow, x, self.l2_coefficient, conditional_input=context)
    loss = loss_terms.total
    gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    self.optimizer.apply_gradients(zip(gradients, variables))
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    self._loss_tracker.update_state(loss * num_replicas)
    self._per_dim_tracker.update_state(loss_terms.bits_per_dim)
    return {metric.name: metric.result() for metric in self.metrics}

  def test_step(self, batch):
    self._per_dim_tracker.update_state(self._per_dim(*self._unpack(batch), training=False))
    return {self.per_dim_name: self._per_dim_tracker.result()}

  def _per_dim(self, x, conditional_input, training):
    """Per-example bits/dim (image flows) or nats per dimension (vector flows)."""
    if self.flow.num_bits is not None:
      return self.flow.bits_per_dim(x, training=training, conditional_input=conditional_input)
    return -self.flow.log_prob(x, training=training, conditional_input=conditional_input) / self.flow.num_dims

  def _unpack(self, batch):
    """`(x, conditional_input)` of a batch of `fit`/`evaluate`: the context is None for an unconditional flow.

    Keras hands over `x`, `(x, y)` or `(x, y, sample_weight)`; `x` may itself be the pair `(x, context)`.
    """
    x, y, _ = tfk.utils.unpack_x_y_sample_weight(batch)
    if self.flow.conditional_event_shape is None:
      return self._checked_images(x), None  # `y`, such as class labels, is not used by an unconditional flow
    if isinstance(x, (tuple, list)) and len(x) == 2 and y is None:
      x, y = x
    if y is None or isinstance(x, (tuple, list)):
      raise ValueError(
        "A conditional flow's FlowModel trains on `(x, conditional_input)` batches (or `fit(x, "
        f"conditional_input)`), the context of shape [batch, {', '.join(map(str, self.flow.conditional_event_shape))}]; "
        "got batches without a context."
      )
    return self._checked_images(x), y

  def _checked_images(self, x):
    """`x`, checked to be `[batch, *flow.event_shape]`: statically here, and in the graph, since after a first
    `fit` Keras retraces with relaxed (unknown) dimensions."""
    images = tf.convert_to_tensor(x)
    event_shape = list(self.flow.event_shape)
    expected = f"[batch, {', '.join(map(str, event_shape))}] (the flow's events)"
    static = images.shape
    if static.rank is not None and not tf.TensorShape([None, *event_shape]).is_compatible_with(static):
      raise ValueError(f"`x` must have shape {expected}; got shape {static.as_list()}.")
    check = tf.debugging.assert_equal(
      tf.shape(images)[1:] if static.rank is not None else tf.shape(tf.shape(images)),
      tf.constant(event_shape if static.rank is not None else [len(event_shape) + 1], tf.int32),
      message=f"`x` must have shape {expected}",
    )
    with tf.control_dependencies([check]):
      return tf.identity(images)


def _is_legacy_h5(filepath, save_format):
  """Whether tf_keras would use its legacy HDF5 format (Keras layers' weights only) for `filepath`."""
  path = str(filepath)
  if path.endswith(".weights.h5"):
    return False
  if save_format is not None:
    return save_format in ("h5", "hdf5")
  return path.endswith((".h5", ".hdf5")) or not isinstance(filepath, (str, bytes, os.PathLike))
