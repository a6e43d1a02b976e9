"""A variational autoencoder over discrete pixel levels whose prior is any distribution, a RealNVP flow included.

The generative model `p(z, x) = p(z) p(x | z)` is a `tfd.JointDistributionCoroutine`; the amortized posterior
`q(z | x)` is a Gaussian. With a `RealNVP(event_shape=(latent_size,), ...)` prior the flow is trained jointly
with the encoder and decoder, and the KL term has no closed form: `priors.kl_divergence` estimates it. A
conditional prior `p(z | c)` (`conditional_event_shape=...`) takes the context as `conditional_input`; conditioned
on a one-hot label `y`, the model is `p(y) p(z | y) p(x | z)` and its marginal `log p(x)` has bounds too.
"""

import math
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import classifier, networks, priors
from tfp_realnvp.internal import contexts
from tfp_realnvp.internal.checks import positive_int, positive_ints

__all__ = ["DiscretizedLogisticDecoder", "GaussianEncoder", "LogLikelihoodBounds", "VariationalAutoencoder"]

tfd = tfp.distributions

# Offsets `softplus(raw + offset)` so that a zero-initialized network output gives a scale of exactly 1.
_SOFTPLUS_INVERSE_OF_ONE = math.log(math.e - 1.0)


class _PixelLatentMLP(tf.Module):
  """What `GaussianEncoder` and `DiscretizedLogisticDecoder` share: the checked `event_shape` (pixels with
  levels in `[0, num_levels)`), `latent_size` and `min_scale`, and a `networks.MLP` `network` from the pixels
  to `2 * latent_size` outputs (`from_pixels`) or from the latent to `2 * D`."""

  def __init__(
    self, event_shape, latent_size, num_levels, hidden_units, dropout, min_scale, dtype, name, from_pixels
  ):
    super().__init__(name=name)
    self.event_shape = positive_ints("event_shape", event_shape)
    self.latent_size = positive_int("latent_size", latent_size)
    self.num_levels = _check_num_levels(num_levels)
    self.min_scale = min_scale
    num_pixels = math.prod(self.event_shape)
    sizes = (num_pixels, 2 * self.latent_size) if from_pixels else (self.latent_size, 2 * num_pixels)
    with self.name_scope:
      self.network = networks.MLP(*sizes, hidden_units, dropout=dropout, dtype=dtype, name="mlp")


class GaussianEncoder(_PixelLatentMLP):
  """`q(z | x) = N(loc(x), diag(scale(x)**2))`, a `networks.MLP` over the pixels rescaled to `[-1, 1]`.

  `x` holds pixel levels in `[0, num_levels)`, shaped `[batch..., *event_shape]`. `scale = softplus(raw) +
  min_scale`. The MLP's output layer starts at zero, so at initialization every posterior is `N(0, I)`.
  """

  def __init__(
    self,
    event_shape,
    latent_size,
    num_levels,
    hidden_units=(256, 256),
    dropout=0.0,
    min_scale=1e-4,
    dtype=tf.float32,
    name="gaussian_encoder",
  ):
    super().__init__(
      event_shape, latent_size, num_levels, hidden_units, dropout, min_scale, dtype, name, from_pixels=True
    )

  def __call__(self, x, training=False):
    """The posterior `q(z | x)`: a `tfd.MultivariateNormalDiag` with `x`'s batch shape."""
    x = tf.convert_to_tensor(x)
    batch_shape = tf.shape(x)[: x.shape.rank - len(self.event_shape)]
    pixels = tf.reshape(x, [-1, math.prod(self.event_shape)])
    outputs = self.network(2.0 * pixels / (self.num_levels - 1) - 1.0, training=training)
    outputs = tf.reshape(outputs, tf.concat([batch_shape, [2 * self.latent_size]], 0))
    loc, raw_scale = tf.split(outputs, 2, axis=-1)
    scale = tf.nn.softplus(raw_scale + _SOFTPLUS_INVERSE_OF_ONE) + self.min_scale
    return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)


