"""What will run the ops being built: XLA, or TF's CPU kernels with or without oneDNN.

Only the choice between equivalent formulations depends on these (the faster one for each), never
a result beyond float rounding. Both read internal TF APIs, so each falls back to the plain-graph,
Eigen-kernel answer if the API is gone; tests catch a silent loss.
"""

import tensorflow as tf

__all__ = ["in_xla_context", "onednn_enabled"]


def in_xla_context() -> bool:
  """Whether ops created now will be compiled by XLA (inside a `jit_compile=True` function)."""
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
  except (ImportError, AttributeError):
    return False


def onednn_enabled() -> bool:
  """Whether this process runs TF's oneDNN CPU kernels.

  TF turns them on by default only on x86 CPUs with AVX-512 VNNI, BF16 or AMX;
  `TF_ENABLE_ONEDNN_OPTS=1` or `=0`, set before TF loads, overrides that.
  """
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return False
