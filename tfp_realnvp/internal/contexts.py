"""The context `c` of a conditional flow `p(x | c)`, given as `conditional_input`: one place for its checks, the
broadcast of its batch against the data's, and NaN for the rows whose context is not finite.

```python
context = contexts.check(conditional_input, (10,), tf.float32, owner="This flow")  # None if unconditional
batch, context = contexts.broadcast_batch(*contexts.batch_shape(x, 3), context, (10,))
context, finite = contexts.finite_rows(context, event_rank=1)  # non-finite rows zeroed, `finite` [*batch]
log_prob = contexts.nan_rows(log_prob, finite, event_rank=0)  # NaN where the context was not finite
```
"""

import numpy as np
import tensorflow as tf

from tfp_realnvp.internal import shapes

__all__ = [
  "as_tensor",
  "assert_one_per_row",
  "batch_shape",
  "broadcast_batch",
  "broadcast_to_batch",
  "check",
  "finite_rows",
  "nan_rows",
  "sampling_shape",
  "static_sample_shape",
]


def as_tensor(conditional_input, dtype=None):
  """`conditional_input` as a tensor of `dtype` (None: any floating dtype), else a `TypeError` naming it.

  A tensor or NumPy value must already have that dtype (an int32, float64 or bool context is refused rather
  than cast); a Python number or list is converted to it.
  """
  given = getattr(conditional_input, "dtype", None)
  try:
    context = tf.convert_to_tensor(conditional_input, dtype_hint=dtype or tf.float32)
  except (TypeError, ValueError) as error:
    raise TypeError(
      "`conditional_input` must be a tensor, a NumPy array or a nested list of numbers; got "
      f"{type(conditional_input).__name__} ({error})."
    ) from None
  # A dtype hint would also cast a NumPy array: the dtype a value comes with is the one checked.
  given = context.dtype if given is None else tf.as_dtype(given)
  if (not given.is_floating) if dtype is None else given != dtype:
    expected = "a floating dtype" if dtype is None else f"dtype {tf.as_dtype(dtype).name}, the data's"
    raise TypeError(f"`conditional_input` must have {expected}; got {given.name}.")
  return context


def check(
  conditional_input,
  conditional_event_shape,
  dtype,
  owner,
  shape_name="conditional_event_shape",
  batch_rank=None,
):
  """`conditional_input` as a tensor `[..., *conditional_event_shape]` of `dtype`; None for an unconditional
  owner (`conditional_event_shape` None) given none.

  Args:
    conditional_input: the context, or None.
    conditional_event_shape: the shape of one context, a tuple of Python ints; None when the owner takes none.
    dtype: the context's dtype (see `as_tensor`).
    owner: what takes the context, for the messages (`'This flow'`, `'The export <path>'`).
    shape_name: the name under which the owner was given `conditional_event_shape`.
    batch_rank: the number of batch dimensions, when fixed (a network's `[batch, ...]`); None for any.

  Raises:
    ValueError: a context given to an unconditional owner, none given to a conditional one, or one whose
      shape is not `[..., *conditional_event_shape]`.
    TypeError: a context of another dtype (see `as_tensor`).
  """
  if conditional_event_shape is None:
    if conditional_input is not None:
      raise ValueError(
        f"{owner} is unconditional: it takes no `conditional_input`; got one of shape "
        f"{_shape_text(conditional_input)}."
      )
    return None
  expected = tuple(conditional_event_shape)
  batch_text = "..." if batch_rank is None else ", ".join(["batch"] * batch_rank)
  shape_text = f"[{batch_text}, {', '.join(map(str, expected))}]"
  if conditional_input is None:
    raise ValueError(
      f"{owner} is conditional (`{shape_name}={expected}`): pass the context as `conditional_input` of shape "
      f"`{shape_text}`."
    )
  context = as_tensor(conditional_input, dtype)
  shape = context.shape
  misshaped = not shapes.may_end_with(shape, expected) or (
    batch_rank is not None and shape.rank is not None and shape.rank != batch_rank + len(expected)
  )
  if misshaped:
    raise ValueError(f"`conditional_input` must have shape `{shape_text}`; got shape {_shape_text(context)}.")
  return context