class DiscretizedLogisticDecoder(_PixelLatentMLP):
  """`p(x | z)`: independent discretized logistics over each pixel's levels `{0, ..., num_levels - 1}`.

  `P(x = k) = F(k + 1/2) - F(k - 1/2)`, with `F` the logistic CDF with `(loc(z), scale(z))` from a `networks.MLP`,
  the mass below `1/2` given to level 0 and the mass above `num_levels - 3/2` to the top level (as in
  PixelCNN++). A likelihood of the discrete data itself, whose neighbouring levels share probability.
  """

  def __init__(
    self,
    latent_size,
    event_shape,
    num_levels,
    hidden_units=(256,),
    dropout=0.0,
    min_scale=1e-2,
    dtype=tf.float32,
    name="discretized_logistic_decoder",
  ):
    super().__init__(
      event_shape, latent_size, num_levels, hidden_units, dropout, min_scale, dtype, name, from_pixels=False
    )

  def loc_and_scale(self, z, training=False):
    """Each pixel's logistic location and scale, shaped `[batch..., *event_shape]`."""
    z = tf.convert_to_tensor(z)
    batch_shape = tf.shape(z)[:-1]
    outputs = self.network(tf.reshape(z, [-1, self.latent_size]), training=training)
    outputs = tf.reshape(outputs, tf.concat([batch_shape, self.event_shape, [2]], 0))
    # A zero network output is a mid-grey pixel with scale 1.
    loc = outputs[..., 0] + (self.num_levels - 1) / 2
    scale = tf.nn.softplus(outputs[..., 1] + _SOFTPLUS_INVERSE_OF_ONE) + self.min_scale
    return loc, scale

  def __call__(self, z, training=False):
    """The likelihood `p(x | z)`, a distribution over `[batch..., *event_shape]` pixel levels."""
    loc, scale = self.loc_and_scale(z, training)
    # QuantizedDistribution gives level k the mass in (k - 1, k]; shifting by 1/2 centres it on k.
    levels = tfd.QuantizedDistribution(tfd.Logistic(loc - 0.5, scale), low=0.0, high=self.num_levels - 1.0)
    return tfd.Independent(levels, reinterpreted_batch_ndims=len(self.event_shape))


class LogLikelihoodBounds(NamedTuple):
  """Two lower bounds on `log p(x)` per example, from the same `K` importance weights `w_k = p(x, z_k) / q(z_k | x)`.

  `elbo = mean_k log w_k`; `importance_weighted = log mean_k w_k` (Burda et al., 2016), which is never below the
  ELBO and tends to `log p(x)` as `K` grows.
  """

  elbo: tf.Tensor
  importance_weighted: tf.Tensor

  @classmethod
  def from_log_weights(cls, log_weights):
    """The bounds from log importance weights `[num_samples, batch...]`."""
    num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return cls(
      elbo=tf.reduce_mean(log_weights, axis=0),
      importance_weighted=tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples),
    )


