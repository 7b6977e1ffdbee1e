"""Relativistic kinetic energy: velocity is its exact gradient, speed stays below c."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_ext.internal import relativistic


@pytest.mark.parametrize("mode", [relativistic.JOINT, relativistic.INDEPENDENT])
def test_velocity_is_gradient_of_kinetic_energy(mode):
  parts = [tf.random.stateless_normal([3, 2], seed=[1, 1], dtype=tf.float64) * 4,
           tf.random.stateless_normal([3, 2, 2], seed=[1, 2], dtype=tf.float64) * 4]
  nd = [1, 2]
  with tf.GradientTape() as tape:
    tape.watch(parts)
    k = relativistic.kinetic_energy(parts, 0.7, 1.3, nd, mode)
  grads = tape.gradient(k, parts)
  vel = relativistic.velocity(parts, 0.7, 1.3, nd, mode)
  assert k.shape == (3,)
  for g, v in zip(grads, vel):
    np.testing.assert_allclose(g, v, rtol=1e-12)


def test_speed_bounded_and_newtonian_limit():
  p = [tf.constant([[1e3, -2e3]], tf.float64)]
  v = relativistic.velocity(p, 1., 2., [1])[0].numpy()
  assert np.linalg.norm(v) < 2.
  np.testing.assert_allclose(np.linalg.norm(v), 2., rtol=1e-6)  # Ultra-relativistic: speed → c.
  small = [tf.constant([[1e-4, 2e-4]], tf.float64)]
  # Small momenta: K ≈ m c² + pᵀp / (2m), v ≈ p / m.
  k = relativistic.kinetic_energy(small, 2., 50., [1]).numpy()
  # K − mc² cancels 5000 against 1e-8: float64 leaves ~1e-12 absolute error, so rtol 1e-3.
  np.testing.assert_allclose(k - 2. * 50.**2, (1e-8 + 4e-8) / 4., rtol=1e-3)
  np.testing.assert_allclose(relativistic.velocity(small, 2., 50., [1])[0], small[0] / 2., rtol=1e-6)


def test_bad_mode():
  with pytest.raises(ValueError, match="mode"):
    relativistic.kinetic_energy([tf.zeros([1])], 1., 1., [1], "fast")
