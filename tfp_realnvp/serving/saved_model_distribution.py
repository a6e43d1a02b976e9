"""`load_distribution(path)`: an export of `export.export_saved_model` as a read-only `tfd.Distribution`.

```python
prior = load_distribution("exports/realnvp/1")
prior.log_prob(x), prior.sample(4, seed=1)
conditional = load_distribution("exports/conditional/1")  # an export of a conditional flow
conditional.log_prob(x, conditional_input=c), conditional.sample(4, seed=1, conditional_input=c[0])
prior.discrete_bits_per_dim(levels, num_samples=100, seed=[1, 2])  # an export with a dequantizer
score, is_outlier = prior.ood_score(images)  # an export with `ood_score`; prior.ood_settings["threshold"]
```

It needs only TensorFlow, TensorFlow Probability and the export: not the flow's code.
"""

import os
import typing

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.internal import contexts, shapes
from tfp_realnvp.internal.checks import positive_int
from tfp_realnvp.serving.serving_module import (
  DISCRETE_BITS_PER_DIM_SIGNATURE_NAME,
  OOD_SCORE_SIGNATURE_NAME,
  SIGNATURE_NAMES,
)

tfd = tfp.distributions

__all__ = ["OodScore", "SavedModelDistribution", "load_distribution"]


class OodScore(typing.NamedTuple):
  """The `ood_score` signature's outputs: `score` float32 and `is_outlier` bool, of the rows' batch shape."""

  score: tf.Tensor
  is_outlier: tf.Tensor


