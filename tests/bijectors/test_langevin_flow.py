"""Tests of the quasi-symplectic Langevin flow bijector."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.bijectors import harness
from tests.bijectors.test_tempered_hamiltonian_flow import _draw, _make_target
from tfp_ext.bijectors import LangevinFlow, TemperedHamiltonianFlow

tfd = tfp.distributions


def _make_flow(num_steps, dtype, batch_shape, event_size, seed, param_scale):
  """`harness.BijectorCase.make`: the batch is in the target (per-example locations)."""
  if event_size % 2:
    raise ValueError("state size must be even")
  l = event_size // 2
  loc = param_scale * _draw(seed, 0, list(batch_shape) + [l], tf.float64, -1., 1.)
  return LangevinFlow(_make_target(tf.cast(loc, dtype)), num_steps=num_steps,
                      step_size=_draw(seed, 1, [], dtype, 0.1, 0.4),
                      friction=_draw(seed, 2, [], dtype, 0.2, 1.5),
                      mass=_draw(seed, 3, [], dtype, 0.5, 2.))


# The amortized check needs parameter batch shapes and slicing (`bij[i]`); this flow's batch lives
# in its target instead (as for TemperedHamiltonianFlow), checked by `test_per_example_targets`.
CASES = [
    harness.BijectorCase(name="scalar_K3", make=functools.partial(_make_flow, 3),
                         event_size=4, batch_size=2, num_points=6, skip=("amortized",)),
]
# Per-dimension h, gamma, M use the same ops, broadcast: their exactness is checked against the
# linear recursion in test_gaussian_pushforward_is_the_linear_recursion.


@pytest.mark.parametrize("check", harness.CHECKS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_shared_bijector_suite(case, check):
  harness.run_check(check, case)


def _start(l=2, n=5, salt=0):
  return tf.random.stateless_normal([n, 2 * l], seed=[11 + salt, 3], dtype=tf.float64,
                                    alg="philox")


def _reference_numpy(x, grad_log_p, h, gamma, mass, num_steps, noise=None):
  """The step of the LangevinFlow docstring, written out in numpy."""
  z, rho = np.split(np.asarray(x, np.float64), 2, axis=-1)
  for k in range(num_steps):
    z_half = z + h / 2 * rho / mass
    rho = np.exp(-gamma * h) * (rho + h * grad_log_p(z_half))
    if noise is not None:
      rho = rho + np.sqrt(mass * (1 - np.exp(-2 * gamma * h))) * noise[k]
    z = z_half + h / 2 * rho / mass
  return np.concatenate([z, rho], -1)


# A coupled Gaussian target N(m, P^-1): the flow is then affine and everything is exact.
M_LOC = np.array([0.4, -0.7, 1.1])
PREC = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]])


def _gaussian_target(z):
  u = z - tf.constant(M_LOC, z.dtype)
  return -0.5 * tf.reduce_sum(u * tf.linalg.matvec(tf.constant(PREC, z.dtype), u), -1)


def _linear_step(h, gamma, mass):
  """The step on u = z - m as a 2l x 2l matrix (the linear recursion, no code under test)."""
  l = len(M_LOC)
  eye, zero = np.eye(l), np.zeros([l, l])
  h, gamma, mass = (np.broadcast_to(v, [l]) for v in (h, gamma, mass))
  drift = np.block([[eye, np.diag(h / 2 / mass)], [zero, eye]])
  kick = np.block([[eye, zero], [-np.diag(h) @ PREC, eye]])
  damp = np.block([[eye, zero], [zero, np.diag(np.exp(-gamma * h))]])
  return drift @ damp @ kick @ drift


def _affine_flow(h, gamma, mass, num_steps):
  """(A, b) with flow(x) = A x + b."""
  l = len(M_LOC)
  a = np.linalg.matrix_power(_linear_step(h, gamma, mass), num_steps)
  shift = np.concatenate([M_LOC, np.zeros(l)])
  return a, shift - a @ shift


def test_matches_the_step_written_out_and_uses_one_gradient_per_step():
  h, gamma, mass, k = np.array([0.3, 0.2, 0.25]), np.array([0.5, 1.0, 0.0]), 1.5, 4
  calls = []

  def counted_target(z):
    calls.append(1)
    return _gaussian_target(z)

  flow = LangevinFlow(counted_target, num_steps=k, step_size=h, friction=gamma, mass=mass)
  x = _start(l=3)
  y = flow.forward(x)
  assert len(calls) == k  # One gradient (one target call under the tape) per step.
  grad = lambda z: -(z - M_LOC) @ PREC
  np.testing.assert_allclose(y, _reference_numpy(x, grad, h, gamma, mass, k), rtol=1e-13)
  calls.clear()
  flow.inverse(tf.identity(y))
  assert len(calls) == k  # The inverse too.
  # The leapfrog of the tempered Hamiltonian flow needs one more (K + 1 for K steps).
  calls.clear()
  TemperedHamiltonianFlow(counted_target, num_steps=k, step_size=np.float64(0.1),
                          tempering="none").forward(x)
  assert len(calls) == k + 1
  np.testing.assert_allclose(flow.forward_log_det_jacobian(x, event_ndims=1),
                             -k * np.sum(h * gamma), rtol=1e-14)


def test_zero_friction_is_symplectic_stormer_verlet_with_zero_log_det():
  # gamma = 0: the drift-kick-drift Stormer-Verlet step. Its Jacobian J is symplectic,
  # J^T Omega J = Omega (stronger than det J = 1), it is time-reversible, and the log-det is 0.
  target = _make_target(tf.constant([0.5, -0.3], tf.float64))
  flow = LangevinFlow(target, num_steps=3, step_size=tf.constant(0.3, tf.float64), friction=0.)
  x = _start()
  np.testing.assert_array_equal(flow.forward_log_det_jacobian(x, event_ndims=1), 0.)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = flow.forward(x)
  jac = tape.batch_jacobian(y, x, experimental_use_pfor=False).numpy()
  omega = np.block([[np.zeros([2, 2]), np.eye(2)], [-np.eye(2), np.zeros([2, 2])]])
  for j in jac:
    np.testing.assert_allclose(j.T @ omega @ j, omega, atol=1e-12)
  # Reversible: negate the momentum, flow again, negate: back at the start.
  z1, r1 = tf.split(y, 2, -1)
  z2, r2 = tf.split(flow.forward(tf.concat([z1, -r1], -1)), 2, -1)
  np.testing.assert_allclose(tf.concat([z2, -r2], -1), x, atol=1e-12)
  assert np.max(np.abs(y - x)) > 0.1  # The trajectory moved.
  # With friction the same map is not symplectic: J^T Omega J = exp(-gamma h) Omega per step.
  damped = LangevinFlow(target, num_steps=1, step_size=tf.constant(0.3, tf.float64),
                        friction=0.8)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = damped.forward(x)
  j = tape.batch_jacobian(y, x, experimental_use_pfor=False).numpy()[0]
  np.testing.assert_allclose(j.T @ omega @ j, np.exp(-0.8 * 0.3) * omega, atol=1e-12)


def test_gaussian_pushforward_is_the_linear_recursion():
  # On the Gaussian target each step is affine: u_k = A u_{k-1}, u = (z - m, rho). The flow of
  # N(mu0, S0) is N(A mu0 + b, A S0 A^T) exactly: compare points and the density itself.
  h, gamma, mass, k = np.array([0.3, 0.2, 0.25]), np.array([0.5, 1.0, 0.1]), np.array(
      [1.0, 2.0, 0.5]), 5
  flow = LangevinFlow(_gaussian_target, num_steps=k, step_size=h, friction=gamma, mass=mass)
  a, b = _affine_flow(h, gamma, mass, k)
  x = _start(l=3, n=7)
  np.testing.assert_allclose(flow.forward(x), x.numpy() @ a.T + b, rtol=1e-12, atol=1e-13)
  mu0 = np.array([0.2, -0.1, 0.5, 0.0, 0.3, -0.2])
  s0 = np.diag([0.5, 1.2, 0.8, 1.0, 2.0, 0.5])
  pushed = tfd.TransformedDistribution(
      tfd.MultivariateNormalTriL(mu0, np.linalg.cholesky(s0)), flow)
  exact = tfd.MultivariateNormalFullCovariance(a @ mu0 + b, a @ s0 @ a.T)
  y = _start(l=3, n=7, salt=1)
  np.testing.assert_allclose(pushed.log_prob(y), exact.log_prob(y), rtol=1e-10)
  # The log-det is log|det A| of the recursion.
  np.testing.assert_allclose(flow.forward_log_det_jacobian(x, event_ndims=1)[0],
                             np.linalg.slogdet(a)[1], rtol=1e-12)


def test_stochastic_flow_given_noise():
  # Conditioned on the noise, the flow is the stochastic step, an exact bijection, and
  # keeps the log-det (the noise is a translation of the momentum).
  h, gamma, mass, k = 0.3, np.array([0.5, 1.0, 0.2]), 1.5, 3
  flow = LangevinFlow(_gaussian_target, num_steps=k, step_size=h, friction=gamma, mass=mass)
  x = _start(l=3)
  xi = tf.random.stateless_normal([k, 5, 3], seed=[4, 4], dtype=tf.float64, alg="philox")
  y = flow.forward(x, noise=xi)
  grad = lambda z: -(z - M_LOC) @ PREC
  np.testing.assert_allclose(y, _reference_numpy(x, grad, h, gamma, mass, k, xi.numpy()),
                             rtol=1e-13)
  assert np.max(np.abs(y - flow.forward(x))) > 0.1
  np.testing.assert_allclose(flow.inverse(tf.identity(y), noise=xi), x, atol=1e-12)
  np.testing.assert_allclose(flow.forward_log_det_jacobian(x, event_ndims=1, noise=xi),
                             -k * h * np.sum(gamma), rtol=1e-14)
  with pytest.raises(ValueError, match="num_steps"):
    flow.forward(x, noise=xi[:2])


def test_per_example_targets():
  b, l, n = 3, 2, 4
  loc = tf.random.stateless_normal([b, l], seed=[5, 6], dtype=tf.float64, alg="philox")
  kwargs = dict(num_steps=3, step_size=tf.constant([0.2, 0.3], tf.float64), friction=0.7)
  flow = LangevinFlow(_make_target(loc), **kwargs)
  x = tf.random.stateless_normal([n, b, 2 * l], seed=[7, 8], dtype=tf.float64, alg="philox")
  y = flow.forward(x)
  assert y.shape == (n, b, 2 * l)
  assert flow.forward_log_det_jacobian(x, event_ndims=1).shape == (n, b)
  for i in range(b):
    member = LangevinFlow(_make_target(loc[i]), **kwargs)
    np.testing.assert_allclose(member.forward(x[:, i]), y[:, i], rtol=1e-13)


def test_gradients_reach_transformed_variables():
  # Learnable positive step size and friction: d loss / d raw against central differences.
  softplus = tfp.bijectors.Softplus()
  step = tfp.util.TransformedVariable(tf.constant([0.1, 0.2], tf.float64), softplus)
  friction = tfp.util.TransformedVariable(tf.constant(0.5, tf.float64), softplus)
  flow = LangevinFlow(_make_target(tf.constant([0.5, -0.3], tf.float64)), num_steps=3,
                      step_size=step, friction=friction)
  assert len(flow.trainable_variables) == 2
  x = _start()

  def loss():
    x_fresh = tf.identity(x)  # Never a cached forward.
    return (tf.reduce_sum(tf.sin(flow.forward(x_fresh)))
            + tf.reduce_sum(flow.forward_log_det_jacobian(x_fresh, 1)))

  with tf.GradientTape() as tape:
    value = loss()
  grads = tape.gradient(value, flow.trainable_variables)
  h = 1e-5
  for var, grad in zip(flow.trainable_variables, grads):
    base = var.numpy().reshape(-1)
    numeric = []
    for j in range(base.size):
      vals = []
      for sign in (1., -1.):
        pert = base.copy()
        pert[j] += sign * h
        var.assign(pert.reshape(var.shape))
        vals.append(loss().numpy())
      var.assign(base.reshape(var.shape))
      numeric.append((vals[0] - vals[1]) / (2 * h))
    np.testing.assert_allclose(np.reshape(grad, -1), numeric, rtol=1e-6, atol=1e-8)


_TARGET = lambda z: -0.5 * tf.reduce_sum(tf.square(z), -1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(step_size=0.), ValueError, "`step_size` must be positive"),
    (dict(step_size=np.nan), ValueError, "finite"),
    (dict(step_size=None), ValueError, "`step_size` is required"),
    (dict(friction=-0.1), ValueError, "`friction` must be non-negative"),
    (dict(mass=0.), ValueError, "`mass` must be positive"),
    (dict(friction=np.full([2, 2], 0.1)), ValueError, "scalar or \\[l\\]"),
    (dict(num_steps=0), ValueError, "num_steps"),
    (dict(num_steps=2.5), ValueError, "num_steps"),
    (dict(target_log_prob_fn=3.), TypeError, "callable"),
])
def test_bad_arguments(kwargs, error, match):
  args = dict(target_log_prob_fn=_TARGET, num_steps=3, step_size=0.1, friction=0.5)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    LangevinFlow(**args)


def test_bad_states_and_validate_args():
  flow = LangevinFlow(_TARGET, num_steps=2, step_size=[0.1, 0.2], friction=0.5)
  with pytest.raises(ValueError, match="odd"):
    flow.forward(tf.zeros([3, 5]))
  with pytest.raises(ValueError, match="l = 3"):
    flow.forward(tf.zeros([3, 6]))
  friction = tf.Variable(0.5)
  flow = LangevinFlow(_TARGET, num_steps=2, step_size=0.1, friction=friction,
                      validate_args=True)
  flow.forward(tf.zeros([1, 4]))
  friction.assign(-0.5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="friction"):
    flow.forward(tf.zeros([1, 4]))
