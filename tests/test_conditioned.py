"""A conditional flow in TFP's idioms: the conditioned view `flow.condition(c)`, `bijector_kwargs`, and sampling
with a batch of contexts."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized
from tensorflow_probability.python.internal import batch_shape_lib

from tests.bijector_testing import autodiff_log_det, perturb
from tfp_realnvp import RealNVP
from tfp_realnvp.conditioned import ConditionedRealNVP

tfd = tfp.distributions
Root = tfd.JointDistributionCoroutine.Root

CONTEXT = 3
DIMS = 2


def vector_flow(seed=0, stddev=0.3, **overrides):
  """A conditional vector flow with non-trivial weights (every coupling away from the identity)."""
  tf.random.set_seed(seed)
  arguments = dict(
    event_shape=(DIMS,), conditional_event_shape=(CONTEXT,), num_couplings=4, hidden_units=(16,)
  )
  flow = RealNVP(**{**arguments, **overrides})
  perturb(flow, stddev=stddev, seed=seed)
  return flow


def image_flow(seed=0):
  tf.random.set_seed(seed)
  flow = RealNVP(
    event_shape=(4, 4, 1),
    num_scales=1,
    num_blocks=1,
    num_filters=4,
    num_bits=4,
    logit_alpha=0.05,
    conditional_event_shape=(CONTEXT,),
  )
  perturb(flow, stddev=0.1, seed=seed)
  return flow


def normal(shape, seed):
  return tf.random.stateless_normal(shape, seed=[seed, 7])


def context_prior():
  return tfd.Sample(tfd.Normal(0.0, 1.0), CONTEXT, name="c")


class ConditionedViewTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flow = vector_flow()

  def test_batch_and_event_shapes_come_from_the_context_and_the_flow(self):
    for context_shape, batch_shape in [((CONTEXT,), []), ((5, CONTEXT), [5]), ((2, 5, CONTEXT), [2, 5])]:
      view = self.flow.condition(normal(context_shape, 1))
      self.assertIsInstance(view, tfd.Distribution)
      self.assertEqual(view.batch_shape, batch_shape)
      self.assertAllEqual(view.batch_shape_tensor(), batch_shape)
      self.assertEqual(view.event_shape, [DIMS])
      self.assertEqual(view.dtype, tf.float32)
      self.assertEqual(view.reparameterization_type, tfd.FULLY_REPARAMETERIZED)
      samples = view.sample([4, 3], seed=[1, 2])
      self.assertEqual(samples.shape, [4, 3, *batch_shape, DIMS])
      self.assertEqual(view.log_prob(samples).shape, [4, 3, *batch_shape])
      both = view.experimental_sample_and_log_prob(6, seed=[1, 2])
      self.assertEqual([t.shape for t in both], [[6, *batch_shape, DIMS], [6, *batch_shape]])
      self.assertAllClose(both[1], view.log_prob(both[0]), atol=1e-4)

  def test_the_view_scores_and_samples_as_the_flow_under_its_context(self):
    c = normal([5, CONTEXT], 2)
    view = self.flow.condition(c)
    x = normal([7, 5, DIMS], 3)
    self.assertAllClose(view.log_prob(x), self.flow.log_prob(x, conditional_input=c))
    self.assertAllClose(view.prob(x), tf.exp(self.flow.log_prob(x, conditional_input=c)))
    # `x` broadcasts against the batch shape as for any distribution: one point under all five contexts.
    self.assertAllClose(
      view.log_prob(x[0, 0]), self.flow.log_prob(tf.tile(x[:1, 0], [5, 1]), conditional_input=c)
    )
    self.assertAllEqual(view.sample(7, seed=[4, 5]), self.flow.sample(7, seed=[4, 5], conditional_input=c))

  def test_temperature_and_training_pass_through_to_the_flow(self):
    c = normal([5, CONTEXT], 21)
    view = self.flow.condition(c)
    self.assertAllEqual(
      view.sample(3, seed=[1, 2], temperature=0.5),
      self.flow.sample([3, 5], seed=[1, 2], temperature=0.5, conditional_input=c),
    )
    x = normal([5, DIMS], 22)
    self.assertAllClose(
      view.log_prob(x, training=True), self.flow.log_prob(x, training=True, conditional_input=c)
    )

  def test_log_prob_through_the_view_is_base_density_plus_autodiff_log_det(self):
    c = normal([CONTEXT], 4)
    view = self.flow.condition(c)
    x = view.sample(6, seed=[2, 3])
    z = self.flow.encode(x, c)
    log_det = autodiff_log_det(lambda t: self.flow.encode(t, c), x, 1)
    expected = tfd.Sample(tfd.Normal(0.0, 1.0), [DIMS]).log_prob(z) + log_det
    self.assertAllClose(expected, view.log_prob(x), rtol=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(log_det))), 0.05)  # the weights are not the identity
    self.assertAllClose(self.flow.decode(z, c), x, atol=1e-5)  # round trip

  def test_each_row_is_drawn_under_its_own_context(self):
    c = normal([4, CONTEXT], 5) * 3.0
    samples = self.flow.condition(c).sample(6, seed=[6, 7])
    z = tfd.Sample(tfd.Normal(0.0, 1.0), [DIMS]).sample([6, 4], seed=[6, 7])  # the latent the flow drew
    self.assertAllClose(self.flow.decode(z, c), samples, atol=1e-5)
    for j in range(4):
      self.assertAllClose(self.flow.decode(z[:, j], c[j]), samples[:, j], atol=1e-5)
      self.assertNotAllClose(self.flow.decode(z[:, j], c[(j + 1) % 4]), samples[:, j], atol=1e-3)

  def test_trainable_variables_are_the_flows_and_training_through_the_view_trains_the_flow(self):
    flow = vector_flow(seed=1)
    view = flow.condition(normal([5, CONTEXT], 6))
    self.assertEqual({id(v) for v in view.trainable_variables}, {id(v) for v in flow.trainable_variables})
    self.assertNotEmpty(view.trainable_variables)
    before = [v.numpy() for v in flow.trainable_variables]
    x = normal([8, 5, DIMS], 7)
    optimizer = tf.optimizers.Adam(1e-2)
    for _ in range(3):
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(view.log_prob(x))
      gradients = tape.gradient(loss, view.trainable_variables)
      self.assertTrue(all(g is not None for g in gradients))
      optimizer.apply_gradients(zip(gradients, view.trainable_variables))
    moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, flow.trainable_variables)]
    self.assertTrue(all(moved))

  def test_copy_and_slicing_keep_the_flow_and_its_weights(self):
    flow = vector_flow(seed=2)
    c = normal([5, CONTEXT], 8)
    view = flow.condition(c)
    x = normal([5, DIMS], 9)
    copy = view.copy()
    self.assertIs(copy.flow, flow)
    self.assertAllClose(copy.log_prob(x), view.log_prob(x))
    other = normal([5, CONTEXT], 10)
    self.assertAllClose(view.copy(conditional_input=other).log_prob(x), flow.condition(other).log_prob(x))
    sliced = view[1:3]
    self.assertEqual(sliced.batch_shape, [2])
    self.assertAllClose(sliced.log_prob(x[1:3]), view.log_prob(x)[1:3])
    flow.trainable_variables[0].assign_add(tf.ones_like(flow.trainable_variables[0]))  # the copies follow
    self.assertAllClose(copy.log_prob(x), flow.log_prob(x, conditional_input=c))
    self.assertAllClose(sliced.log_prob(x[1:3]), flow.log_prob(x[1:3], conditional_input=c[1:3]))

  def test_parameter_properties_give_the_batch_shape(self):
    view = self.flow.condition(normal([2, 5, CONTEXT], 11))
    properties = view.parameter_properties()
    self.assertEqual(properties["conditional_input"].event_ndims(view), 1)
    # TFP's inference from the parameters agrees with the batch shape the view states.
    self.assertEqual(batch_shape_lib.inferred_batch_shape(view), [2, 5])
    self.assertAllEqual(batch_shape_lib.inferred_batch_shape_tensor(view), [2, 5])

  def test_independent_and_sample_wrap_the_view(self):
    c = normal([5, CONTEXT], 12)
    view = self.flow.condition(c)
    x = normal([3, 5, DIMS], 13)
    independent = tfd.Independent(view, reinterpreted_batch_ndims=1)
    self.assertEqual(independent.batch_shape, [])
    self.assertEqual(independent.event_shape, [5, DIMS])
    self.assertAllClose(independent.log_prob(x), tf.reduce_sum(view.log_prob(x), -1))
    repeated = tfd.Sample(view, 4)
    self.assertEqual(repeated.sample(seed=[1, 2]).shape, [5, 4, DIMS])
    draws = normal([5, 4, DIMS], 14)
    self.assertAllClose(
      repeated.log_prob(draws), tf.reduce_sum(view.log_prob(tf.transpose(draws, [1, 0, 2])), 0)
    )

  def test_joint_distribution_named_with_the_context_from_another_variable(self):
    joint = tfd.JointDistributionNamed(dict(c=context_prior(), x=lambda c: self.flow.condition(c)))
    values = joint.sample(6, seed=[3, 4])
    self.assertEqual(values["c"].shape, [6, CONTEXT])
    self.assertEqual(values["x"].shape, [6, DIMS])
    parts = context_prior().log_prob(values["c"]) + self.flow.log_prob(
      values["x"], conditional_input=values["c"]
    )
    self.assertAllClose(joint.log_prob(values), parts)
    self.assertAllClose(tf.add_n(list(joint.log_prob_parts(values).values())), parts)
    self.assertAllClose(
      joint.log_prob_parts(values)["x"], self.flow.condition(values["c"]).log_prob(values["x"])
    )
    self.assertEqual(
      {id(v) for v in joint.trainable_variables}, {id(v) for v in self.flow.trainable_variables}
    )

  def test_joint_distribution_sequential_and_coroutine_autobatched(self):
    sequential = tfd.JointDistributionSequential([context_prior(), lambda c: self.flow.condition(c)])
    c, x = sequential.sample(4, seed=[5, 6])
    expected = context_prior().log_prob(c) + self.flow.log_prob(x, conditional_input=c)
    self.assertAllClose(sequential.log_prob([c, x]), expected)

    def model():
      c = yield Root(context_prior())
      yield self.flow.condition(c, name="x")

    autobatched = tfd.JointDistributionCoroutineAutoBatched(model)
    c, x = autobatched.sample(4, seed=[5, 6])
    self.assertEqual([c.shape, x.shape], [[4, CONTEXT], [4, DIMS]])
    expected = context_prior().log_prob(c) + self.flow.log_prob(x, conditional_input=c)
    self.assertAllClose(autobatched.log_prob([c, x]), expected, atol=1e-4)

  def test_an_image_flow_view(self):
    flow = image_flow()
    view = flow.condition(normal([2, CONTEXT], 15))
    samples = view.sample(3, seed=[1, 2])
    self.assertEqual(samples.shape, [3, 2, 4, 4, 1])
    self.assertAllClose(
      view.log_prob(samples), flow.log_prob(samples, conditional_input=view.conditional_input)
    )
    # The default event-space bijector maps R^D onto the support, where `log_prob` is finite.
    inside = view.experimental_default_event_space_bijector()(normal([2, 4, 4, 1], 16) * 5.0)
    self.assertTrue(np.all(np.isfinite(view.log_prob(inside))))

  def test_a_variable_context_stays_a_variable(self):
    context = tf.Variable(normal([2, CONTEXT], 17))
    view = self.flow.condition(context)
    x = normal([2, DIMS], 18)
    before = view.log_prob(x)
    context.assign(normal([2, CONTEXT], 19))
    self.assertAllClose(view.log_prob(x), self.flow.log_prob(x, conditional_input=context))
    self.assertNotAllClose(view.log_prob(x), before)

  def test_errors_name_the_argument_the_expected_and_the_given(self):
    with self.assertRaisesRegex(
      ValueError, r"`conditional_input` must have shape `\[\.\.\., 3\]`; got shape \[5, 4\]"
    ):
      self.flow.condition(tf.zeros([5, 4]))
    with self.assertRaisesRegex(TypeError, r"`conditional_input` must have dtype float32.*got float64"):
      self.flow.condition(np.zeros([5, 3]))
    with self.assertRaisesRegex(TypeError, r"`conditional_input` must have dtype float32.*got int32"):
      self.flow.condition(tf.zeros([3], tf.int32))
    with self.assertRaisesRegex(ValueError, r"is conditional .*pass the context as `conditional_input`"):
      self.flow.condition(None)
    unconditional = RealNVP(event_shape=(DIMS,), num_couplings=2, hidden_units=(4,))
    with self.assertRaisesRegex(ValueError, r"unconditional .*no context to fix"):
      unconditional.condition(tf.zeros([3]))
    with self.assertRaisesRegex(TypeError, r"`flow` must be a conditional RealNVP flow; got Normal"):
      ConditionedRealNVP(tfd.Normal(0.0, 1.0), tf.zeros([3]))
    view = self.flow.condition(tf.zeros([3]))
    for keyword in ("conditional_input", "bijector_kwargs"):
      with self.assertRaisesRegex(ValueError, rf"context is fixed, so it takes no `{keyword}`.*copy"):
        view.log_prob(tf.zeros([DIMS]), **{keyword: tf.zeros([3])})
      with self.assertRaisesRegex(ValueError, rf"context is fixed, so it takes no `{keyword}`"):
        view.sample(2, seed=[1, 2], **{keyword: tf.zeros([3])})

  def test_a_view_with_a_context_batch_known_only_when_the_graph_runs(self):
    @tf.function(input_signature=[tf.TensorSpec([None, CONTEXT])])
    def sample_and_score(c):
      view = self.flow.condition(c)
      x = view.sample(7, seed=[1, 2])
      return x, view.log_prob(x)

    c = normal([5, CONTEXT], 20)
    x, log_prob = sample_and_score(c)
    self.assertEqual(x.shape, [7, 5, DIMS])
    self.assertAllClose(x, self.flow.condition(c).sample(7, seed=[1, 2]), atol=1e-5)
    self.assertAllClose(log_prob, self.flow.log_prob(x, conditional_input=c), atol=1e-4)


class BijectorKwargsTest(tf.test.TestCase):
  """TFP's conditional flows take the context as `bijector_kwargs={'conditional_input': c}`."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flow = vector_flow(seed=3)

  def test_bijector_kwargs_equal_conditional_input_with_the_same_broadcasting(self):
    flow = self.flow
    cases = [
      (normal([4, DIMS], 1), normal([4, CONTEXT], 2)),  # one context per row
      (normal([4, DIMS], 3), normal([CONTEXT], 4)),  # one context for all
      (normal([2, 1, DIMS], 5), normal([3, CONTEXT], 6)),  # broadcast to [2, 3]
    ]
    for x, c in cases:
      with self.subTest(x=x.shape, c=c.shape):
        tfp_style = dict(bijector_kwargs={"conditional_input": c})
        self.assertAllEqual(flow.log_prob(x, **tfp_style), flow.log_prob(x, conditional_input=c))
        self.assertAllEqual(flow.prob(x, **tfp_style), flow.prob(x, conditional_input=c))
        self.assertAllEqual(
          flow.log_prob(x, distribution_kwargs={}, **tfp_style), flow.log_prob(x, conditional_input=c)
        )
    for sample_shape, c in [
      (5, normal([5, CONTEXT], 7)),
      (5, normal([CONTEXT], 8)),
      (7, normal([4, CONTEXT], 9)),
    ]:
      with self.subTest(sample_shape=sample_shape, c=c.shape):
        tfp_style = dict(bijector_kwargs={"conditional_input": c})
        self.assertAllEqual(
          flow.sample(sample_shape, seed=[1, 2], **tfp_style),
          flow.sample(sample_shape, seed=[1, 2], conditional_input=c),
        )
        for a, b in zip(
          flow.experimental_sample_and_log_prob(sample_shape, seed=[1, 2], **tfp_style),
          flow.experimental_sample_and_log_prob(sample_shape, seed=[1, 2], conditional_input=c),
        ):
          self.assertAllEqual(a, b)

  def test_bijector_kwargs_in_a_transformed_distribution_idiom(self):
    # As `tfb.MaskedAutoregressiveFlow` users write it: a context per sample.
    c = normal([5, CONTEXT], 10)
    x = self.flow.sample(5, seed=[3, 4], bijector_kwargs={"conditional_input": c})
    self.assertEqual(x.shape, [5, DIMS])
    self.assertAllClose(
      self.flow.log_prob(x, bijector_kwargs={"conditional_input": c}), self.flow.condition(c).log_prob(x)
    )

  def test_the_context_twice_other_keys_and_other_types_are_errors(self):
    x, c = normal([4, DIMS], 11), normal([4, CONTEXT], 12)
    with self.assertRaisesRegex(ValueError, r"context was given twice"):
      self.flow.log_prob(x, conditional_input=c, bijector_kwargs={"conditional_input": c})
    with self.assertRaisesRegex(ValueError, r"context was given twice"):
      self.flow.sample(4, seed=[1, 2], conditional_input=c, bijector_kwargs={"conditional_input": c})
    with self.assertRaisesRegex(
      ValueError, r"`bijector_kwargs` may hold only 'conditional_input'.*\['training'\]"
    ):
      self.flow.log_prob(x, bijector_kwargs={"conditional_input": c, "training": True})
    with self.assertRaisesRegex(TypeError, r"`bijector_kwargs` must be a dict.*got list"):
      self.flow.log_prob(x, bijector_kwargs=[c])
    with self.assertRaisesRegex(ValueError, r"`distribution_kwargs` must be empty.*\['loc'\]"):
      self.flow.log_prob(x, conditional_input=c, distribution_kwargs={"loc": 1.0})
    with self.assertRaisesRegex(ValueError, r"is conditional .*pass the context as `conditional_input`"):
      self.flow.log_prob(x, bijector_kwargs={})


