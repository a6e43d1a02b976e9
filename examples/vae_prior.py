"""A VAE on the bundled digits with a learned RealNVP prior, unconditional and class-conditional, beside N(0, I).

    python examples/vae_prior.py --output vae_prior_samples.png

Three VAEs, identical but for the prior (same encoder and decoder, initial weights, data order and seeds):

- `p(z) p(x | z)` with the standard normal `p(z) = N(0, I)`;
- `p(z) p(x | z)` with a RealNVP prior `p(z)`;
- `p(y) p(z | y) p(x | z)` with a class-conditional RealNVP prior `p(z | y)` taking the one-hot label `y`,
  and `p(y)` the training label frequencies. It is trained on the labelled images by `-ELBO(x | y)`, with the
  same `q(z | x)` (the encoder does not see `y`).

The flows train jointly with the encoder and decoder. The likelihood is a discretized logistic over each pixel's
16 levels, so every figure is a log-likelihood of the same discrete test images. For the 297 test digits the
script prints, in nats per image and bits per pixel, the negative ELBO and the importance-weighted negative
log-likelihood (100 samples of `q(z | x)` per image) of

- `-log p(x)` for every prior; for the class-conditional one this is the marginal
  `-log sum_y p(y) p(x | y)`, from the weights `sum_y p(y) p(x, z_k | y) / q(z_k | x)` of the same `K` latents
  (`VariationalAutoencoder.marginal_log_likelihood_bounds`): these rows compare with each other;
- `-log p(x | y)` given the true label, for the class-conditional prior: not comparable with `-log p(x)`
  (`-log p(x | y) = -log p(x) - log p(y | x) + log p(y)`, never more than `-log p(y)`, about 2.3 nats, below it),

and the accuracy of the VAE as a classifier, `argmax_y p(y) p(x | y)`. It saves decoded samples of each prior,
one row per class for the class-conditional one. 3-3.5 minutes on 2 CPU cores shared with other jobs
(load average 3-10).
"""

import argparse
import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as tfk

from tfp_realnvp import RealNVP, data
from tfp_realnvp.training import reporting
from tfp_realnvp.vae import DiscretizedLogisticDecoder, GaussianEncoder, VariationalAutoencoder

tfd = tfp.distributions

PRIORS = ("standard_normal", "realnvp", "conditional_realnvp")
PRIOR_LABELS = {
  "standard_normal": "standard normal",
  "realnvp": "RealNVP",
  "conditional_realnvp": "class-conditional RealNVP",
}
NUM_BITS = 4  # the bundled digits are 4-bit images
NUM_LEVELS = 2**NUM_BITS
NUM_CLASSES = 10
# The figures of the results table, escaped for Markdown.
MARGINAL = "-log p(x)"
GIVEN_LABEL = "-log p(x \\| y), true y"


def labelled_digits(split):
  """The digits `split` ('train': 1500 images, 'test': 297): float32 pixel levels `[N, 8, 8, 1]` in 0..15 and
  int32 labels `[N]`."""
  # The evaluation pipeline adds noise in [0, 1) to each level; the floor recovers the level exactly.
  ((images, labels),) = data.load("digits", split, batch_size=2048, training=False, with_labels=True).take(1)
  return np.floor(images.numpy()), labels.numpy()


def make_vae(
  prior_name,
  latent_size=16,
  encoder_units=(256, 256),
  decoder_units=(256,),
  decoder_dropout=0.3,
  num_couplings=4,
  coupling_units=(64, 64),
):
  """The digits VAE with a `prior_name` prior: 'standard_normal', 'realnvp' or 'conditional_realnvp'."""
  if prior_name not in PRIORS:
    raise ValueError(f"`prior_name` must be one of {PRIORS}; got {prior_name!r}.")
  # The encoder and decoder first: after one `tf.random.set_seed` they start the same whatever the prior.
  encoder = GaussianEncoder((8, 8, 1), latent_size, NUM_LEVELS, hidden_units=encoder_units)
  decoder = DiscretizedLogisticDecoder(
    latent_size, (8, 8, 1), NUM_LEVELS, hidden_units=decoder_units, dropout=decoder_dropout
  )
  if prior_name == "standard_normal":
    prior = tfd.MultivariateNormalDiag(loc=tf.zeros([latent_size]), scale_diag=tf.ones([latent_size]))
  else:
    prior = RealNVP(
      event_shape=(latent_size,),
      num_couplings=num_couplings,
      hidden_units=coupling_units,
      conditional_event_shape=(NUM_CLASSES,) if prior_name == "conditional_realnvp" else None,
    )
  return VariationalAutoencoder(encoder, decoder, prior)


