"""KeywordChain: tfb.Chain's transform, with call-time keywords delivered by declaration."""

import tensorflow as tf
import tensorflow_probability as tfp

from tests.bijector_testing import BijectorChecks, perturb
from tfp_realnvp import networks
from tfp_realnvp.bijectors import (
  AffineCoupling,
  BatchNorm,
  FactorOut,
  KeywordChain,
  Squeeze,
  call_keywords_of,
)

tfb = tfp.bijectors


class Recorder(tfb.Bijector):
  """`y = x + shift`, declaring a keyword no bijector here knows, and recording what each call received."""

  call_keywords = frozenset({"context"})

  def __init__(self, shift, name="recorder"):
    parameters = dict(locals())
    self._shift = shift
    self.received = []
    super().__init__(forward_min_event_ndims=0, is_constant_jacobian=True, parameters=parameters, name=name)

  def _forward(self, x, context=None):
    self.received.append(context)
    return x + self._shift

  def _inverse(self, y, context=None):
    self.received.append(context)
    return y - self._shift

  def _forward_log_det_jacobian(self, x, context=None):
    return tf.zeros([], x.dtype)


def make_coupling(seed, shape=(4, 4, 2), mask_type="checkerboard"):
  tf.random.set_seed(seed)
  coupling = AffineCoupling(
    networks.ResNet(shape[-1], 2 * shape[-1], num_blocks=1, num_filters=4), shape, mask_type
  )
  perturb(coupling, seed=seed)
  return coupling


class KeywordChainTest(tf.test.TestCase, BijectorChecks):
  def test_same_transform_and_log_det_as_tfb_chain(self):
    members = [make_coupling(1), tfb.Invert(Squeeze()), make_coupling(2, (2, 2, 8), "channel"), Squeeze()]
    chain = KeywordChain(members)
    reference = tfb.Chain(members)
    x = tf.random.stateless_normal([3, 4, 4, 2], seed=[1, 2])
    self.assertAllClose(chain.forward(x), reference.forward(x))
    self.assertAllClose(
      chain.forward_log_det_jacobian(x, event_ndims=3), reference.forward_log_det_jacobian(x, event_ndims=3)
    )
    self.assert_round_trips(chain, x, training=False)
    self.assert_log_dets_consistent(chain, x, 3, training=False)
    self.assert_log_det_matches_autodiff(chain, x, 3, min_abs_log_det=0.05, training=False)

  def test_a_new_keyword_reaches_every_declaring_member_through_wrappers(self):
    inner = Recorder(1.0, name="inner")
    outer = Recorder(2.0, name="outer")
    # The new keyword reaches `inner` through a FactorOut and a nested chain with no routing code for it;
    # stock bijectors (`tfb.Invert(Squeeze())`, `Squeeze`) and BatchNorm, which do not declare it, never see it.
    chain = KeywordChain(
      [tfb.Invert(Squeeze()), FactorOut(KeywordChain([inner, BatchNorm(4)])), outer, Squeeze(), BatchNorm(2)]
    )
    self.assertEqual(chain.call_keywords, {"context", "training"})
    x = tf.random.stateless_normal([2, 4, 4, 2], seed=[3, 4])
    context = tf.constant(7.0)
    chain.forward(x, context=context, training=True)
    self.assertLen(inner.received, 1)
    self.assertIs(inner.received[0], context)
    self.assertIs(outer.received[0], context)
    chain.inverse(tf.identity(x), context=context)
    self.assertIs(inner.received[-1], context)
    self.assertLen(outer.received, 2)

  def test_training_moves_the_batch_norms_inside_factor_out_and_nested_chains(self):
    coupling = make_coupling(3, (2, 2, 4))
    batch_norm = BatchNorm(4, momentum=0.5)
    chain = KeywordChain([tfb.Invert(Squeeze()), FactorOut(KeywordChain([batch_norm, coupling])), Squeeze()])
    moving_means = [batch_norm.moving_mean, coupling.conditioner.norm_out.moving_mean]
    x = tf.random.stateless_normal([8, 4, 4, 2], seed=[5, 6])
    chain.forward(x)
    for mean in moving_means:
      self.assertAllEqual(mean, tf.zeros_like(mean))
    chain.forward(x, training=True)
    for mean in moving_means:
      self.assertNotAllClose(mean, tf.zeros_like(mean))

  def test_each_member_computes_once_per_transform_and_log_det(self):
    calls = []

    class CountingResNet(networks.ResNet):
      def __call__(self, x, training=False):
        calls.append(training)
        return super().__call__(x, training)

    coupling = AffineCoupling(CountingResNet(2, 4, num_blocks=1, num_filters=4), (4, 4, 2), "checkerboard")
    chain = KeywordChain([FactorOut(KeywordChain([BatchNorm(1)])), coupling])
    x = tf.random.stateless_normal([4, 4, 4, 2], seed=[7, 8])
    y = chain.forward(x, training=True)  # TFP's cache holds the result only while `y` lives
    chain.forward_log_det_jacobian(x, event_ndims=3, training=True)
    self.assertEqual(calls, [True])
    self.assertEqual(y.shape, x.shape)

  def test_unknown_keyword_is_a_type_error_naming_it(self):
    chain = KeywordChain([BatchNorm(2), Squeeze()], name="flow")
    x = tf.zeros([1, 2, 2, 2])
    with self.assertRaisesRegex(
      TypeError, r"`flow` got unexpected keyword argument\(s\) \['trainig'\].*'training'"
    ):
      chain.forward(x, trainig=True)
    with self.assertRaisesRegex(TypeError, r"\['context'\]"):
      chain.inverse_log_det_jacobian(x, event_ndims=3, context=1.0)

  def test_a_wrapper_that_would_drop_keywords_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"(?s)`invert_affine_coupling`.*\['training'\].*never receive"):
      KeywordChain([tfb.Invert(make_coupling(4), name="invert_affine_coupling")])

  def test_declarations(self):
    coupling = make_coupling(5)
    self.assertEqual(call_keywords_of(coupling), {"training"})
    self.assertEqual(call_keywords_of(BatchNorm(2)), {"training"})
    self.assertEqual(call_keywords_of(FactorOut(Recorder(0.0))), {"context"})
    self.assertEqual(call_keywords_of(Squeeze()), frozenset())
    self.assertEqual(call_keywords_of(tfb.Invert(Squeeze())), frozenset())
    self.assertEqual(KeywordChain([]).call_keywords, frozenset())

  def test_members_must_be_bijectors(self):
    with self.assertRaisesRegex(TypeError, r"`bijectors` must hold `tfb.Bijector`s; got function"):
      KeywordChain([lambda x: x])


if __name__ == "__main__":
  tf.test.main()