class BatchOfContextsSamplingTest(tf.test.TestCase):
  """`sample(sample_shape, conditional_input=c)`: a context per sample, one for all, or a batch."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flow = vector_flow(seed=4)

  def test_shapes(self):
    cases = [
      (7, [200], [7, 200]),  # a batch: as a distribution of batch shape [200]
      (200, [200], [200]),  # a context per sample
      (7, [], [7]),  # one context for all
      (7, [1], [7]),  # broadcasts to the sample shape: one for all
      ([4, 3], [3], [4, 3]),  # a context per sample along the last sample dimension
      ([4, 3], [2, 3], [4, 3, 2, 3]),
      ([], [5], [5]),
      (4, [2, 5], [4, 2, 5]),
    ]
    for sample_shape, batch, expected in cases:
      with self.subTest(sample_shape=sample_shape, batch=batch):
        c = normal([*batch, CONTEXT], 1)
        samples = self.flow.sample(sample_shape, seed=[1, 2], conditional_input=c)
        self.assertEqual(samples.shape, [*expected, DIMS])
        x, log_prob = self.flow.experimental_sample_and_log_prob(
          sample_shape, seed=[1, 2], conditional_input=c
        )
        self.assertEqual(log_prob.shape, expected)
        self.assertAllClose(log_prob, self.flow.log_prob(x, conditional_input=c), atol=1e-4)

  def test_a_batch_is_what_the_view_samples_and_each_row_uses_its_context(self):
    c = normal([200, CONTEXT], 2) * 2.0
    samples = self.flow.sample(7, seed=[3, 4], conditional_input=c)
    self.assertAllEqual(samples, self.flow.condition(c).sample(7, seed=[3, 4]))
    z = tfd.Sample(tfd.Normal(0.0, 1.0), [DIMS]).sample([7, 200], seed=[3, 4])
    self.assertAllClose(self.flow.decode(z, c), samples, atol=1e-5)
    self.assertAllClose(self.flow.encode(samples, c), z, atol=1e-4)

  def test_a_context_batch_known_only_when_the_graph_runs_stays_one_per_sample(self):
    @tf.function(input_signature=[tf.TensorSpec([None, CONTEXT])])
    def sample(c):
      return self.flow.sample(5, seed=[1, 2], conditional_input=c)

    self.assertEqual(sample(normal([5, CONTEXT], 3)).shape, [5, DIMS])
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError,
      r"broadcast against the sample shape.*flow\.condition\(conditional_input\)",
    ):
      sample(normal([4, CONTEXT], 4))


@pytest.mark.slow
class FitSurrogatePosteriorTest(tf.test.TestCase):
  def test_fit_surrogate_posterior_recovers_a_conditional_gaussian(self):
    """Amortized VI through the view: `q(theta | c)` for eight contexts at once, reverse KL <= 0.05 nats each."""
    flow = vector_flow(seed=0, stddev=0.0, hidden_units=(32, 32))
    matrix = tf.constant([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]])
    scale_tril = tf.linalg.cholesky(tf.constant([[0.5, 0.3], [0.3, 0.4]]))
    c = tf.random.stateless_normal([8, CONTEXT], seed=[1, 2])
    target = tfd.MultivariateNormalTriL(loc=tf.linalg.matvec(matrix, c) + 1.0, scale_tril=scale_tril)
    posterior = flow.condition(c)
    tfp.vi.fit_surrogate_posterior(
      target.log_prob, posterior, tf.optimizers.Adam(3e-3), num_steps=800, sample_size=32, seed=[3, 4]
    )
    theta, log_q = posterior.experimental_sample_and_log_prob(4000, seed=[5, 6])
    kl = tf.reduce_mean(log_q - target.log_prob(theta), 0)
    self.assertEqual(kl.shape, [8])
    self.assertAllLessEqual(kl, 0.05)
