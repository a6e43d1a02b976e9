"""Argument checks shared by the library: each returns the value it checked, or raises a `ValueError` that
names the argument, says what was expected and shows what was given."""

import operator

import numpy as np

__all__ = ["boolean", "positive_int", "positive_ints"]


def boolean(name, value):
  """`value` if it is a Python or NumPy bool, else a `ValueError` naming `name` (no truthiness: 0, 1 and
  "False" are refused)."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"`{name}` must be True or False; got {value!r}.")
  return bool(value)


def positive_int(name, value):
  """`value` as a Python int if it is an integer >= 1 (a Python or NumPy integer), else a `ValueError` naming
  `name`. A bool is refused, and so is a float such as 2.5 or 2.0, rather than truncated."""
  try:
    number = None if isinstance(value, bool) else operator.index(value)
  except TypeError:
    number = None
  if number is None or number < 1:
    raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
  return number


def positive_ints(name, values):
  """`values` (a shape, layer widths) as a non-empty tuple of `positive_int`s, else a `ValueError` naming `name`."""
  try:
    numbers = tuple(positive_int(name, value) for value in values)
  except (TypeError, ValueError):
    numbers = ()
  if not numbers:
    raise ValueError(f"`{name}` must be a non-empty sequence of positive integers; got {values!r}.")
  return numbers
