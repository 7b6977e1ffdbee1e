"""Test-wide setup: quiet TF logs, two logical CPUs for distribution tests, parsed absl flags."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

# TFP's test utilities read absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

# MirroredStrategy tests need two devices; logical devices must be set before TF initializes them.
_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # Already initialized by an earlier import: keep what exists.
  pass


def pytest_collection_modifyitems(items):
  """Runs the longest test first (the sensitive modules again under other CPU arithmetic).

  With `--dist loadfile` a worker takes the files in collection order; started last, this one
  test would end the suite alone on one core.
  """
  first = [i for i in items if i.nodeid.startswith("tests/internal/test_portable_numerics.py")]
  items[:] = first + [i for i in items if i not in first]


@pytest.fixture(autouse=True)
def _clear_keras_session():
  import tf_keras
  yield
  tf_keras.backend.clear_session()


@pytest.fixture
def shared_data_dir():
  """`../shared/data` beside the checkout (benchmark datasets); skips when absent."""
  root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
  if not os.path.isdir(root):
    pytest.skip("../shared/data is not present")
  return os.path.abspath(root)
