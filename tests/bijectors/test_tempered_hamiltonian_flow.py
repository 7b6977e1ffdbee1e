"""Tests of the tempered Hamiltonian flow bijector and of its leapfrog integrator."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.bijectors import harness
from tfp_ext.bijectors import TemperedHamiltonianFlow
from tfp_ext.internal import leapfrog

tfb = tfp.bijectors
tfd = tfp.distributions


# ------------------------------------------------------------------------------------------------
# A smooth, non-Gaussian, coupled target: the leapfrog map is then genuinely nonlinear.
#   log p(z) = -(z - m)^T P (z - m) / 2 - sum_j log cosh(z_j),   P = 1.5 I + 0.3 (ones - I) / l.
# ------------------------------------------------------------------------------------------------


def _log_cosh(u):
  # Overflow-free for |u| up to the float max: log cosh u = |u| + softplus(-2|u|) - log 2.
  a = tf.abs(u)
  return a + tf.math.softplus(-2. * a) - tf.constant(np.log(2.), u.dtype)


def _make_target(loc):
  """Target with location `loc` [*batch, l]; accepts z [..., *batch, l]."""
  l = loc.shape[-1]
  prec = 1.5 * tf.eye(l, dtype=loc.dtype) + 0.3 / l * (tf.ones([l, l], loc.dtype)
                                                        - tf.eye(l, dtype=loc.dtype))

  def target_log_prob_fn(z):
    u = z - loc
    quad = tf.reduce_sum(u * tf.linalg.matvec(prec, u), -1)
    return -0.5 * quad - tf.reduce_sum(_log_cosh(z), -1)
  return target_log_prob_fn


def _draw(seed, salt, shape, dtype, low, high):
  """Deterministic pseudo-random values in [low, high) from an integer seed.

  Integer arithmetic, not a stateless RNG op: on CPU, XLA's stateless RNG kernels draw
  different numbers than the eager ones, and the harness builds the flow both ways.
  """
  n = int(np.prod(shape))
  seed = tf.cast(seed, tf.int64)
  idx = tf.range(n, dtype=tf.int64) + 1
  h = tf.math.floormod(seed[0] * 7919 + seed[1] * 104729 + salt * 15485863 + idx * 2654435761,
                       1000003)
  u = tf.cast(h, tf.float64) / 1000003.
  return tf.cast(tf.reshape(low + (high - low) * u, shape), dtype)


def _make_flow(tempering, num_steps, step_rank, dtype, batch_shape, event_size, seed, param_scale):
  """`harness.BijectorCase.make`: the batch is in the target (per-example locations)."""
  if event_size % 2:
    raise ValueError("state size must be even")
  l = event_size // 2
  loc = param_scale * _draw(seed, 0, list(batch_shape) + [l], tf.float64, -1., 1.)
  step_shape = [l] if step_rank == 1 else [num_steps, l]
  step_size = _draw(seed, 1, step_shape, dtype, 0.05, 0.4)
  kwargs = {}
  if tempering == "fixed":
    kwargs["initial_inverse_temperature"] = _draw(seed, 2, [], dtype, 0.2, 0.9)
  elif tempering == "free":
    kwargs["alphas"] = _draw(seed, 3, [num_steps], dtype, 0.6, 0.99)
  return TemperedHamiltonianFlow(_make_target(tf.cast(loc, dtype)), num_steps=num_steps,
                                 step_size=step_size, tempering=tempering, **kwargs)


# The amortized check needs parameter batch shapes and slicing (`bij[i]`); this flow's batch
# lives in its target instead, which `test_per_example_targets` checks.
_FULL = harness.BijectorCase(
    name="fixed_K3", make=functools.partial(_make_flow, "fixed", 3, 1), event_size=4,
    batch_size=2, num_points=6, skip=("amortized",))
# The other temperings differ only in the momentum scalings: the two exactness checks suffice.
_LIGHT = ("amortized", "dtypes", "extreme_parameters", "jit_compile", "transformed_distribution")
CASES = [
    _FULL,
    harness.BijectorCase(name="free_K2_per_step_eps",
                         make=functools.partial(_make_flow, "free", 2, 2), event_size=4,
                         num_points=6, skip=_LIGHT),
    harness.BijectorCase(name="none_K2", make=functools.partial(_make_flow, "none", 2, 1),
                         event_size=4, num_points=6, skip=_LIGHT),
]


@pytest.mark.parametrize("check", harness.CHECKS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_shared_bijector_suite(case, check):
  harness.run_check(check, case)


# ------------------------------------------------------------------------------------------------
# Leapfrog: the standard integrator checks.
# ------------------------------------------------------------------------------------------------


def _start(l=3, n=5):
  z = tf.random.stateless_normal([n, l], seed=[1, 2], dtype=tf.float64, alg="philox")
  rho = tf.random.stateless_normal([n, l], seed=[3, 4], dtype=tf.float64, alg="philox")
  return z, rho


def _integrate(target, z, rho, eps, n_steps):
  grad = None
  for _ in range(n_steps):
    z, rho, grad = leapfrog.leapfrog_step(target, z, rho, eps, grad)
  return z, rho


def test_leapfrog_energy_error_is_second_order():
  # Leapfrog has O(eps^2) energy error over a fixed time: at t = 0.5, halving eps divides the
  # error by ~4 (+-10% from the O(eps^4) term); at eps = 0.025 it is below 1e-3. float64, so
  # rounding (~1e-15) is irrelevant.
  target = _make_target(tf.constant([0.5, -0.3, 0.2], tf.float64))
  z, rho = _start()
  h0 = leapfrog.hamiltonian(target, z, rho)
  errors = []
  for eps, n in ((0.05, 10), (0.025, 20)):
    errors.append(np.abs(leapfrog.hamiltonian(target, *_integrate(target, z, rho, eps, n)) - h0))
  assert np.max(errors[1]) < 1e-3, errors[1]
  ratio = errors[0] / errors[1]
  assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio


def test_leapfrog_is_reversible():
  # Negate the momentum, run again: exactly back to the start (up to float64 rounding).
  target = _make_target(tf.constant([0.5, -0.3, 0.2], tf.float64))
  z, rho = _start()
  eps = tf.constant([0.1, 0.2, 0.3], tf.float64)
  z1, rho1 = _integrate(target, z, rho, eps, 7)
  z2, rho2 = _integrate(target, z1, -rho1, eps, 7)
  np.testing.assert_allclose(z2, z, atol=1e-12)
  np.testing.assert_allclose(-rho2, rho, atol=1e-12)
  assert np.max(np.abs(z1 - z)) > 0.1  # The trajectory moved.


def test_leapfrog_step_matches_closed_form_on_gaussian():
  # For log p = -p (z - m)^2 / 2, one step is the affine map computed by hand below.
  m, p, eps = 0.7, 2.0, 0.3
  target = lambda z: -0.5 * p * tf.reduce_sum(tf.square(z - m), -1)
  z, rho = _start(l=1)
  z1, rho1, g1 = leapfrog.leapfrog_step(target, z, rho, eps)
  u = z.numpy() - m
  rho_half = rho.numpy() - 0.5 * eps * p * u
  u1 = u + eps * rho_half
  np.testing.assert_allclose(z1, u1 + m, rtol=1e-14)
  np.testing.assert_allclose(rho1, rho_half - 0.5 * eps * p * u1, rtol=1e-13)
  np.testing.assert_allclose(g1, -p * u1, rtol=1e-13)


def test_leapfrog_preserves_volume():
  target = _make_target(tf.constant([0.5, -0.3], tf.float64))
  z, rho = _start(l=2)
  x = tf.concat([z, rho], -1)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    zz, rr = tf.split(x, 2, -1)
    z1, r1 = _integrate(target, zz, rr, tf.constant([0.2, 0.4], tf.float64), 3)
    y = tf.concat([z1, r1], -1)
  det = tf.linalg.det(tape.batch_jacobian(y, x, experimental_use_pfor=False))
  np.testing.assert_allclose(det, 1., atol=1e-12)


# ------------------------------------------------------------------------------------------------
# The flow against Algorithm 1 of the paper.
# ------------------------------------------------------------------------------------------------


def _algorithm1_numpy(z, rho, m, p, eps, beta0, k_total):
  """Algorithm 1 (Caterini et al., 2018) for the Gaussian target N(m, diag(1/p)), in numpy."""
  grad_u = lambda z: p * (z - m)
  sqrt_beta = lambda k: 1. / ((1. - 1. / np.sqrt(beta0)) * k**2 / k_total**2
                              + 1. / np.sqrt(beta0))
  for k in range(1, k_total + 1):
    r = rho - eps / 2 * grad_u(z)
    z = z + eps * r
    r = r - eps / 2 * grad_u(z)
    rho = sqrt_beta(k - 1) / sqrt_beta(k) * r
  return z, rho


def test_forward_matches_algorithm_1():
  m = np.array([0.3, -1.2])
  p = np.array([2.0, 0.5])
  eps = np.array([0.1, 0.35])
  beta0, k_total = 0.3, 4
  z, rho = (v.numpy() for v in _start(l=2))
  target = lambda z: -0.5 * tf.reduce_sum(p * tf.square(z - m), -1)
  flow = TemperedHamiltonianFlow(target, num_steps=k_total, step_size=eps,
                                 initial_inverse_temperature=beta0)
  y = flow.forward(tf.constant(np.concatenate([z, rho], -1)))
  z_ref, rho_ref = _algorithm1_numpy(z, rho, m, p, eps, beta0, k_total)
  np.testing.assert_allclose(y, np.concatenate([z_ref, rho_ref], -1), rtol=1e-12)


def test_temperature_schedules():
  target = lambda z: -0.5 * tf.reduce_sum(tf.square(z), -1)
  fixed = TemperedHamiltonianFlow(target, num_steps=5, step_size=0.1,
                                  initial_inverse_temperature=tf.constant(0.2, tf.float64))
  k = np.arange(6.)
  expected = 1. / ((1. - 1. / np.sqrt(0.2)) * k**2 / 25 + 1. / np.sqrt(0.2))**2
  np.testing.assert_allclose(fixed.inverse_temperatures(), expected, rtol=1e-12)
  np.testing.assert_allclose(fixed.inverse_temperatures().numpy()[[0, -1]], [0.2, 1.],
                             rtol=1e-12)
  # alpha_k = sqrt(beta_{k-1} / beta_k), and prod alpha_k = sqrt(beta_0).
  np.testing.assert_allclose(fixed.tempering_factors(), np.sqrt(expected[:-1] / expected[1:]),
                             rtol=1e-12)
  alphas = np.array([0.5, 0.9, 0.7])
  free = TemperedHamiltonianFlow(target, num_steps=3, step_size=0.1, tempering="free",
                                 alphas=tf.constant(alphas))
  np.testing.assert_allclose(free.initial_inverse_temperature(), np.prod(alphas)**2, rtol=1e-12)
  np.testing.assert_allclose(
      free.inverse_temperatures(), [np.prod(alphas[i:])**2 for i in range(3)] + [1.], rtol=1e-12)
  none = TemperedHamiltonianFlow(target, num_steps=2, step_size=0.1, tempering="none")
  np.testing.assert_allclose(none.forward_log_det_jacobian(tf.ones([3, 4]), event_ndims=1), 0.)


def test_per_example_targets():
  # A target closing over a data batch [B, l]: row b of the batched flow equals the flow of
  # target b alone (each single flow's Jacobian is checked by the shared suite).
  b, l, n = 3, 2, 4
  loc = tf.random.stateless_normal([b, l], seed=[5, 6], dtype=tf.float64, alg="philox")
  kwargs = dict(num_steps=3, step_size=tf.constant([0.2, 0.3], tf.float64),
                initial_inverse_temperature=tf.constant(0.4, tf.float64))
  flow = TemperedHamiltonianFlow(_make_target(loc), **kwargs)
  x = tf.random.stateless_normal([n, b, 2 * l], seed=[7, 8], dtype=tf.float64, alg="philox")
  y = flow.forward(x)
  assert y.shape == (n, b, 2 * l)
  assert flow.forward_log_det_jacobian(x, event_ndims=1).shape == (n, b)
  for i in range(b):
    member = TemperedHamiltonianFlow(_make_target(loc[i]), **kwargs)
    np.testing.assert_allclose(member.forward(x[:, i]), y[:, i], rtol=1e-13)
  np.testing.assert_allclose(flow.inverse(tf.identity(y)), x, atol=1e-12)


def test_gradients_reach_transformed_variables():
  # d/d(raw) of a scalar function of the output, against central finite differences (float64:
  # the truncation error of h = 1e-5 is ~h^2 = 1e-10 relative).
  step = tfp.util.TransformedVariable(tf.constant([0.1, 0.2], tf.float64),
                                      tfb.Sigmoid(low=tf.constant(0., tf.float64),
                                                  high=tf.constant(0.5, tf.float64)))
  beta0 = tfp.util.TransformedVariable(tf.constant(0.3, tf.float64), tfb.Sigmoid())
  target = _make_target(tf.constant([0.5, -0.3], tf.float64))
  flow = TemperedHamiltonianFlow(target, num_steps=3, step_size=step,
                                 initial_inverse_temperature=beta0)
  assert len(flow.trainable_variables) == 2
  x = tf.concat(_start(l=2), -1)

  def loss():
    y = flow.forward(tf.identity(x))  # A fresh tensor: never a cached forward.
    return tf.reduce_sum(tf.sin(y)) + tf.reduce_sum(
        flow.forward_log_det_jacobian(tf.identity(x), 1))

  with tf.GradientTape() as tape:
    value = loss()
  grads = tape.gradient(value, flow.trainable_variables)
  h = 1e-5
  for var, grad in zip(flow.trainable_variables, grads):
    flat = var.numpy().reshape(-1)
    numeric = []
    for j in range(flat.size):
      base = var.numpy().copy().reshape(-1)
      vals = []
      for sign in (1., -1.):
        pert = base.copy()
        pert[j] += sign * h
        var.assign(pert.reshape(var.shape))
        vals.append(loss().numpy())
      var.assign(base.reshape(var.shape))
      numeric.append((vals[0] - vals[1]) / (2 * h))
    np.testing.assert_allclose(np.reshape(grad, -1), numeric, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------

_TARGET = lambda z: -0.5 * tf.reduce_sum(tf.square(z), -1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(tempering="hot"), ValueError, "tempering"),
    (dict(step_size=0.5), ValueError, "max_step_size"),
    (dict(step_size=-0.1), ValueError, "positive"),
    (dict(step_size=np.nan), ValueError, "finite"),
    (dict(step_size=np.full([2, 2, 2], 0.1)), ValueError, "shape"),
    (dict(step_size=np.full([4, 2], 0.1)), ValueError, "num_steps"),
    (dict(initial_inverse_temperature=0.), ValueError, r"\(0, 1\]"),
    (dict(initial_inverse_temperature=1.5), ValueError, r"\(0, 1\]"),
    (dict(initial_inverse_temperature=None), ValueError, "initial_inverse_temperature"),
    (dict(tempering="free", initial_inverse_temperature=None), ValueError, "alphas"),
    (dict(tempering="free", alphas=[0.5, 0.5, 0.5]), ValueError, "initial_inverse_temperature"),
    (dict(tempering="free", initial_inverse_temperature=None, alphas=[0.5, 1.0, 0.5]),
     ValueError, r"\(0, 1\)"),
    (dict(tempering="free", initial_inverse_temperature=None, alphas=[0.5, 0.5]),
     ValueError, "shape"),
    (dict(tempering="none", initial_inverse_temperature=0.5), ValueError, "beta_0 = 1"),
    (dict(alphas=[0.5, 0.5, 0.5]), ValueError, "free"),
    (dict(num_steps=0), ValueError, "num_steps"),
    (dict(num_steps=2.5), ValueError, "num_steps"),
    (dict(num_steps=True), ValueError, "num_steps"),
    (dict(target_log_prob_fn=3.), TypeError, "callable"),
])
def test_bad_arguments(kwargs, error, match):
  args = dict(target_log_prob_fn=_TARGET, num_steps=3, step_size=0.1,
              initial_inverse_temperature=0.5)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    TemperedHamiltonianFlow(**args)


def test_bad_states():
  flow = TemperedHamiltonianFlow(_TARGET, num_steps=2, step_size=[0.1, 0.2],
                                 initial_inverse_temperature=0.5)
  with pytest.raises(ValueError, match="odd"):
    flow.forward(tf.zeros([3, 5]))
  with pytest.raises(ValueError, match="l = 3"):
    flow.forward(tf.zeros([3, 6]))


def test_validate_args_catches_variables_leaving_their_range():
  step = tf.Variable([0.1, 0.2])
  flow = TemperedHamiltonianFlow(_TARGET, num_steps=2, step_size=step,
                                 initial_inverse_temperature=0.5, validate_args=True)
  flow.forward(tf.zeros([1, 4]))
  step.assign([0.1, 0.7])
  with pytest.raises(tf.errors.InvalidArgumentError, match="max_step_size"):
    flow.forward(tf.zeros([1, 4]))
