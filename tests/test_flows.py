"""The RealNVP distribution: exact density, invertibility, sampling, presets and bad input."""

import inspect
import math
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import autodiff_log_det, perturb
from tfp_realnvp import ImageRealNVP, RealNVP, VectorRealNVP, networks
from tfp_realnvp.bijectors import AffineCoupling, LogitTransform
from tfp_realnvp.flows import PRESETS

tfd = tfp.distributions


def small_image_flow(**overrides):
  tf.random.set_seed(0)
  arguments = dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=8, num_bits=4)
  flow = RealNVP(**{**arguments, **overrides})
  perturb(flow, stddev=0.2)
  return flow


def perturbed_digits_flow(**overrides):
  tf.random.set_seed(0)
  flow = RealNVP.from_preset("digits", **overrides)
  perturb(flow, stddev=0.3)
  return flow


def pixels(shape, num_bits, seed):
  return tf.random.stateless_uniform(shape, seed=[seed, 0], maxval=2.0**num_bits)


def perturb_running_averages(flow, seed=1):
  generator = tf.random.Generator.from_seed(seed)
  for variable in flow.variables:
    if "moving_mean" in variable.name:
      variable.assign(generator.normal(variable.shape, stddev=0.3))
    elif "moving_variance" in variable.name:
      variable.assign(tf.exp(generator.normal(variable.shape, stddev=0.3)))


class ParameterPropertiesTest(tf.test.TestCase):
  def test_both_kinds_answer_parameter_properties_without_tfp_warnings(self):
    # TFP logs a warning (Python logging, root logger) when a subclass with its own `__init__` inherits `_parameter_properties`.
    for flow in (small_image_flow(), RealNVP(event_shape=(2,), num_couplings=2, hidden_units=(8,))):
      with self.subTest(type(flow).__name__), self.assertNoLogs(level="WARNING"):
        self.assertEqual(flow.parameter_properties(), {})
        self.assertEqual(flow.copy().batch_shape, [])

  def test_a_subclass_with_its_own_init_answers_without_tfp_warnings(self):
    class SmallDigits(ImageRealNVP):
      def __init__(self, num_filters=4):
        super().__init__((8, 8, 1), num_scales=1, num_blocks=1, num_filters=num_filters, num_bits=4)

    flow = SmallDigits()
    self.assertIsInstance(flow, RealNVP)
    with self.assertNoLogs(level="WARNING"):
      self.assertEqual(flow.parameter_properties(), {})