class SavedModelDistribution(tfd.Distribution):
  """A read-only distribution backed by a SavedModel from `export_saved_model`.

  `log_prob` takes any batch shape `[..., *event_shape]`; `sample` draws stateless samples at
  temperature 1 from the exported `sample` signature (TFP seed semantics: an int, None, or an
  int32 `[2]` stateless seed), at most the export's `max_num_samples` per call (`InvalidArgumentError`
  beyond). The batch shape is `[]`. The flow's weights are fixed: the
  distribution has no trainable variables. Gradients of `log_prob` with respect to its input
  flow through the restored graph, so it can serve as a learned prior.

  An export of a conditional flow takes the context as the flow does: `log_prob(x, conditional_input=c)` with
  `c` of shape `[..., *conditional_event_shape]`, its batch dimensions broadcast against those of `x`, and
  `sample(sample_shape, seed, conditional_input=c)` with a context per sample, `[*sample_shape,
  *conditional_event_shape]`, or one, `[*conditional_event_shape]`, for all, or any other batch of contexts
  `[*batch, *conditional_event_shape]`, which gives `[*sample_shape, *batch, *event_shape]` (the flow's rule,
  `internal.contexts.sampling_shape`). A missing context (for a
  conditional export), an extra one (for an unconditional export) or one of the wrong shape is a `ValueError`
  naming `conditional_input`, one of another dtype than float32 a `TypeError` (`internal.contexts`, as for the
  flow); a row whose context is not finite gets what the exported flow gives it, NaN.

  `log_prob` is the continuous density of dequantized values; `discrete_bits_per_dim` (exports with a
  dequantizer) is the export's bound on the discrete image's `-log2 P(levels) / D`. `ood_score` (exports with
  that signature, such as every `export_model.py` export) scores images for being out
  of distribution with the threshold fixed at export, `ood_settings`.
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
      self._discrete_signature = self._saved_model.signatures.get(DISCRETE_BITS_PER_DIM_SIGNATURE_NAME)
      self._ood_signature = self._saved_model.signatures.get(OOD_SCORE_SIGNATURE_NAME)
      input_specs = self._log_prob_signature.structured_input_signature[1]
      self._static_event_shape = input_specs["x"].shape[1:]
      context_spec = input_specs.get("conditional_input")
      self._conditional_event_shape = (
        None if context_spec is None else tuple(context_spec.shape[1:].as_list())
      )
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

  @property
  def conditional_event_shape(self):
    """The shape of one context of the exported flow, a tuple of Python ints; None for an unconditional one."""
    return self._conditional_event_shape

  def _event_shape(self):
    return self._static_event_shape

  def _event_shape_tensor(self):
    return tf.constant(self._static_event_shape.as_list(), tf.int32)

  def _batch_shape(self):
    return tf.TensorShape([])

  def _batch_shape_tensor(self):
    return tf.constant([], tf.int32)

  def _log_prob(self, x, conditional_input=None):
    return self._call_on_rows(self._log_prob_signature, "x", x, conditional_input)["log_prob"]

  def discrete_bits_per_dim(self, levels, num_samples, seed, conditional_input=None):
    """The export's `discrete_bits_per_dim` signature: the importance-weighted bound on `-log2 P(levels) / D`
    over `K = num_samples` draws, float32 `[...]` for integer pixel `levels` `[..., *event_shape]`.

    `seed` as for `sample` (an int, None, or an int32 `[2]` stateless seed; the same seed and rows give the
    same figure); `conditional_input` as for `log_prob`. The rows go to the signature as one batch, flattened
    in C order (its draws depend on the batch, see `serving_module`). Non-integer or out-of-range levels and a `K`
    above the export's `max_num_samples` are an `InvalidArgumentError` from the graph.

    Raises:
      ValueError: the export has no `discrete_bits_per_dim` signature (it was exported without a
        dequantizer), `levels` is not `[..., *event_shape]`, `num_samples` is not a positive integer, or the
        context is missing, extra or misshaped.
    """
    if self._discrete_signature is None:
      raise ValueError(
        f"The export {self._path} has no `{DISCRETE_BITS_PER_DIM_SIGNATURE_NAME}` signature: export the flow "
        "with its `dequantizer` (`export_saved_model(..., dequantizer=...)`, or `export_workdir`)."
      )
    if tf.is_tensor(levels) and levels.dtype.is_integer:  # integer levels are what the bound is of
      levels = tf.cast(levels, tf.float32)
    if not tf.is_tensor(num_samples):
      num_samples = positive_int("num_samples", num_samples)
    outputs = self._call_on_rows(
      self._discrete_signature,
      "levels",
      levels,
      conditional_input,
      num_samples=tf.cast(num_samples, tf.int32),
      seed=tfp.random.sanitize_seed(seed),
    )
    return outputs["bits_per_dim"]

  @property
  def ood_settings(self):
    """The export's `ood_score` settings, `{"threshold": float, "png_compression": int}` and, where recorded,
    `"false_positive_rate"` (the share of held-out in-distribution scores above the threshold); None for an
    export without `ood_score`."""
    settings = getattr(self._saved_model, "ood_settings", None)
    if self._ood_signature is None or settings is None:
      return None
    (values,), _ = settings.concrete_functions[0].structured_input_signature
    return dict(values)

  def ood_score(self, x):
    """The export's `ood_score` signature on images `x` `[..., *event_shape]` (pixel values in `[0,
    2**num_bits)`, levels or dequantized): an `OodScore` of `score` (`ood.complexity_corrected_score`, higher
    is more unusual) and `is_outlier` (`score` above the export's threshold), each of `x`'s batch shape.
    Values outside `[0, 2**num_bits)` or not finite are an `InvalidArgumentError` from the graph.

    Raises:
      ValueError: the export has no `ood_score` signature (an older export, or one exported without an
        `ood_threshold`), or `x` is not `[..., *event_shape]`.
    """
    if self._ood_signature is None:
      raise ValueError(
        f"The export {self._path} has no `{OOD_SCORE_SIGNATURE_NAME}` signature: export an image flow "
        "with `export_model.py` (`export_workdir`), or with `export_saved_model(..., ood_threshold=...)`."
      )
    outputs = self._call_on_rows(self._ood_signature, "x", x, None)
    return OodScore(outputs["score"], outputs["is_outlier"])

  def _call_on_rows(self, signature, rows_name, rows, conditional_input, **inputs):
    """`signature`'s `[batch]` outputs for `rows` `[..., *event_shape]` (its input `rows_name`), each reshaped to
    the batch shape, with the context broadcast against the rows' batch dimensions; `inputs` are passed on."""
    rows = self._checked_rows(rows, rows_name)
    event_shape = self._static_event_shape.as_list()
    batch_shape, static_batch_shape = contexts.batch_shape(rows, len(event_shape))
    context = self._checked_context(conditional_input)
    if context is not None:
      batch_shape, context = contexts.broadcast_batch(
        batch_shape, static_batch_shape, context, self._conditional_event_shape, rows_name
      )
      inputs["conditional_input"] = tf.reshape(context, [-1, *self._conditional_event_shape])
    rows = contexts.broadcast_to_batch(rows, batch_shape, len(event_shape))
    outputs = signature(**{rows_name: tf.reshape(rows, [-1, *event_shape])}, **inputs)
    return {name: tf.reshape(value, batch_shape) for name, value in outputs.items()}

  def _checked_rows(self, rows, rows_name):
    """`rows` as float32, checked to be `[..., *event_shape]`: statically (`ValueError` naming `rows_name`),
    and in the graph for dimensions known only then, so that no other shape with as many elements (an NCHW
    batch, flattened rows) is reshaped into events and scored."""
    if tf.is_tensor(rows) and rows.dtype != tf.float32:  # NumPy values and lists are converted
      raise TypeError(f"`{rows_name}` must be a float32 tensor, the export's dtype; got {rows.dtype.name}.")
    rows = tf.convert_to_tensor(rows, tf.float32)
    event_shape = self._static_event_shape.as_list()
    expected = f"`[..., {', '.join(map(str, event_shape))}]` (batch dimensions, then the event shape)"
    if not shapes.may_end_with(rows.shape, event_shape):
      raise ValueError(f"`{rows_name}` must have shape {expected}; got shape {rows.shape.as_list()}.")
    if rows.shape.rank is not None and rows.shape[rows.shape.rank - len(event_shape) :].is_fully_defined():
      return rows
    shape = tf.shape(rows)
    rank = tf.size(shape)
    fits = rank >= len(event_shape)
    trailing = shape[tf.maximum(rank - len(event_shape), 0) :]
    fits = fits & tf.reduce_all(
      tf.equal(tf.pad(trailing, [[0, len(event_shape) - tf.size(trailing)]]), event_shape)
    )
    check = tf.debugging.Assert(fits, [f"`{rows_name}` must have shape {expected}; got shape", shape])
    with tf.control_dependencies([check]):
      return tf.identity(rows)

  def _call_sample_n(self, sample_shape, seed, conditional_input=None, **kwargs):
    # The base class draws `n = prod(sample_shape)` samples with `_sample_n`: one context row for each.
    context = self._checked_context(conditional_input)
    if context is not None:
      sample_shape = contexts.sampling_shape(sample_shape, context, len(self._conditional_event_shape))
      static_value = tf.get_static_value(sample_shape) if tf.is_tensor(sample_shape) else sample_shape
      static_sample_shape = tf.TensorShape(None if static_value is None else np.reshape(static_value, [-1]))
      sample_shape = tf.reshape(tf.cast(sample_shape, tf.int32), [-1])
      _, context = contexts.broadcast_batch(
        sample_shape, static_sample_shape, context, self._conditional_event_shape, sampling=True
      )
      kwargs["conditional_input"] = tf.reshape(context, [-1, *self._conditional_event_shape])
    return super()._call_sample_n(sample_shape, seed, **kwargs)

  def _sample_n(self, n, seed=None, **context):
    samples = self._sample_signature(
      num_samples=tf.cast(n, tf.int32),
      temperature=tf.constant(1.0),
      seed=tfp.random.sanitize_seed(seed),
      **context,
    )
    return samples["samples"]

  def _checked_context(self, conditional_input):
    """`conditional_input` as a float32 tensor of shape `[..., *conditional_event_shape]`, or None for an
    unconditional export (`contexts.check`)."""
    return contexts.check(
      conditional_input, self._conditional_event_shape, tf.float32, f"The export {self._path}"
    )


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
