"""`load_distribution(path)`: an export of `export_lib.export_saved_model` as a read-only `tfd.Distribution`.

```python
prior = load_distribution("exports/realnvp/1")
prior.log_prob(x), prior.sample(4, seed=1)
```

It needs only TensorFlow, TensorFlow Probability and the export: not the flow's code.
"""

import os

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.serving import SIGNATURE_NAMES

tfd = tfp.distributions

__all__ = ["SavedModelDistribution", "load_distribution"]


class SavedModelDistribution(tfd.Distribution):
  """A read-only distribution backed by a SavedModel from `export_saved_model`.

  `log_prob` takes any batch shape `[..., *event_shape]`; `sample` draws stateless samples at
  temperature 1 from the exported `sample` signature (TFP seed semantics: an int, None, or an
  int32 `[2]` stateless seed), at most the export's `max_num_samples` per call (`InvalidArgumentError`
  beyond). The batch shape is `[]`. The flow's weights are fixed: the
  distribution has no trainable variables. Gradients of `log_prob` with respect to its input
  flow through the restored graph, so it can serve as a learned prior.
  """

  def __init__(self, path, validate_args=False, allow_nan_stats=True, name="SavedModelDistribution"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._path = os.fspath(path)
      self._saved_model = _load_saved_model(self._path)
      missing = sorted(set(SIGNATURE_NAMES) - set(self._saved_model.signatures))
      if missing:
        raise ValueError(
          f"`path` must hold a SavedModel from `export_saved_model` with signatures "
          f"{list(SIGNATURE_NAMES)}; {self._path} lacks {missing}."
        )
      self._log_prob_signature = self._saved_model.signatures["log_prob"]
      self._sample_signature = self._saved_model.signatures["sample"]
      x_spec = self._log_prob_signature.structured_input_signature[1]["x"]
      self._static_event_shape = x_spec.shape[1:]
      super().__init__(
        dtype=tf.float32,
        reparameterization_type=tfd.NOT_REPARAMETERIZED,
        validate_args=validate_args,
        allow_nan_stats=allow_nan_stats,
        parameters=parameters,
        name=name,
      )

  @property
  def path(self):
    return self._path

  def _event_shape(self):
    return self._static_event_shape

  def _event_shape_tensor(self):
    return tf.constant(self._static_event_shape.as_list(), tf.int32)

  def _batch_shape(self):
    return tf.TensorShape([])

  def _batch_shape_tensor(self):
    return tf.constant([], tf.int32)

  def _log_prob(self, x):
    x = tf.convert_to_tensor(x, tf.float32)
    event_rank = self._static_event_shape.rank
    sample_shape = tf.shape(x)[: tf.rank(x) - event_rank]
    rows = tf.reshape(x, [-1, *self._static_event_shape.as_list()])
    log_prob = self._log_prob_signature(x=rows)["log_prob"]
    return tf.reshape(log_prob, sample_shape)

  def _sample_n(self, n, seed=None):
    samples = self._sample_signature(
      num_samples=tf.cast(n, tf.int32),
      temperature=tf.constant(1.0),
      seed=tfp.random.sanitize_seed(seed),
    )
    return samples["samples"]


def _load_saved_model(path):
  """`tf.saved_model.load(path)`, with a damaged or missing export reported as one error naming `path`."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"`path` must be an export's version directory; {path} is not a directory.")
  try:
    return tf.saved_model.load(path)
  except (OSError, ValueError, LookupError, tf.errors.OpError) as error:
    # A truncated saved_model.pb raises OSError, a missing variables/ FileNotFoundError, a truncated
    # variables file IndexError, each from deep inside TensorFlow.
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise ValueError(
      f"`path` {path} does not hold a complete SavedModel (damaged or partly copied? export it again): {reason}"
    ) from None


def load_distribution(path):
  """Loads an export of `export_saved_model` as a read-only `tfd.Distribution`.

  Raises:
    FileNotFoundError: `path` is not a directory.
    ValueError: `path` holds no complete SavedModel (a file missing or cut short), or not one of
      `export_saved_model`'s.
  """
  return SavedModelDistribution(path)
