"""FLOP counts of traced TensorFlow graphs, from TensorFlow's own profiler (no flags: importable by tests)."""

import tensorflow as tf

__all__ = ["graph_flops"]


def graph_flops(concrete_function):
  """Floating-point operations of one call of `concrete_function`.

  TensorFlow registers FLOP statistics for convolutions (forward and both backward passes: `2 * multiply-adds`
  each), matrix products and most elementwise ops; ops without statistics count 0. The graph needs static
  shapes.
  """
  builder = tf.compat.v1.profiler.ProfileOptionBuilder
  options = builder(builder.float_operation()).with_empty_output().build()
  return int(tf.compat.v1.profiler.profile(concrete_function.graph, options=options).total_float_ops)
