"""Tests of the Hamiltonian ELBO estimator on a conjugate Gaussian model where everything is exact.

Model: z ~ N(0, I_l), x_i | z ~ N(z, s^2 I_l), i = 1..n. Then log p(x) is a Gaussian marginal and
log p(x, z) = log p(x) + log N(z | m, I / P) with P = 1 + n / s^2, m = sum_i x_i / (s^2 P).
On this quadratic potential each leapfrog step and each tempering is a linear map of
(z - m, rho) per dimension, so (z_K, rho_K) is Gaussian and the ELBO has a closed form that does
not use the code under test.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.bijectors import TemperedHamiltonianFlow
from tfp_ext.vi import hamiltonian_elbo

tfd = tfp.distributions
tfb = tfp.bijectors

L, N_OBS, NOISE = 2, 4, 1.0
X = np.array([[0.9, -0.4], [1.6, 0.2], [0.7, -1.1], [1.8, 0.1]])
PREC = 1. + N_OBS / NOISE**2
POST_MEAN = X.sum(0) / NOISE**2 / PREC
LOG_EVIDENCE = sum(
    scipy.stats.multivariate_normal(np.zeros(N_OBS), NOISE**2 * np.eye(N_OBS) + 1.).logpdf(X[:, j])
    for j in range(L))


def target_log_prob_fn(z):
  x = tf.constant(X, z.dtype)
  prior = -0.5 * tf.reduce_sum(tf.square(z), -1) - 0.5 * L * np.log(2 * np.pi)
  resid = x - z[..., tf.newaxis, :]
  lik = (-0.5 * tf.reduce_sum(tf.square(resid), [-2, -1]) / NOISE**2
         - N_OBS * L * (np.log(NOISE) + 0.5 * np.log(2 * np.pi)))
  return prior + lik


def exact_elbo(q_loc, q_scale, step_size, alphas):
  """Closed-form ELBO of the HVAE with q_0 = N(q_loc, diag q_scale^2), per-dimension maps."""
  step_size = np.broadcast_to(step_size, [len(alphas), L])
  beta0 = np.prod(alphas)**2
  total = LOG_EVIDENCE
  for j in range(L):
    mean = np.array([q_loc[j] - POST_MEAN[j], 0.])
    cov = np.diag([q_scale[j]**2, 1. / beta0])
    for k, alpha in enumerate(alphas):
      eps = step_size[k, j]
      kick = np.array([[1., 0.], [-0.5 * eps * PREC, 1.]])
      drift = np.array([[1., eps], [0., 1.]])
      a = np.diag([1., alpha]) @ kick @ drift @ kick
      mean, cov = a @ mean, a @ cov @ a.T
    total += (-0.5 * np.log(2 * np.pi / PREC) - 0.5 * PREC * (cov[0, 0] + mean[0]**2)
              - 0.5 * (cov[1, 1] + mean[1]**2))
    total += 0.5 * np.log(2 * np.pi * np.e * q_scale[j]**2) + 0.5  # H[q_0] + l/2, per dim.
  return total


Q_LOC, Q_SCALE = np.array([0.2, -0.1]), np.array([0.8, 1.1])
STEP, BETA0, K = np.array([0.2, 0.35]), 0.4, 3


def _fixed_flow(dtype=tf.float64):
  return TemperedHamiltonianFlow(target_log_prob_fn, num_steps=K,
                                 step_size=tf.constant(STEP, dtype),
                                 initial_inverse_temperature=tf.constant(BETA0, dtype))


def _q0(dtype=tf.float64):
  return tfd.MultivariateNormalDiag(tf.constant(Q_LOC, dtype), tf.constant(Q_SCALE, dtype))


def _exact_fixed():
  return exact_elbo(Q_LOC, Q_SCALE, STEP, _fixed_flow().tempering_factors().numpy())


def test_exact_elbo_is_below_the_evidence():
  # Sanity of the reference itself, and the bound: ELBO <= log p(x) with a strict gap here.
  elbo = _exact_fixed()
  assert elbo < LOG_EVIDENCE - 0.05, (elbo, LOG_EVIDENCE)
  # With K steps of zero length and q_0 the exact posterior, the reference gives log p(x).
  np.testing.assert_allclose(
      exact_elbo(POST_MEAN, np.full(L, PREC**-0.5), np.full(L, 1e-12), [1.]), LOG_EVIDENCE,
      rtol=1e-10)


@pytest.mark.parametrize("analytic_entropy", [True, False])
def test_estimator_is_unbiased(analytic_entropy):
  # The mean of n i.i.d. single-sample estimates is within 4 of its own standard errors of the
  # exact ELBO (two-sided false-alarm rate 6e-5 by the CLT; n = 4000 makes the CLT accurate).
  result = hamiltonian_elbo(target_log_prob_fn, _q0(), _fixed_flow(), num_samples=4000,
                            seed=42, analytic_entropy=analytic_entropy)
  exact = _exact_fixed()
  assert result.elbo_samples.shape == (4000,)
  assert abs(result.elbo.numpy() - exact) < 4 * result.standard_error.numpy(), (
      result.elbo.numpy(), exact, result.standard_error.numpy())
  np.testing.assert_allclose(result.variance, np.var(result.elbo_samples, ddof=1), rtol=1e-10)
  # The un-Rao-Blackwellized log-weights are unbiased for the ELBO as well.
  lw = result.log_weights.numpy()
  assert abs(lw.mean() - exact) < 4 * lw.std(ddof=1) / np.sqrt(lw.size)
  # E[ELBO] <= log p(x): the estimate is below the evidence up to 3 standard errors.
  assert result.elbo.numpy() < LOG_EVIDENCE + 3 * result.standard_error.numpy()


def test_importance_sampled_log_evidence():
  # logmeanexp of the weights estimates log p(x) (biased low by ~ se^2 / 2, Jensen). Its delta-
  # method standard error is se = std(w) / (mean(w) sqrt(S)); allow 5 se plus the bias se^2.
  s = 4000
  result = hamiltonian_elbo(target_log_prob_fn, _q0(), _fixed_flow(), num_samples=s, seed=7)
  lw = result.log_weights.numpy()
  w = np.exp(lw - lw.max())
  se = w.std(ddof=1) / (w.mean() * np.sqrt(s))
  estimate = lw.max() + np.log(w.mean())
  assert abs(estimate - LOG_EVIDENCE) < 5 * se + se**2, (estimate, LOG_EVIDENCE, se)
  assert estimate > result.elbo.numpy()


def test_same_seed_same_result_and_batches():
  q0 = tfd.MultivariateNormalDiag(tf.constant([Q_LOC, -Q_LOC]), tf.constant([Q_SCALE, Q_SCALE]))
  a = hamiltonian_elbo(target_log_prob_fn, q0, _fixed_flow(), num_samples=8, seed=3)
  b = hamiltonian_elbo(target_log_prob_fn, q0, _fixed_flow(), num_samples=8, seed=3)
  c = hamiltonian_elbo(target_log_prob_fn, q0, _fixed_flow(), num_samples=8, seed=4)
  np.testing.assert_array_equal(a.elbo_samples, b.elbo_samples)
  assert np.all(a.elbo_samples.numpy() != c.elbo_samples.numpy())
  assert a.elbo.shape == (2,) and a.elbo_samples.shape == (8, 2)
  assert a.final_state[0].shape == (8, 2, L) and a.initial_state[1].shape == (8, 2, L)


def _train(num_steps, tempering, n_iter=80):
  """Learns eps (and beta_0 or alphas) with q_0 = prior, under XLA; returns the flow."""
  step = tfp.util.TransformedVariable(tf.fill([L], tf.constant(0.05, tf.float64)),
                                      tfb.Sigmoid(low=tf.constant(0., tf.float64),
                                                  high=tf.constant(0.5, tf.float64)))
  kwargs = {}
  if tempering == "fixed":
    kwargs["initial_inverse_temperature"] = tfp.util.TransformedVariable(
        tf.constant(0.5, tf.float64), tfb.Sigmoid())
  flow = TemperedHamiltonianFlow(target_log_prob_fn, num_steps=num_steps, step_size=step,
                                 tempering=tempering, **kwargs)
  prior = tfd.MultivariateNormalDiag(tf.zeros([L], tf.float64))
  opt = tf_keras.optimizers.Adam(0.05)
  variables = flow.trainable_variables
  opt.build(variables)

  # One graph for the whole loop (XLA compilation is shown by the test below; here it would
  # only add compile time).
  @tf.function
  def train():
    for i in tf.range(n_iter):
      with tf.GradientTape() as tape:
        loss = -hamiltonian_elbo(target_log_prob_fn, prior, flow, num_samples=16,
                                 seed=tf.stack([i, 1])).elbo
      opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

  train()
  return flow


@pytest.fixture(scope="module")
def trained():
  return {k: _train(k, "fixed") for k in (1, 5)}


def test_gap_shrinks_as_k_grows_with_learned_step_sizes(trained):
  # Exact ELBOs (closed form, no Monte Carlo) of the learned flows, q_0 = prior N(0, I).
  gaps = {}
  for k, flow in trained.items():
    elbo = exact_elbo(np.zeros(L), np.ones(L),
                      tf.convert_to_tensor(flow.step_size).numpy(),
                      flow.tempering_factors().numpy())
    gaps[k] = LOG_EVIDENCE - elbo
  # The K = 1 flow at its initial values (eps = 0.05, beta_0 = 0.5, so alpha_1 = sqrt(0.5)).
  untrained = LOG_EVIDENCE - exact_elbo(np.zeros(L), np.ones(L), np.full(L, 0.05),
                                        [np.sqrt(0.5)])
  assert 0 < gaps[5] < gaps[1] < untrained, (gaps, untrained)


def test_xla_estimate_is_deterministic_and_unbiased():
  flow, q0 = _fixed_flow(), _q0()
  run = tf.function(
      lambda seed: hamiltonian_elbo(target_log_prob_fn, q0, flow, num_samples=2000, seed=seed),
      jit_compile=True)
  a, b = run(tf.constant([5, 6])), run(tf.constant([5, 6]))
  np.testing.assert_array_equal(a.elbo_samples, b.elbo_samples)
  # Same 4-standard-error bound as in eager mode (XLA draws different normals on CPU).
  assert abs(a.elbo.numpy() - _exact_fixed()) < 4 * a.standard_error.numpy()


def test_bad_arguments():
  flow, q0 = _fixed_flow(), _q0()
  with pytest.raises(TypeError, match="TemperedHamiltonianFlow"):
    hamiltonian_elbo(target_log_prob_fn, q0, tfb.Identity(), num_samples=2, seed=1)
  with pytest.raises(ValueError, match="num_samples"):
    hamiltonian_elbo(target_log_prob_fn, q0, flow, num_samples=0, seed=1)
  with pytest.raises(ValueError, match="reparameterized"):
    hamiltonian_elbo(target_log_prob_fn, tfd.Independent(tfd.Poisson(tf.ones([2], tf.float64)), 1),
                     flow, num_samples=2, seed=1)
  with pytest.raises(ValueError, match="vector event"):
    hamiltonian_elbo(target_log_prob_fn, tfd.Normal(tf.zeros([], tf.float64), 1.), flow,
                     num_samples=2, seed=1)
