"""Tests of the Langevin ELBO estimator on the conjugate Gaussian model where everything is exact.

The model of tests/vi/test_hamiltonian_elbo.py: z ~ N(0, I_l), x_i | z ~ N(z, s^2 I_l), so
log p(x, z) = log p(x) + log N(z | m, I / P). On this quadratic potential each quasi-symplectic
step is, per dimension, an affine map of u = (z - m, rho) plus Gaussian noise, so (z_K, rho_K)
is Gaussian with moments from the linear recursion, and the ELBO has a closed form that does not
use the code under test.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.vi.test_hamiltonian_elbo import L, LOG_EVIDENCE, POST_MEAN, PREC, target_log_prob_fn
from tfp_ext.bijectors import LangevinFlow
from tfp_ext.vi import langevin_elbo

tfd = tfp.distributions
tfb = tfp.bijectors

Q_LOC, Q_SCALE = np.array([0.2, -0.1]), np.array([0.8, 1.1])
STEP, FRICTION, MASS, K = np.array([0.3, 0.4]), np.array([0.5, 1.5]), 1.3, 4


def exact_elbo(q_loc, q_scale, h, gamma, mass, num_steps, stochastic):
  """Closed-form Langevin ELBO with q_0 = N(q_loc, diag q_scale^2), per-dimension recursion."""
  h, gamma, mass = (np.broadcast_to(np.asarray(v, np.float64), [L]) for v in (h, gamma, mass))
  total = LOG_EVIDENCE - num_steps * np.sum(h * gamma)  # + log|det J|.
  for j in range(L):
    drift = np.array([[1., h[j] / (2 * mass[j])], [0., 1.]])
    kick = np.array([[1., 0.], [-h[j] * PREC, 1.]])
    damp = np.diag([1., np.exp(-gamma[j] * h[j])])
    a = drift @ damp @ kick @ drift
    noise_var = mass[j] * (1 - np.exp(-2 * gamma[j] * h[j])) if stochastic else 0.
    noise_cov = drift @ np.diag([0., noise_var]) @ drift.T  # Added before the last half drift.
    mean = np.array([q_loc[j] - POST_MEAN[j], 0.])
    cov = np.diag([q_scale[j]**2, mass[j]])
    for _ in range(num_steps):
      mean, cov = a @ mean, a @ cov @ a.T + noise_cov
    total += (-0.5 * np.log(2 * np.pi / PREC) - 0.5 * PREC * (cov[0, 0] + mean[0]**2)
              - 0.5 * (cov[1, 1] + mean[1]**2) / mass[j])
    total += 0.5 * np.log(2 * np.pi * np.e * q_scale[j]**2) + 0.5  # H[q_0] + l/2, per dim.
  return total


def plain_vae_elbo(q_loc, q_scale):
  """E_q0[log p(x, z) - log q_0(z)] in closed form: the VAE's bound at the same encoder."""
  return LOG_EVIDENCE + np.sum(-0.5 * np.log(2 * np.pi / PREC)
                               - 0.5 * PREC * (q_scale**2 + (q_loc - POST_MEAN)**2)
                               + 0.5 * np.log(2 * np.pi * np.e * q_scale**2))


def _flow(dtype=tf.float64, **kwargs):
  args = dict(num_steps=K, step_size=tf.constant(STEP, dtype),
              friction=tf.constant(FRICTION, dtype), mass=tf.constant(MASS, dtype))
  args.update(kwargs)
  return LangevinFlow(target_log_prob_fn, **args)


def _q0(dtype=tf.float64):
  return tfd.MultivariateNormalDiag(tf.constant(Q_LOC, dtype), tf.constant(Q_SCALE, dtype))


def test_exact_elbo_is_a_lower_bound_tighter_than_the_plain_vae():
  # Closed forms, no Monte Carlo: below log p(x), above the plain VAE at the same q_0, for both
  # the stochastic and the deterministic flow.
  plain = plain_vae_elbo(Q_LOC, Q_SCALE)
  for stochastic in (True, False):
    elbo = exact_elbo(Q_LOC, Q_SCALE, STEP, FRICTION, MASS, K, stochastic)
    assert plain + 0.1 < elbo < LOG_EVIDENCE - 0.01, (stochastic, plain, elbo, LOG_EVIDENCE)
  # The reference itself: with steps of zero length and q_0 the exact posterior, it is log p(x);
  # and the plain bound is log p(x) there too.
  post_scale = np.full(L, PREC**-0.5)
  np.testing.assert_allclose(exact_elbo(POST_MEAN, post_scale, 1e-12, 1., 1., 3, True),
                             LOG_EVIDENCE, rtol=1e-10)
  np.testing.assert_allclose(plain_vae_elbo(POST_MEAN, post_scale), LOG_EVIDENCE, rtol=1e-12)


