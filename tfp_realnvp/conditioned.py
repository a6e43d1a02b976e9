"""A conditional flow `p(x | c)` with its context fixed: an ordinary `tfd.Distribution` over `x`.

`flow.condition(c)` returns a `ConditionedRealNVP`: `log_prob(x)`, `prob(x)`, `sample(n)` and
`experimental_sample_and_log_prob(n)` take no context, so TFP's machinery that knows only those methods can use a
conditional flow: joint distributions whose context is another variable, `tfd.Independent` and `tfd.Sample`,
`tfp.vi.fit_surrogate_posterior`. Its batch shape is the context's batch shape (a context `[200, 5]` of a flow
with `conditional_event_shape=(5,)` gives batch shape `[200]`), its event shape the flow's.

```python
posterior = flow.condition(observation)               # q(theta | x = observation)
theta = posterior.sample(1000, seed=[1, 2])           # [1000, *batch, *event]
model = tfd.JointDistributionNamed(dict(
    c=tfd.Sample(tfd.Normal(0., 1.), 5),
    x=lambda c: flow.condition(c)))                    # the context drawn from another variable
```

The view holds the flow itself, not a copy: it scores and samples with the flow's current weights, lists the
flow's variables (`trainable_variables`), and training through it trains the flow.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import parameter_properties, tensor_util

from tfp_realnvp.internal import contexts

__all__ = ["ConditionedRealNVP"]

tfd = tfp.distributions

# Keywords that would change the fixed context; the view refuses them by name.
_CONTEXT_KEYWORDS = ("conditional_input", "bijector_kwargs", "distribution_kwargs")


class ConditionedRealNVP(tfd.Distribution):
  """`p(x | c)` for a fixed context `c`: a conditional `RealNVP` as an ordinary `tfd.Distribution`.

  Batch shape: the context's batch dimensions, `conditional_input.shape[:-len(conditional_event_shape)]`. Event
  shape and dtype: the flow's. `sample(sample_shape)` returns `[*sample_shape, *batch_shape, *event_shape]`,
  every row drawn under its own context; `log_prob(x)` takes `x` of shape `[..., *event_shape]` whose batch
  dimensions broadcast against the batch shape, as for any TFP distribution. `training` and (for sampling)
  `temperature` pass through to the flow; a context may not (it is fixed: `copy(conditional_input=c2)` gives
  the view under another one). `copy()` shares the flow, so the copy keeps its weights.
  """

  def __init__(self, flow, conditional_input, validate_args=False, name=None):
    """Fixes the context of `flow`.

    Args:
      flow: a conditional `RealNVP` (one built with `conditional_event_shape`).
      conditional_input: the context, `[*batch_shape, *flow.conditional_event_shape]`, of the flow's dtype. A
        `tf.Variable` stays a variable (read at every call).
      validate_args: Python `bool`, as for any TFP distribution.
      name: Python `str` name; default: the flow's name with `_conditioned`.

    Raises:
      ValueError: `flow` is unconditional, or the context's shape does not end with
        `flow.conditional_event_shape` (naming `conditional_input`, the expected and the given shape).
      TypeError: `flow` is not a flow, or the context has another dtype than the flow.
    """
    parameters = dict(locals())
    event_shape = getattr(flow, "conditional_event_shape", ())
    if event_shape == ():
      raise TypeError(f"`flow` must be a conditional RealNVP flow; got {type(flow).__name__}.")
    if event_shape is None:
      raise ValueError(
        f"`flow` {flow.name!r} is unconditional (built without `conditional_event_shape`): it has no context to "
        "fix; use the flow itself."
      )
    contexts.check(conditional_input, event_shape, flow.dtype, owner=f"The flow {flow.name!r}")
    with tf.name_scope(name or f"{flow.name}_conditioned") as name:
      self._flow = flow
      self._conditional_input = tensor_util.convert_nonref_to_tensor(conditional_input, dtype=flow.dtype)
      super().__init__(
        dtype=flow.dtype,
        reparameterization_type=tfd.FULLY_REPARAMETERIZED,
        validate_args=validate_args,
        allow_nan_stats=True,
        parameters=parameters,
        name=name,
      )

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
      # The context's trailing `conditional_event_shape` dimensions are one context; the rest are batch.
      conditional_input=parameter_properties.ParameterProperties(
        event_ndims=lambda self: len(self.flow.conditional_event_shape),
        default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED,
      ),
      # The flow has batch shape `[]`: it adds no batch dimensions, and slicing the view leaves it whole.
      flow=parameter_properties.BatchedComponentProperties(event_ndims=0),
    )

  @property
  def flow(self):
    """The conditional flow (shared, not copied)."""
    return self._flow

  @property
  def conditional_input(self):
    """The fixed context, `[*batch_shape, *flow.conditional_event_shape]`."""
    return self._conditional_input

  def _context_rank(self):
    return len(self._flow.conditional_event_shape)

  def _batch_shape(self):
    shape = self._conditional_input.shape
    return shape if shape.rank is None else shape[: shape.rank - self._context_rank()]

  def _batch_shape_tensor(self):
    context = tf.convert_to_tensor(self._conditional_input)
    return tf.shape(context)[: tf.rank(context) - self._context_rank()]

  def _event_shape(self):
    return self._flow.event_shape

  def _event_shape_tensor(self):
    return self._flow.event_shape_tensor()

  def _checked_kwargs(self, kwargs):
    given = sorted(set(kwargs) & set(_CONTEXT_KEYWORDS))
    if given:
      raise ValueError(
        f"This distribution's context is fixed, so it takes no {', '.join(f'`{k}`' for k in given)}; for "
        "another context use `view.copy(conditional_input=c)` or `flow.condition(c)`."
      )
    return kwargs

  def _full_sample_shape(self, n):
    """`[n, *batch_shape]`, an int32 tensor: the flow draws one sample per context in every one of `n` rows."""
    return tf.concat([tf.reshape(tf.cast(n, tf.int32), [1]), self._batch_shape_tensor()], 0)

  def _sample_n(self, n, seed=None, **kwargs):
    kwargs = self._checked_kwargs(kwargs)
    return self._flow.sample(
      self._full_sample_shape(n), seed=seed, conditional_input=self._conditional_input, **kwargs
    )

  def _sample_and_log_prob(self, sample_shape, seed, **kwargs):
    kwargs = self._checked_kwargs(kwargs)
    size = tf.reduce_prod(sample_shape)
    x, log_prob = self._flow.experimental_sample_and_log_prob(
      self._full_sample_shape(size), seed=seed, conditional_input=self._conditional_input, **kwargs
    )
    batch_and_event = tf.shape(x)[1:]
    x = tf.reshape(x, tf.concat([sample_shape, batch_and_event], 0))
    log_prob = tf.reshape(log_prob, tf.concat([sample_shape, tf.shape(log_prob)[1:]], 0))
    x = self._set_sample_static_shape(x, sample_shape)
    log_prob = tf.ensure_shape(log_prob, x.shape[: x.shape.rank - len(self.event_shape)])
    return x, log_prob

  def _log_prob(self, x, **kwargs):
    kwargs = self._checked_kwargs(kwargs)
    return self._flow.log_prob(x, conditional_input=self._conditional_input, **kwargs)

  def _prob(self, x, **kwargs):
    return tf.exp(self._log_prob(x, **kwargs))

  def _default_event_space_bijector(self):
    # The support does not depend on the context (`RealNVP`): any bijector from R^D onto it will do.
    return self._flow._support_bijector()
