"""Argument checks shared by the public functions, with errors that name the argument."""

from typing import Optional

import numpy as np

__all__ = ["check_int"]


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
  """`value` as a Python int, or a ValueError that names `name`.

  Accepts Python and NumPy integers >= `minimum` (and None if `allow_none`); rejects bools,
  floats and strings, so `num_steps=2.5` or `True` is an error rather than a silent cast. The
  result is a plain int, so it serializes in a Keras config.
  """
  if value is None and allow_none:
    return None
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
      or value < minimum):
    kind = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
    raise ValueError(f"`{name}` must be {kind}{' or None' if allow_none else ''}, got {value!r}.")
  return int(value)