@pytest.mark.parametrize("stochastic, analytic_entropy", [(True, True), (True, False),
                                                          (False, True)])
def test_estimator_is_unbiased(stochastic, analytic_entropy):
  # The mean of n i.i.d. single-sample estimates is within 4 of its own standard errors of the
  # exact ELBO (two-sided false-alarm rate 6e-5 by the CLT; n = 4000 makes the CLT accurate).
  result = langevin_elbo(target_log_prob_fn, _q0(), _flow(), num_samples=4000, seed=42,
                         stochastic=stochastic, analytic_entropy=analytic_entropy)
  exact = exact_elbo(Q_LOC, Q_SCALE, STEP, FRICTION, MASS, K, stochastic)
  assert result.elbo_samples.shape == (4000,)
  assert (result.noise is None) != stochastic
  se = result.standard_error.numpy()
  assert abs(result.elbo.numpy() - exact) < 4 * se, (result.elbo.numpy(), exact, se)
  # The un-Rao-Blackwellized log-weights are unbiased for the ELBO as well.
  lw = result.log_weights.numpy()
  assert abs(lw.mean() - exact) < 4 * lw.std(ddof=1) / np.sqrt(lw.size)
  # And the estimate is above the plain VAE's exact bound by many standard errors.
  assert result.elbo.numpy() > plain_vae_elbo(Q_LOC, Q_SCALE) + 4 * se


def test_importance_sampled_log_evidence():
  # logmeanexp of the weights estimates log p(x) (biased low by ~ se^2 / 2, Jensen). Its delta-
  # method standard error is se = std(w) / (mean(w) sqrt(S)); allow 5 se plus the bias se^2.
  s = 4000
  result = langevin_elbo(target_log_prob_fn, _q0(), _flow(), num_samples=s, seed=7)
  lw = result.log_weights.numpy()
  w = np.exp(lw - lw.max())
  se = w.std(ddof=1) / (w.mean() * np.sqrt(s))
  estimate = lw.max() + np.log(w.mean())
  assert abs(estimate - LOG_EVIDENCE) < 5 * se + se**2, (estimate, LOG_EVIDENCE, se)


def test_same_seed_same_result_and_batches():
  q0 = tfd.MultivariateNormalDiag(tf.constant([Q_LOC, -Q_LOC]), tf.constant([Q_SCALE, Q_SCALE]))
  a = langevin_elbo(target_log_prob_fn, q0, _flow(), num_samples=8, seed=3)
  b = langevin_elbo(target_log_prob_fn, q0, _flow(), num_samples=8, seed=3)
  c = langevin_elbo(target_log_prob_fn, q0, _flow(), num_samples=8, seed=4)
  np.testing.assert_array_equal(a.elbo_samples, b.elbo_samples)
  assert np.all(a.elbo_samples.numpy() != c.elbo_samples.numpy())
  assert a.elbo.shape == (2,) and a.elbo_samples.shape == (8, 2)
  assert a.final_state[0].shape == (8, 2, L) and a.noise.shape == (K, 8, 2, L)


def test_bad_arguments():
  flow, q0 = _flow(), _q0()
  with pytest.raises(TypeError, match="LangevinFlow"):
    langevin_elbo(target_log_prob_fn, q0, tfb.Identity(), num_samples=2, seed=1)
  with pytest.raises(ValueError, match="num_samples"):
    langevin_elbo(target_log_prob_fn, q0, flow, num_samples=0, seed=1)
  with pytest.raises(ValueError, match="reparameterized"):
    langevin_elbo(target_log_prob_fn, tfd.Independent(tfd.Poisson(tf.ones([2], tf.float64)), 1),
                  flow, num_samples=2, seed=1)
  with pytest.raises(ValueError, match="vector event"):
    langevin_elbo(target_log_prob_fn, tfd.Normal(tf.zeros([], tf.float64), 1.), flow,
                  num_samples=2, seed=1)
