"""Conditional RealNVP `p(x | c)`: exact density per context, the context's reach, errors, the classifier."""

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from tests.bijector_testing import autodiff_log_det, perturb
from tfp_realnvp import RealNVP, classifier, networks

tfd = tfp.distributions

IMAGE = dict(event_shape=(8, 8, 1), num_scales=2, num_blocks=1, num_filters=8, num_bits=4)


def conditional_flow(conditional_event_shape, seed=0, **overrides):
  tf.random.set_seed(seed)
  settings = IMAGE if len(overrides.get("event_shape", IMAGE["event_shape"])) == 3 else {}
  flow = RealNVP(**{**settings, **overrides}, conditional_event_shape=conditional_event_shape)
  perturb(flow, stddev=0.2, seed=seed)
  return flow


def pixels(shape, seed):
  return tf.random.stateless_uniform(shape, seed=[seed, 0], maxval=16.0)


def context(shape, seed):
  return tf.random.stateless_normal(shape, seed=[seed, 1])


# (name, flow arguments, data shape of one event, context shape)
FLOWS = [
  ("image_with_vector_context", dict(), (8, 8, 1), (3,)),
  ("image_with_image_context", dict(), (8, 8, 1), (8, 8, 2)),
  ("vector_with_vector_context", dict(event_shape=(4,), num_couplings=4, hidden_units=(16,)), (4,), (3,)),
  ("image_with_the_context_in_the_base", dict(context_enters="base"), (8, 8, 1), (3,)),
  (
    "vector_with_the_context_in_the_base",
    dict(event_shape=(4,), num_couplings=4, hidden_units=(16,), context_enters="base"),
    (4,),
    (3,),
  ),
]
IMAGE_FLOWS = [flow for flow in FLOWS if len(flow[2]) == 3]
VECTOR_FLOWS = [flow for flow in FLOWS if len(flow[2]) == 1]


def data(event_shape, batch, seed):
  return (
    pixels([batch, *event_shape], seed) if len(event_shape) == 3 else context([batch, *event_shape], seed)
  )


class ConditionalFlowTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*FLOWS)
  def test_log_prob_is_base_density_plus_autodiff_log_det_under_the_context(
    self, arguments, event_shape, context_shape
  ):
    flow = conditional_flow(context_shape, **arguments)
    x, c = data(event_shape, 2, seed=1), context([2, *context_shape], seed=2)
    z = flow.encode(x, c)
    log_det = autodiff_log_det(lambda t: flow.encode(t, c), x, len(event_shape))
    expected = tfd.Sample(tfd.Normal(0.0, 1.0), event_shape).log_prob(z) + log_det
    log_prob = flow.log_prob(x, conditional_input=c)
    self.assertAllClose(expected, log_prob, rtol=1e-3)
    self.assertAllClose(tf.exp(log_prob), flow.prob(x, conditional_input=c), rtol=1e-5)
    # Another context, another density, and other samples from the same seed.
    other = 1.5 * c + 1.0
    self.assertGreater(
      float(tf.reduce_max(tf.abs(log_prob - flow.log_prob(x, conditional_input=other)))), 0.1
    )
    seed = tf.constant([3, 4])
    self.assertNotAllClose(
      flow.sample(2, seed=seed, conditional_input=c), flow.sample(2, seed=seed, conditional_input=other)
    )

  @parameterized.named_parameters(*FLOWS)
  def test_round_trips_and_repeatable_samples_with_a_context(self, arguments, event_shape, context_shape):
    flow = conditional_flow(context_shape, **arguments)
    x, c = data(event_shape, 3, seed=5), context([3, *context_shape], seed=6)
    self.assertAllClose(flow.decode(flow.encode(x, c), c), x, atol=1e-4)
    seed = tf.constant([7, 8])
    samples = flow.sample(3, seed=seed, conditional_input=c)
    self.assertAllEqual(samples, flow.sample(3, seed=seed, conditional_input=c))
    # One context for all samples is the same as that context repeated.
    one = c[0]
    self.assertAllClose(
      flow.sample(3, seed=seed, conditional_input=one),
      flow.sample(3, seed=seed, conditional_input=tf.stack([one] * 3)),
    )
    samples, log_probs = flow.experimental_sample_and_log_prob(3, seed=seed, conditional_input=c)
    self.assertAllClose(log_probs, flow.log_prob(samples, conditional_input=c), rtol=1e-3)
    self.assertEqual(flow.interpolate(x[0], x[1], 4, conditional_input=c[0]).shape, [4, *event_shape])
    if len(event_shape) == 3:
      self.assertAllClose(
        flow.bits_per_dim(x, conditional_input=c),
        -flow.log_prob(x, conditional_input=c) / (64 * np.log(2.0)),
      )

  @parameterized.named_parameters(*FLOWS)
  def test_every_variable_and_the_context_get_a_nonzero_gradient(self, arguments, event_shape, context_shape):
    flow = conditional_flow(context_shape, **arguments)
    x, c = data(event_shape, 8, seed=9), context([8, *context_shape], seed=10)
    with tf.GradientTape() as tape:
      tape.watch(c)
      loss = -tf.reduce_mean(flow.log_prob(x, training=True, conditional_input=c))
    variables = flow.trainable_variables
    gradients = tape.gradient(loss, [*variables, c])
    for variable, gradient in zip([*variables, c], gradients):
      name = getattr(variable, "name", "conditional_input")
      self.assertIsNotNone(gradient, name)
      self.assertGreater(float(tf.reduce_max(tf.abs(gradient))), 0.0, name)
    # The context path: every conditioner's projection (vector context into a ResNet) or first layer, or
    # only the base's mean.
    conditioners = [
      m for m in flow.submodules if isinstance(m, (networks.ConditionalResNet, networks.ConditionalMLP))
    ]
    if arguments.get("context_enters") == "base":
      self.assertEmpty(conditioners)
      self.assertLen([v for v in variables if "base_shift" in v.name], 1)
      return
    self.assertLen(conditioners, 10 if len(event_shape) == 3 else 4)
    if len(event_shape) == 3 and len(context_shape) == 1:
      self.assertLen([v for v in variables if "context_kernel" in v.name], 10)

  def test_a_two_dimensional_conditional_flow_integrates_to_one_for_each_context(self):
    flow = conditional_flow((2,), seed=3, event_shape=(2,), num_couplings=4, hidden_units=(16, 16))
    for c in ([0.0, 0.0], [1.5, -1.0], [-2.0, 3.0]):
      c = tf.constant(c)
      samples = flow.sample(20000, seed=tf.constant([5, 5]), conditional_input=c).numpy()
      low, high = samples.min(axis=0) - 2.0, samples.max(axis=0) + 2.0
      grid_x = np.linspace(low[0], high[0], 1000, dtype=np.float32)
      grid_y = np.linspace(low[1], high[1], 1000, dtype=np.float32)
      points = np.stack(np.meshgrid(grid_x, grid_y, indexing="ij"), axis=-1).reshape(-1, 2)
      density = flow.prob(points, conditional_input=c).numpy()
      cell_area = (grid_x[1] - grid_x[0]) * (grid_y[1] - grid_y[0])
      self.assertAllClose(density.sum() * cell_area, 1.0, atol=0.01, msg=f"context {c.numpy()}")

  def test_missing_extra_and_misshaped_contexts_are_errors_naming_conditional_input(self):
    flow = conditional_flow((3,))
    x = pixels([2, 8, 8, 1], seed=11)
    missing = (
      r"conditional \(`conditional_event_shape=\(3,\)`\).*`conditional_input` of shape `\[\.\.\., 3\]`"
    )
    misshaped = r"`conditional_input` must have shape `\[\.\.\., 3\]`.*got shape \[2, 4\]"
    for method in (flow.log_prob, flow.prob, flow.bits_per_dim, flow.encode, flow.decode):
      with self.assertRaisesRegex(ValueError, missing):
        method(x)
      with self.assertRaisesRegex(ValueError, misshaped):
        method(x, conditional_input=tf.zeros([2, 4]))
    with self.assertRaisesRegex(ValueError, missing):
      flow.sample(2, seed=[1, 2])
    # Five contexts for two samples are a batch, not a mismatch: two samples under each.
    self.assertEqual(flow.sample(2, seed=[1, 2], conditional_input=tf.zeros([5, 3])).shape, [2, 5, 8, 8, 1])
    with self.assertRaisesRegex(
      ValueError, r"`conditional_input` must have batch dimensions.*`x` \[2\].*\[3, 3\]"
    ):
      flow.log_prob(x, conditional_input=tf.zeros([3, 3]))
    unconditional = RealNVP(**IMAGE)
    self.assertIsNone(unconditional.conditional_event_shape)
    for call in (
      lambda: unconditional.log_prob(x, conditional_input=tf.zeros([2, 3])),
      lambda: unconditional.sample(2, seed=[1, 2], conditional_input=tf.zeros([3])),
      lambda: unconditional.encode(x, conditional_input=tf.zeros([2, 3])),
    ):
      with self.assertRaisesRegex(
        ValueError, r"unconditional.*takes no `conditional_input`; got one of shape"
      ):
        call()
    with self.assertRaisesRegex(TypeError, r"unexpected keyword.*\['conditional_input'\]"):
      unconditional.bijector.forward(tf.zeros([2, 8, 8, 1]), conditional_input=tf.zeros([2, 3]))
    with self.assertRaisesRegex(
      ValueError, r"`conditional_event_shape` of an image flow.*\(8, 8\); got \(4, 4, 1\)"
    ):
      RealNVP(**IMAGE, conditional_event_shape=(4, 4, 1))

  def test_each_conditioner_runs_once_per_log_prob_and_unknown_batches_work(self):
    flow = RealNVP.from_preset("digits", conditional_event_shape=(10,), num_blocks=1, num_filters=4)
    x, c = pixels([4, 8, 8, 1], seed=13), tf.one_hot([1, 2, 3, 4], 10)
    calls = []
    call = networks.ConditionalResNet.__call__

    def counting_call(resnet, inputs, conditional_input, training=False):
      calls.append(training)
      return call(resnet, inputs, conditional_input, training)

    with mock.patch.object(networks.ConditionalResNet, "__call__", counting_call):
      for training in (False, True):
        calls.clear()
        flow.log_prob(x, training=training, conditional_input=c)
        # TFP's cache, keyed on the keywords, still hands each coupling's log-det over with its transform.
        self.assertEqual(calls, [training] * 10)
    log_prob = tf.function(
      lambda x, c: flow.log_prob(x, conditional_input=c),
      input_signature=[tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None, 10])],
    )
    self.assertAllClose(log_prob(x, c), flow.log_prob(x, conditional_input=c), rtol=1e-5)
    self.assertEqual(log_prob(x[:0], c[:0]).shape, [0])

  def test_preset_and_unconditional_flows_keep_their_variables(self):
    flow = RealNVP.from_preset("digits", conditional_event_shape=(10,), num_blocks=1, num_filters=4)
    self.assertEqual(flow.conditional_event_shape, (10,))
    self.assertEqual(flow.copy().conditional_event_shape, (10,))
    tf.random.set_seed(1)
    unconditional = RealNVP.from_preset("digits", num_blocks=1, num_filters=4)
    tf.random.set_seed(1)
    default = RealNVP.from_preset("digits", num_blocks=1, num_filters=4, conditional_event_shape=None)
    self.assertEqual([v.name for v in unconditional.variables], [v.name for v in default.variables])
    for a, b in zip(unconditional.variables, default.variables):
      self.assertAllEqual(a, b)
    # The conditional flow holds the same variables plus each conditioner's context projection; only the
    # input convolutions, which also read the context, change shape.
    shapes = {v.name: v.shape for v in unconditional.variables}
    conditional_shapes = {v.name: v.shape for v in flow.variables}
    added = set(conditional_shapes) - set(shapes)
    self.assertEqual({name.split("/")[-1] for name in added}, {"context_kernel:0", "context_bias:0"})
    self.assertLen(added, 20)
    self.assertEmpty(set(shapes) - set(conditional_shapes))
    changed = {name for name in shapes if shapes[name] != conditional_shapes[name]}
    self.assertTrue(changed)
    self.assertTrue(all(name.endswith("_resnet/conv_in/direction:0") for name in changed), changed)


