"""Argument checks shared by the public functions, with errors that name the argument."""

__all__ = ["check_positive_int_or_none"]


def check_positive_int_or_none(name: str, value) -> None:
  """Raises a ValueError unless `value` is None or an int >= 1 (bools are rejected)."""
  if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
    raise ValueError(f"{name} must be a positive int or None, got {value!r}.")
