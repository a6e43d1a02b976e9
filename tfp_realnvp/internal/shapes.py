"""Static shape checks shared by the flows and the exported-flow distribution."""

__all__ = ["may_end_with"]


def may_end_with(shape, trailing):
  """Whether a tensor of static `shape` (a `tf.TensorShape`) can be `[..., *trailing]` (an unknown rank can)."""
  rank = len(trailing)
  return shape.rank is None or (
    shape.rank >= rank and shape[shape.rank - rank :].is_compatible_with(trailing)
  )
