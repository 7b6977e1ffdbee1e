"""SGLD and SGLD-CV on Bayesian linear regression, against exact answers.

Tolerances: for a statistic f, `batch_means_z` returns |mean f − E f| / SE with SE from 40 batch
means; batches of 250+ steps are ≫ the chain's autocorrelation time (≈ 1 / (2 h λ_min(Σ⁻¹)) ≈ 5
steps here), so the ratio is Student-t with 39 d.o.f.: P(|t| > 4.5) ≈ 6e-5 per statistic, so with
5 statistics per chain a correct kernel fails a check with probability < 3e-4 (and, the seeds
being fixed, never flakes). A wrong target shows up as z in the tens (checked below, so the test
has power).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_ext
from tests.mcmc import harness
from tests.mcmc import sg_linear_gaussian as lg

Z_MAX = 4.5
N, BATCH, STEP = 100, 10, 5e-4
NUM_STEPS = 8000


@pytest.fixture(scope="module")
def model():
  return lg.LinearRegression(N)


def _sgld(model, **kw):
  kw.setdefault("batch_size", BATCH)
  kw.setdefault("step_size", STEP)
  return tfp_ext.mcmc.StochasticGradientLangevinDynamics(
      model.log_prior_fn, model.log_likelihood_fn, model.data, **kw)


def test_minibatch_moments_match_enumeration_of_subsets():
  # sg_linear_gaussian's E[X_B ⊗ Y_B] against brute force over all C(6, 3) = 20 subsets.
  import itertools  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x_i, y_i = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 4, 2))
  x0, y0 = rng.normal(size=(2, 3)), rng.normal(size=(4, 2))
  subsets = list(itertools.combinations(range(6), 3))
  brute = sum(np.kron(x0 + 2. * x_i[list(b)].sum(0), y0 + 2. * y_i[list(b)].sum(0))
              for b in subsets) / len(subsets)
  np.testing.assert_allclose(lg._expected_kron(x0, x_i, y0, y_i, 3, 6), brute, rtol=1e-12,
                             atol=1e-12)


def test_minibatch_indices_are_distinct_and_uniform():
  from tfp_ext.internal import stochastic_gradients as sg  # pylint: disable=g-import-not-at-top
  draw = tf.function(lambda: tf.map_fn(lambda i: sg.minibatch_indices(tf.stack([i, 1]), 10, 4),
                                       tf.range(500), fn_output_signature=tf.int32))
  idx = draw().numpy()
  assert all(len(set(row)) == 4 for row in idx)  # without replacement
  # Each index is in a batch with probability 4/10: 500 batches give counts ~ Bin(500, 0.4),
  # sd = sqrt(500·0.4·0.6) ≈ 11; 5 sd = 55 around the mean 200.
  counts = np.bincount(idx.ravel(), minlength=10)
  assert np.all(np.abs(counts - 200) < 55), counts


def test_exact_stationary_law_full_batch_matches_closed_form(model):
  # With n = N the chain is unadjusted Langevin on N(μ, Σ): stationary N(μ, (P − h P²/2)⁻¹),
  # P = Σ⁻¹ (solve C = (I − hP) C (I − hP) + 2hI). This checks the exact-moment code used below.
  m, c = lg.stationary_moments(model.sgld_map(STEP), N, N)
  p = model.precision
  np.testing.assert_allclose(m, model.mean, rtol=1e-10)
  np.testing.assert_allclose(c, np.linalg.inv(p - STEP * p @ p / 2), rtol=1e-8)


THETA_HAT_OFFSET = 0.3  # θ̂ = μ + 0.3 sd: a control variate that is near, not at, the mode.


@pytest.fixture(scope="module")
def long_chains(model):
  """SGLD and SGLD-CV chains from one compiled function (one XLA compilation for both)."""
  theta_hat = model.mean + THETA_HAT_OFFSET * np.sqrt(np.diag(model.cov))
  kernels = {"sgld": _sgld(model), "sgld_cv": _sgld(model, control_variate_state=theta_hat)}

  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return {name: tfp.mcmc.sample_chain(NUM_STEPS, tf.constant(model.mean), kernel=k, seed=seed,
                                        trace_fn=None) for name, k in kernels.items()}

  chains = {k: v.numpy() for k, v in run(tf.constant([1, 2], tf.int32)).items()}
  return chains, {"sgld": None, "sgld_cv": theta_hat}


@pytest.mark.parametrize("name", ["sgld", "sgld_cv"])
def test_long_chain_matches_exact_stationary_law(model, long_chains, name):
  chains, theta_hats = long_chains
  samples = chains[name]
  m, c = lg.stationary_moments(model.sgld_map(STEP, theta_hats[name]), BATCH, N)
  feats = lg.moment_features(samples, m)
  z = lg.batch_means_z(feats, lg.moment_targets(m, c))
  assert np.all(z < Z_MAX), z
  if name == "sgld":
    # The exact posterior is NOT the stationary law of SGLD at this h (minibatch noise inflates
    # the covariance ~2.4x): the same check must reject it, or it has no power.
    z_post = lg.batch_means_z(feats, lg.moment_targets(model.mean, model.cov))
    assert np.max(z_post) > 3 * Z_MAX, z_post


def test_control_variates_lower_measured_mse(model, long_chains):
  # Measured on the chains above (same N, n, h, seed): the squared error of the chain's estimate
  # of Cov[θ], relative to ‖Σ‖². Exact stationary errors are 1.37 Σ (SGLD) vs 0.13 Σ (SGLD-CV),
  # ~10x apart, while the Monte Carlo error of 8000 steps is a few percent of Σ.
  chains, _ = long_chains
  mse = {}
  for name, s in chains.items():
    cov_hat = (s - model.mean).T @ (s - model.mean) / len(s)
    mse[name] = np.sum((cov_hat - model.cov) ** 2) / np.sum(model.cov ** 2)
  assert mse["sgld_cv"] < mse["sgld"] / 10, mse


def test_bias_shrinks_with_step_size(model):
  # Exact stationary covariance error, relative to Σ, at h, h/2, h/4, h/8: O(h) for both.
  for theta_hat in (None, model.mean):
    errs = []
    for h in STEP / np.array([1., 2., 4., 8.]):
      _, c = lg.stationary_moments(model.sgld_map(h, theta_hat), BATCH, N)
      errs.append(np.linalg.norm(c - model.cov) / np.linalg.norm(model.cov))
    errs = np.array(errs)
    assert np.all(np.diff(errs) < 0), errs
    np.testing.assert_allclose(errs[:-1] / errs[1:], 2., rtol=0.15)  # first order in h


def test_control_variates_beat_sgld_across_n():
  # Nagapetyan et al.: at equal h and n, SGLD-CV's error is lower; with h ∝ 1/N (fixed
  # h·λ(Σ⁻¹)) SGLD's covariance error grows ~ N/n while SGLD-CV's stays flat.
  errs = {}
  for n_total in (100, 1000, 10000):
    m = lg.LinearRegression(n_total, seed=1)
    h = 0.05 / n_total
    for name, th in (("sgld", None), ("cv", m.mean)):
      _, c = lg.stationary_moments(m.sgld_map(h, th), BATCH, n_total)
      errs[name, n_total] = np.linalg.norm(c - m.cov) / np.linalg.norm(m.cov)
  for n_total in (100, 1000, 10000):
    assert errs["cv", n_total] < errs["sgld", n_total] / 5, errs
  assert errs["sgld", 10000] > 20 * errs["sgld", 100], errs  # grows ~linearly in N
  assert errs["cv", 10000] < 2 * errs["cv", 100], errs


def test_find_control_variate_state_reaches_mode(model):
  theta_hat = tfp_ext.mcmc.find_control_variate_state(
      model.log_prior_fn, model.log_likelihood_fn, model.data, tf.zeros([2], tf.float64),
      num_steps=300)
  # The mode of a Gaussian posterior is μ; "near" = well inside one posterior sd.
  err = np.abs(theta_hat.numpy() - model.mean) / np.sqrt(np.diag(model.cov))
  assert np.all(err < 0.05), err


# ---- Shared kernel checks (tests/mcmc/harness.py) with several state parts and chains. ----

def _two_part_kernel(model, control_variate=False):
  def log_prior(state):
    a, b = state
    return model.log_prior_fn(tf.concat([a, b], axis=-1))

  def log_lik(state, batch):
    a, b = state
    w = tf.concat([a, b], axis=-1)
    x, y = batch
    return -0.5 * tf.square(y - tf.einsum("...d,nd->...n", w, x)) / model.sigma2

  cv = [model.mean[:1], model.mean[1:]] if control_variate else None
  return tfp_ext.mcmc.StochasticGradientLangevinDynamics(
      log_prior, log_lik, model.data, batch_size=BATCH, step_size=STEP, control_variate_state=cv)


def test_harness(model):
  # The control-variate kernel runs every code path of plain SGLD too (minibatch, noise, step).
  kernel = _two_part_kernel(model, control_variate=True)
  init = [tf.constant(model.mean[:1]), tf.constant(model.mean[1:])]
  assert not kernel.is_calibrated
  harness.assert_reproducible(kernel, init)
  harness.assert_jit_compiles(kernel, init)
  harness.assert_state_structure(kernel, init)
  batch_init = [tf.tile(p[None], [3, 1]) for p in init]
  harness.assert_batch_of_chains(kernel, batch_init, batch_shape=[3])


def test_results_fields(model):
  kernel = _sgld(model)
  state = tf.constant(model.mean)
  results = kernel.bootstrap_results(state)
  _, results = kernel.one_step(state, results, seed=(4, 5))
  assert results.target_log_prob.shape == []
  assert results.seed.numpy().tolist() == tfp.random.sanitize_seed((4, 5)).numpy().tolist()
  np.testing.assert_allclose(results.step_size[0], STEP)
  # With n = N the estimate is exact: log π and ∇log π at the start state.
  full = _sgld(model, batch_size=N)
  r = full.bootstrap_results(state)
  w = model.mean
  exact_tlp = (-0.5 * model.p0 * w @ w
               - 0.5 * np.sum((model.y - model.x @ w) ** 2) / model.sigma2)
  np.testing.assert_allclose(r.target_log_prob, exact_tlp, rtol=1e-10)
  np.testing.assert_allclose(r.grads_target_log_prob[0], model.full_gradient(w), atol=1e-8)


def test_bad_input(model):
  make = tfp_ext.mcmc.StochasticGradientLangevinDynamics
  with pytest.raises(ValueError, match="batch_size"):
    make(model.log_prior_fn, model.log_likelihood_fn, model.data, batch_size=N + 1, step_size=1.)
  with pytest.raises(ValueError, match="leading dimension"):
    make(model.log_prior_fn, model.log_likelihood_fn, (model.x, model.y[:5]), batch_size=2,
         step_size=1.)
  with pytest.raises(ValueError, match="NaN"):
    make(model.log_prior_fn, model.log_likelihood_fn, (model.x, np.full(N, np.nan)),
         batch_size=2, step_size=1.)
  with pytest.raises(ValueError, match="step_size"):
    make(model.log_prior_fn, model.log_likelihood_fn, model.data, batch_size=2, step_size=-1.)
  with pytest.raises(ValueError, match="non-finite"):
    make(model.log_prior_fn, model.log_likelihood_fn, model.data, batch_size=2, step_size=1.,
         control_variate_state=np.array([np.nan, 0.]))
  kernel = make(model.log_prior_fn, lambda w, b: tf.reduce_sum(model.log_likelihood_fn(w, b)),
                model.data, batch_size=2, step_size=1.)
  with pytest.raises(ValueError, match="per-example"):
    kernel.bootstrap_results(tf.constant(model.mean))