class RealNVPImageTest(tf.test.TestCase, parameterized.TestCase):
  def test_is_a_tfp_distribution_with_the_event_shape(self):
    flow = small_image_flow()
    self.assertIsInstance(flow, tfd.Distribution)
    # The class TFP's own `tfd.TransformedDistribution(...)` returns for bijectors that hold variables.
    self.assertIsInstance(flow, type(tfd.TransformedDistribution(tfd.Normal(0.0, 1.0), flow.bijector)))
    self.assertEqual(flow.event_shape, [8, 8, 1])
    self.assertEqual(flow.batch_shape, [])
    self.assertEqual(flow.num_bits, 4)
    self.assertTrue(flow.is_image)

  @parameterized.parameters(0.05, 0.0)
  def test_log_prob_is_base_density_plus_autodiff_log_det(self, logit_alpha):
    flow = small_image_flow(logit_alpha=logit_alpha)
    perturb_running_averages(flow)
    x = pixels([2, 8, 8, 1], 4, seed=1)
    z = flow.encode(x)
    log_det = autodiff_log_det(flow.encode, x, 3)  # D = 64: the full 64x64 Jacobian per image
    expected = tfd.Sample(tfd.Normal(0.0, 1.0), [8, 8, 1]).log_prob(z) + log_det
    self.assertAllClose(expected, flow.log_prob(x), rtol=1e-3)
    # The couplings were perturbed: the log-det is far from the logit transform's alone.
    logit_log_det = LogitTransform(4, logit_alpha).forward_log_det_jacobian(x, event_ndims=3)
    self.assertGreater(float(tf.reduce_max(tf.abs(log_det - logit_log_det))), 1.0)

  def test_bits_per_dim_is_negative_log2_likelihood_per_dimension(self):
    flow = small_image_flow()
    x = pixels([3, 8, 8, 1], 4, seed=2)
    self.assertAllClose(flow.bits_per_dim(x), -flow.log_prob(x) / (64 * math.log(2.0)))

  def test_training_mode_uses_batch_statistics_and_moves_running_averages(self):
    flow = small_image_flow()
    x = pixels([16, 8, 8, 1], 4, seed=3)
    running = [v for v in flow.variables if "moving_mean" in v.name]
    before = [v.numpy() for v in running]
    inference = flow.log_prob(x)
    for initial, variable in zip(before, running):
      self.assertAllEqual(initial, variable)
    training = flow.log_prob(x, training=True)
    self.assertNotAllClose(inference, training)
    moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, running)]
    # Every batch norm, in the flow and in every conditioner, has moved.
    self.assertTrue(all(moved), f"{sum(moved)} of {len(moved)} running averages moved")

  def test_containers_see_every_variable(self):
    flow = small_image_flow()

    class Holder(tf.Module):
      def __init__(self, flow):
        super().__init__()
        self.flow = flow

    variables = {v.ref() for v in flow.trainable_variables}
    self.assertGreater(len(variables), 100)
    self.assertEqual({v.ref() for v in Holder(flow).trainable_variables}, variables)
    joint = tfd.JointDistributionSequential([flow, lambda x: tfd.Normal(tf.reduce_mean(x), 1.0)])
    self.assertEqual({v.ref() for v in joint.trainable_variables}, variables)

  def test_every_trainable_variable_gets_a_gradient(self):
    flow = small_image_flow(dropout=0.2)
    x = pixels([8, 8, 8, 1], 4, seed=4)
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(flow.bits_per_dim(x, training=True))
    gradients = tape.gradient(loss, flow.trainable_variables)
    self.assertTrue(all(g is not None for g in gradients))
    # Every parameter matters: none has an identically zero gradient (as a bias before a batch norm would).
    relative_norms = {
      v.name: float(tf.norm(g) / (tf.norm(gradients[0]) + 1e-30))
      for v, g in zip(flow.trainable_variables, gradients)
    }
    self.assertEmpty([name for name, norm in relative_norms.items() if norm < 1e-6], relative_norms)
    self.assertTrue(flow.regularized_variables)
    self.assertTrue(
      all(("weight_scale" in v.name or "tanh_scale" in v.name) for v in flow.regularized_variables)
    )

  @parameterized.parameters((), (3,), (2, 3))
  def test_log_prob_shape_for_any_batch_shape(self, *batch_shape):
    flow = small_image_flow()
    x = pixels([*batch_shape, 8, 8, 1], 4, seed=5)
    self.assertEqual(flow.log_prob(x).shape, batch_shape)
    self.assertEqual(tf.function(flow.log_prob)(x).shape, batch_shape)

  def test_empty_batches_eager_and_in_a_function_with_an_unknown_batch(self):
    flow = small_image_flow()
    x = pixels([3, 8, 8, 1], 4, seed=2)
    log_prob = tf.function(flow.log_prob, input_signature=[tf.TensorSpec([None, 8, 8, 1])])
    self.assertEqual(flow.log_prob(x[:0]).shape, [0])
    self.assertEqual(log_prob(x[:0]).shape, [0])
    self.assertAllClose(log_prob(x), flow.log_prob(x), rtol=1e-5)  # the filler row never reaches a full batch
    self.assertEqual(flow.bits_per_dim(x[:0], training=True).shape, [0])
    self.assertEqual(flow.sample(0, seed=[1, 2]).shape, [0, 8, 8, 1])
    self.assertEqual(flow.encode(x[:0]).shape, [0, 8, 8, 1])
    self.assertEqual(flow.decode(x[:0]).shape, [0, 8, 8, 1])

  def test_sampling_temperature_zero_is_decode_of_zero_and_seeds_repeat(self):
    flow = small_image_flow()
    perturb_running_averages(flow)
    seed = tf.constant([4, 2])
    self.assertAllClose(flow.sample(3, seed=seed, temperature=0.0), flow.decode(tf.zeros([3, 8, 8, 1])))
    first = flow.sample(5, seed=seed, temperature=0.7)
    self.assertEqual(first.shape, [5, 8, 8, 1])
    self.assertAllEqual(first, flow.sample(5, seed=seed, temperature=0.7))
    self.assertNotAllClose(first, flow.sample(5, seed=tf.constant([4, 3]), temperature=0.7))
    # Temperature scales the latent: encoding a sample gives back `temperature * z`.
    z = tfd.Sample(tfd.Normal(0.0, 1.0), [8, 8, 1]).sample(5, seed=seed)
    self.assertAllClose(flow.encode(first), 0.7 * z, atol=1e-3)

  def test_interpolation_runs_between_the_two_images(self):
    flow = small_image_flow()
    x_start, x_end = pixels([2, 8, 8, 1], 4, seed=8), pixels([2, 8, 8, 1], 4, seed=9)
    path = flow.interpolate(x_start, x_end, num_steps=5)
    self.assertEqual(path.shape, [5, 2, 8, 8, 1])
    self.assertAllClose(path[0], x_start, atol=1e-3)
    self.assertAllClose(path[-1], x_end, atol=1e-3)

  def test_checkpoint_restores_weights_and_running_averages(self):
    flow = small_image_flow()
    x = pixels([16, 8, 8, 1], 4, seed=10)
    flow.log_prob(x, training=True)  # moves the running averages away from their initial values
    expected = flow.log_prob(x)
    directory = tempfile.mkdtemp()
    path = tf.train.Checkpoint(flow=flow).save(directory + "/ckpt")
    restored = RealNVP(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=8, num_bits=4)
    self.assertNotAllClose(expected, restored.log_prob(x))
    tf.train.Checkpoint(flow=restored).restore(path).assert_consumed()
    self.assertAllClose(expected, restored.log_prob(x))

  def test_values_outside_the_support_have_zero_density_and_nan_gives_nan(self):
    # The support is the open interval `LogitTransform.domain` per pixel, (-0.889, 16.889) for 4 bits.
    flow = small_image_flow()
    x = pixels([6, 8, 8, 1], 4, seed=11).numpy()
    x[1, 0, 0, 0] = -0.9
    x[2, 3, 3, 0] = 16.9
    x[3, 5, 1, 0] = np.nan
    x[4, 0, 0, 0] = -0.5  # outside the pixel box, inside the support
    x[5, 3, 3, 0] = 16.0
    log_prob = flow.log_prob(x).numpy()
    self.assertTrue(np.isfinite(log_prob[0]))
    self.assertEqual(log_prob[1], -np.inf)
    self.assertEqual(log_prob[2], -np.inf)
    self.assertTrue(np.isnan(log_prob[3]))
    self.assertTrue(np.all(np.isfinite(log_prob[4:])))
    with tf.GradientTape() as tape:
      x_tensor = tf.constant(x[:3])
      tape.watch(x_tensor)
      finite_part = flow.log_prob(x_tensor)[0]
    self.assertTrue(np.all(np.isfinite(tape.gradient(finite_part, x_tensor))))

  @parameterized.product(temperature=(1.0, 0.7), logit_alpha=(0.05, 0.0))
  def test_own_samples_have_finite_log_prob_that_agrees_with_sample_and_log_prob(
    self, temperature, logit_alpha
  ):
    flow = perturbed_digits_flow(logit_alpha=logit_alpha)
    samples, log_prob_at_sampling = flow.experimental_sample_and_log_prob(
      256, seed=[1, 2], temperature=temperature
    )
    # With the paper's alpha and these weights many samples leave the pixel box [0, 16)^D (about 30% at
    # temperature 1); the box-exact flow's never do.
    outside_box = ~np.all((samples.numpy() >= 0.0) & (samples.numpy() < 16.0), axis=(1, 2, 3))
    if logit_alpha:
      self.assertGreater(outside_box.sum(), 0)
    else:
      self.assertEqual(outside_box.sum(), 0)
    self.assertAllClose(samples, flow.sample(256, seed=[1, 2], temperature=temperature))
    log_prob = flow.log_prob(samples)
    self.assertTrue(np.all(np.isfinite(log_prob)))
    self.assertAllClose(log_prob, log_prob_at_sampling, rtol=1e-4, atol=0)

  @parameterized.parameters(0.05, 0.0)
  def test_pixel_data_keep_the_unmasked_log_prob(self, logit_alpha):
    # Inside the pixel box the support's masking changes nothing: `log N(f(x)) + log|det df/dx|`.
    flow = perturbed_digits_flow(logit_alpha=logit_alpha)
    perturb_running_averages(flow)
    x = pixels([16, 8, 8, 1], 4, seed=3)
    expected = flow.distribution.log_prob(flow.encode(x)) + flow.bijector.inverse_log_det_jacobian(x, 3)
    self.assertAllClose(flow.log_prob(x), expected, rtol=1e-6, atol=0)

  def test_default_event_space_bijector_maps_onto_the_support(self):
    flow = perturbed_digits_flow(logit_alpha=0.05)
    bijector = flow.experimental_default_event_space_bijector()
    x = bijector(tf.random.stateless_normal([64, 8, 8, 1], seed=[5, 6], stddev=1.5))
    low, high = LogitTransform(4).domain
    self.assertTrue(np.all((x.numpy() > low) & (x.numpy() < high)))
    self.assertLess(float(tf.reduce_min(x)), 0.0)  # the pixel box is only part of the support
    self.assertTrue(np.all(np.isfinite(flow.log_prob(x))))

  @parameterized.parameters(([4, 8, 8, 3],), ([4, 8, 1],), ([4, 64],))
  def test_wrong_event_shape_names_the_expected_shape(self, shape):
    flow = small_image_flow()
    with self.assertRaisesRegex(ValueError, r"`x` must have shape `\[\.\.\., 8, 8, 1\]`"):
      flow.log_prob(tf.zeros(shape))
    with self.assertRaisesRegex(ValueError, r"`x` must have shape"):
      flow.encode(tf.zeros(shape))

  @parameterized.named_parameters(
    (
      "vector_args_on_image",
      dict(event_shape=(8, 8, 1), num_couplings=4),
      r"`num_couplings` only apply to vector",
    ),
    ("image_args_on_vector", dict(event_shape=(4,), num_blocks=2), r"`num_blocks` only apply to image"),
    ("bad_rank", dict(event_shape=(4, 4)), r"`event_shape` must be"),
    ("too_many_scales", dict(event_shape=(8, 8, 1), num_scales=5), r"`num_scales=5`.*divisible by 16"),
  )
  def test_bad_constructor_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      RealNVP(**kwargs)

  def test_every_argument_of_the_other_kind_is_named_as_misplaced(self):
    for flow_class, other_class, event_shape in (
      (ImageRealNVP, VectorRealNVP, (8, 8, 1)),
      (VectorRealNVP, ImageRealNVP, (4,)),
    ):
      own = inspect.signature(flow_class.__init__).parameters
      other = inspect.signature(other_class.__init__).parameters
      for argument in other.keys() - own.keys():
        with self.subTest(argument), self.assertRaisesRegex(ValueError, rf"`{argument}` only apply to"):
          RealNVP(event_shape=event_shape, **{argument: other[argument].default})

  def test_log_prob_calls_each_conditioner_once(self):
    flow = RealNVP.from_preset("digits", num_blocks=1, num_filters=4)
    num_couplings = len([m for m in flow.submodules if isinstance(m, AffineCoupling)])
    self.assertEqual(num_couplings, 10)
    x = pixels([4, 8, 8, 1], 4, seed=12)
    calls = []
    call = networks.ResNet.__call__

    def counting_call(resnet, inputs, training=False):
      calls.append(training)
      return call(resnet, inputs, training)

    with mock.patch.object(networks.ResNet, "__call__", counting_call):
      for training in (False, True):
        calls.clear()
        flow.log_prob(x, training=training)
        # TFP's cache hands each coupling's log-det to `log_prob` with its transform.
        self.assertEqual(calls, [training] * num_couplings)
      calls.clear()
      tf.function(flow.log_prob)(x, training=True)
      self.assertEqual(calls, [True] * num_couplings)
      calls.clear()
      flow.sample(2, seed=[1, 2])
      self.assertEqual(calls, [False] * num_couplings)

  def test_unknown_keyword_is_a_type_error_naming_it(self):
    flow = small_image_flow()
    with self.assertRaisesRegex(
      TypeError, r"unexpected keyword argument\(s\) \['trainnig'\].*\['training'\]"
    ):
      flow.log_prob(pixels([1, 8, 8, 1], 4, seed=13), trainnig=True)

  def test_unfused_batch_norms_give_the_same_flow(self):
    fused = small_image_flow()
    unfused = small_image_flow(fused_batch_norm=False)
    for variable, unfused_variable in zip(fused.variables, unfused.variables):
      self.assertAllEqual(variable, unfused_variable)
    x = pixels([16, 8, 8, 1], 4, seed=14)
    self.assertAllClose(fused.log_prob(x), unfused.log_prob(x), rtol=1e-5)
    self.assertAllClose(fused.log_prob(x, training=True), unfused.log_prob(x, training=True), rtol=1e-5)
    for variable, unfused_variable in zip(fused.variables, unfused.variables):
      self.assertAllClose(variable, unfused_variable, atol=1e-5)  # the running averages moved alike

  def test_properties_for_other_modules(self):
    flow = small_image_flow()
    self.assertIsNone(flow.compute_dtype)
    self.assertEqual(small_image_flow(compute_dtype="bfloat16").compute_dtype, tf.bfloat16)
    self.assertEqual((flow.num_bits, flow.num_dims), (4, 64))
    self.assertEqual(flow.event_shape, [8, 8, 1])

  def test_unknown_preset(self):
    with self.assertRaisesRegex(ValueError, r"Unknown preset.*'cifar10'"):
      RealNVP.from_preset("cifar100")

  def test_realnvp_builds_the_kind_for_the_event_rank_with_visible_defaults(self):
    self.assertIsInstance(RealNVP(event_shape=(8, 8, 1), num_blocks=1, num_filters=4), ImageRealNVP)
    self.assertIsInstance(RealNVP((4,), num_couplings=1), VectorRealNVP)
    self.assertIsInstance(RealNVP.from_preset("digits"), ImageRealNVP)
    self.assertIsInstance(small_image_flow().copy(), ImageRealNVP)
    self.assertEqual(
      str(inspect.signature(ImageRealNVP)),
      "(event_shape, num_scales=2, num_blocks=4, num_filters=32, num_bits=8, logit_alpha=0.05, dropout=0.0, "
      "batch_norm=True, batch_norm_momentum=0.99, fused_batch_norm=True, conditional_event_shape=None, "
      "context_enters='couplings', dtype=tf.float32, compute_dtype=None, full_precision_output=True, "
      "validate_args=False, name='real_nvp')",
    )
    self.assertEqual(
      str(inspect.signature(VectorRealNVP)),
      "(event_shape, num_couplings=4, hidden_units=(64, 64), dropout=0.0, batch_norm=False, "
      "batch_norm_momentum=0.99, conditional_event_shape=None, context_enters='couplings', dtype=tf.float32, "
      "compute_dtype=None, full_precision_output=True, validate_args=False, name='real_nvp')",
    )
    # The same flow either way: same variables, same values from the same seed.
    tf.random.set_seed(5)
    generic = RealNVP(event_shape=(8, 8, 1), num_blocks=1, num_filters=4)
    tf.random.set_seed(5)
    specific = ImageRealNVP((8, 8, 1), num_blocks=1, num_filters=4)
    self.assertEqual([v.name for v in generic.variables], [v.name for v in specific.variables])
    for a, b in zip(generic.variables, specific.variables):
      self.assertAllEqual(a, b)

  def test_a_subclass_refuses_the_other_kinds_arguments(self):
    with self.assertRaisesRegex(TypeError, "num_couplings"):
      ImageRealNVP(event_shape=(8, 8, 1), num_couplings=2)
    with self.assertRaisesRegex(ValueError, r"`event_shape` must be `\(dims,\)`"):
      VectorRealNVP(event_shape=(8, 8, 1))


