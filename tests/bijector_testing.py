"""Checks every bijector test needs: round trips, log-det consistency, and log-det against autodiff."""

import numpy as np
import tensorflow as tf


def perturb(module, stddev=0.3, seed=0, stateless=False):
  """Adds `N(0, stddev)` noise to every trainable variable of `module`.

  Zero-initialized output layers make each coupling the identity, and a log-det test of the identity proves
  nothing; after this every coupling has a non-trivial shift and scale. The noise comes from one
  `tf.random.Generator` seeded with `seed`, or with `stateless=True` from
  `tf.random.stateless_normal(seed=[seed, i])` for the `i`-th variable (its noise then does not depend on
  the sizes of the variables before it).
  """
  generator = None if stateless else tf.random.Generator.from_seed(seed)
  for i, variable in enumerate(module.trainable_variables):
    if stateless:
      noise = stddev * tf.random.stateless_normal(variable.shape, seed=[seed, i], dtype=variable.dtype)
    else:
      noise = generator.normal(variable.shape, stddev=stddev, dtype=variable.dtype)
    variable.assign_add(noise)


def flat_event_size(shape, event_ndims):
  return int(np.prod(shape[len(shape) - event_ndims :]))


def autodiff_log_det(fn, x, event_ndims):
  """`log|det J|` of `fn` at each event of `x` (batch shape `[N]`), from `batch_jacobian` and `slogdet`."""
  event_shape = x.shape[1:]
  assert len(event_shape) == event_ndims, (x.shape, event_ndims)
  flat_x = tf.reshape(x, [x.shape[0], -1])
  with tf.GradientTape() as tape:
    tape.watch(flat_x)
    flat_y = tf.reshape(fn(tf.reshape(flat_x, x.shape)), [x.shape[0], -1])
  jacobian = tape.batch_jacobian(flat_y, flat_x)
  _, log_abs_det = tf.linalg.slogdet(jacobian)
  return log_abs_det


class BijectorChecks:
  """Mixin for `tf.test.TestCase`: the properties every bijector here must have."""

  def assert_round_trips(self, bijector, x, atol=1e-5, **kwargs):
    y = bijector.forward(x, **kwargs)
    # tf.identity defeats the bijector cache, which would otherwise hand back `x` itself.
    self.assertAllClose(x, bijector.inverse(tf.identity(y), **kwargs), atol=atol, rtol=atol)
    self.assertAllClose(
      y,
      bijector.forward(tf.identity(bijector.inverse(tf.identity(y), **kwargs)), **kwargs),
      atol=atol,
      rtol=atol,
    )

  def assert_log_dets_consistent(self, bijector, x, event_ndims, atol=1e-5, **kwargs):
    y = tf.identity(bijector.forward(x, **kwargs))
    fldj = bijector.forward_log_det_jacobian(x, event_ndims=event_ndims, **kwargs)
    ildj = bijector.inverse_log_det_jacobian(y, event_ndims=event_ndims, **kwargs)
    self.assertAllClose(fldj, -ildj, atol=atol, rtol=atol)

  def assert_log_det_matches_autodiff(
    self, bijector, x, event_ndims, rtol=1e-4, min_abs_log_det=0.0, **kwargs
  ):
    """fldj equals the autodiff `log|det J|` to `rtol` (relative) in both directions."""
    fldj = bijector.forward_log_det_jacobian(x, event_ndims=event_ndims, **kwargs)
    expected = autodiff_log_det(lambda t: bijector.forward(t, **kwargs), tf.identity(x), event_ndims)
    atol = rtol * max(1.0, float(tf.reduce_max(tf.abs(expected))))
    self.assertAllClose(expected, fldj, rtol=rtol, atol=atol)
    y = tf.identity(bijector.forward(x, **kwargs))
    ildj = bijector.inverse_log_det_jacobian(y, event_ndims=event_ndims, **kwargs)
    expected_inverse = autodiff_log_det(lambda t: bijector.inverse(t, **kwargs), y, event_ndims)
    self.assertAllClose(expected_inverse, ildj, rtol=rtol, atol=atol)
    if min_abs_log_det:
      # Guard against testing the identity: the log-det must actually vary.
      self.assertGreater(float(tf.reduce_max(tf.abs(fldj))), min_abs_log_det)