class VariationalAutoencoder(tf.Module):
  """`p(z, x) = prior(z) decoder(z)(x)` with amortized posterior `q(z | x) = encoder(x)`.

  `prior` is any distribution over `[latent_size]`: a `tfd.MultivariateNormalDiag` standard normal, or a learned
  `RealNVP(event_shape=(latent_size,), ...)`. A RealNVP prior is always scored with `training=False`, so build it
  without dropout or batch norm (the vector-flow defaults).

  A conditional prior, `RealNVP(event_shape=(latent_size,), conditional_event_shape=...)`, makes the model
  `p(z | c) p(x | z)`: the methods take the context `c` as `conditional_input` and give it to the prior only, so
  the encoder and decoder are those of an unconditional VAE. `q(z | x)` does not see `c`; it is still a
  posterior for `p(z | x, c)`, so every bound below stays a bound on `log p(x | c)`. For a prior conditioned on
  a one-hot label `y` with class probabilities `p(y)`, `marginal_log_likelihood_bounds` bounds the marginal
  `log p(x) = log sum_y p(y) p(x | y)`, comparable with an unconditional VAE's `log p(x)`.

  #### Examples

  ```python
  encoder = GaussianEncoder((8, 8, 1), latent_size=16, num_levels=16)
  decoder = DiscretizedLogisticDecoder(16, (8, 8, 1), num_levels=16)
  vae = VariationalAutoencoder(encoder, decoder, RealNVP(event_shape=(16,), num_couplings=4))
  loss = tf.reduce_mean(vae.negative_elbo(images, seed=tf.constant([1, 2]), training=True))
  bounds = vae.log_likelihood_bounds(images, num_samples=100, seed=tf.constant([3, 4]))

  # p(y) p(z | y) p(x | z): a prior conditioned on the one-hot label.
  prior = RealNVP(event_shape=(16,), num_couplings=4, conditional_event_shape=(10,))
  vae = VariationalAutoencoder(encoder, decoder, prior)
  loss = tf.reduce_mean(vae.negative_elbo(images, seed, training=True, conditional_input=tf.one_hot(labels, 10)))
  marginal = vae.marginal_log_likelihood_bounds(images, 100, seed, log_label_prior=tf.math.log(label_frequencies))
  ```

  #### References

  [1]: Diederik P. Kingma and Max Welling. Auto-Encoding Variational Bayes. In _International Conference on
       Learning Representations_, 2014. https://arxiv.org/abs/1312.6114
  [2]: Yuri Burda, Roger Grosse and Ruslan Salakhutdinov. Importance Weighted Autoencoders. In _International
       Conference on Learning Representations_, 2016. https://arxiv.org/abs/1509.00519
  """

  def __init__(self, encoder, decoder, prior, name="variational_autoencoder"):
    super().__init__(name=name)
    latent_shape = tf.TensorShape(prior.event_shape)
    if latent_shape != [encoder.latent_size] or decoder.latent_size != encoder.latent_size:
      raise ValueError(
        "`prior.event_shape`, `encoder.latent_size` and `decoder.latent_size` must agree; got "
        f"{latent_shape}, {encoder.latent_size} and {decoder.latent_size}."
      )
    self.encoder = encoder
    self.decoder = decoder
    self.prior = prior

  @property
  def trainable_variables(self):
    # Listed explicitly: a RealNVP held by another tf.Module does not show its variables through the
    # enclosing module's automatic collection (it is a CompositeTensor without tensor components).
    variables = {}
    for part in (self.encoder, self.decoder, self.prior):
      for variable in part.trainable_variables:
        variables.setdefault(id(variable), variable)
    return tuple(variables.values())

  @property
  def conditional_event_shape(self):
    """The shape of one context of a conditional prior; None for an unconditional one."""
    return getattr(self.prior, "conditional_event_shape", None)

  def generative_model(self, conditional_input=None):
    """`p(z, x)` as a `tfd.JointDistributionCoroutine` over `(z, x)`, in inference mode.

    A conditional prior takes the context `c` here, `[*batch, *conditional_event_shape]`: the model is then
    `p(z | c) p(x | z)`, its prior the flow conditioned on `c` (`RealNVP.condition`), with batch shape `batch`.
    """
    self._check_context(conditional_input)
    prior = self.prior if conditional_input is None else self.prior.condition(conditional_input)

    def latent_then_pixels():
      latent = yield tfd.JointDistributionCoroutine.Root(prior)
      yield self.decoder(latent)

    return tfd.JointDistributionCoroutine(latent_then_pixels)

  def negative_elbo(self, x, seed, training=False, conditional_input=None):
    """`-E_q[log p(x | z)] + KL(q(z | x) || p(z | c))` per example, from one reparameterized sample of `q`.

    `c = conditional_input` for a conditional prior (else None). The KL term is exact for a Gaussian prior and a
    one-sample Monte-Carlo estimate for a flow (`priors.kl_divergence`). `training` switches dropout in the
    encoder and decoder.
    """
    self._check_context(conditional_input)
    reconstruction_seed, kl_seed = tfp.random.split_seed(seed)
    posterior = self.encoder(x, training=training)
    latent = posterior.sample(seed=reconstruction_seed)
    reconstruction = self.decoder(latent, training=training).log_prob(x)
    kl = priors.kl_divergence(posterior, self.prior, seed=kl_seed, conditional_input=conditional_input)
    return kl - reconstruction

  def log_importance_weights(self, x, num_samples, seed, conditional_input=None):
    """`log p(x, z_k | c) - log q(z_k | x)` for `z_k ~ q(z | x)`, `[num_samples, batch...]` (inference mode).

    `c = conditional_input` for a conditional prior, else None (then the weights are the generative model's).
    """
    self._check_context(conditional_input)
    latents, log_posterior = self.encoder(x).experimental_sample_and_log_prob(num_samples, seed=seed)
    context_kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    log_prior = self.prior.log_prob(latents, **context_kwargs)
    return log_prior + self.decoder(latents).log_prob(x) - log_posterior

  def log_likelihood_bounds(self, x, num_samples, seed, conditional_input=None):
    """The ELBO and the importance-weighted bound on `log p(x | c)` per example, from `num_samples` weights."""
    return LogLikelihoodBounds.from_log_weights(
      self.log_importance_weights(x, num_samples, seed, conditional_input)
    )

  def class_log_importance_weights(self, x, num_samples, seed, log_label_prior):
    """`log p(y) + log p(x, z_k | y) - log q(z_k | x)` for every class `y`: `[num_samples, batch..., num_classes]`.

    For a prior conditioned on the one-hot label (`conditional_event_shape=(num_classes,)`), with
    `log_label_prior = log p(y)`, `[num_classes]`. The same `z_k ~ q(z | x)` serve every class, and the weights
    with `seed` are those of `log_importance_weights(x, num_samples, seed, one_hot(y))` plus `log p(y)`.
    """
    num_classes = self._num_classes()
    latents, log_posterior = self.encoder(x).experimental_sample_and_log_prob(num_samples, seed=seed)
    flat_latents = tf.reshape(latents, [-1, self.encoder.latent_size])
    joint = classifier.joint_log_probs(self.prior, flat_latents, num_classes, log_label_prior)
    log_prior_and_label = tf.reshape(joint, tf.concat([tf.shape(latents)[:-1], [num_classes]], 0))
    return log_prior_and_label + (self.decoder(latents).log_prob(x) - log_posterior)[..., tf.newaxis]

  def marginal_log_likelihood_bounds(self, x, num_samples, seed, log_label_prior):
    """The ELBO and the importance-weighted bound on the marginal `log p(x) = log sum_y p(y) p(x | y)`.

    Both come from the weights `w_k = sum_y p(y) p(x, z_k | y) / q(z_k | x)`, a logsumexp over the classes of
    `class_log_importance_weights`: those of the VAE whose prior is the mixture `p(z) = sum_y p(y) p(z | y)`.
    Each `w_k` is unbiased for `p(x)`, so `E[log mean_k w_k] <= log p(x)` (Jensen), and `mean_k log w_k` is the
    ELBO of that VAE, with `y` summed out exactly. Equivalently `log sum_y p(y) mean_k w_{k,y}`: the
    per-class importance-weighted estimates of `p(x | y)` from shared latents, averaged under `p(y)`.
    """
    class_log_weights = self.class_log_importance_weights(x, num_samples, seed, log_label_prior)
    return LogLikelihoodBounds.from_log_weights(tf.reduce_logsumexp(class_log_weights, axis=-1))

  def _check_context(self, conditional_input):
    """Raises unless `conditional_input` fits the prior (`contexts.check`): none for an unconditional prior."""
    contexts.check(
      conditional_input,
      self.conditional_event_shape,
      self.prior.dtype,
      f"This VAE's prior ({type(self.prior).__name__})",
    )

  def _num_classes(self):
    shape = self.conditional_event_shape
    if shape is None or len(shape) != 1:
      raise ValueError(
        "Class weights need a prior conditioned on one-hot labels, `conditional_event_shape=(num_classes,)`; "
        f"this VAE's prior has `conditional_event_shape={shape}`."
      )
    return shape[0]


def _check_num_levels(num_levels):
  if isinstance(num_levels, bool) or int(num_levels) != num_levels or num_levels < 2:
    raise ValueError(
      f"`num_levels` must be an integer of at least 2 (pixel values 0..num_levels-1); got {num_levels!r}."
    )
  return int(num_levels)