@pytest.mark.slow
class FullSizePresetTest(tf.test.TestCase):
  """The presets at full size (millions of weights): each builds, and those for 32x32 and 64x64 colour images
  round trip."""

  def test_every_preset_builds_with_its_event_shape(self):
    for name, settings in PRESETS.items():
      if settings["event_shape"][0] <= 32:
        self.assertEqual(RealNVP.from_preset(name).event_shape, settings["event_shape"], name)

  def test_cifar10_preset_round_trips_with_perturbed_weights(self):
    tf.random.set_seed(1)
    flow = RealNVP.from_preset("cifar10")
    # Larger perturbations of all 13M weights stretch the latent far beyond a trained model's (std 8 at
    # stddev 0.05, where float32 round-off in 20 stacked inverses reaches 0.09 pixel units).
    perturb(flow, stddev=0.02)
    x = pixels([2, 32, 32, 3], 8, seed=6)
    z = flow.encode(x)
    # An unperturbed flow is the logit transform alone; this one moves the latent well away from it.
    self.assertGreater(float(tf.reduce_max(tf.abs(z - LogitTransform(8).forward(x)))), 0.1)
    self.assertAllClose(x, flow.decode(tf.identity(z)), atol=1e-2, rtol=0)

  def test_imagenet64_preset_builds_and_round_trips(self):
    tf.random.set_seed(2)
    flow = RealNVP.from_preset("imagenet64")
    perturb(flow, stddev=0.02)
    x = pixels([1, 64, 64, 3], 8, seed=7)
    self.assertAllClose(x, flow.decode(tf.identity(flow.encode(x))), atol=1e-2, rtol=0)