def broadcast_batch(
  data_batch_shape, static_batch_shape, context, conditional_event_shape, data_name="x", sampling=False
):
  """`(batch_shape, context)`: the data's batch shape broadcast with the context's, and the context broadcast
  to it.

  `data_batch_shape` is the data's batch shape as an int32 tensor, `static_batch_shape` as a `tf.TensorShape` (for
  the checks); `context` is `check`'s. With `sampling`, the data's batch is the sample shape, which the
  context's batch must broadcast to without growing it (a context per sample, or one for all).

  Raises:
    ValueError: the batch shapes do not broadcast (naming `conditional_input` and `data_name`).
  """
  rank = len(conditional_event_shape)
  _, context_batch = batch_shape(context, rank)
  try:
    static = tf.broadcast_static_shape(tf.TensorShape(static_batch_shape), context_batch)
  except ValueError:
    static = None
  if static is None or (sampling and not static.is_compatible_with(static_batch_shape)):
    event_text = ", ".join(map(str, conditional_event_shape))
    expected = (
      f"shape `[*sample_shape, {event_text}]` (sample shape {_shape_text(static_batch_shape)}) or "
      f"`[{event_text}]`"
      if sampling
      else f"batch dimensions that broadcast against those of `{data_name}` {_shape_text(static_batch_shape)}"
    )
    raise ValueError(f"`conditional_input` must have {expected}; got shape {_shape_text(context)}.")
  context_batch_shape = batch_shape(context, rank)[0]
  # Dimensions known only when the graph runs are checked then, by name (TensorFlow's own message would be
  # "Incompatible shapes").
  size = tf.maximum(tf.size(data_batch_shape), tf.size(context_batch_shape))
  data_dims, context_dims = (
    tf.concat([tf.ones([size - tf.size(dims)], tf.int32), tf.cast(dims, tf.int32)], 0)
    for dims in (data_batch_shape, context_batch_shape)
  )
  fits = (context_dims == data_dims) | (context_dims == 1)
  if not sampling:
    fits = fits | (data_dims == 1)
  else:
    fits = fits & (tf.size(context_batch_shape) <= tf.size(data_batch_shape))
  what = (
    "sample shape (a context per sample, or one for all; for a batch of contexts known only when the graph "
    "runs, sample `flow.condition(conditional_input)`)"
    if sampling
    else f"batch shape of `{data_name}`"
  )
  check = tf.debugging.Assert(
    tf.reduce_all(fits),
    [
      f"`conditional_input` must have batch dimensions that broadcast against the {what}; got batch shapes",
      context_batch_shape,
      "and",
      data_batch_shape,
    ],
  )
  with tf.control_dependencies([check]):
    batch = tf.broadcast_dynamic_shape(data_batch_shape, context_batch_shape)
  return batch, broadcast_to_batch(context, batch, rank)


def sampling_shape(sample_shape, context, context_rank):
  """The shape to draw for `sample(sample_shape, conditional_input=context)`; `context` is `check`'s.

  A context whose batch shape broadcasts to the sample shape is one per sample (or one for all, TFP's convention for
  a conditional bijector's `conditional_input`): `sample_shape` as it is. Any other batch of contexts is a batch, as
  for a distribution of that batch shape (`flow.condition(context)`): `[*sample_shape, *context_batch]`. When the
  shapes are known only when the graph runs, the context is taken as one per sample (checked then).
  """
  static_sample = static_sample_shape(sample_shape)
  if context.shape.rank is None or static_sample.rank is None:
    return sample_shape  # undecided until the graph runs: one per sample, checked then
  batch = context.shape[: context.shape.rank - context_rank]
  aligned = static_sample[static_sample.rank - batch.rank :] if batch.rank <= static_sample.rank else None
  if aligned is not None and all(
    b is None or s is None or b in (1, s) for b, s in zip(batch.as_list(), aligned.as_list())
  ):
    return (
      sample_shape  # one context per sample or one for all (an unknown size is checked when the graph runs)
    )
  if batch.is_fully_defined() and not tf.is_tensor(sample_shape):
    return [*static_sample.as_list(), *batch.as_list()]
  batch_dims = tf.shape(context)[: tf.rank(context) - context_rank]
  return tf.concat([tf.reshape(tf.cast(sample_shape, tf.int32), [-1]), batch_dims], 0)


