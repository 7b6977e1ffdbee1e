"""RelativisticSGD: update equations, momentum-SGD limit, bounded steps, Keras integration."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.optimizers import RelativisticSGD


def _numpy_steps(theta, grads_fn, steps, lr, friction, mass, c, joint):
  p = np.zeros_like(theta)
  for _ in range(steps):
    g = grads_fn(theta)

    def vel(p):
      sq = np.sum(p * p) if joint else p * p
      return p / (mass * np.sqrt(sq / (mass * c) ** 2 + 1.))

    p = p - lr * (g + friction * vel(p))
    theta = theta + lr * vel(p)
  return theta


@pytest.mark.parametrize("mode", ["independent", "joint"])
def test_matches_update_equations(mode):
  a = np.array([[3., 1.], [1., 2.]])
  theta0 = np.array([2., -1.])
  opt = RelativisticSGD(learning_rate=0.1, friction=0.5, mass=2., max_speed=0.7,
                        kinetic_energy_mode=mode)
  var = tf.Variable(theta0)
  for _ in range(7):
    with tf.GradientTape() as tape:
      loss = 0.5 * tf.tensordot(var, tf.linalg.matvec(a, var), 1)
    opt.apply_gradients([(tape.gradient(loss, var), var)])
  expected = _numpy_steps(theta0, lambda t: a @ t, 7, 0.1, 0.5, 2., 0.7, mode == "joint")
  # Keras keeps the learning rate in a float32 variable (0.1 -> 0.100000001), hence ~1e-8 relative
  # differences from the float64 reference over 7 steps; a wrong formula is off by far more.
  np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6)


def test_infinite_speed_is_momentum_sgd():
  # With c → ∞, v(p) = p/m and u = h p / m obeys u ← (1 − hD/m) u − (h²/m) g, θ ← θ + u: Keras
  # SGD with learning rate h²/m and momentum 1 − hD/m.
  h, d, m = 0.1, 2., 0.5
  a = tf.constant([[3., 1.], [1., 2.]], tf.float64)
  v1, v2 = tf.Variable([2., -1.], dtype=tf.float64), tf.Variable([2., -1.], dtype=tf.float64)
  rel = RelativisticSGD(learning_rate=h, friction=d, mass=m, max_speed=1e9)
  sgd = tf_keras.optimizers.SGD(learning_rate=h * h / m, momentum=1. - h * d / m)
  for _ in range(10):
    for opt, v in ((rel, v1), (sgd, v2)):
      opt.apply_gradients([(tf.linalg.matvec(a, v), v)])
  # float32 hyperparameter variables in both optimizers, as above.
  np.testing.assert_allclose(v1.numpy(), v2.numpy(), rtol=1e-6)


def test_step_is_bounded_by_learning_rate_times_speed():
  var = tf.Variable([0., 0., 0.])
  opt = RelativisticSGD(learning_rate=0.01, friction=0., max_speed=2.)
  for g in ([1e6, -1e6, 3.], [1e8, 1e8, 1e8]):
    before = var.numpy()
    opt.apply_gradients([(tf.constant(g), var)])
    # |v| < c exactly; in float32 a huge momentum rounds v to c, so allow one ulp above h·c.
    assert np.all(np.abs(var.numpy() - before) <= 0.01 * 2. * (1. + 1e-6))


def test_keras_fit_with_xla_and_config_round_trip():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 4)).astype(np.float32)
  y = x @ np.array([1., -2., 0.5, 0.], np.float32) + 0.1
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(4,))])
  opt = RelativisticSGD(learning_rate=0.2, friction=2., max_speed=1.)
  model.compile(optimizer=opt, loss="mse", jit_compile=True)
  hist = model.fit(x, y, batch_size=32, epochs=6, verbose=0)
  # Noise-free linear targets: the loss must fall by orders of magnitude, not just drift.
  assert hist.history["loss"][-1] < 1e-2 * hist.history["loss"][0], hist.history["loss"]
  config = tf_keras.optimizers.serialize(opt)
  clone = tf_keras.optimizers.deserialize(config)
  assert isinstance(clone, RelativisticSGD)
  assert (clone.friction, clone.mass, clone.max_speed, clone.kinetic_energy_mode) == (
      2., 1., 1., "independent")
  np.testing.assert_allclose(float(clone.learning_rate), 0.2)


def test_bad_input():
  with pytest.raises(ValueError, match="mass"):
    RelativisticSGD(mass=0.)
  with pytest.raises(ValueError, match="friction"):
    RelativisticSGD(friction=-1.)
  with pytest.raises(ValueError, match="kinetic_energy_mode"):
    RelativisticSGD(kinetic_energy_mode="relative")