class PixelBoxTest(tf.test.TestCase, parameterized.TestCase):
  """`logit_alpha=0`: the support is the pixel box `[0, 2**num_bits)**D`; `pixel_box_mass` measures it."""

  def test_box_exact_flow_scores_only_the_pixel_box(self):
    flow = perturbed_digits_flow(logit_alpha=0.0)
    x = pixels([7, 8, 8, 1], 4, seed=12).numpy()
    x[1, 0, 0, 0] = -1e-6
    x[2, 3, 3, 0] = 16.0
    x[3, 5, 1, 0] = -0.5  # inside the paper's support, outside the box
    x[4, 0, 0, 0] = 0.0  # the box's closed end: a level-0 pixel with no dequantization noise
    x[5, 3, 3, 0] = np.nextafter(np.float32(16.0), np.float32(0.0))
    x[6, 2, 2, 0] = np.nan
    log_prob = flow.log_prob(x).numpy()
    self.assertAllEqual(log_prob[1:4], [-np.inf] * 3)
    self.assertTrue(np.all(np.isfinite(log_prob[[0, 4, 5]])))
    self.assertTrue(np.isnan(log_prob[6]))
    with tf.GradientTape() as tape:
      x_tensor = tf.constant(x[:6])
      tape.watch(x_tensor)
      finite_part = tf.gather(flow.log_prob(x_tensor), [0, 4, 5])
    self.assertTrue(np.all(np.isfinite(tape.gradient(finite_part, x_tensor))))

  def test_box_exact_default_event_space_bijector_maps_into_the_box(self):
    flow = perturbed_digits_flow(logit_alpha=0.0)
    x = flow.experimental_default_event_space_bijector()(
      tf.random.stateless_normal([64, 8, 8, 1], seed=[5, 6], stddev=30.0)
    ).numpy()
    self.assertTrue(np.all((x >= 0.0) & (x < 16.0)))
    self.assertTrue(np.all(np.isfinite(flow.log_prob(x))))

  @parameterized.parameters(0.05, 0.0)
  def test_pixel_box_mass_is_the_share_of_samples_in_the_box(self, logit_alpha):
    flow = perturbed_digits_flow(logit_alpha=logit_alpha)
    fraction, standard_error = flow.pixel_box_mass(num_samples=300, seed=(3, 4), batch_size=128)
    samples = tf.concat(
      [
        flow.sample(n, seed=s) for n, s in zip([128, 128, 44], tf.unstack(tfp.random.split_seed((3, 4), n=3)))
      ],
      0,
    ).numpy()
    expected = np.mean(np.all((samples >= 0.0) & (samples < 16.0), axis=(1, 2, 3)))
    self.assertEqual(fraction, expected)
    self.assertAllClose(standard_error, np.sqrt(expected * (1 - expected) / 300))
    if logit_alpha:
      self.assertBetween(fraction, 0.05, 0.95)  # these weights put much of the mass outside the box
    else:
      self.assertEqual((fraction, standard_error), (1.0, 0.0))

  def test_pixel_box_mass_names_bad_arguments(self):
    flow = small_image_flow()
    with self.assertRaisesRegex(ValueError, r"`num_samples` must be a positive integer; got 0"):
      flow.pixel_box_mass(num_samples=0)