def label_context(vae, labels):
  """The prior's context: the one-hot labels for a class-conditional prior, None for an unconditional one."""
  return None if vae.conditional_event_shape is None else tf.one_hot(labels, NUM_CLASSES)


def train(
  vae, images, labels, num_steps, batch_size=100, learning_rate=1e-3, seed=0, log_every=500, label=""
):
  """Minimizes the mean negative ELBO (`-ELBO(x | y)` for a class-conditional prior) with Adam and a cosine
  learning-rate decay; returns the per-step losses."""
  variables = vae.trainable_variables
  optimizer = tfk.optimizers.Adam(tfk.optimizers.schedules.CosineDecay(learning_rate, num_steps))
  # Images and one-hot labels for every prior: the same shuffle order, and the same graph for the encoder and
  # decoder (an unconditional prior leaves the labels unused).
  batches = (
    tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, NUM_CLASSES)))
    .shuffle(len(images), seed=seed)
    .repeat()
    .batch(batch_size, drop_remainder=True)
  )
  conditional = vae.conditional_event_shape is not None

  @tf.function
  def train_step(step, batch, one_hot_labels):
    with tf.GradientTape() as tape:
      # A stateless seed per step: the run repeats exactly for a given `seed`.
      negative_elbo = vae.negative_elbo(
        batch,
        seed=tf.stack([seed, step]),
        training=True,
        conditional_input=one_hot_labels if conditional else None,
      )
      loss = tf.reduce_mean(negative_elbo)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = []
  start = time.time()
  for step, (batch, one_hot_labels) in enumerate(batches.take(num_steps), start=1):
    losses.append(float(train_step(tf.constant(step, tf.int32), batch, one_hot_labels)))
    if step % log_every == 0 or step == num_steps:
      print(
        f"train | prior: {label} | step: {step}/{num_steps} | steps/sec: {step / (time.time() - start):.1f} | "
        f"negative_elbo: {np.mean(losses[-log_every:]):.2f} nats",
        flush=True,
      )
  return losses


def evaluate(vae, images, labels, log_label_prior, num_samples=100, seed=0):
  """`{figure: (negative ELBO, importance-weighted negative log-likelihood)}` of `images`, nats per image.

  Every prior has `-log p(x)` (for a class-conditional prior the marginal `-log sum_y p(y) p(x | y)`); a
  class-conditional prior adds `-log p(x | y)` given the true labels. Both use the same latents.
  """
  images, seed = tf.constant(images), tf.constant([seed, 2], tf.int32)

  def mean_negative(bounds):
    return -float(tf.reduce_mean(bounds.elbo)), -float(tf.reduce_mean(bounds.importance_weighted))

  if vae.conditional_event_shape is None:
    return {MARGINAL: mean_negative(tf.function(vae.log_likelihood_bounds)(images, num_samples, seed))}
  marginal = tf.function(vae.marginal_log_likelihood_bounds)(images, num_samples, seed, log_label_prior)
  given_label = tf.function(vae.log_likelihood_bounds)(images, num_samples, seed, label_context(vae, labels))
  return {MARGINAL: mean_negative(marginal), GIVEN_LABEL: mean_negative(given_label)}


def classification_accuracy(vae, images, labels, log_label_prior, num_samples=100, seed=0):
  """The fraction of `images` whose label maximizes the importance-weighted estimate of `p(y) p(x | y)`."""
  class_log_weights = tf.function(vae.class_log_importance_weights)(
    tf.constant(images), num_samples, tf.constant([seed, 2], tf.int32), log_label_prior
  )
  predicted = tf.argmax(tf.reduce_logsumexp(class_log_weights, axis=0), axis=-1, output_type=tf.int32)
  return float(np.mean(predicted.numpy() == labels))


