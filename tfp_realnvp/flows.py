"""The RealNVP distribution: the paper's multi-scale flow (and a vector flow) as a `tfd.TransformedDistribution`."""

import math
import operator
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TFP turns every subclass of the public `tfd.TransformedDistribution` into a CompositeTensor, and containers
# (`tf.Module`, joint distributions) flatten a CompositeTensor through its constructor arguments, so they would
# list none of the flow's variables. `tfd.TransformedDistribution(...)` itself returns this class whenever its
# parts hold variables; RealNVP subclasses it for the same reason.
from tensorflow_probability.python.distributions.transformed_distribution import _TransformedDistribution

from tfp_realnvp import conditioned, networks
from tfp_realnvp.bijectors import (
  AffineCoupling,
  BatchNorm,
  ContextShift,
  KeywordChain,
  LogitTransform,
  MultiScale,
)
from tfp_realnvp.internal import bits, contexts, shapes
from tfp_realnvp.internal.checks import positive_int, positive_ints

__all__ = ["CONTEXT_ENTERS", "PRESETS", "ImageRealNVP", "RealNVP", "VectorRealNVP"]

tfb = tfp.bijectors
tfd = tfp.distributions

# Where a conditional flow's context enters `f` (the flows' `context_enters` argument).
CONTEXT_ENTERS = ("couplings", "base")

# The paper's settings (section 4.1 and appendix), and small presets for the bundled data.
PRESETS = {
  "cifar10": dict(event_shape=(32, 32, 3), num_scales=2, num_blocks=8, num_filters=64),
  "imagenet32": dict(event_shape=(32, 32, 3), num_scales=4, num_blocks=4, num_filters=32),
  "imagenet64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  "celeba64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  "lsun64": dict(event_shape=(64, 64, 3), num_scales=5, num_blocks=2, num_filters=32),
  # 28 = 4 * 7: two scales fit MNIST as it is (the last at 14x14x2); padding to 32x32 would add constant
  # pixels that change `D` and make bits/dim incomparable with the literature.
  "mnist": dict(event_shape=(28, 28, 1), num_scales=2, num_blocks=4, num_filters=32),
  # Dropout 0.4 keeps the 1500 training digits from being memorized (chosen on the digits protocol).
  # `logit_alpha=0`: all of the flow's mass on the pixel box (`LogitTransform`; chosen on the digits protocol).
  "digits": dict(
    event_shape=(8, 8, 1),
    num_scales=2,
    num_blocks=2,
    num_filters=32,
    num_bits=4,
    dropout=0.4,
    logit_alpha=0.0,
  ),
}


