"""MultiScale: the paper's layer order around a user's coupling factory, and an exact bijector."""

import tensorflow as tf
import tf_keras as tfk
from absl.testing import parameterized

from tests.bijector_testing import BijectorChecks, perturb
from tfp_realnvp.bijectors import AffineCoupling, FactorOut, KeywordChain, LogitTransform, MultiScale


def keras_coupling(scale, mask_type, index, event_shape):
  """A user's factory: a coupling with a two-layer tf_keras CNN conditioner instead of the ResNet."""
  channels = event_shape[-1]
  conditioner = tfk.Sequential(
    [
      tfk.layers.Conv2D(8, 3, padding="same", activation="relu"),
      tfk.layers.Conv2D(2 * channels, 3, padding="same", kernel_initializer="zeros"),
    ]
  )
  conditioner.build([None, *event_shape])
  name = f"scale{scale}_{mask_type}{index}"
  return AffineCoupling(conditioner, event_shape, mask_type, parity=index % 2, name=name)


def data_to_latent_order(chain):
  """`(type name, bijector name)` of each layer, data to latent, with each FactorOut's inner scale nested."""
  layers = []
  for bijector in reversed(chain.bijectors):
    kind = type(bijector).__name__
    if kind == "_Invert":  # what `tfb.Invert(...)` builds around a bijector that is not a CompositeTensor
      kind = f"Invert({type(bijector.bijector).__name__})"
    layers.append((kind, bijector.name))
    if isinstance(bijector, FactorOut):
      layers.append(data_to_latent_order(bijector.inner))
  return layers


class MultiScaleTest(tf.test.TestCase, BijectorChecks, parameterized.TestCase):
  def test_layer_order_and_the_factory_calls_follow_the_paper(self):
    calls = []

    def make_coupling(scale, mask_type, index, event_shape):
      calls.append((scale, mask_type, index, tuple(event_shape)))
      return keras_coupling(scale, mask_type, index, event_shape)

    multi_scale = MultiScale((8, 8, 1), 3, make_coupling, preprocessing=LogitTransform(4))
    cb, ch = "checkerboard", "channel"
    self.assertEqual(
      calls,
      [(0, cb, i, (8, 8, 1)) for i in range(3)]
      + [(0, ch, i, (4, 4, 4)) for i in range(3)]
      + [(1, cb, i, (4, 4, 2)) for i in range(3)]
      + [(1, ch, i, (2, 2, 8)) for i in range(3)]
      + [(2, cb, i, (2, 2, 4)) for i in range(4)],
    )

    def couplings(scale, mask_type, count):
      return [("AffineCoupling", f"scale{scale}_{mask_type}{i}") for i in range(count)]

    self.assertEqual(
      data_to_latent_order(multi_scale),
      [("LogitTransform", "logit_transform")]
      + couplings(0, cb, 3)
      + [("Squeeze", "scale0_squeeze")]
      + couplings(0, ch, 3)
      + [
        ("FactorOut", "scale0_factor_out"),
        couplings(1, cb, 3)
        + [("Squeeze", "scale1_squeeze")]
        + couplings(1, ch, 3)
        + [("FactorOut", "scale1_factor_out"), couplings(2, cb, 4), ("Invert(Squeeze)", "scale1_unsqueeze")],
        ("Invert(Squeeze)", "scale0_unsqueeze"),
      ],
    )
    self.assertIsInstance(multi_scale, KeywordChain)
    self.assertEqual(multi_scale.forward_event_shape([8, 8, 1]), [8, 8, 1])

  def test_a_user_coupling_factory_gives_an_exact_bijector(self):
    tf.random.set_seed(1)
    multi_scale = MultiScale((8, 8, 1), 2, keras_coupling)
    perturb(multi_scale, stddev=0.2)
    self.assertLen(multi_scale.trainable_variables, 10 * 4 + 10)  # 2 kernels, 2 biases per CNN; a tanh scale
    x = tf.random.stateless_normal([2, 8, 8, 1], seed=[1, 2])
    self.assert_round_trips(multi_scale, x, atol=1e-4)
    self.assert_log_dets_consistent(multi_scale, x, 3, atol=1e-4)
    self.assert_log_det_matches_autodiff(multi_scale, x, 3, rtol=1e-4, min_abs_log_det=1.0)

  def test_preprocessing_comes_first(self):
    tf.random.set_seed(2)
    built = {}

    def shared_coupling(*args):  # both assemblies below get the same couplings
      return built.setdefault(args, keras_coupling(*args))

    scales = MultiScale((4, 4, 1), 2, shared_coupling)
    perturb(scales, stddev=0.2)
    logit = LogitTransform(4)
    preprocessed = MultiScale((4, 4, 1), 2, shared_coupling, preprocessing=logit)
    self.assertLen(preprocessed.trainable_variables, len(scales.trainable_variables))
    x = tf.random.stateless_uniform([3, 4, 4, 1], seed=[3, 4], maxval=16.0)
    self.assertAllClose(preprocessed.forward(x), scales.forward(logit.forward(x)))
    self.assertAllClose(
      preprocessed.forward_log_det_jacobian(x, event_ndims=3),
      logit.forward_log_det_jacobian(x, event_ndims=3)
      + scales.forward_log_det_jacobian(logit.forward(x), event_ndims=3),
    )

  @parameterized.named_parameters(
    ("zero_scales", dict(num_scales=0), ValueError, r"`num_scales` must be a positive integer; got 0"),
    ("fractional_scales", dict(num_scales=1.5), ValueError, r"`num_scales` must be a positive integer"),
    ("not_divisible", dict(num_scales=4), ValueError, r"`num_scales=4` squeezes 3 time\(s\).*divisible by 8"),
    (
      "vector_shape",
      dict(event_shape=(8,)),
      ValueError,
      r"`event_shape` must be `\(height, width, channels\)`",
    ),
    ("factory_not_callable", dict(make_coupling=3), TypeError, r"`make_coupling` must be callable; got int"),
    ("bad_preprocessing", dict(preprocessing=tf.nn.sigmoid), TypeError, r"`preprocessing` must be None or"),
  )
  def test_bad_arguments(self, overrides, error, message):
    arguments = dict(event_shape=(4, 4, 1), num_scales=2, make_coupling=keras_coupling)
    with self.assertRaisesRegex(error, message):
      MultiScale(**{**arguments, **overrides})

  def test_a_factory_must_return_bijectors(self):
    with self.assertRaisesRegex(
      TypeError, r"`make_coupling` must return a `tfb.Bijector` or a list of them; got"
    ):
      MultiScale((4, 4, 1), 1, lambda *args: [tf.identity])


if __name__ == "__main__":
  tf.test.main()
