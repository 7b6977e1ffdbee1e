"""Integer argument checks: NumPy ints work like Python ints; bools, floats and strings fail."""

import json

import numpy as np
import pytest

from tfp_ext.internal.validation import check_int


@pytest.mark.parametrize("value", [1, 7, np.int32(7), np.int64(7), np.uint8(7)])
def test_integers_come_back_as_python_ints(value):
  out = check_int("n", value)
  assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value, minimum, message", [
    (0, 1, "`n` must be a positive int, got 0."),
    (-1, 0, "`n` must be a non-negative int, got -1."),
    (2, 3, "`n` must be an int >= 3, got 2."),
    (True, 1, "`n` must be a positive int, got True."),
    (np.bool_(True), 1, "`n` must be a positive int"),
    (2.0, 1, "`n` must be a positive int, got 2.0."),
    (np.float32(2), 1, "`n` must be a positive int"),
    ("3", 1, "`n` must be a positive int, got '3'."),
    (None, 1, "`n` must be a positive int, got None."),
])
def test_rejections_name_the_argument(value, minimum, message):
  with pytest.raises(ValueError) as info:
    check_int("n", value, minimum=minimum)
  assert str(info.value).startswith(message)


def test_none_only_where_allowed():
  assert check_int("n", None, allow_none=True) is None
  assert check_int("n", np.int64(4), allow_none=True) == 4
  with pytest.raises(ValueError, match="`n` must be a positive int or None, got 0"):
    check_int("n", 0, allow_none=True)


def test_numpy_sizes_reach_a_json_config():
  # A size taken from an array (len(x) is an int, x.shape[0] of a NumPy array is too, but sizes
  # computed with NumPy are np.int64) must not make the optimizer's config unserializable.
  from tfp_ext.optimizers import Vadam  # pylint: disable=import-outside-toplevel
  opt = Vadam(num_examples=np.int64(100), seed=np.int32(3))
  config = opt.get_config()
  assert type(config["num_examples"]) is int and type(config["seed"]) is int
  json.dumps(config)