class RealNVP(_TransformedDistribution):
  """RealNVP (Dinh et al., 2016): `log p(x) = log N(f(x); 0, I) + log|det df/dx|`.

  The base of the two kinds of flow, one class each:

  - `ImageRealNVP`, for events `(H, W, C)` of dequantized pixel values in `[0, 2**num_bits)`: the paper's
    multi-scale architecture (`bijectors.MultiScale`) after a `LogitTransform`, with ResNet conditioners.
  - `VectorRealNVP`, for events `(D,)`: alternating half-mask couplings with MLP conditioners, a flow over
    `R^D` for tabular data and learned priors.

  `RealNVP(event_shape=..., **kwargs)` builds the kind that the rank of `event_shape` calls for, and
  `RealNVP.from_preset(name, **overrides)` the paper's settings for a dataset (`PRESETS`).

  The support of `log_prob` is exactly the set the flow maps `R^D` onto, where its samples lie: `R^D` for
  vectors, and for images the box `LogitTransform.domain**D`, per pixel
  `[-alpha, 1 - alpha) * 2**num_bits / (1 - 2*alpha)`: the pixel box `[0, 2**num_bits)**D` of the data itself
  for `logit_alpha=0`, a larger box for the paper's `0.05` (`[-0.889, 16.889)` for 4 bits). `log_prob(x)` is
  `-inf` for a row outside the support (an infinite value, or a pixel outside that interval) and NaN for a row
  holding NaN, with finite gradients for the other rows; `sample`, `experimental_sample_and_log_prob` and
  `experimental_default_event_space_bijector` agree with it. For dequantized discrete data, the mass outside
  the pixel box is wasted: no pixel level gets it (`ImageRealNVP.pixel_box_mass` measures the rest).
  `log_prob(x, training=True)` uses batch statistics in every batch norm and moves their running averages
  (and enables dropout), except that an empty batch moves none; the default `training=False` is for
  evaluation. `training` is a Python bool or a scalar bool tensor (else a `TypeError`). Call-time keywords
  reach every coupling and batch norm through `bijectors.KeywordChain`. `sample(n, seed, temperature)`
  scales the base standard deviation by `temperature`. Other modules need only the public API:
  `event_shape`, `dtype`, `compute_dtype`, `num_bits`, `num_dims`, `conditional_event_shape`,
  `regularized_variables`, `log_prob`, `sample`, `encode`, `decode`, and `bits_per_dim` on image flows.

  A flow built with `conditional_event_shape` is conditional, `p(x | c) = N(f(x; c)) |det df(x; c)/dx|`:
  every coupling's conditioner also sees the context `c` (see `AffineCoupling`), and every method that maps
  data takes it as `conditional_input`, of shape `[*batch_shape, *conditional_event_shape]`, its batch
  dimensions broadcast against those of the data (`log_prob`, `prob`, `bits_per_dim`, `encode`, `decode`,
  `interpolate`); TFP's spelling for conditional flows, `bijector_kwargs={'conditional_input': c}`, is the same
  argument on `log_prob`, `prob`, `sample` and `experimental_sample_and_log_prob`. `sample(sample_shape,
  conditional_input=c)` takes a context per sample, `[*sample_shape, *conditional_event_shape]`, or one,
  `[*conditional_event_shape]`, for all (any context whose batch shape broadcasts to the sample shape); any
  other batch of contexts `[*batch, *conditional_event_shape]` is a batch, as for a distribution of that batch
  shape: the samples are `[*sample_shape, *batch, *event_shape]` (`c` of shape `[200, 5]`: `sample(7)` is
  `[7, 200, ...]`, but `sample(200)` is one sample per context). `condition(c)` fixes the context and returns
  an ordinary `tfd.Distribution` of batch shape `batch` (`conditioned.ConditionedRealNVP`), for TFP's joint
  distributions, `tfd.Independent`, `tfd.Sample` and `tfp.vi`. The flow itself has batch shape `[]`. The
  context reaches the couplings through `KeywordChain`, as `training` does. A conditional flow called without a
  context, an unconditional one called with one (`conditional_input=None` is no context), or a context of the
  wrong shape is a `ValueError` naming `conditional_input`; a tensor or array of another dtype than the flow's
  (int32, float64, bool) is a `TypeError`, not cast. A row whose context holds NaN or an infinity gets NaN
  (`log_prob`, samples, latents), eagerly, in a `tf.function` and in an export; the layers see zeros in its
  place, so the other rows' values and gradients are those of their own contexts (`internal.contexts`).

  #### Examples

  ```python
  flow = RealNVP.from_preset('digits')  # an ImageRealNVP
  x = tf.random.uniform([16, 8, 8, 1], 0., 16.)
  loss = tf.reduce_mean(flow.bits_per_dim(x, training=True))
  images = flow.sample(16, seed=tf.constant([1, 2]), temperature=0.7)
  prior = RealNVP(event_shape=(16,), num_couplings=4)  # a VectorRealNVP
  digits = RealNVP.from_preset('digits', conditional_event_shape=(10,))  # p(x | label), one-hot labels
  fives = digits.sample(16, seed=[1, 2], conditional_input=tf.one_hot(5, 10))
  per_class = digits.condition(tf.eye(10))  # a tfd.Distribution with batch shape [10]
  grid = per_class.sample(4, seed=[1, 2])  # [4, 10, 8, 8, 1]
  ```

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density estimation using Real NVP. In
       _International Conference on Learning Representations_, 2017. https://arxiv.org/abs/1605.08803
  """

  def __new__(cls, event_shape=None, *args, **kwargs):
    """`RealNVP(event_shape=..., **kwargs)` is an `ImageRealNVP` for `(H, W, C)`, a `VectorRealNVP` for `(D,)`;
    a subclass builds itself."""
    del args  # `__init__` takes them
    return super().__new__(_flow_class(event_shape, kwargs) if cls is RealNVP else cls)

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    # TFP warns at every `parameter_properties` call (batch shapes, `copy`, slicing) of a subclass that defines
    # `__init__` but inherits this method; every flow class has the same (none), so each gets it as its own.
    cls._parameter_properties = RealNVP.__dict__["_parameter_properties"]

  def __init__(
    self, data_to_latent, event_shape, conditional_event_shape, dtype, validate_args, parameters, name
  ):
    """For subclasses: the flow with latent `z = data_to_latent(x)` and a standard normal base.

    Args:
      data_to_latent: the `bijectors.KeywordChain` `f`, data to latent; its couplings take
        `conditional_input` when the flow is conditional.
      event_shape: the event shape, a tuple of Python ints.
      conditional_event_shape: the shape of one context, a tuple of Python ints; None when unconditional.
      dtype: float dtype of data and variables.
      validate_args: Python `bool`, passed to `tfd.TransformedDistribution`.
      parameters: the subclass's constructor arguments.
      name: Python `str` name.
    """
    self._event_shape_tuple = event_shape
    self._conditional_event_shape = conditional_event_shape
    self._data_to_latent = data_to_latent  # Checkpoints name every variable by its path from this attribute.
    # `context_enters='base'`: the `ContextShift` that ends `f` (first in the right-to-left chain).
    first = data_to_latent.bijectors[0] if data_to_latent.bijectors else None
    self._context_shift = first if isinstance(first, ContextShift) else None
    base = tfd.Sample(
      tfd.Normal(loc=tf.constant(0.0, dtype), scale=tf.constant(1.0, dtype)), sample_shape=event_shape
    )
    super().__init__(
      distribution=base,
      bijector=tfb.Invert(data_to_latent),  # TFP's bijectors map latent to data.
      kwargs_split_fn=self._split_kwargs,
      validate_args=validate_args,
      parameters=parameters,
      name=name,
    )
    self._parameters = parameters  # The subclass's own arguments, not the base class's.

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}  # No tensor-valued parameters: everything learned lives in the bijector's variables.

  def copy(self, **overrides):
    """A flow of this class that shares this one's `data_to_latent`: the same layers and variables.

    As TFP's contract for `copy` asks, the copy has no variables of its own: it scores and samples as this
    flow does, now and after any training. Only `name` and `validate_args` may be overridden (they change
    the distribution, not the layers); any other argument would need new layers with fresh weights, so it is
    a `ValueError`: build such a flow with `type(flow)(**{**flow.parameters, 'num_blocks': 2})`.
    """
    unknown = sorted(set(overrides) - set(self.parameters))
    if unknown:
      raise TypeError(
        f"`copy` got unknown argument(s) {unknown}; `{type(self).__name__}` takes {sorted(self.parameters)}."
      )
    architecture = sorted(set(overrides) - {"name", "validate_args"})
    if architecture:
      raise ValueError(
        f"`copy` shares the layers and variables, so it cannot change {architecture}, which the layers are "
        f"built from; only `name` and `validate_args` may change. For a new flow with fresh weights, use "
        f"`{type(self).__name__}(**{{**flow.parameters, ...}})`."
      )
    parameters = {**self.parameters, **overrides}
    flow = type(self).__new__(type(self), self._event_shape_tuple)
    with tf.name_scope(parameters["name"]) as name:
      RealNVP.__init__(
        flow,
        self._data_to_latent,
        self._event_shape_tuple,
        self._conditional_event_shape,
        self.dtype,
        parameters["validate_args"],
        parameters,
        name,
      )
    return flow

  def __getitem__(self, slices):
    """`flow[...]` or `flow[()]`: a flow has batch shape `[]`, so this is `flow.copy()` (shared variables)."""
    if any(index is not Ellipsis for index in (slices if isinstance(slices, tuple) else (slices,))):
      raise IndexError(
        f"A flow has batch shape `[]`, so only `flow[...]` and `flow[()]` apply; got `flow[{slices!r}]`."
      )
    return self.copy()

  def condition(self, conditional_input, name=None):
    """`p(x | c)` with the context fixed: a `conditioned.ConditionedRealNVP`, an ordinary `tfd.Distribution`.

    Its batch shape is the context's batch shape, `conditional_input` being
    `[*batch_shape, *conditional_event_shape]`; its event shape is the flow's. `log_prob`, `prob`, `sample` and
    `experimental_sample_and_log_prob` take no context, so it composes in `tfd.JointDistribution*` (the context
    drawn from another variable), `tfd.Independent`, `tfd.Sample` and `tfp.vi.fit_surrogate_posterior`. It holds
    this flow, not a copy: same weights, same variables, trained through it. (Named after the `condition(context)`
    of conditional distributions in Pyro; `tfd.JointDistribution.experimental_pin` is TFP's own name for fixing
    values of a joint distribution, which this is not.)

    Raises:
      ValueError: the flow is unconditional, or the context does not end with `conditional_event_shape`.
      TypeError: the context has another dtype than the flow.
    """
    return conditioned.ConditionedRealNVP(
      self, conditional_input, validate_args=self.validate_args, name=name
    )

  def _support_bijector(self):
    """A bijector from `R^D` onto the support (`RealNVP`): the identity for vectors; image flows say."""
    return tfb.Identity()

  @classmethod
  def from_preset(cls, name, **overrides):
    """Builds a flow with a preset's settings (see `PRESETS`); keyword arguments override them."""
    if name not in PRESETS:
      raise ValueError(f"Unknown preset `name={name!r}`; choose one of {sorted(PRESETS)}.")
    return cls(**{**PRESETS[name], **overrides})

  @property
  def compute_dtype(self):
    """The `tf.DType` the conditioner networks compute in, or None when they compute in `dtype`."""
    compute_dtype = self.parameters["compute_dtype"]
    return None if compute_dtype is None else tf.as_dtype(compute_dtype)

  @property
  def num_bits(self):
    """Bits per pixel of image data (data lie in `[0, 2**num_bits)`); None for vector flows."""
    return None

  @property
  def num_dims(self):
    """`D`, the number of dimensions of one event."""
    return int(np.prod(self._event_shape_tuple))

  @property
  def conditional_event_shape(self):
    """The shape of one context `c` of `p(x | c)`, a tuple of Python ints; None for an unconditional flow."""
    return self._conditional_event_shape

  @property
  def context_enters(self):
    """Where the context enters `f`: `'couplings'` (every conditioner) or `'base'` (only the base's mean, a
    `ContextShift` ending `f`); None for an unconditional flow."""
    if self._conditional_event_shape is None:
      return None
    return "base" if self._context_shift is not None else "couplings"

  def base_mean(self, conditional_input):
    """`mu(c)`, `[*batch_shape, *event_shape]`: the mean of `g(x)`, `f` without its final shift, under the
    context `c` `[*batch_shape, *conditional_event_shape]`, for a flow with `context_enters='base'`:
    `p(x | c) = N(g(x); mu(c), I) |det dg/dx|` (see `bijectors.ContextShift`).

    Raises:
      ValueError: the context enters the couplings (or the flow is unconditional): no base mean tells the
        contexts apart.
    """
    if self._context_shift is None:
      raise ValueError(
        f"`base_mean` is for flows whose context enters only the base (`context_enters='base'`); this flow's "
        f"`context_enters` is {self.context_enters!r}."
      )
    contexts.check(conditional_input, self._conditional_event_shape, self.dtype, "This flow")
    return self._context_shift.shift(conditional_input)

  def bits_per_dim(self, x, training=False, conditional_input=None):
    """`-log_prob(x) / (D ln 2)` for pixel-valued `x`: the paper's bits/dim (a uniform model gets `num_bits`).

    Defined for flows of pixel data (`num_bits` not None, the image flows); a vector flow's density has no
    pixel scale to count bits against, so it raises `ValueError`.
    """
    if self.num_bits is None:
      raise ValueError(
        f"`bits_per_dim` is defined for image flows over pixel values (`num_bits` not None); this "
        f"{type(self).__name__} is a flow over vectors: use `log_prob`."
      )
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    return bits.bits_per_dim(
      self.log_prob(x, training=training, conditional_input=conditional_input), self.num_dims
    )

  @property
  def regularized_variables(self):
    """The variables the paper's L2 penalty applies to: weight-norm scales and coupling tanh scales."""
    return tuple(v for v in self.trainable_variables if networks.is_regularized(v))

  # Whether `log_prob` scores again a finite row whose score over- or underflowed (`_overflow_to_minus_inf`).
  _rescores_overflow = False

  def _in_support(self, x):
    """Elementwise: where `x` lies in the support of the data (subclasses say)."""
    raise NotImplementedError

  def _interior_value(self, dtype):
    """A value inside the support, which replaces values outside it before the transform."""
    raise NotImplementedError

  def _split_kwargs(self, kwargs):
    # Every keyword goes to the bijector, whose `KeywordChain` rejects names no member takes. The layers
    # branch on `training` in Python, so it reaches them as a Python bool (`_log_prob` resolves a bool
    # tensor whose value is known only when the graph runs).
    training = _training_flag(kwargs.get("training", False))
    if tf.is_tensor(training):
      raise TypeError(
        "Sampling needs `training` as a Python bool or a bool tensor with a value known when tracing; got "
        f"{training!r}."
      )
    return {}, {**kwargs, "training": training}

  def _check_event(self, x, arg_name="x"):
    """Raises unless `x` has the flow's dtype and shape `[..., *event_shape]`."""
    if x.dtype != self.dtype:
      raise TypeError(
        f"`{arg_name}` must have the flow's dtype {self.dtype.name}; got {x.dtype.name}. The density is over "
        "dequantized (continuous) values: add uniform noise to integer pixel levels first "
        "(`data.dequantize`), or cast floats."
      )
    shape = x.shape
    if not shapes.may_end_with(shape, self._event_shape_tuple):
      raise ValueError(
        f"`{arg_name}` must have shape `[..., {', '.join(map(str, self._event_shape_tuple))}]` "
        f"(batch dimensions, then the event shape); got shape {shape.as_list()}."
      )

  def _context_and_data(self, conditional_input, x, arg_name="x", sampling=False):
    """`(x, bijector_kwargs, finite)`: `x` and the checked context broadcast to one batch shape.

    `bijector_kwargs` is `{'conditional_input': context}`, or `{}` for an unconditional flow; `finite` (None
    when unconditional) says which rows have a finite context: the others reach the layers as zeros, and
    `contexts.nan_rows` makes their outputs NaN. When `sampling` (`x` the latent, its batch shape the sample
    shape) the context's batch must broadcast to it.
    """
    context = contexts.check(conditional_input, self._conditional_event_shape, self.dtype, "This flow")
    if context is None:
      return x, {}, None
    event_rank = len(self._event_shape_tuple)
    batch, context = contexts.broadcast_batch(
      *contexts.batch_shape(x, event_rank), context, self._conditional_event_shape, arg_name, sampling
    )
    context, finite = contexts.finite_rows(context, len(self._conditional_event_shape))
    return contexts.broadcast_to_batch(x, batch, event_rank), {"conditional_input": context}, finite

  def _log_prob(self, x, conditional_input=None, **kwargs):
    return self._log_prob_and_latent(x, conditional_input, kwargs)[0]

  def log_prob_and_latent(self, x, conditional_input=None, training=False):
    """`(log_prob, z)` from one pass of `f`: `log_prob(x, training=training, conditional_input=c)` and the latent
    `z = f(x; c)` it scores, shaped like `x` (`encode`'s, in the mode `training` says; NaN in a row outside the
    support or with a non-finite context)."""
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    return self._log_prob_and_latent(x, conditional_input, {"training": training})

  def _log_prob_and_latent(self, x, conditional_input, kwargs):
    conditional_input = _context_argument(conditional_input, kwargs)
    training = _training_flag(kwargs.get("training", False))
    if tf.is_tensor(training):  # known only when the graph runs: both modes, one taken
      return tf.cond(
        training,
        lambda: self._log_prob_and_latent(x, conditional_input, {**kwargs, "training": True}),
        lambda: self._log_prob_and_latent(x, conditional_input, {**kwargs, "training": False}),
      )
    self._check_event(x)
    if training and x.shape.rank is None:
      raise ValueError(
        f"`x` must have a known rank with `training=True` (batch norm reduces over its batch axes): "
        f"`[batch, {', '.join(map(str, self._event_shape_tuple))}]`; got a tensor of unknown rank (in a "
        "`tf.function`, give its input signature a shape)."
      )
    x, context_kwargs, finite_context = self._context_and_data(conditional_input, x)
    _, bijector_kwargs = self._split_kwargs({**kwargs, **context_kwargs})
    # Zero density outside the support, NaN for NaN (in `x` or the context). Values outside are replaced
    # before the transform so that they can produce neither NaNs nor NaN gradients.
    event_rank = len(self._event_shape_tuple)
    event_axes = list(range(-event_rank, 0))
    in_support = self._in_support(x)
    x_inside = tf.where(in_support, x, self._interior_value(x.dtype))
    # The transform, then its log-det from the same call's cache: one pass of `f`.
    z = self._data_to_latent.forward(x_inside, **bijector_kwargs)
    log_det = self._data_to_latent.forward_log_det_jacobian(
      x_inside, event_ndims=event_rank, **bijector_kwargs
    )
    log_prob = self.distribution.log_prob(z) + tf.cast(log_det, z.dtype)
    log_prob = self._overflow_to_minus_inf(log_prob, x_inside, in_support, event_axes, bijector_kwargs)
    # A row outside the support (or holding NaN) has density 0 and no latent.
    row_inside = tf.reduce_all(in_support, event_axes)
    log_prob = tf.where(row_inside, log_prob, tf.constant(-np.inf, log_prob.dtype))
    log_prob = tf.where(
      tf.reduce_any(tf.math.is_nan(x), event_axes), tf.constant(np.nan, log_prob.dtype), log_prob
    )
    z = tf.where(row_inside[(...,) + (tf.newaxis,) * event_rank], z, tf.constant(np.nan, z.dtype))
    return contexts.nan_rows(log_prob, finite_context, 0), contexts.nan_rows(z, finite_context, event_rank)

  def _overflow_to_minus_inf(self, log_prob, x_inside, in_support, event_axes, kwargs):
    """`log_prob` with -inf for a row inside the support whose score over- or underflowed (non-finite for a
    finite row, such as a vector of 3e38: its density underflows), scored again with the row replaced so
    that its gradient is 0, not NaN (a second pass, only when there is such a row). A row whose replacement
    does not score finitely either (non-finite weights) stays NaN. Vector flows only (`_rescores_overflow`):
    an image flow's support is a box its preprocessing maps to finite logits, and the second pass would double
    its traced graph."""
    if not self._rescores_overflow or log_prob.shape.rank is None:  # unknown rank: no rows to tell apart
      return log_prob
    row_inside = tf.reduce_all(in_support, event_axes)
    overflowed = row_inside & ~tf.math.is_finite(log_prob)
    row_axes = [slice(None)] * log_prob.shape.rank + [tf.newaxis] * len(event_axes)

    def rescore():
      replaced = tf.where(overflowed[tuple(row_axes)], self._interior_value(x_inside.dtype), x_inside)
      rescored = super(RealNVP, self)._log_prob(replaced, **kwargs)
      minus_inf = tf.where(
        tf.math.is_finite(rescored), tf.constant(-np.inf, rescored.dtype), tf.constant(np.nan, rescored.dtype)
      )
      return tf.where(overflowed, minus_inf, rescored)

    return tf.cond(tf.reduce_any(overflowed), rescore, lambda: log_prob)

  def _prob(self, x, **kwargs):
    return tf.exp(self._log_prob(x, **kwargs))

  def _call_sample_n(self, sample_shape, seed, temperature=1.0, **kwargs):
    _, x, _, _ = self._sample_latent_and_data(sample_shape, seed, temperature, kwargs)
    return x

  def _call_sample_and_log_prob(self, sample_shape, seed, temperature=1.0, **kwargs):
    # `log_prob` of the samples as returned: the latent's density with the log-determinant of the inverse
    # pass would differ from `log_prob(x)` wherever `x` rounds (a saturated logit: up to 1e-2 nats at
    # temperature 3, 1e13 at 1e6), so the samples are scored again, at one more forward pass.
    x = self._call_sample_n(sample_shape, seed, temperature, **dict(kwargs))
    return x, self._log_prob(x, **kwargs)

  def _sample_latent_and_data(self, sample_shape, seed, temperature, kwargs):
    """`(z, x, bijector_kwargs, finite_context)`: latent `z = temperature * N(0, I)` and sample
    `x = f^{-1}(z; c)` (NaN where the context is not finite; see `_context_and_data`)."""
    kwargs = dict(kwargs)
    conditional_input = _context_argument(kwargs.pop("conditional_input", None), kwargs)
    sample_shape = _sample_shape_arg(sample_shape)
    temperature = _checked_temperature(temperature, self.dtype)
    context = contexts.check(conditional_input, self._conditional_event_shape, self.dtype, "This flow")
    if context is not None:
      sample_shape = contexts.sampling_shape(sample_shape, context, len(self._conditional_event_shape))
    distribution_kwargs, bijector_kwargs = self._split_kwargs(kwargs)
    z = self.distribution.sample(sample_shape, seed=seed, **distribution_kwargs)
    z = z * tf.cast(temperature, z.dtype)
    _, context_kwargs, finite_context = self._context_and_data(context, z, sampling=True)
    bijector_kwargs.update(context_kwargs)
    x = self.bijector.forward(z, **bijector_kwargs)
    return (
      z,
      contexts.nan_rows(x, finite_context, len(self._event_shape_tuple)),
      bijector_kwargs,
      finite_context,
    )

  # A flow over `D > 1` dimensions has no scalar CDF: the joint `P(X <= x)` is a `D`-dimensional integral that
  # no closed form gives. TFP's `TransformedDistribution` would try the univariate formula and fail.
  def _cdf(self, x, **kwargs):
    raise self._no_cdf()

  def _log_cdf(self, x, **kwargs):
    raise self._no_cdf()

  def _survival_function(self, x, **kwargs):
    raise self._no_cdf()

  def _log_survival_function(self, x, **kwargs):
    raise self._no_cdf()

  def _quantile(self, p, **kwargs):
    raise self._no_cdf()

  def _no_cdf(self):
    # One message for all five: TFP falls back from one to another (`survival_function` to `1 - cdf`, ...).
    return NotImplementedError(
      "`cdf`, `log_cdf`, `survival_function`, `log_survival_function` and `quantile` are not defined for a "
      f"RealNVP flow: its events are multivariate (event shape {list(self._event_shape_tuple)}), and a "
      "multivariate distribution has no CDF or quantile in closed form. Use `log_prob`, `sample` or `encode`."
    )

  def encode(self, x, conditional_input=None):
    """The latent `z = f(x; c)` (inference mode), shaped like `x` (broadcast against the context's batch)."""
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    self._check_event(x)
    x, context_kwargs, finite_context = self._context_and_data(conditional_input, x)
    z = self._data_to_latent.forward(x, training=False, **context_kwargs)
    z = contexts.nan_rows(z, finite_context, len(self._event_shape_tuple))
    return self._nan_outside_support(x, z)

  def _nan_outside_support(self, x, z):
    """`z` with NaN in every row of `x` that holds a value outside the support (or NaN): such a row has no
    latent (`log_prob` gives it -inf or NaN), and `forward` would give one anyway (clamped, or NaN)."""
    event_axes = list(range(-len(self._event_shape_tuple), 0))
    in_support = tf.reduce_all(self._in_support(x), event_axes, keepdims=True)
    return tf.where(in_support, z, tf.constant(np.nan, z.dtype))

  def decode(self, z, conditional_input=None):
    """The data point `x = f^{-1}(z; c)` (inference mode), shaped like `z` (broadcast likewise)."""
    z = tf.convert_to_tensor(z, dtype_hint=self.dtype)
    self._check_event(z, "z")
    z, context_kwargs, finite_context = self._context_and_data(conditional_input, z, "z")
    x = self._data_to_latent.inverse(z, training=False, **context_kwargs)
    return contexts.nan_rows(x, finite_context, len(self._event_shape_tuple))

  def interpolate(self, x_start, x_end, num_steps=8, conditional_input=None):
    """Decodes `cos(a) * z_start + sin(a) * z_end` for `a` from 0 to `pi/2` in `num_steps` steps.

    The paper's latent interpolation: unlike a straight line, this path keeps the latent's Gaussian norm.
    Returns `[num_steps, *x_start.shape]`, starting at `x_start` and ending at `x_end` (up to round-off). A
    conditional flow encodes, and decodes the path, under the one context `conditional_input`.
    """
    num_steps = positive_int("num_steps", num_steps)
    if num_steps < 2:
      raise ValueError(f"`num_steps` must be at least 2; got {num_steps!r}.")
    x_start = tf.convert_to_tensor(x_start, dtype_hint=self.dtype)
    x_end = tf.convert_to_tensor(x_end, dtype_hint=self.dtype)
    if not x_start.shape.is_compatible_with(x_end.shape):
      raise ValueError(
        f"`x_end` must have the shape of `x_start`, {x_start.shape.as_list()} (the path runs between two points "
        f"or two batches of the same shape); got shape {x_end.shape.as_list()}."
      )
    z_start = self.encode(x_start, conditional_input)
    z_end = self.encode(x_end, conditional_input)
    angles = tf.cast(tf.linspace(0.0, math.pi / 2, num_steps), self.dtype)
    angles = tf.reshape(angles, [-1] + [1] * z_start.shape.rank)
    return self.decode(tf.cos(angles) * z_start + tf.sin(angles) * z_end, conditional_input)


