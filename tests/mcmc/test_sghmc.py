"""SGHMC and relativistic SGHMC on Bayesian linear regression, against exact answers.

Tolerance derivation as in test_sgld.py: |mean f − E f| / SE(40 batch means) is Student-t with 39
d.o.f. when the batches (200 steps) are much longer than the autocorrelation time (momentum
decays by (1 − hC) per step: 1 / (hC) = 20-25 steps here), so z < 4.5 fails a correct kernel with
probability ≈ 6e-5 per statistic.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_ext
from tests.mcmc import harness
from tests.mcmc import sg_linear_gaussian as lg

Z_MAX = 4.5
N, BATCH = 100, 10
NUM_STEPS = 8000
SGHMC = dict(step_size=5e-3, friction=10., mass=1., noise_estimate=1.)
# Relativistic, full batch: m c = 1 is comparable to the typical momentum (sd √m = 1), so the
# velocity is far from Newtonian; h is small enough that the Newtonian chain's exact bias is
# below one Monte Carlo standard error (checked in the test).
REL = dict(step_size=2e-3, friction=20., mass=1., max_speed=1.)


@pytest.fixture(scope="module")
def model():
  return lg.LinearRegression(N)


def _kernel(cls, model, batch_size, **kw):
  return cls(model.log_prior_fn, model.log_likelihood_fn, model.data, batch_size=batch_size, **kw)


@pytest.fixture(scope="module")
def chains(model):
  """Three chains compiled together (one XLA compilation)."""
  kernels = {
      "sghmc": _kernel(tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo, model, BATCH,
                       **SGHMC),
      # c → ∞ turns relativistic SGHMC into SGHMC: same seed, same chain.
      "relativistic_c_inf": _kernel(
          tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo, model, BATCH,
          max_speed=1e7, **SGHMC),
      "relativistic": _kernel(
          tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo, model, N, **REL),
  }

  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return {name: tfp.mcmc.sample_chain(NUM_STEPS, tf.constant(model.mean), kernel=k, seed=seed,
                                        trace_fn=None) for name, k in kernels.items()}

  return {k: v.numpy() for k, v in run(tf.constant([3, 4], tf.int32)).items()}


def test_sghmc_matches_exact_stationary_law(model, chains):
  m, c = lg.stationary_moments(model.sghmc_map(
      SGHMC["step_size"], SGHMC["friction"], SGHMC["mass"], SGHMC["noise_estimate"]), BATCH, N)
  m, c = m[:2], c[:2, :2]  # θ block of the (θ, r) law
  np.testing.assert_allclose(m, model.mean, rtol=1e-10)
  feats = lg.moment_features(chains["sghmc"], m)
  z = lg.batch_means_z(feats, lg.moment_targets(m, c))
  assert np.all(z < Z_MAX), z


def test_sghmc_bias_shrinks_with_step_size(model):
  errs = []
  for h in SGHMC["step_size"] / np.array([1., 2., 4., 8.]):
    _, c = lg.stationary_moments(model.sghmc_map(h, SGHMC["friction"]), BATCH, N)
    errs.append(np.linalg.norm(c[:2, :2] - model.cov) / np.linalg.norm(model.cov))
  errs = np.array(errs)
  assert np.all(np.diff(errs) < 0), errs
  np.testing.assert_allclose(errs[:-1] / errs[1:], 2., rtol=0.2)  # first order in h


def test_relativistic_with_infinite_speed_is_sghmc(chains):
  np.testing.assert_allclose(chains["relativistic_c_inf"], chains["sghmc"], rtol=1e-6, atol=1e-9)


def test_relativistic_full_batch_samples_posterior(model, chains):
  feats = lg.moment_features(chains["relativistic"], model.mean)
  targets = lg.moment_targets(model.mean, model.cov)
  z = lg.batch_means_z(feats, targets)
  # The discretization bias of this chain is not known in closed form; the Newtonian chain at the
  # same h, friction and full batch has an exact bias below one standard error, and the
  # relativistic chain moves more slowly (|v| < |p|/m), so no bias allowance is added.
  _, c_newton = lg.stationary_moments(
      model.sghmc_map(REL["step_size"], REL["friction"], REL["mass"]), N, N)
  se = lg.batch_means_se(feats)
  bias = np.abs(lg.moment_targets(model.mean, c_newton[:2, :2]) - targets)
  assert np.all(bias < se), (bias, se)
  assert np.all(z < Z_MAX), z


def test_relativistic_velocity_is_bounded(model):
  # Every move is h·v(p) with |v_j| < c per coordinate (independent mode), even for a huge
  # momentum: start far from the mode, where gradients are ~1e4.
  kernel = _kernel(tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo, model, BATCH,
                   step_size=0.01, friction=1., max_speed=0.5)
  state = tf.constant([30., -30.], tf.float64)
  results = kernel.bootstrap_results(state)
  for i in range(5):
    new_state, results = kernel.one_step(state, results, seed=(i, 7))
    assert np.all(np.abs(new_state - state) <= 0.01 * 0.5 + 1e-12)
    state = new_state
  assert float(tf.reduce_max(tf.abs(results.momentum[0]))) > 10.  # far in the relativistic regime


# ---- Shared kernel checks with two state parts and a batch of chains. ----

def _two_part(model, mode):
  def log_prior(state):
    return model.log_prior_fn(tf.concat(state, axis=-1))

  def log_lik(state, batch):
    w = tf.concat(state, axis=-1)
    x, y = batch
    return -0.5 * tf.square(y - tf.einsum("...d,nd->...n", w, x)) / model.sigma2

  return tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo(
      log_prior, log_lik, model.data, batch_size=BATCH, step_size=5e-3, friction=10.,
      max_speed=1., kinetic_energy_mode=mode, control_variate_state=[model.mean[:1],
                                                                     model.mean[1:]])


def test_harness(model):
  # Relativistic SGHMC inherits every step of SGHMC but the velocity, so this covers both; the
  # joint mode needs the per-part event dims, which the batch-of-chains check exercises.
  kernel = _two_part(model, "joint")
  init = [tf.constant(model.mean[:1]), tf.constant(model.mean[1:])]
  assert not kernel.is_calibrated
  harness.assert_reproducible(kernel, init)
  harness.assert_jit_compiles(kernel, init)
  harness.assert_state_structure(kernel, init)
  harness.assert_batch_of_chains(kernel, [tf.tile(p[None], [3, 1]) for p in init], [3])


def test_bad_input(model):
  with pytest.raises(ValueError, match="noise_estimate"):
    _kernel(tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo, model, BATCH, step_size=1e-3,
            friction=1., noise_estimate=2.)
  with pytest.raises(ValueError, match="friction"):
    _kernel(tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo, model, BATCH, step_size=1e-3,
            friction=0.)
  with pytest.raises(ValueError, match="kinetic_energy_mode"):
    _kernel(tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo, model, BATCH,
            step_size=1e-3, kinetic_energy_mode="both")
  with pytest.raises(ValueError, match="max_speed"):
    _kernel(tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo, model, BATCH,
            step_size=1e-3, max_speed=-1.)