def small_vector_flow():
  tf.random.set_seed(0)
  return RealNVP(event_shape=(3,), num_couplings=4, batch_norm=True)


class CopyAndSliceTest(tf.test.TestCase, parameterized.TestCase):
  """`copy()` and `flow[...]` share the layers and variables, as TFP's contract for `copy` asks."""

  def flow_and_data(self, kind):
    if kind == "image":
      return small_image_flow(), pixels([4, 8, 8, 1], 4, seed=21)
    return small_vector_flow(), tf.random.stateless_normal([4, 3], seed=[2, 1])

  @parameterized.parameters("image", "vector")
  def test_copies_and_slices_share_the_variables_and_the_log_prob(self, kind):
    flow, x = self.flow_and_data(kind)
    copies = [flow.copy(), flow[...], flow[()], flow.copy(name="renamed", validate_args=True)]
    # Training-like changes after the copies were made reach them: the variables are the same objects.
    perturb(flow, stddev=0.2, seed=3)
    perturb_running_averages(flow, seed=4)
    expected = flow.log_prob(x)
    for copy in copies:
      self.assertIs(type(copy), type(flow))
      self.assertLen(copy.trainable_variables, len(flow.trainable_variables))
      self.assertLen(copy.variables, len(flow.variables))
      self.assertTrue(all(a is b for a, b in zip(copy.variables, flow.variables)))
      self.assertAllEqual(copy.log_prob(x), expected)
      self.assertAllEqual(copy.sample(2, seed=[3, 4]), flow.sample(2, seed=[3, 4]))
      self.assertEqual(copy.parameters.keys(), flow.parameters.keys())
    self.assertEqual(copies[-1].parameters["name"], "renamed")
    self.assertTrue(copies[-1].validate_args)
    self.assertEqual(copies[-1].num_bits, flow.num_bits)

  @parameterized.parameters("image", "vector")
  def test_a_copy_that_would_need_new_layers_or_a_batch_slice_is_an_error(self, kind):
    flow, _ = self.flow_and_data(kind)
    changed = "num_blocks" if kind == "image" else "num_couplings"
    with self.assertRaisesRegex(ValueError, rf"cannot change \['{changed}'\].*fresh weights"):
      flow.copy(**{changed: 2})
    with self.assertRaisesRegex(TypeError, r"unknown argument\(s\) \['loc'\]"):
      flow.copy(loc=1.0)
    for slices in (0, slice(None), (Ellipsis, 0), tf.newaxis):
      with self.assertRaisesRegex(IndexError, r"batch shape `\[\]`"):
        flow[slices]  # noqa: B018


