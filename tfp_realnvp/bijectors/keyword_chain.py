"""A chain of bijectors that hands each member the call-time keywords it declares it takes."""

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["KeywordChain", "call_keywords_of"]

tfb = tfp.bijectors


def call_keywords_of(bijector):
  """The call-time keywords `bijector` takes: its `call_keywords` attribute, or none if it has none.

  A leaf bijector declares them as an attribute (`BatchNorm.call_keywords = frozenset({'training'})`; a coupling
  adds `'conditional_input'` when its conditioner takes one);
  a wrapper declares those of what it wraps (`FactorOut`, `KeywordChain`). Stock TFP bijectors declare none.
  """
  return frozenset(getattr(bijector, "call_keywords", ()))


class KeywordChain(tfb.Composition):
  """`tfb.Chain`, with call-time keywords routed by declaration instead of by bijector name.

  `KeywordChain([b1, b2]).forward(x, **kwargs) = b1.forward(b2.forward(x, **kwargs_2), **kwargs_1)`, where
  `kwargs_i` holds the entries of `kwargs` whose names `b_i` declares (`call_keywords_of(b_i)`); the
  inverse and the log-dets likewise. As in `tfb.Chain`, the list applies right to left.

  `tfb.Chain` routes `forward(x, b1={'training': True})` to the member named `b1`, so a caller must know
  the name of every member that takes a keyword, through every level of nesting. Here the members say what
  they take: a bijector whose `call_keywords` holds `'training'` receives `training` wherever it sits,
  inside nested chains or any wrapper that declares the keywords of what it wraps (`FactorOut`). A new
  keyword needs only its bijector's declaration, and a new wrapper only its own; nothing routes by type.
  A member that declares nothing (a stock TFP bijector such as `tfb.Invert(Squeeze())`) is called without
  keywords. The chain's own `call_keywords` are the union of its members', so chains nest.

  Keyword names are checked at each call: a name no member takes is a `TypeError` naming it. Because each
  member gets the same keywords for its transform and for its log-det, TFP's bijector cache (keyed on the
  keywords) still computes each member once per `log_prob`.

  At construction, a member that holds bijectors taking keywords it does not declare (e.g. a stock
  `tfb.Invert(AffineCoupling(...))`, which would never pass `training` on) is a `ValueError`: it would
  silently drop them.

  #### Examples

  ```python
  chain = KeywordChain([BatchNorm(4), tfb.Shift(1.0), BatchNorm(4)])
  y = chain.forward(x, training=True)  # both batch norms get `training=True`; `tfb.Shift` gets nothing
  ```
  """

  def __init__(self, bijectors, validate_args=False, parameters=None, name="keyword_chain"):
    """Builds the chain.

    Args:
      bijectors: list of `tfb.Bijector`s, applied right to left (`bijectors[-1]` sees the input of
        `forward` first), as in `tfb.Chain`.
      validate_args: Python `bool`, passed to `tfb.Composition`.
      parameters: the constructor arguments of a subclass, for `copy`; None for this class's own.
      name: Python `str` name.
    """
    parameters = dict(locals()) if parameters is None else parameters
    bijectors = list(bijectors)
    for bijector in bijectors:
      if not isinstance(bijector, tfb.Bijector):
        raise TypeError(f"`bijectors` must hold `tfb.Bijector`s; got {type(bijector).__name__}.")
      _check_declares_inner_keywords(bijector)
    self._call_keywords = frozenset().union(*(call_keywords_of(b) for b in bijectors))
    with tf.name_scope(name) as name:
      super().__init__(
        bijectors=bijectors,
        # An empty chain is the identity on scalars; otherwise TFP infers the ranks from the members.
        forward_min_event_ndims=None if bijectors else 0,
        inverse_min_event_ndims=None if bijectors else 0,
        validate_args=validate_args,
        parameters=parameters,
        name=name,
      )

  @property
  def call_keywords(self):
    """The union of the members' call-time keywords."""
    return self._call_keywords

  def _walk_forward(self, step_fn, x, **kwargs):
    self._check_keywords(kwargs)
    for bijector in reversed(self._bijectors):
      x = step_fn(bijector, x, **_kwargs_for(bijector, kwargs))
    return x

  def _walk_inverse(self, step_fn, y, **kwargs):
    self._check_keywords(kwargs)
    for bijector in self._bijectors:
      y = step_fn(bijector, y, **_kwargs_for(bijector, kwargs))
    return y

  def _check_keywords(self, kwargs):
    unknown = set(kwargs) - self._call_keywords
    if unknown:
      raise TypeError(
        f"`{self.name}` got unexpected keyword argument(s) {sorted(unknown)}; its bijectors take "
        f"{sorted(self._call_keywords) or 'none'}."
      )


def _kwargs_for(bijector, kwargs):
  accepted = call_keywords_of(bijector)
  return {key: value for key, value in kwargs.items() if key in accepted}


def _check_declares_inner_keywords(bijector):
  declared = call_keywords_of(bijector)
  inner = frozenset().union(
    *(call_keywords_of(m) for m in bijector.submodules if isinstance(m, tfb.Bijector) and m is not bijector)
  )
  missing = inner - declared
  if missing:
    raise ValueError(
      f"Bijector `{bijector.name}` ({type(bijector).__name__}) holds bijectors that take the call-time "
      f"keyword(s) {sorted(missing)} but declares only {sorted(declared)} in `call_keywords`, so they would "
      "never receive them. Wrap them in a `KeywordChain` (or another wrapper that declares the keywords of "
      "what it wraps, as `FactorOut` does), or give the wrapper a `call_keywords` attribute."
    )
