r"""`ServingModule`: a flow's inference-mode computations as `tf.function`s with the serving signatures.

| signature | inputs | outputs |
|---|---|---|
| `serving_default`, `log_prob` | `x` float32 `[batch, *event_shape]` | `log_prob` float32 `[batch]`; flows of pixel data also `bits_per_dim` float32 `[batch]` |
| `sample` | `num_samples` int32 `[]` (at most `max_num_samples`), `temperature` float32 `[]`, `seed` int32 `[2]` | `samples` float32 `[num_samples, *event_shape]`; flows of pixel data also `images` uint8 |
| `encode` | `x` float32 `[batch, *event_shape]` | `z` float32 `[batch, *event_shape]` |
| `decode` | `z` float32 `[batch, *event_shape]` | `x` float32 `[batch, *event_shape]` |
| `classify` (class-conditional exports only) | `x` float32 `[batch, *event_shape]` | `log_probs` float32 `[batch, num_classes]` (`log p(y \| x)`), `label` int64 `[batch]` (its argmax; -1 for an invalid row), `log_prob` float32 `[batch]` (the marginal `log p(x)`) |
| `classify_levels` (class-conditional exports with a dequantizer) | `levels` float32 `[batch, *event_shape]` (integer pixel levels in `[0, 2**num_bits)`), `num_samples` int32 `[]` (`K`, in `[1, max_num_samples]`), `seed` int32 `[2]` | `log_probs` float32 `[batch, num_classes]` (`log p(y \| levels)`), `label` int64 `[batch]`, `log_prob` float32 `[batch]` (the bound on the marginal `log P(levels)`, nats) |
| `ood_score` (exports of image flows given an `ood_threshold`; class-conditional ones also need `label_log_prior`) | `x` float32 `[batch, *event_shape]` (pixel values in `[0, 2**num_bits)`: levels `v` or dequantized `v + u`, scored as `floor(x)`) | `score` float32 `[batch]` (`ood.complexity_corrected_score`), `is_outlier` bool `[batch]` (`score > ood_threshold`) |
| `discrete_bits_per_dim` (exports with a dequantizer only) | `levels` float32 `[batch, *event_shape]` (integer pixel levels in `[0, 2**num_bits)`), `num_samples` int32 `[]` (`K`, in `[1, max_num_samples]`), `seed` int32 `[2]` | `bits_per_dim` float32 `[batch]` (the bound on `-log2 P(levels) / D`), `log_prob` float32 `[batch]` (the bound on `log P(levels)`, nats) |

A conditional flow's (`conditional_event_shape` not None) `log_prob`, `serving_default`, `encode`, `decode` and
`discrete_bits_per_dim` also take `conditional_input` float32 `[batch, *conditional_event_shape]`, one context
per row, and its `sample` takes `conditional_input` float32 `[num_samples, *conditional_event_shape]`, one per
sample; a different number of rows is an `InvalidArgumentError`, checked in the graph. An unconditional flow's signatures
take no context. `classify` marks a row it cannot score (holding NaN or an infinite value, or a pixel outside the flow's support:
its marginal `log_prob` NaN or `-inf`) with `label` -1 and NaN `log_probs`. `classify` exists when a prior
`label_log_prior` (`log p(y)`) is given for a flow conditioned
on one-hot labels (`conditional_event_shape=(num_classes,)`): `log p(y | x) = log p(x | y) + log p(y) -
log p(x)` with `log p(x) = logsumexp_y (log p(x | y) + log p(y))` (`classifier`).
`classify_levels` is `classify` for discrete images: it dequantizes the levels itself with the export's dequantizer
`q(u | v)` and scores each class by the importance-weighted bound on `log P(v | y)` over `K` draws shared by the
classes (`classifier.discrete_joint_log_probs`; its noise as `discrete_bits_per_dim`'s). At `K = 1` its
posterior is `classify`'s at the one dequantized image `v + u` (`q` does not depend on `y`); a model trained
with a learned `q` classifies best on the values `q` gives, so send levels here rather than guessing `u` for
`classify`. Its `levels` and `num_samples` are checked as `discrete_bits_per_dim`'s are.

Two kinds of likelihood: `log_prob` and `bits_per_dim` of the `log_prob` signature are the flow's continuous
density of the values `x` given, dequantized pixel values (for pixel data `v + u`, `u in [0, 1)^D`), not the
probability of a discrete image. `discrete_bits_per_dim` (given a dequantizer `q(u | v)`, see
`dequantization`) is the bound on the discrete image's likelihood `P(v)`: `bits_per_dim = -log2 (1/K) sum_k
p(v + u_k) / q(u_k | v) / D` over `K = num_samples` draws, computed in float64 as
`dequantization.importance_weighted_bits_per_dim` computes it (its noise `tf.random.stateless_uniform([K,
batch, *event_shape], seed)`, so a row's draws depend on `seed`, `K`, the batch size and the row's place in
it, not on the other rows' values), an upper bound on `-log2 P(v) / D` in expectation for every `K`, tighter
as `K` grows; `log_prob = -bits_per_dim * D ln 2`. `levels` that are not integers in `[0, 2**num_bits)` and a
`num_samples` outside `[1, max_num_samples]` are an `InvalidArgumentError`, checked in the graph.

`ood_score` is `ood.complexity_corrected_score` of the levels `floor(x)`: the flow's one-draw bound on the
discrete image's bits/dim (with the export's dequantizer, uniform without one; the noise image of `ood.NOISE_SEED`
shared by every row) less the bits/dim of the levels' PNG encoding; `is_outlier` compares it with the threshold
fixed at export (`ood_threshold`, from held-out in-distribution scores). A value that is not finite or outside
`[0, 2**num_bits)` is an `InvalidArgumentError` naming `x`, checked in the graph. The export's
`ood_threshold`, the false-positive rate it was set at and the PNG compression level are the argument of its
`ood_settings` function (like `limits`).

Every signature bounds the work of one request by `max_flow_evaluations`, set at export (default: from the
flow's operations per row, `default_max_flow_evaluations`), checked in the graph before any work: the rows of
`x` or `z` (`log_prob`, `serving_default`, `encode`, `decode`), `num_samples` (`sample`, which also keeps
`max_num_samples`), rows times classes (`classify`; rows for a flow whose label enters only the base), rows
times `num_samples` (`discrete_bits_per_dim`) and rows times `num_samples` times classes (`classify_levels`,
again without the classes for a flow whose label enters only the base); a request beyond it is an `InvalidArgumentError` naming
`max_flow_evaluations` and its value. The export's
limits are the argument of its `limits` function, which `saved_model_cli show --all` prints, and
`loaded.limits(that dict)` returns them.

The names of the signatures, of their inputs and of their outputs are public API (`export` writes them,
`saved_model_distribution` reads them). A flow of pixel data is one whose `num_bits` is not None.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from tfp_realnvp import classifier, data, dequantization, ood
from tfp_realnvp.internal import bits, contexts

__all__ = [
  "CLASSIFY_LEVELS_SIGNATURE_NAME",
  "CLASSIFY_SIGNATURE_NAME",
  "DEFAULT_MAX_NUM_SAMPLES",
  "MAX_FLOW_EVALUATIONS_CAP",
  "REQUEST_FLOP_BUDGET",
  "DISCRETE_BITS_PER_DIM_SIGNATURE_NAME",
  "OOD_SCORE_SIGNATURE_NAME",
  "SIGNATURE_NAMES",
  "ServingModule",
]

# Every export's signatures; a class-conditional export adds `CLASSIFY_SIGNATURE_NAME`, an export with a
# dequantizer `DISCRETE_BITS_PER_DIM_SIGNATURE_NAME`, one with both `CLASSIFY_LEVELS_SIGNATURE_NAME`, an image
# export with an `ood_threshold` `OOD_SCORE_SIGNATURE_NAME`.
SIGNATURE_NAMES = ("serving_default", "log_prob", "sample", "encode", "decode")
CLASSIFY_SIGNATURE_NAME = "classify"
CLASSIFY_LEVELS_SIGNATURE_NAME = "classify_levels"
DISCRETE_BITS_PER_DIM_SIGNATURE_NAME = "discrete_bits_per_dim"
OOD_SCORE_SIGNATURE_NAME = "ood_score"

# The default limit on `num_samples` of `sample` (and on `K` of `discrete_bits_per_dim`): a request's memory and
# time grow linearly with it (measured before the limit: 10**5 digits samples took 45 s and 4.5 GB; 3 * 10**7
# exhausted memory).
DEFAULT_MAX_NUM_SAMPLES = 4096

# The default limit on the flow evaluations (rows through the flow) of one request, `max_flow_evaluations`:
# `REQUEST_FLOP_BUDGET` divided by the flow's floating-point operations per row (`flops_per_row`), at most
# `MAX_FLOW_EVALUATIONS_CAP`. A request counts `rows` (`log_prob`, `serving_default`, `encode`, `decode`),
# `num_samples` (`sample`), `rows * num_classes` (`classify`), `rows * num_samples` (`discrete_bits_per_dim`),
# `rows * num_samples * num_classes` (`classify_levels`) or `rows` (`ood_score`); a flow whose label enters only the
# base costs no factor `num_classes`.
# The budget is about 10 s of one core at 100 GFLOP/s: the cifar10 preset (9.5 GFLOP a row) gets 104 rows
# (measured before the limit: 256 samples took 18 s and +318 MiB), the digits preset (41 MFLOP a row) the cap,
# 16384 rows (about 0.7 GB, from 10**5 digits samples taking 4.5 GB).
REQUEST_FLOP_BUDGET = 10**12
MAX_FLOW_EVALUATIONS_CAP = 16384


class ServingModule(tf.Module):
  """A flow's inference-mode computations as `tf.function`s with fixed input signatures.

  Every function runs the flow with `training=False` (batch-norm running averages), so a row's outputs do
  not depend on the rest of its batch. `log_prob` is the flow's: a row holding NaN scores NaN, any other row
  outside the support (an infinite value, or for pixel data a pixel outside the preprocessing's range: the
  pixel box `[0, 2**num_bits)` for `logit_alpha=0`, `[-0.889, 16.889)` for 4 bits with the paper's 0.05) scores `-inf`
  (`bits_per_dim` `+inf`). Inputs whose shape is not `[batch, *event_shape]` fail with
  `InvalidArgumentError`, also in the C++ loader, which does not check shapes against the signature.
  `sample` rejects a `num_samples` outside `[0, max_num_samples]` and a negative or non-finite `temperature`
  with `InvalidArgumentError`, checked in the graph, so a server refuses a request that would exhaust it.
  A conditional flow's functions take `conditional_input` (see the module docstring), checked in the graph
  to be `[rows, *conditional_event_shape]` with the rows of `x` (of `z`; `num_samples` for `sample`).
  `label_log_prior` (`log p(y)`, `[num_classes]`, its `exp` summing to 1) adds `classify`. `dequantizer` (a
  `dequantization.UniformDequantizer` or `VariationalDequantizer` of the flow's event shape and `num_bits`,
  for a flow of pixel data) adds `discrete_bits_per_dim`, whose `num_samples` (`K` draws per row, so a request
  costs `K` times a `log_prob` request of its batch) is limited by `max_num_samples` as `sample`'s is; with
  `label_log_prior` too, `classify_levels`.
  `max_flow_evaluations` (None: `default_max_flow_evaluations(flow)`) bounds every request's flow evaluations
  (see the module docstring); `limit_values` gives both limits. `ood_threshold` (a finite number, for an
  unconditional flow of pixel data, or a class-conditional one given `label_log_prior`, scored by its marginal
  `p(x)`) adds `ood_score`, flagging scores above it; `ood_false_positive_rate` (the
  share of held-out in-distribution scores above it, None if unknown) is recorded beside it in `ood_settings`.
  """

  def __init__(
    self,
    flow,
    max_num_samples=DEFAULT_MAX_NUM_SAMPLES,
    label_log_prior=None,
    dequantizer=None,
    name="realnvp_serving",
    max_flow_evaluations=None,
    ood_threshold=None,
    ood_false_positive_rate=None,
  ):
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
    self._conditional_event_shape = flow.conditional_event_shape
    if max_flow_evaluations is None:
      max_flow_evaluations = default_max_flow_evaluations(flow)
    elif (
      isinstance(max_flow_evaluations, bool)
      or not isinstance(max_flow_evaluations, numbers.Integral)
      or not 1 <= max_flow_evaluations <= 2**31 - 1
    ):
      raise ValueError(
        "`max_flow_evaluations` must be None (from the flow's cost) or an integer in [1, 2**31 - 1]; got "
        f"{max_flow_evaluations!r}."
      )
    self._max_flow_evaluations = int(max_flow_evaluations)
    # Shown by `saved_model_cli show --all` (its `limits` function's argument) and returned by it as tensors.
    self.limits = tf.function(_limit_tensors)
    self.limits.get_concrete_function(self.limit_values)
    self._label_log_prior = _checked_label_log_prior(label_log_prior, flow)
    self.dequantizer = _checked_dequantizer(dequantizer, flow)
    batch_spec = [None, *self._event_shape]
    # A conditional flow's functions take one more input, the context.
    context_specs = []
    if self._conditional_event_shape is not None:
      context_shape = [None, *self._conditional_event_shape]
      context_specs = [tf.TensorSpec(context_shape, tf.float32, name="conditional_input")]
    self.log_prob = tf.function(
      self._log_prob, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x"), *context_specs]
    )
    self.sample = tf.function(
      self._sample,
      input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([2], tf.int32, name="seed"),
        *context_specs,
      ],
    )
    self.encode = tf.function(
      self._encode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x"), *context_specs]
    )
    self.decode = tf.function(
      self._decode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="z"), *context_specs]
    )
    self.classify = None
    if self._label_log_prior is not None:
      self.classify = tf.function(
        self._classify, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")]
      )
    # The inputs of the signatures that dequantize integer levels with `K` draws.
    levels_specs = [
      tf.TensorSpec(batch_spec, tf.float32, name="levels"),
      tf.TensorSpec([], tf.int32, name="num_samples"),
      tf.TensorSpec([2], tf.int32, name="seed"),
    ]
    self.discrete_bits_per_dim = None
    if self.dequantizer is not None:
      self.discrete_bits_per_dim = tf.function(
        self._discrete_bits_per_dim, input_signature=[*levels_specs, *context_specs]
      )
    self.classify_levels = None
    if self.dequantizer is not None and self._label_log_prior is not None:
      self.classify_levels = tf.function(self._classify_levels, input_signature=levels_specs)
    self.ood_score = None
    self._ood_threshold = _checked_ood_threshold(ood_threshold, flow, self._label_log_prior)
    if self._ood_threshold is not None:
      self._ood_dequantizer = self.dequantizer or dequantization.UniformDequantizer(self._event_shape)
      settings = {"threshold": self._ood_threshold, "png_compression": ood.DEFAULT_PNG_COMPRESSION}
      if ood_false_positive_rate is not None:
        settings["false_positive_rate"] = float(ood_false_positive_rate)
      # Shown by `saved_model_cli show --all` as its argument, and returned by it, as `limits` is.
      self.ood_settings = tf.function(_ood_setting_tensors)
      self.ood_settings.get_concrete_function(settings)
      self.ood_score = tf.function(
        self._ood_score, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")]
      )

  @property
  def limit_values(self):
    """`{"max_num_samples": ..., "max_flow_evaluations": ...}`, the limits the signatures check."""
    return {"max_num_samples": self._max_num_samples, "max_flow_evaluations": self._max_flow_evaluations}

  def signatures(self):
    """The `{signature name: tf.function with an input signature}` map for `tf.saved_model.save`.

    The functions, not concrete functions: the save traces each once, in its own context. Traced here first,
    every one would be traced again during the save (the trace cache keys on the save's variable policy),
    which doubled an export's time.
    """
    signatures = {
      "serving_default": self.log_prob,
      "log_prob": self.log_prob,
      "sample": self.sample,
      "encode": self.encode,
      "decode": self.decode,
    }
    optional = {
      CLASSIFY_SIGNATURE_NAME: self.classify,
      DISCRETE_BITS_PER_DIM_SIGNATURE_NAME: self.discrete_bits_per_dim,
      CLASSIFY_LEVELS_SIGNATURE_NAME: self.classify_levels,
      OOD_SCORE_SIGNATURE_NAME: self.ood_score,
    }
    signatures.update({name: function for name, function in optional.items() if function is not None})
    return signatures

  def _event_rows(self, rows):
    """`rows`, checked at run time to be `[batch, *event_shape]`.

    The C++ loader behind TF Serving feeds tensors without checking them against the
    signature, and convolutions take any image size: the graph checks. Every op that reads
    an input reads this check's output, so a wrong shape always fails here, by name.
    """
    return tf.ensure_shape(rows, [None, *self._event_shape])

  def _context(self, conditional_input, num_rows, rows_text):
    """The flow's context keywords: `{}` when unconditional, else `{'conditional_input': c}` with `c` checked
    at run time to be `[num_rows, *conditional_event_shape]` (`rows_text` says what `num_rows` counts)."""
    if conditional_input is None:
      return {}
    context = contexts.assert_one_per_row(
      conditional_input, self._conditional_event_shape, num_rows, rows_text
    )
    return {"conditional_input": tf.cast(context, self.flow.dtype)}

  def _within_work_limit(self, evaluations, what):
    """`evaluations` (a count of flow evaluations, any integer dtype), checked in the graph to be at most
    `max_flow_evaluations`; `what` says how the request counts them."""
    check = tf.debugging.assert_less_equal(
      tf.cast(evaluations, tf.int64),
      tf.constant(self._max_flow_evaluations, tf.int64),
      message=(
        f"{what} must be at most `max_flow_evaluations`, set at export to {self._max_flow_evaluations} "
        "(the flow evaluations one request may cost); split the request"
      ),
    )
    return check

  def _bounded_rows(self, rows, name):
    """`rows` (`[batch, *event_shape]`, checked), with its batch checked against `max_flow_evaluations`."""
    rows = self._event_rows(rows)
    with tf.control_dependencies([self._within_work_limit(tf.shape(rows)[0], f"The rows of `{name}`")]):
      return tf.identity(rows)

  def _log_prob(self, x, conditional_input=None):
    x = self._bounded_rows(x, "x")
    context = self._context(conditional_input, tf.shape(x)[0], "row of `x`")
    log_prob = tf.cast(self.flow.log_prob(tf.cast(x, self.flow.dtype), training=False, **context), tf.float32)
    outputs = {"log_prob": log_prob}
    if self._num_bits is not None:
      # `flow.bits_per_dim(x)`'s formula applied to the log_prob above: calling it would run the flow a second
      # time in the graph (measured with bench/bench_export.py, small model: SavedModel 19.9 -> 22.4 MB and
      # about 0.65x the log_prob throughput).
      outputs["bits_per_dim"] = bits.bits_per_dim(log_prob, math.prod(self._event_shape))
    return outputs

  def _at_most_max_num_samples(self, num_samples):
    """The graph's check that `num_samples` is at most `max_num_samples`."""
    return tf.debugging.assert_less_equal(
      num_samples,
      self._max_num_samples,
      message=f"`num_samples` must be at most `max_num_samples`, set at export to {self._max_num_samples}",
    )

  def _sample(self, num_samples, temperature, seed, conditional_input=None):
    if self._max_flow_evaluations < self._max_num_samples:  # the smaller limit, named
      at_most = self._within_work_limit(num_samples, "`num_samples`")
    else:
      at_most = self._at_most_max_num_samples(num_samples)
    checks = [
      tf.debugging.assert_non_negative(num_samples, message="`num_samples` must be non-negative"),
      at_most,
      tf.debugging.assert_non_negative(temperature, message="`temperature` must be non-negative"),
      tf.debugging.assert_all_finite(temperature, message="`temperature` must be finite"),
    ]
    with tf.control_dependencies(checks):
      context = self._context(conditional_input, num_samples, "sample, `num_samples` rows")
      samples = self.flow.sample(
        num_samples,
        seed=seed,
        temperature=tf.cast(temperature, self.flow.dtype),
        **context,
      )
    samples = self._event_rows(tf.cast(samples, tf.float32))
    outputs = {"samples": samples}
    if self._num_bits is not None:
      outputs["images"] = data.uint8_images(samples, self._num_bits)
    return outputs

  def _encode(self, x, conditional_input=None):
    x = self._bounded_rows(x, "x")
    context = self._context(conditional_input, tf.shape(x)[0], "row of `x`")
    z = self.flow.encode(tf.cast(x, self.flow.dtype), **context)
    return {"z": self._event_rows(tf.cast(z, tf.float32))}

  def _decode(self, z, conditional_input=None):
    z = self._bounded_rows(z, "z")
    context = self._context(conditional_input, tf.shape(z)[0], "row of `z`")
    x = self.flow.decode(tf.cast(z, self.flow.dtype), **context)
    return {"x": self._event_rows(tf.cast(x, tf.float32))}

  def _checked_levels(self, levels, num_samples, rows_per_draw=1, what=""):
    """`levels` checked in the graph: `[batch, *event_shape]` integer pixel levels, `num_samples` (K) in
    `[1, max_num_samples]`, and `rows * num_samples * rows_per_draw` flow evaluations within the work limit
    (`what` names the factor `rows_per_draw`)."""
    levels = self._event_rows(levels)
    max_level = 2**self._num_bits - 1
    is_level = (levels == tf.floor(levels)) & (levels >= 0.0) & (levels <= max_level)  # False for NaN
    checks = [
      tf.debugging.assert_equal(
        tf.reduce_all(is_level),
        True,
        message=f"`levels` must be integer pixel levels in [0, {max_level}] (`num_bits={self._num_bits}`)",
      ),
      tf.debugging.assert_positive(num_samples, message="`num_samples` (K) must be at least 1"),
    ]
    # One after the other, so a request beyond both limits names `max_num_samples`.
    with tf.control_dependencies(checks):
      checks.append(self._at_most_max_num_samples(num_samples))
    with tf.control_dependencies(checks):
      work = tf.cast(tf.shape(levels)[0], tf.int64) * tf.cast(num_samples, tf.int64) * rows_per_draw
      checks.append(self._within_work_limit(work, f"The rows of `levels` times `num_samples` (K){what}"))
    with tf.control_dependencies(checks):
      return tf.identity(levels)

  def _discrete_bits_per_dim(self, levels, num_samples, seed, conditional_input=None):
    levels = self._checked_levels(levels, num_samples)
    with tf.control_dependencies([levels]):  # a bad request names `levels` before the context
      context = self._context(conditional_input, tf.shape(levels)[0], "row of `levels`")
    log_prob = dequantization.discrete_log_prob_bound(
      self.flow, self.dequantizer, levels, num_samples, seed, **context
    )
    bits_per_dim = bits.bits_per_dim(log_prob, math.prod(self._event_shape))
    return {"bits_per_dim": tf.cast(bits_per_dim, tf.float32), "log_prob": tf.cast(log_prob, tf.float32)}

  def _classify_levels(self, levels, num_samples, seed):
    (num_classes,) = self._conditional_event_shape
    levels = self._checked_levels(levels, num_samples, *self._flow_rows_per_image())
    joint = classifier.discrete_joint_log_probs(
      self.flow,
      self.dequantizer,
      tf.cast(levels, self.flow.dtype),
      num_classes,
      num_samples,
      seed,
      self._label_log_prior,
    )
    return _classified(joint)

  def _ood_score(self, x):
    if self._label_log_prior is None:
      x = self._bounded_rows(x, "x")
    else:  # the marginal over the classes: a flow evaluation per row and class, as for `classify`
      x = self._class_rows(x)
    limit = 2**self._num_bits
    is_pixel = (x >= 0.0) & (x < limit)  # False for NaN
    check = tf.debugging.assert_equal(
      tf.reduce_all(is_pixel),
      True,
      message=f"`x` must be pixel values in [0, {limit}) (`num_bits={self._num_bits}`), finite",
    )
    with tf.control_dependencies([check]):
      levels = ood.pixel_levels(x)
    score = ood.complexity_corrected_score(
      self.flow, self._ood_dequantizer, levels, label_log_prior=self._label_log_prior
    )
    return {"score": score, "is_outlier": score > self._ood_threshold}

  def _flow_rows_per_image(self):
    """`(rows, words)`: the flow rows one image costs a classifying signature (`classifier.flow_rows_per_image`)
    and the words that name that factor in a work-limit error (`""` for 1)."""
    (num_classes,) = self._conditional_event_shape
    per_row = classifier.flow_rows_per_image(self.flow, num_classes)
    return per_row, "" if per_row == 1 else f" times the {num_classes} classes"

  def _class_rows(self, x):
    """`x` as rows of events, checked in the graph to be within the work limit at one flow evaluation per row
    and class (`classify`, and `ood_score`'s marginal), or per row for a flow whose label enters only the base
    (`context_enters='base'`: one pass scores every class)."""
    x = self._event_rows(x)
    rows = tf.cast(tf.shape(x)[0], tf.int64)
    per_row, times_classes = self._flow_rows_per_image()
    work = self._within_work_limit(rows * per_row, f"The rows of `x`{times_classes}")
    with tf.control_dependencies([work]):
      return tf.identity(x)

  def _classify(self, x):
    (num_classes,) = self._conditional_event_shape
    x = tf.cast(self._class_rows(x), self.flow.dtype)
    # `classifier.class_log_probs` and `marginal_log_prob` from one `joint_log_probs`: calling both would run
    # the flow twice on `num_classes * batch` rows in the graph.
    return _classified(classifier.joint_log_probs(self.flow, x, num_classes, self._label_log_prior))


def _classified(joint):
  """`classify`'s outputs from `log p(x, y)` `[batch, num_classes]`: `log_probs` (`log p(y | x)`), `label` (its
  argmax) and `log_prob` (`log p(x)`). A row the flow cannot score (NaN, an infinite value, a pixel outside
  the support: `log p(x)` NaN or -inf) has no class: label -1, log_probs NaN, never a confident answer."""
  log_prob = tf.reduce_logsumexp(joint, axis=-1)
  valid = tf.math.is_finite(log_prob)
  log_probs = tf.where(
    valid[:, tf.newaxis], joint - log_prob[:, tf.newaxis], tf.constant(np.nan, joint.dtype)
  )
  label = tf.where(valid, tf.argmax(log_probs, axis=-1, output_type=tf.int64), tf.constant(-1, tf.int64))
  return {
    "log_probs": tf.cast(log_probs, tf.float32),
    "label": label,
    "log_prob": tf.cast(log_prob, tf.float32),
  }


def flops_per_row(flow):
  """The floating-point operations of `flow.log_prob` on one row in inference mode (TensorFlow's profiler on
  the traced graph), at least 1; None when the graph cannot be profiled."""
  specs = [tf.TensorSpec([1, *tf.TensorShape(flow.event_shape).as_list()], tf.float32)]
  if flow.conditional_event_shape is not None:
    specs.append(tf.TensorSpec([1, *flow.conditional_event_shape], tf.float32))

  def log_prob(x, conditional_input=None):
    context = {}
    if conditional_input is not None:
      context["conditional_input"] = tf.cast(conditional_input, flow.dtype)
    return flow.log_prob(tf.cast(x, flow.dtype), training=False, **context)

  try:
    graph = tf.function(log_prob).get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    verbosity = tf.compat.v1.logging.get_verbosity()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # the profiler's deprecation warnings
    try:
      total = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    finally:
      tf.compat.v1.logging.set_verbosity(verbosity)
  except Exception:  # noqa: BLE001 - a cost estimate: the caller falls back
    return None
  return max(int(total), 1)


def default_max_flow_evaluations(flow):
  """`max_flow_evaluations` by default: `REQUEST_FLOP_BUDGET // flops_per_row(flow)`, in
  `[1, MAX_FLOW_EVALUATIONS_CAP]`; for a flow the profiler cannot measure, 2 operations per parameter and
  event element (an overestimate for convolutional flows)."""
  flops = flops_per_row(flow)
  if flops is None:
    parameters = sum(variable.shape.num_elements() for variable in flow.trainable_variables)
    flops = 2 * max(parameters, 1) * tf.TensorShape(flow.event_shape).num_elements()
  return int(min(MAX_FLOW_EVALUATIONS_CAP, max(1, REQUEST_FLOP_BUDGET // flops)))


def _limit_tensors(limits):
  return {name: tf.constant(value, tf.int64) for name, value in limits.items()}


def _ood_setting_tensors(settings):
  return {
    name: tf.constant(value, tf.int64 if isinstance(value, int) else tf.float32)
    for name, value in settings.items()
  }


def _checked_ood_threshold(ood_threshold, flow, label_log_prior):
  """`ood_threshold` as a Python float, checked to be finite and for a flow of pixel data, unconditional or
  class-conditional with `label_log_prior` (checked already); None for None."""
  if ood_threshold is None:
    return None
  if flow.num_bits is None or (flow.conditional_event_shape is not None and label_log_prior is None):
    raise ValueError(
      "`ood_threshold` (for an `ood_score` signature) needs a flow of pixel data (`num_bits` not None), "
      "unconditional or class-conditional with its `label_log_prior`; this flow's `num_bits` is "
      f"{flow.num_bits}, its `conditional_event_shape` {flow.conditional_event_shape}."
    )
  if (
    isinstance(ood_threshold, bool)
    or not isinstance(ood_threshold, numbers.Real)
    or not math.isfinite(ood_threshold)
  ):
    raise ValueError(f"`ood_threshold` must be a finite number; got {ood_threshold!r}.")
  return float(ood_threshold)


def _checked_dequantizer(dequantizer, flow):
  """`dequantizer`, checked to dequantize `flow`'s pixel data (event shape and `num_bits`); None for None."""
  if dequantizer is None:
    return None
  if flow.num_bits is None:
    raise ValueError(
      "`dequantizer` (for a `discrete_bits_per_dim` signature) needs a flow of pixel data (`num_bits` not "
      "None); this flow's `num_bits` is None."
    )
  event_shape = tuple(tf.TensorShape(flow.event_shape).as_list())
  if tuple(dequantizer.event_shape) != event_shape:
    raise ValueError(
      f"`dequantizer` must dequantize the flow's events of shape {event_shape}; got one of event shape "
      f"{tuple(dequantizer.event_shape)}."
    )
  num_bits = getattr(dequantizer, "num_bits", flow.num_bits)  # a uniform dequantizer fits any
  if num_bits != flow.num_bits:
    raise ValueError(
      f"`dequantizer` must be for the flow's {flow.num_bits}-bit pixels; got one for {num_bits}-bit pixels."
    )
  return dequantizer


def _checked_label_log_prior(label_log_prior, flow):
  """`label_log_prior` as a constant of `flow.dtype`, checked to be `log p(y)` over `flow`'s one-hot labels;
  None for None."""
  if label_log_prior is None:
    return None
  conditional_event_shape = flow.conditional_event_shape
  if conditional_event_shape is None or len(conditional_event_shape) != 1:
    raise ValueError(
      "`label_log_prior` (for a `classify` signature) needs a flow conditioned on one-hot labels, "
      f"`conditional_event_shape=(num_classes,)`; this flow's `conditional_event_shape` is "
      f"{conditional_event_shape}."
    )
  (num_classes,) = conditional_event_shape
  log_prior = np.asarray(label_log_prior, np.float64)
  if log_prior.shape != (num_classes,):
    raise ValueError(
      f"`label_log_prior` must be `log p(y)` of shape [{num_classes}] (the flow's `conditional_event_shape`); "
      f"got shape {list(log_prior.shape)}."
    )
  total = np.exp(log_prior).sum()
  if np.any(np.isnan(log_prior)) or np.any(log_prior == np.inf) or not abs(total - 1.0) <= 1e-5:
    raise ValueError(
      "`label_log_prior` must be log-probabilities (`log p(y)`, each `-inf` or finite, their `exp` summing "
      f"to 1); got {log_prior.tolist()}, whose `exp` sums to {total}."
    )
  return tf.constant(log_prior, flow.dtype)