class TrainingModeTest(tf.test.TestCase, parameterized.TestCase):
  """An empty training batch moves no running average; `training` is a bool."""

  @parameterized.product(kind=("image", "vector"), mode=("eager", "function"))
  def test_an_empty_training_batch_leaves_the_running_averages_unchanged(self, kind, mode):
    flow = small_image_flow() if kind == "image" else small_vector_flow()
    perturb_running_averages(flow)
    event_shape = list(flow.event_shape)

    def train_log_prob(x):
      return flow.log_prob(x, training=True)

    log_prob = flow.log_prob
    if mode == "function":
      spec = [tf.TensorSpec([None, *event_shape])]
      train_log_prob = tf.function(train_log_prob, input_signature=spec)
      log_prob = tf.function(log_prob, input_signature=spec)
    # The flow's `BatchNorm` layers and, for images, the conditioners' batch norms (fused and composite).
    averages = [v for v in flow.variables if "moving" in v.name]
    self.assertNotEmpty([v for v in averages if "resnet" not in v.name])
    if kind == "image":
      self.assertNotEmpty([v for v in averages if "resnet" in v.name])
    before = [v.numpy() for v in averages]
    self.assertEqual(train_log_prob(tf.zeros([0, *event_shape])).shape, [0])
    for average, value in zip(averages, before):
      self.assertAllEqual(average, value)
    self.assertTrue(all(np.all(np.isfinite(v)) for v in flow.variables))
    x = pixels([3, *event_shape], 4, seed=1) if kind == "image" else tf.random.normal([3, *event_shape])
    self.assertTrue(np.all(np.isfinite(log_prob(x))))
    self.assertTrue(np.all(np.isfinite(flow.sample(3, seed=[1, 2]))))

  @parameterized.parameters("no", 1, None, "bool vector", "float tensor")
  def test_training_must_be_a_bool(self, training):
    training = {"bool vector": tf.constant([True]), "float tensor": tf.constant(1.0)}.get(training, training)
    flow = small_vector_flow()
    with self.assertRaisesRegex(TypeError, r"`training` must be a Python bool or a scalar bool tensor"):
      flow.log_prob(tf.zeros([2, 3]), training=training)
    with self.assertRaisesRegex(TypeError, r"`training` must be"):
      flow.sample(2, seed=[1, 2], training=training)

  def test_a_bool_tensor_selects_the_mode_eager_and_in_a_function(self):
    flow = small_vector_flow()
    perturb(flow, stddev=0.3)
    perturb_running_averages(flow)
    x = tf.random.stateless_normal([5, 3], seed=[4, 4])
    averages = [v for v in flow.variables if "moving" in v.name]
    log_prob = tf.function(lambda x, training: flow.log_prob(x, training=training))
    for training in (False, True):
      expected = flow.log_prob(x, training=training)
      before = [v.numpy() for v in averages]
      for result in (flow.log_prob(x, training=tf.constant(training)), log_prob(x, tf.constant(training))):
        self.assertAllClose(result, expected, rtol=1e-5)
      self.assertEqual(all(np.array_equal(v, b) for v, b in zip(averages, before)), not training)
    self.assertNotAllClose(flow.log_prob(x, training=True), flow.log_prob(x))