def calls_with_a_context(flow, event_shape):
  """`{name: fn(x, c)}`, each of the flow's methods that takes a context, returning `(outputs, event ranks)`."""
  rank = len(event_shape)
  z = tf.random.stateless_normal([3, *event_shape], seed=[9, 9])
  return {
    "log_prob": lambda x, c: ([flow.log_prob(x, conditional_input=c)], [0]),
    "bits_per_dim_or_prob": lambda x, c: (
      [flow.bits_per_dim(x, conditional_input=c) if flow.num_bits else flow.prob(x, conditional_input=c)],
      [0],
    ),
    "encode": lambda x, c: ([flow.encode(x, c)], [rank]),
    "decode": lambda x, c: ([flow.decode(z, c)], [rank]),
    "sample": lambda x, c: ([flow.sample(3, seed=[1, 2], conditional_input=c)], [rank]),
    "sample_and_log_prob": lambda x, c: (
      list(flow.experimental_sample_and_log_prob(3, seed=[1, 2], conditional_input=c)),
      [rank, 0],
    ),
  }


class ContextValuesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*VECTOR_FLOWS)
  def test_rows_with_a_non_finite_context_are_nan_eagerly_and_in_a_tf_function(
    self, arguments, event_shape, context_shape
  ):
    self.check_non_finite_context_rows_are_nan(arguments, event_shape, context_shape)

  @parameterized.named_parameters(*IMAGE_FLOWS)
  @pytest.mark.slow  # every method of an image flow, traced twice
  def test_rows_with_a_non_finite_context_are_nan_eagerly_and_in_a_tf_function_image(
    self, arguments, event_shape, context_shape
  ):
    self.check_non_finite_context_rows_are_nan(arguments, event_shape, context_shape)

  def check_non_finite_context_rows_are_nan(self, arguments, event_shape, context_shape):
    flow = conditional_flow(context_shape, **arguments)
    x = data(event_shape, 3, seed=5)
    c = context([3, *context_shape], seed=6).numpy()
    c[0].flat[0] = np.nan
    c[1].flat[-1] = np.inf
    for mode, wrap in (("eager", lambda fn: fn), ("tf.function", tf.function)):
      for name, call in calls_with_a_context(flow, event_shape).items():
        outputs, ranks = wrap(call)(x, tf.constant(c))
        for output, rank in zip(outputs, ranks):
          axes = list(range(1, 1 + rank))
          with self.subTest(mode=mode, method=name):
            self.assertAllEqual(tf.reduce_all(tf.math.is_nan(output), axis=axes), [True, True, False])
            self.assertTrue(np.all(np.isfinite(output[2])))

  @parameterized.parameters(False, True)
  def test_a_non_finite_context_leaves_the_other_rows_gradients_finite(self, training):
    flow = conditional_flow((3,))
    x = pixels([3, 8, 8, 1], seed=7)
    c = context([3, 3], seed=8).numpy()
    c[0, 1] = np.nan
    with tf.GradientTape() as tape:
      log_prob = flow.log_prob(x, training=training, conditional_input=c)
      finite_part = tf.reduce_sum(log_prob[1:])
    self.assertTrue(np.isnan(log_prob[0]))
    gradients = tape.gradient(finite_part, flow.trainable_variables)
    self.assertTrue(all(np.all(np.isfinite(g)) for g in gradients))

  @parameterized.named_parameters(*FLOWS)
  def test_a_context_of_another_dtype_is_a_type_error_naming_it(self, arguments, event_shape, context_shape):
    flow = conditional_flow(context_shape, **arguments)
    x = data(event_shape, 3, seed=9)
    c = context([3, *context_shape], seed=10)
    for wrong in (tf.cast(c, tf.int32), tf.cast(c, tf.float64), c.numpy().astype(np.float64), c > 0.0):
      dtype = tf.as_dtype(wrong.dtype).name
      for name, call in calls_with_a_context(flow, event_shape).items():
        with (
          self.subTest(dtype=dtype, method=name),
          self.assertRaisesRegex(
            TypeError, rf"`conditional_input` must have dtype float32, the data's; got {dtype}"
          ),
        ):
          call(x, wrong)
    # A Python list has no dtype of its own: it is converted to the flow's.
    self.assertAllClose(
      flow.log_prob(x, conditional_input=c.numpy().tolist()), flow.log_prob(x, conditional_input=c)
    )


class ClassifierTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.flow = conditional_flow((4,))
    self.x = pixels([3, 8, 8, 1], seed=12)
    self.log_prior = tf.math.log(tf.constant([0.1, 0.2, 0.3, 0.4]))

  def per_class_loop(self):
    return tf.stack(
      [self.flow.log_prob(self.x, conditional_input=tf.one_hot([k] * 3, 4)) for k in range(4)], axis=-1
    )

  def test_class_log_probs_are_normalized_and_match_a_per_class_loop(self):
    joint = self.per_class_loop() + self.log_prior
    log_probs = classifier.class_log_probs(self.flow, self.x, 4, log_prior=self.log_prior)
    self.assertEqual(log_probs.shape, [3, 4])
    self.assertAllClose(tf.reduce_sum(tf.exp(log_probs), -1), tf.ones([3]), atol=1e-5)
    self.assertAllClose(log_probs, joint - tf.reduce_logsumexp(joint, -1, keepdims=True), atol=1e-4)
    self.assertAllClose(classifier.joint_log_probs(self.flow, self.x, 4, self.log_prior), joint, rtol=1e-5)
    self.assertAllClose(
      classifier.marginal_log_prob(self.flow, self.x, 4, self.log_prior),
      tf.reduce_logsumexp(joint, -1),
      rtol=1e-5,
    )
    # The uniform prior by default; the classes are told apart (the context matters).
    uniform = classifier.class_log_probs(self.flow, self.x, 4)
    loop = self.per_class_loop()
    self.assertAllClose(uniform, loop - tf.reduce_logsumexp(loop, -1, keepdims=True), atol=1e-4)
    self.assertGreater(float(tf.reduce_max(uniform) - tf.reduce_min(uniform)), 0.1)

  def test_one_flow_call_over_every_pair(self):
    calls = []
    log_prob = self.flow.log_prob

    def counting_log_prob(x, **kwargs):
      calls.append((x.shape.as_list(), kwargs["conditional_input"].shape.as_list()))
      return log_prob(x, **kwargs)

    self.flow.log_prob = counting_log_prob
    classifier.class_log_probs(self.flow, self.x, 4)
    self.assertEqual(calls, [([12, 8, 8, 1], [12, 4])])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"`conditional_event_shape=\(10,\)`.*`num_classes=10`.*\(4,\)"):
      classifier.class_log_probs(self.flow, self.x, 10)
    with self.assertRaisesRegex(ValueError, r"`log_prior` must have shape \[4\]"):
      classifier.marginal_log_prob(self.flow, self.x, 4, log_prior=tf.zeros([3]))
    with self.assertRaisesRegex(ValueError, r"`x` must be a batch `\[batch, 8, 8, 1\]`"):
      classifier.class_log_probs(self.flow, self.x[0], 4)


if __name__ == "__main__":
  tf.test.main()