class ImageRealNVP(RealNVP):
  """RealNVP over images `(H, W, C)` of dequantized pixel values in `[0, 2**num_bits)`.

  The density is positive on the box `LogitTransform.domain**D` (see `RealNVP`): with `logit_alpha=0` that
  is the pixel box `[0, 2**num_bits)**D`; with the paper's `logit_alpha=0.05` it is larger, so samples can
  have pixels outside `[0, 2**num_bits)`, and `log_prob` scores them.

  `f` is a `LogitTransform` followed by the paper's multi-scale architecture (`bijectors.MultiScale`: per
  scale 3 alternating checkerboard couplings, a squeeze, 3 alternating channel couplings and a factor-out of
  half the channels; the last scale has 4 checkerboard couplings). Every coupling is an `AffineCoupling`
  whose conditioner is a weight-normalized `networks.ResNet`, with twice the features at each coarser scale,
  followed (with `batch_norm`) by a `BatchNorm` flow layer. The latent `z = f(x)` has the shape of `x`, and
  `bits_per_dim(x) = -log_prob(x) / (D ln 2)` is the figure the paper reports.
  """

  is_image = True
  # The constructor arguments that only this kind of flow takes (`RealNVP(...)` names them when misplaced).
  _own_arguments = ("num_scales", "num_blocks", "num_filters", "num_bits", "logit_alpha", "fused_batch_norm")

  def __init__(
    self,
    event_shape,
    num_scales=2,
    num_blocks=4,
    num_filters=32,
    num_bits=8,
    logit_alpha=0.05,
    dropout=0.0,
    batch_norm=True,
    batch_norm_momentum=0.99,
    fused_batch_norm=True,
    conditional_event_shape=None,
    context_enters="couplings",
    dtype=tf.float32,
    compute_dtype=None,
    full_precision_output=True,
    validate_args=False,
    name="real_nvp",
  ):
    """Builds the flow.

    Args:
      event_shape: `(height, width, channels)`; height and width divisible by `2**(num_scales - 1)`.
      num_scales: number of scales.
      num_blocks: residual blocks per conditioner.
      num_filters: conditioner features at the finest scale, doubled at each coarser one.
      num_bits: bits per pixel; data lie in `[0, 2**num_bits)`.
      logit_alpha: the `LogitTransform`'s `alpha`: 0 puts all of the flow's mass on the pixel box, the
        paper's 0.05 (the default) cuts off the logit's tails and puts some mass outside it (see there).
      dropout: dropout rate inside the conditioners, active only with `training=True`.
      batch_norm: whether a `BatchNorm` flow layer follows each coupling.
      batch_norm_momentum: running-average momentum of every batch norm.
      fused_batch_norm: whether the conditioners' batch norms may use TensorFlow's fused kernel (same values;
        `False` is for measuring it).
      conditional_event_shape: None for `p(x)`; for `p(x | c)`, the shape of one context `c`: a vector
        `(features,)` (e.g. a one-hot label), projected and joined to every conditioner's input, or an image
        `(height, width, channels)` of the event's height and width, concatenated to it, squeezed to each
        scale's resolution (see `networks.ConditionalResNet`).
      context_enters: with a vector context, `'couplings'` (the default: every conditioner sees it) or
        `'base'`: only the base's mean depends on it, through a `ContextShift` ending `f`, so
        `p(x | c) = N(g(x); mu(c), I) |det dg/dx|` and a one-hot label's `log p(x | y)` for every class takes
        one pass of `g` (`classifier`).
      dtype: float dtype of data and variables.
      compute_dtype: dtype the conditioner networks compute in (default: `dtype`). `tf.bfloat16` is mixed
        precision for CPUs with bfloat16 instructions and TPUs (`tf.float16` for GPUs, with loss scaling):
        convolutions, their batch norms and activations run in it, while the variables, the log-scales,
        log-determinants, prior and loss stay in `dtype`.
      full_precision_output: with a lower `compute_dtype`, whether each conditioner's output convolution (the
        shift and log-scale) runs in `dtype` (the default) or in `compute_dtype` like the rest, its output cast
        to `dtype` before the bias, the scale and the log-determinant: a different arithmetic, faster where
        the CPU has AMX (docs/speed.md). The flow stays exactly invertible either way.
      validate_args: Python `bool`, passed to `tfd.TransformedDistribution`.
      name: Python `str` name.
    """
    parameters = dict(locals())
    event_shape = positive_ints("event_shape", event_shape)
    num_blocks = positive_int("num_blocks", num_blocks)
    num_filters = positive_int("num_filters", num_filters)
    dtype = _float_dtype(dtype)
    conditional_event_shape = _check_conditional_event_shape(conditional_event_shape, event_shape)
    coupling_context = _coupling_context(context_enters, conditional_event_shape)
    with tf.name_scope(name) as name:

      def make_coupling(scale, mask_type, index, shape):
        """An affine coupling with a ResNet conditioner and, with `batch_norm`, a batch norm after it."""
        layer_name = f"scale{scale}_{mask_type}{index}"
        resnet_kwargs = dict(
          num_blocks=num_blocks,
          num_filters=num_filters * 2**scale,
          dropout=dropout,
          batch_norm_momentum=batch_norm_momentum,
          fused_batch_norm=fused_batch_norm,
          dtype=dtype,
          compute_dtype=compute_dtype,
          full_precision_output=full_precision_output,
          name=f"{layer_name}_resnet",
        )
        if coupling_context is None:
          conditioner = networks.ResNet(shape[-1], 2 * shape[-1], **resnet_kwargs)
        else:
          conditioner = networks.ConditionalResNet(
            shape[-1],
            2 * shape[-1],
            coupling_context,
            # An image context reaches a coarser scale squeezed to its resolution.
            context_block_size=event_shape[0] // shape[0],
            **resnet_kwargs,
          )
        layers = [
          AffineCoupling(conditioner, shape, mask_type, parity=index % 2, dtype=dtype, name=layer_name)
        ]
        if batch_norm:
          layers.append(
            BatchNorm(shape[-1], momentum=batch_norm_momentum, dtype=dtype, name=f"{layer_name}_batch_norm")
          )
        return layers

      data_to_latent = MultiScale(
        event_shape,
        num_scales,
        make_coupling,
        preprocessing=LogitTransform(num_bits, alpha=logit_alpha),
        postprocessing=_base_shift(context_enters, conditional_event_shape, event_shape, dtype),
        name="data_to_latent",
      )
      super().__init__(
        data_to_latent, event_shape, conditional_event_shape, dtype, validate_args, parameters, name
      )

  @property
  def num_bits(self):
    """Bits per pixel: data lie in `[0, 2**num_bits)`."""
    return self._data_to_latent.preprocessing.num_bits

  def _in_support(self, x):
    # The preprocessing's domain is the one place that says where the flow maps onto.
    return self._data_to_latent.preprocessing.in_domain(x)

  def _interior_value(self, dtype):
    low, high = self._data_to_latent.preprocessing.domain
    return tf.constant((low + high) / 2.0, dtype)

  def _support_bijector(self):
    low, high = self._data_to_latent.preprocessing.domain
    return tfb.Sigmoid(low=tf.constant(low, self.dtype), high=tf.constant(high, self.dtype))

  def pixel_box_mass(self, num_samples=10_000, seed=(0, 0), batch_size=1000, conditional_input=None):
    """`(fraction, standard_error)`, Python floats: the flow's mass inside the pixel box `[0, 2**num_bits)**D`.

    `fraction` is the share of `num_samples` samples (temperature 1, inference mode, drawn in batches of
    `batch_size` from the stateless `seed`) whose pixels all lie in `[0, 2**num_bits)`, an unbiased estimate
    of the mass; `standard_error = sqrt(fraction * (1 - fraction) / num_samples)`, its binomial standard
    error (0 when every sample or none is inside). `log2(1 / fraction) / D` is the bits/dim that dequantized
    discrete data can never get back. A conditional flow samples under the one context `conditional_input`,
    `[*conditional_event_shape]`.
    """
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    sizes = [batch_size] * (num_samples // batch_size)
    if num_samples % batch_size:
      sizes.append(num_samples % batch_size)
    seeds = tfp.random.split_seed(seed, n=len(sizes))
    context = {} if conditional_input is None else {"conditional_input": conditional_input}
    inside = 0
    for size, batch_seed in zip(sizes, tf.unstack(seeds)):
      samples = self.sample(size, seed=batch_seed, **context)
      in_box = (samples >= 0.0) & (samples < 2.0**self.num_bits)
      inside += int(tf.reduce_sum(tf.cast(tf.reduce_all(in_box, axis=[-3, -2, -1]), tf.int64)))
    fraction = inside / num_samples
    return fraction, math.sqrt(fraction * (1.0 - fraction) / num_samples)


class VectorRealNVP(RealNVP):
  """RealNVP over vectors `(D,)`: `num_couplings` alternating half-mask `AffineCoupling`s.

  Each conditioner is a `networks.MLP`; with `batch_norm` a `BatchNorm` flow layer follows each coupling.
  """

  is_image = False
  _own_arguments = ("num_couplings", "hidden_units")

  _rescores_overflow = True  # its support is all of R^D: a finite 3e38 row's density underflows

  def __init__(
    self,
    event_shape,
    num_couplings=4,
    hidden_units=(64, 64),
    dropout=0.0,
    batch_norm=False,
    batch_norm_momentum=0.99,
    conditional_event_shape=None,
    context_enters="couplings",
    dtype=tf.float32,
    compute_dtype=None,
    full_precision_output=True,
    validate_args=False,
    name="real_nvp",
  ):
    """Builds a flow over vectors. `dropout`, `batch_norm`, `batch_norm_momentum`, `dtype`, `compute_dtype`,
    `full_precision_output`, `context_enters`, `validate_args` and `name` are as in `ImageRealNVP`
    (`batch_norm` is off by default here).

    Args:
      event_shape: `(dims,)`, `dims >= 2`.
      num_couplings: number of couplings; consecutive ones transform complementary halves.
      hidden_units: MLP conditioner widths.
      conditional_event_shape: None for `p(x)`; for `p(x | c)`, the shape of one context `c`, flattened and
        joined to every MLP conditioner's input.
    """
    parameters = dict(locals())
    event_shape = positive_ints("event_shape", event_shape)
    if len(event_shape) != 1:
      raise ValueError(f"`event_shape` must be `(dims,)` with positive `dims`; got {event_shape}.")
    num_couplings = positive_int("num_couplings", num_couplings)
    hidden_units = positive_ints("hidden_units", hidden_units)
    dtype = _float_dtype(dtype)
    (dims,) = event_shape
    conditional_event_shape = _check_conditional_event_shape(conditional_event_shape)
    coupling_context = _coupling_context(context_enters, conditional_event_shape)
    with tf.name_scope(name) as name:
      layers = []
      for i in range(num_couplings):
        mlp_kwargs = dict(
          hidden_units=hidden_units,
          dropout=dropout,
          dtype=dtype,
          compute_dtype=compute_dtype,
          full_precision_output=full_precision_output,
          name=f"coupling{i}_mlp",
        )
        if coupling_context is None:
          conditioner = networks.MLP(dims, 2 * dims, **mlp_kwargs)
        else:
          conditioner = networks.ConditionalMLP(dims, 2 * dims, coupling_context, **mlp_kwargs)
        layers.append(
          AffineCoupling(conditioner, (dims,), "half", parity=i % 2, dtype=dtype, name=f"coupling{i}")
        )
        if batch_norm:
          layers.append(
            BatchNorm(dims, momentum=batch_norm_momentum, dtype=dtype, name=f"coupling{i}_batch_norm")
          )
      shift = _base_shift(context_enters, conditional_event_shape, event_shape, dtype)
      if shift is not None:
        layers.append(shift)
      # `KeywordChain`, like `tfb.Chain`, applies its list right to left.
      data_to_latent = KeywordChain(list(reversed(layers)), name="data_to_latent")
      super().__init__(
        data_to_latent, event_shape, conditional_event_shape, dtype, validate_args, parameters, name
      )

  def _in_support(self, x):
    return tf.math.is_finite(x)

  def _interior_value(self, dtype):
    return tf.zeros([], dtype)


def _coupling_context(context_enters, conditional_event_shape):
  """The context shape the couplings' conditioners take: `conditional_event_shape` when the context enters the
  couplings, else None. Checks `context_enters`: one of `CONTEXT_ENTERS`, and `'base'` only with a vector
  context."""
  if context_enters not in CONTEXT_ENTERS:
    raise ValueError(f"`context_enters` must be one of {CONTEXT_ENTERS}; got {context_enters!r}.")
  if context_enters == "base" and (conditional_event_shape is None or len(conditional_event_shape) != 1):
    raise ValueError(
      "`context_enters='base'` shifts the base's mean by a linear map of a vector context, so it needs "
      f"`conditional_event_shape=(features,)`; got conditional_event_shape={conditional_event_shape}."
    )
  return conditional_event_shape if context_enters == "couplings" else None


def _base_shift(context_enters, conditional_event_shape, event_shape, dtype):
  """The `ContextShift` that ends `f` when the context enters the base, else None."""
  if context_enters != "base":
    return None
  return ContextShift(conditional_event_shape[0], event_shape, dtype=dtype, name="base_shift")


def _check_conditional_event_shape(conditional_event_shape, event_shape=None):
  """`conditional_event_shape` as a tuple of Python ints, or None.

  For an image flow (`event_shape` given), a vector `(features,)` or an image `(height, width, channels)` of
  the event's height and width.
  """
  if conditional_event_shape is None:
    return None
  shape = positive_ints("conditional_event_shape", conditional_event_shape)
  if event_shape is not None and not (len(shape) == 1 or (len(shape) == 3 and shape[:2] == event_shape[:2])):
    raise ValueError(
      "`conditional_event_shape` of an image flow must be None, `(features,)`, or `(height, width, channels)` "
      f"with the event's height and width {tuple(event_shape[:2])}; got {shape}."
    )
  return shape


def _float_dtype(dtype):
  """`dtype` (a `tf.DType` or a name such as `'float32'`) as a floating `tf.DType`, or a `TypeError`."""
  try:
    as_dtype = tf.as_dtype(dtype)
  except TypeError:
    as_dtype = None
  if as_dtype is None or not as_dtype.is_floating:
    raise TypeError(f"`dtype` must be a floating dtype such as `tf.float32` or 'float32'; got {dtype!r}.")
  return as_dtype


def _sample_shape_arg(sample_shape):
  """`sample_shape` checked: non-negative integers (an integer tensor whose value is unknown passes as is)."""
  if tf.is_tensor(sample_shape):
    if not sample_shape.dtype.is_integer:
      raise TypeError(f"`sample_shape` must be integers; got a {sample_shape.dtype.name} tensor.")
    value = tf.get_static_value(sample_shape)
    if value is None:
      return sample_shape
    sample_shape = value.tolist()
  sizes = sample_shape if isinstance(sample_shape, (list, tuple)) else [sample_shape]
  for size in sizes:
    try:
      valid = not isinstance(size, bool) and operator.index(size) >= 0
    except TypeError:
      valid = False
    if not valid:
      raise ValueError(
        f"`sample_shape` (the number of samples) must be a non-negative integer or a sequence of them; "
        f"got {sample_shape!r}."
      )
  return sample_shape


def _context_argument(conditional_input, kwargs):
  """The context given as `conditional_input=c` or, as TFP's conditional flows take it (`tfb.MaskedAutoregressiveFlow`
  in a `tfd.TransformedDistribution`), as `bijector_kwargs={'conditional_input': c}`: the two are one argument.
  Pops `bijector_kwargs` and `distribution_kwargs` from `kwargs`.

  Raises:
    ValueError: the context given both ways; `bijector_kwargs` with another key; a non-empty
      `distribution_kwargs` (the standard normal base takes none).
    TypeError: `bijector_kwargs` that is not a mapping.
  """
  bijector_kwargs = kwargs.pop("bijector_kwargs", None)
  distribution_kwargs = kwargs.pop("distribution_kwargs", None)
  if distribution_kwargs:
    raise ValueError(
      "`distribution_kwargs` must be empty or None: the flow's base distribution (a standard normal) takes no "
      f"keywords; got keys {sorted(distribution_kwargs)}."
    )
  if bijector_kwargs is None:
    return conditional_input
  if not isinstance(bijector_kwargs, Mapping):
    raise TypeError(
      f"`bijector_kwargs` must be a dict such as `{{'conditional_input': c}}`; got {type(bijector_kwargs).__name__}."
    )
  unknown = sorted(set(bijector_kwargs) - {"conditional_input"})
  if unknown:
    raise ValueError(
      f"`bijector_kwargs` may hold only 'conditional_input' (the context, as TFP's conditional flows take it); got "
      f"{unknown}. `training` and `temperature` are the flow's own keywords: pass them as `training=...`."
    )
  if bijector_kwargs.get("conditional_input") is None:
    return conditional_input
  if conditional_input is not None:
    raise ValueError(
      "The context was given twice, as `conditional_input=` and as `bijector_kwargs={'conditional_input': ...}`; "
      "pass it one way."
    )
  return bijector_kwargs["conditional_input"]


def _training_flag(training):
  """`training` as a Python bool, or the scalar bool tensor itself when its value is not known yet."""
  if isinstance(training, (bool, np.bool_)):
    return bool(training)
  if tf.is_tensor(training) and training.dtype == tf.bool and training.shape.rank == 0:
    value = tf.get_static_value(training)
    return training if value is None else bool(value)
  raise TypeError(
    f"`training` must be a Python bool or a scalar bool tensor; got {training!r} ({type(training).__name__})."
  )


def _flow_class(event_shape, kwargs):
  """The flow class for `RealNVP(event_shape, **kwargs)`: `ImageRealNVP` for a rank-3 `event_shape`,
  `VectorRealNVP` for rank 1; a `ValueError` for another rank or for `kwargs` that only the other kind takes."""
  shape = positive_ints("event_shape", event_shape)
  if len(shape) not in _FLOW_CLASSES:
    raise ValueError(
      "`event_shape` must be `(height, width, channels)` for images or `(dims,)` for vectors, with positive "
      f"sizes; got {shape}."
    )
  flow_class = _FLOW_CLASSES[len(shape)]
  (other_class,) = set(_FLOW_CLASSES.values()) - {flow_class}
  misplaced = [arg for arg in kwargs if arg in other_class._own_arguments]
  if misplaced:
    raise ValueError(
      f"{', '.join(f'`{arg}`' for arg in misplaced)} only apply to {'image' if other_class.is_image else 'vector'} flows "
      f"(`{other_class.__name__}`); `event_shape={shape}` calls for `{flow_class.__name__}`, which takes "
      f"{', '.join(f'`{arg}`' for arg in flow_class._own_arguments)}."
    )
  return flow_class


# The flow class for each rank of `event_shape`.
_FLOW_CLASSES = {3: ImageRealNVP, 1: VectorRealNVP}


def _checked_temperature(temperature, dtype):
  """`temperature` as a scalar tensor of `dtype`, checked to be a finite number >= 0: now when its value is
  known, else in the graph (`InvalidArgumentError`). A string, a NaN or an infinity is refused by name."""
  name = "`temperature`"
  if isinstance(temperature, (str, bytes, bool)) or (
    tf.is_tensor(temperature) and not (temperature.dtype.is_floating or temperature.dtype.is_integer)
  ):
    raise ValueError(f"{name} must be a finite number >= 0; got {temperature!r}.")
  try:
    temperature = tf.cast(tf.convert_to_tensor(temperature, dtype_hint=dtype), dtype)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be a finite number >= 0; got {temperature!r}.") from error
  if temperature.shape.rank != 0:
    raise ValueError(f"{name} must be a scalar; got shape {temperature.shape.as_list()}.")
  value = tf.get_static_value(temperature)
  if value is not None:
    if not (np.isfinite(value) and value >= 0):
      raise ValueError(f"{name} must be a finite number >= 0; got {float(value)!r}.")
    return temperature
  check = tf.debugging.Assert(
    tf.math.is_finite(temperature) & (temperature >= 0),
    [f"{name} must be a finite number >= 0; got", temperature],
  )
  with tf.control_dependencies([check]):
    return tf.identity(temperature)