def save_samples(vaes, output, num_samples=64, seed=0):
  """Saves a PNG with, per prior, decoder means `clip(loc(z), 0, 15)` of latents `z` drawn from the prior, drawn
  like `train.py`'s samples (`reporting.image_grid`: white digits on black, blue lines between them). A
  class-conditional prior draws `ceil(num_samples / 10)` latents from `p(z | y)` for each class `y`, one row per
  class (0 on top)."""
  grids = {}
  for name, vae in vaes.items():
    seed_tensor = tf.constant([seed, 3], tf.int32)
    if vae.conditional_event_shape is None:
      latents, columns, title = (
        vae.prior.sample(num_samples, seed=seed_tensor),
        8,
        f"{PRIOR_LABELS[name]} prior",
      )
    else:
      columns = -(-num_samples // NUM_CLASSES)
      context = label_context(vae, np.repeat(np.arange(NUM_CLASSES), columns))
      latents = vae.prior.sample(len(context), seed=seed_tensor, conditional_input=context)
      title = f"{PRIOR_LABELS[name]} prior, row y ~ p(z | y)"
    loc, _ = vae.decoder.loc_and_scale(latents)
    levels = np.clip(loc.numpy(), 0, NUM_LEVELS - 1)
    # Level k is the interval [k, k + 1) of a flow's pixel values, whose grids `image_grid` draws: its centre.
    grids[title] = reporting.image_grid(levels + 0.5, NUM_BITS, columns=columns)
  with open(output, "wb") as file:
    file.write(reporting.sample_grids_png(grids))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", default="vae_prior_samples.png", help="where to save the PNG of samples")
  parser.add_argument("--num_steps", type=int, default=4000, help="training steps for each VAE")
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--latent_size", type=int, default=16)
  parser.add_argument("--num_eval_samples", type=int, default=100, help="importance samples per test image")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--log_every", type=int, default=500)
  args = parser.parse_args()

  start = time.time()
  (train_images, train_labels), (test_images, test_labels) = labelled_digits("train"), labelled_digits("test")
  counts = data.label_counts("digits", "train")
  log_label_prior = tf.math.log(tf.constant(counts / counts.sum(), tf.float32))  # p(y): training frequencies
  results, vaes = {}, {}
  for name in PRIORS:
    tf.random.set_seed(args.seed)  # the same initial encoder and decoder for every prior
    vaes[name] = make_vae(name, args.latent_size)
    train_start = time.time()
    train(
      vaes[name],
      train_images,
      train_labels,
      args.num_steps,
      args.batch_size,
      args.learning_rate,
      args.seed,
      args.log_every,
      label=name,
    )
    results[name] = evaluate(
      vaes[name], test_images, test_labels, log_label_prior, args.num_eval_samples, args.seed
    )
    negative_elbo, negative_log_likelihood = results[name][MARGINAL]
    print(
      f"eval | prior: {name} | test negative ELBO: {negative_elbo:.2f} nats | test negative log-likelihood "
      f"(IW, {args.num_eval_samples} samples): {negative_log_likelihood:.2f} nats | "
      f"train and eval time: {time.time() - train_start:.0f} s",
      flush=True,
    )
  save_samples(vaes, args.output, seed=args.seed)

  nats_per_bit = test_images[0].size * math.log(2.0)
  print(
    f"\nDigits test split ({len(test_images)} images), nats per image (bits per pixel), lower is better:\n"
  )
  print(f"| prior | figure | negative ELBO | negative log-likelihood, IW {args.num_eval_samples} samples |")
  print("|---|---|---|---|")
  for name, figures in results.items():
    for figure, (negative_elbo, negative_log_likelihood) in figures.items():
      print(
        f"| {PRIOR_LABELS[name]} | {figure} | {negative_elbo:.2f} ({negative_elbo / nats_per_bit:.3f}) | "
        f"{negative_log_likelihood:.2f} ({negative_log_likelihood / nats_per_bit:.3f}) |"
      )
  accuracy = classification_accuracy(
    vaes["conditional_realnvp"], test_images, test_labels, log_label_prior, args.num_eval_samples, args.seed
  )
  print(
    f"\nclass-conditional RealNVP prior as a classifier, argmax_y p(y) p(x | y): test accuracy {accuracy:.3f}"
  )
  print(f"saved {args.output}; total time {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
