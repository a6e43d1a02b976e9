"""`ServingModule`: a flow's inference-mode computations as `tf.function`s with the serving signatures.

| signature | inputs | outputs |
|---|---|---|
| `serving_default`, `log_prob` | `x` float32 `[batch, *event_shape]` | `log_prob` float32 `[batch]`; flows of pixel data also `bits_per_dim` float32 `[batch]` |
| `sample` | `num_samples` int32 `[]` (at most `max_num_samples`), `temperature` float32 `[]`, `seed` int32 `[2]` | `samples` float32 `[num_samples, *event_shape]`; flows of pixel data also `images` uint8 |
| `encode` | `x` float32 `[batch, *event_shape]` | `z` float32 `[batch, *event_shape]` |
| `decode` | `z` float32 `[batch, *event_shape]` | `x` float32 `[batch, *event_shape]` |

The names of the signatures, of their inputs and of their outputs are public API (`export_lib` writes them,
`saved_model_distribution` reads them). A flow of pixel data is one whose `num_bits` is not None.
"""

import math
import numbers

import tensorflow as tf

from tfp_realnvp import data

__all__ = ["DEFAULT_MAX_NUM_SAMPLES", "SIGNATURE_NAMES", "ServingModule"]

SIGNATURE_NAMES = ("serving_default", "log_prob", "sample", "encode", "decode")

# The `sample` signature's default limit on `num_samples`: a request's memory and time grow linearly with it
# (measured before the limit: 10**5 digits samples took 45 s and 4.5 GB; 3 * 10**7 exhausted memory).
DEFAULT_MAX_NUM_SAMPLES = 4096


class ServingModule(tf.Module):
  """A flow's inference-mode computations as `tf.function`s with fixed input signatures.

  Every function runs the flow with `training=False` (batch-norm running averages), so a row's outputs do
  not depend on the rest of its batch. `log_prob` is the flow's: a row holding NaN scores NaN, any other row
  outside the support (an infinite value, or for pixel data a pixel outside the preprocessing's range,
  `(-0.889, 16.889)` for 4 bits) scores `-inf`
  (`bits_per_dim` `+inf`). Inputs whose shape is not `[batch, *event_shape]` fail with
  `InvalidArgumentError`, also in the C++ loader, which does not check shapes against the signature.
  `sample` rejects a `num_samples` outside `[0, max_num_samples]` and a negative or non-finite `temperature`
  with `InvalidArgumentError`, checked in the graph, so a server refuses a request that would exhaust it.
  """

  def __init__(self, flow, max_num_samples=DEFAULT_MAX_NUM_SAMPLES, name="realnvp_serving"):
    super().__init__(name=name)
    event_shape = tf.TensorShape(flow.event_shape)
    if not event_shape.is_fully_defined():
      raise ValueError(f"`flow.event_shape` must be fully defined to export; got {event_shape}.")
    # int32 shape arithmetic must hold `num_samples * event size` elements.
    max_allowed = (2**31 - 1) // event_shape.num_elements()
    if (
      isinstance(max_num_samples, bool)
      or not isinstance(max_num_samples, numbers.Integral)
      or not 1 <= max_num_samples <= max_allowed
    ):
      raise ValueError(
        f"`max_num_samples` must be an integer in [1, {max_allowed}] (int32 room for samples of shape "
        f"{event_shape}); got {max_num_samples!r}."
      )
    self._max_num_samples = int(max_num_samples)
    self.flow = flow
    self._event_shape = event_shape.as_list()
    self._num_bits = flow.num_bits
    batch_spec = [None, *self._event_shape]
    self.log_prob = tf.function(
      self._log_prob, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")]
    )
    self.sample = tf.function(
      self._sample,
      input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([2], tf.int32, name="seed"),
      ],
    )
    self.encode = tf.function(self._encode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")])
    self.decode = tf.function(self._decode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="z")])

  def signatures(self):
    """The `{signature name: concrete function}` map for `tf.saved_model.save`."""
    log_prob = self.log_prob.get_concrete_function()
    return {
      "serving_default": log_prob,
      "log_prob": log_prob,
      "sample": self.sample.get_concrete_function(),
      "encode": self.encode.get_concrete_function(),
      "decode": self.decode.get_concrete_function(),
    }

  def _event_rows(self, rows):
    """`rows`, checked at run time to be `[batch, *event_shape]`.

    The C++ loader behind TF Serving feeds tensors without checking them against the
    signature, and convolutions take any image size: the graph checks. Every op that reads
    an input reads this check's output, so a wrong shape always fails here, by name.
    """
    return tf.ensure_shape(rows, [None, *self._event_shape])

  def _log_prob(self, x):
    x = tf.cast(self._event_rows(x), self.flow.dtype)
    log_prob = tf.cast(self.flow.log_prob(x, training=False), tf.float32)
    outputs = {"log_prob": log_prob}
    if self._num_bits is not None:
      # `flow.bits_per_dim(x)`'s formula applied to the log_prob above: calling it would run the flow a second
      # time in the graph (measured with bench/bench_export.py, small model: SavedModel 19.9 -> 22.4 MB and
      # about 0.65x the log_prob throughput).
      outputs["bits_per_dim"] = -log_prob / (math.prod(self._event_shape) * math.log(2.0))
    return outputs

  def _sample(self, num_samples, temperature, seed):
    checks = [
      tf.debugging.assert_non_negative(num_samples, message="`num_samples` must be non-negative"),
      tf.debugging.assert_less_equal(
        num_samples,
        self._max_num_samples,
        message=f"`num_samples` must be at most `max_num_samples`, set at export to {self._max_num_samples}",
      ),
      tf.debugging.assert_non_negative(temperature, message="`temperature` must be non-negative"),
      tf.debugging.assert_all_finite(temperature, message="`temperature` must be finite"),
    ]
    with tf.control_dependencies(checks):
      samples = self.flow.sample(
        num_samples,
        seed=seed,
        temperature=tf.cast(temperature, self.flow.dtype),
      )
    samples = self._event_rows(tf.cast(samples, tf.float32))
    outputs = {"samples": samples}
    if self._num_bits is not None:
      outputs["images"] = data.uint8_images(samples, self._num_bits)
    return outputs

  def _encode(self, x):
    x = self._event_rows(x)
    z = self.flow.encode(tf.cast(x, self.flow.dtype))
    return {"z": self._event_rows(tf.cast(z, tf.float32))}

  def _decode(self, z):
    z = self._event_rows(z)
    x = self.flow.decode(tf.cast(z, self.flow.dtype))
    return {"x": self._event_rows(tf.cast(x, tf.float32))}
