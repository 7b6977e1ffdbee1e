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


_LONGEST = "tests/internal/test_portable_numerics.py"


def pytest_xdist_make_scheduler(config, log):
  """With `--dist loadfile`, hands out the longest test first (xdist orders files by size).

  That test re-runs the sensitive modules under other CPU arithmetic on two workers of its own;
  started last, it would end the suite alone, while started first it shares the cores with the
  rest of the suite.
  """
  if config.getoption("dist", None) != "loadfile":
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=g-import-not-at-top

  class LongestFirst(LoadFileScheduling):

    def _assign_work_unit(self, node):
      for scope in self.workqueue:
        if scope.replace("\\", "/").endswith(_LONGEST):
          self.workqueue.move_to_end(scope, last=False)
          break
      super()._assign_work_unit(node)

  return LongestFirst(config, log)


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