class BadArgumentsTest(tf.test.TestCase, parameterized.TestCase):
  """Each bad argument is an error that names it."""

  @parameterized.named_parameters(
    (
      "fractional_event_shape",
      dict(event_shape=(8.5, 8, 1)),
      ValueError,
      r"`event_shape`.*got \(8.5, 8, 1\)",
    ),
    ("fractional_vector_shape", dict(event_shape=(3.5,)), ValueError, r"`event_shape`.*got \(3.5,\)"),
    ("fractional_num_filters", dict(num_filters=2.5), ValueError, r"`num_filters` must be a positive.*2.5"),
    ("fractional_num_blocks", dict(num_blocks=1.5), ValueError, r"`num_blocks` must be a positive.*1.5"),
    ("integer_dtype", dict(dtype=tf.int32), TypeError, r"`dtype` must be a floating dtype.*int32"),
    ("unknown_dtype", dict(dtype="bogus"), TypeError, r"`dtype` must be a floating dtype.*'bogus'"),
    ("vector_units", dict(event_shape=(3,), hidden_units=(8, 2.5)), ValueError, r"`hidden_units`.*2.5"),
    ("vector_dtype", dict(event_shape=(3,), dtype="int64"), TypeError, r"`dtype` must be a floating"),
  )
  def test_bad_constructor_arguments(self, overrides, error, message):
    arguments = dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=4, num_bits=4)
    if len(overrides.get("event_shape", (8, 8, 1))) == 1:
      arguments = {}
    with self.assertRaisesRegex(error, message):
      RealNVP(**{**arguments, **overrides})

  def test_a_dtype_name_is_accepted(self):
    flow = RealNVP(event_shape=(4, 4, 1), num_scales=1, num_blocks=1, num_filters=4, dtype="float64")
    self.assertEqual(flow.dtype, tf.float64)
    self.assertEqual(flow.log_prob(tf.fill([2, 4, 4, 1], tf.constant(100.0, tf.float64))).dtype, tf.float64)
    self.assertEqual(RealNVP(event_shape=(3,), dtype="float32").dtype, tf.float32)

  @parameterized.parameters("image", "vector")
  def test_bad_call_arguments(self, kind):
    flow = small_image_flow() if kind == "image" else small_vector_flow()
    event_shape = list(flow.event_shape)
    for sample_shape in (2.5, -1, [2, -3], (2.0,), tf.constant(2.5)):
      with self.assertRaisesRegex((ValueError, TypeError), r"`sample_shape`"):
        flow.sample(sample_shape, seed=[1, 2])
      with self.assertRaisesRegex((ValueError, TypeError), r"`sample_shape`"):
        flow.experimental_sample_and_log_prob(sample_shape, seed=[1, 2])
    self.assertEqual(flow.sample(tf.constant(2), seed=[1, 2]).shape, [2, *event_shape])
    self.assertEqual(flow.sample(np.int64(3), seed=[1, 2]).shape, [3, *event_shape])
    with self.assertRaisesRegex(ValueError, r"`temperature` must be a scalar; got shape \[2\]"):
      flow.sample(2, seed=[1, 2], temperature=[0.5, 1.0])
    with self.assertRaisesRegex(ValueError, r"`num_steps` must be a positive integer; got 2.7"):
      flow.interpolate(tf.ones([1, *event_shape]), tf.ones([1, *event_shape]), num_steps=2.7)
    integers = tf.ones([2, *event_shape], tf.int32)
    for method in (flow.log_prob, flow.prob, flow.encode):
      with self.assertRaisesRegex(TypeError, r"`x` must have the flow's dtype float32; got int32"):
        method(integers)
    with self.assertRaisesRegex(TypeError, r"`z` must have the flow's dtype float32; got float64"):
      flow.decode(tf.ones([2, *event_shape], tf.float64))
    if kind == "image":
      with self.assertRaisesRegex(TypeError, r"`x` must have the flow's dtype float32; got int32"):
        flow.bits_per_dim(integers)

  @parameterized.parameters("image", "vector")
  def test_cdf_quantile_and_survival_function_say_a_multivariate_flow_has_none(self, kind):
    flow = small_image_flow() if kind == "image" else small_vector_flow()
    x = tf.ones([2, *flow.event_shape])
    for method in ("cdf", "log_cdf", "survival_function", "log_survival_function", "quantile"):
      with self.assertRaisesRegex(
        NotImplementedError, r"not defined for a RealNVP flow: its events are multivariate"
      ):
        getattr(flow, method)(x)


