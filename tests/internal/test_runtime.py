"""Detection of XLA and of TF's oneDNN kernels, on which the fast formulations depend."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tfp_ext.internal.runtime import in_xla_context


def test_xla_context_is_detected():
  # Seen at trace time inside jit_compile=True only: a TF upgrade that loses it must fail here
  # rather than silently pick the slower formulation.
  assert tf.function(in_xla_context, jit_compile=True)()
  assert not tf.function(in_xla_context)()
  assert not in_xla_context()


@pytest.mark.parametrize("flag, expected", [("1", True), ("0", False)])
def test_onednn_switch_is_detected(flag, expected):
  # The switch is read when TF loads, so each setting needs its own process.
  code = "from tfp_ext.internal.runtime import onednn_enabled; print(onednn_enabled())"
  env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=flag, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=300)
  assert out.stdout.strip().splitlines()[-1] == str(expected)