def static_sample_shape(sample_shape):
  """`sample_shape` (an int, a sequence of ints or an integer tensor) as a `tf.TensorShape`, unknown sizes None."""
  value = tf.get_static_value(sample_shape) if tf.is_tensor(sample_shape) else sample_shape
  if value is not None:
    return tf.TensorShape(np.reshape(value, [-1]).tolist())
  if sample_shape.shape.rank == 0:
    return tf.TensorShape([None])
  length = sample_shape.shape.num_elements()
  return tf.TensorShape(None if length is None else [None] * length)


def broadcast_to_batch(tensor, batch, event_rank):
  """`tensor` `[*batch, *event]` (`event_rank` trailing event dimensions) with its batch broadcast to `batch`, a
  1-D int32 tensor."""
  return tf.broadcast_to(tensor, tf.concat([batch, tf.shape(tensor)[tf.rank(tensor) - event_rank :]], 0))


def finite_rows(context, event_rank):
  """`(context, finite)`: `finite` (`[*batch]`, bool) says which contexts hold only finite values, and the others
  are replaced by zeros, so that the layers never see them (no NaN gradient reaches the other rows); `nan_rows`
  then marks their outputs."""
  finite = tf.reduce_all(tf.math.is_finite(context), axis=list(range(-event_rank, 0)))
  finite_events = tf.reshape(finite, tf.concat([tf.shape(finite), tf.ones([event_rank], tf.int32)], 0))
  return tf.where(finite_events, context, tf.zeros([], context.dtype)), finite


def nan_rows(values, finite, event_rank):
  """`values` `[*batch, *event]` (`event_rank` event dimensions) with NaN in every row where `finite` (`[*batch]`,
  broadcast against the batch) is False: the output of a row whose context was not finite. `finite` None (no
  context) leaves `values` as they are."""
  if finite is None:
    return values
  finite = tf.reshape(finite, tf.concat([tf.shape(finite), tf.ones([event_rank], tf.int32)], 0))
  return tf.where(finite, values, tf.constant(float("nan"), values.dtype))


def assert_one_per_row(context, conditional_event_shape, num_rows, rows_text):
  """`context` checked when the graph runs to be `[num_rows, *conditional_event_shape]`: one context per row
  (`rows_text` says what a row is). For serving signatures, whose C++ callers feed any shape."""
  context = tf.ensure_shape(context, [None, *conditional_event_shape])
  check_rows = tf.debugging.assert_equal(
    tf.shape(context)[0], num_rows, message=f"`conditional_input` must have one row (context) per {rows_text}"
  )
  with tf.control_dependencies([check_rows]):
    return tf.identity(context)


def batch_shape(tensor, event_rank):
  """`(batch_shape, static_batch_shape)` of `tensor` `[*batch, *event]` with `event_rank` event dimensions: an
  int32 tensor and a `tf.TensorShape` (unknown when the rank is)."""
  static = tensor.shape
  return tf.shape(tensor)[: tf.rank(tensor) - event_rank], (
    static if static.rank is None else static[: static.rank - event_rank]
  )


def _shape_text(value):
  """The static shape of `value` (a tensor, array, list or `tf.TensorShape`) as a list, or 'unknown'."""
  shape = value if isinstance(value, tf.TensorShape) else tf.TensorShape(np.shape(value))
  return "unknown" if shape.rank is None else shape.as_list()