class RealNVPVectorTest(tf.test.TestCase):
  def make_flow(self):
    tf.random.set_seed(3)
    flow = RealNVP(event_shape=(2,), num_couplings=4, hidden_units=(16, 16))
    perturb(flow, stddev=0.1)
    return flow

  def test_density_integrates_to_one(self):
    flow = self.make_flow()
    # The grid covers every one of 20000 samples with a margin of 2.
    samples = flow.sample(20000, seed=tf.constant([5, 5])).numpy()
    low, high = samples.min(axis=0) - 2.0, samples.max(axis=0) + 2.0
    grid_x = np.linspace(low[0], high[0], 1000, dtype=np.float32)
    grid_y = np.linspace(low[1], high[1], 1000, dtype=np.float32)
    points = np.stack(np.meshgrid(grid_x, grid_y, indexing="ij"), axis=-1).reshape(-1, 2)
    density = flow.prob(points).numpy()
    cell_area = (grid_x[1] - grid_x[0]) * (grid_y[1] - grid_y[0])
    self.assertAllClose(density.sum() * cell_area, 1.0, atol=0.01)
    # Not a standard normal: the perturbed couplings reshaped it.
    self.assertGreater(
      np.abs(
        flow.log_prob(points[:1000]) - tfd.MultivariateNormalDiag(tf.zeros(2)).log_prob(points[:1000])
      ).max(),
      0.1,
    )

  def test_encode_decode_and_sampling(self):
    flow = self.make_flow()
    x = tf.random.normal([5, 2])
    self.assertAllClose(x, flow.decode(tf.identity(flow.encode(x))), atol=1e-5)
    samples = flow.sample(4, seed=tf.constant([1, 1]))
    self.assertAllEqual(samples, flow.sample(4, seed=tf.constant([1, 1])))
    self.assertAllClose(
      flow.sample(2, seed=tf.constant([1, 1]), temperature=0.0), flow.decode(tf.zeros([2, 2]))
    )

  def test_bits_per_dim_is_for_images_only(self):
    with self.assertRaisesRegex(ValueError, "image flows"):
      self.make_flow().bits_per_dim(tf.zeros([1, 2]))

  def test_infinite_values_have_zero_density_and_nan_gives_nan(self):
    flow = self.make_flow()
    x = np.array([[0.5, -0.3], [np.inf, 0.0], [0.0, -np.inf], [np.nan, 1.0], [np.nan, np.inf]], np.float32)
    log_prob = flow.log_prob(x).numpy()
    self.assertTrue(np.isfinite(log_prob[0]))
    self.assertEqual(log_prob[1], -np.inf)
    self.assertEqual(log_prob[2], -np.inf)
    self.assertTrue(np.isnan(log_prob[3]))
    self.assertTrue(np.isnan(log_prob[4]))
    self.assertAllClose(log_prob[0], flow.log_prob(x[:1])[0])
    with tf.GradientTape() as tape:
      x_tensor = tf.constant(x)
      tape.watch(x_tensor)
      finite_part = flow.log_prob(x_tensor)[0]
    variables = flow.trainable_variables
    gradients = tape.gradient(finite_part, [x_tensor, *variables])
    self.assertTrue(all(np.all(np.isfinite(g)) for g in gradients))
    self.assertAllEqual(gradients[0][1:], tf.zeros_like(x[1:]))

  def test_properties_for_other_modules(self):
    flow = self.make_flow()
    self.assertIsNone(flow.num_bits)
    self.assertIsNone(flow.compute_dtype)
    self.assertFalse(flow.is_image)
    self.assertEqual(flow.num_dims, 2)

  def test_float64(self):
    flow = RealNVP(event_shape=(3,), num_couplings=2, dtype=tf.float64)
    self.assertEqual(flow.log_prob(tf.zeros([2, 3], tf.float64)).dtype, tf.float64)


if __name__ == "__main__":
  tf.test.main()
