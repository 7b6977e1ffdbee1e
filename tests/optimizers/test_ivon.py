"""IVON: exact posterior of Bayesian linear regression, logistic regression against HMC, the update."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext
from tests.optimizers import ngvi_exact as ne


def _linear_model(d):
  return tf_keras.Sequential([tf_keras.layers.Dense(1, use_bias=False, input_shape=(d,),
                                                    kernel_initializer="zeros")])


def _ivon(n, **kwargs):
  # ess = N and weight decay δ = λ/N give the prior N(0, 1/λ); hess_init = 1 is ~4× below the
  # true diagonal Hessian of the mean loss (≈ 3-5), so the test sees h move from its start.
  args = dict(learning_rate=0.02, ess=n, weight_decay=ne.PRIOR_PRECISION / n, hess_init=1.0,
              beta_1=0.9, beta_2=0.995, seed=11)
  args.update(kwargs)
  return tfp_ext.optimizers.IVON(**args)


@pytest.mark.parametrize("wrapped", [False, True], ids=["model.fit", "VariationalModel"])
def test_recovers_exact_mean_field_posterior(wrapped):
  x, y, mean, prec = ne.linear_problem()
  model = _linear_model(x.shape[1])
  if wrapped:
    model = tfp_ext.keras.VariationalModel(model)
  model.compile(optimizer=_ivon(len(x)), loss=ne.gaussian_nll, steps_per_execution=100)
  (loc, loc_se), (q_prec, prec_se) = ne.run_and_average(model, x, y, batch_size=16, epochs=30)
  # E[ĥ] = E[ĝ·(θ − m)/σ²] = diag ∇²(mean loss) exactly (Stein's lemma; the loss is quadratic),
  # so ess·(h + δ) is unbiased for diag(XᵀX/σₙ² + λ) up to the positive correction
  # ½(1−β₂)²(h−ĥ)²/(h+δ), whose stationary effect is ≈ ½(1−β₂)·Var(ĥ)/h² ≈ ½·0.005·4 = 1% of h
  # (Var(ĥ)/h² ≈ 4 here: ĝ·ε/σ is a product of correlated Gaussians, plus minibatch noise).
  # Allowed: 5 snapshot standard errors + 2% for that bias; the mean is unaffected by it.
  np.testing.assert_array_less(np.abs(loc - mean), 5 * loc_se + 1e-4 * np.abs(mean) + 1e-4)
  np.testing.assert_array_less(np.abs(q_prec - prec), 5 * prec_se + 0.02 * prec)
  assert np.all(5 * prec_se < 0.2 * prec)  # The check can see a 20% error.


def test_logistic_regression_mean_matches_hmc():
  x, y = ne.logistic_problem()
  hmc_mean, hmc_std, hmc_se = ne.hmc_logistic_reference()
  model = _linear_model(x.shape[1])
  model.compile(optimizer=_ivon(len(x), learning_rate=0.05, hess_init=0.2),
                loss=tf_keras.losses.BinaryCrossentropy(from_logits=True), steps_per_execution=100)
  (loc, loc_se), _ = ne.run_and_average(model, x, y, batch_size=20, epochs=20)
  # As for VOGN: Monte Carlo error of both estimates plus 0.15 posterior std for the mean-field
  # Gaussian approximation of a mildly skewed posterior (N = 100).
  tol = 5 * np.sqrt(hmc_se**2 + loc_se**2) + 0.15 * hmc_std
  np.testing.assert_array_less(np.abs(loc - hmc_mean), tol)


# The hyperparameters of the one-step tests: hess_init, ess, weight decay δ, β₁, β₂, learning rate.
H0, ESS, DELTA, B1, B2, LR = 0.7, 50., 0.01, 0.8, 0.9, 0.1


def _paper_first_step(m0, g_hat, h_hat, clip=np.inf):
  """Algorithm 1 of Shen et al. (2024), first step (momentum from 0, h from hess_init), in NumPy.

  Returns the new mean m and the new h; σ = 1/√(ess·(h + δ)).
  """
  h = B2 * H0 + (1 - B2) * h_hat + 0.5 * (1 - B2)**2 * (H0 - h_hat)**2 / (H0 + DELTA)
  g_bar = (1 - B1) * g_hat / (1 - B1)  # Momentum after one step, debiased.
  m = m0 - LR * np.clip((g_bar + DELTA * m0) / (h + DELTA), -clip, clip)
  return m, h


def test_one_step_matches_the_paper_update():
  """One IVON step against Algorithm 1 of Shen et al. (2024) written out in NumPy."""
  var = tf.Variable([0.3, -1.2, 2.0])
  opt = tfp_ext.optimizers.IVON(learning_rate=LR, ess=ESS, hess_init=H0, beta_1=B1,
                                beta_2=B2, weight_decay=DELTA, clip_radius=0.5, seed=4)
  opt.build([var])
  m0 = var.numpy().copy()
  theta = m0 + np.array([0.05, -0.02, 0.1], np.float32)  # The sample the gradient is taken at.
  var.assign(theta)
  g = np.array([0.4, -3.0, 1.5], np.float32)
  opt.apply_gradients([(tf.constant(g), var)])
  q = opt.posterior()
  m, h = _paper_first_step(m0, g, g * (theta - m0) * ESS * (H0 + DELTA), clip=0.5)
  np.testing.assert_allclose(q.loc[0], m, rtol=1e-5)
  np.testing.assert_allclose(q.scale[0], 1 / np.sqrt(ESS * (h + DELTA)), rtol=1e-5)
  # The next sample is in the variable: m + σ ε with ε from the (seed, variable, iteration) noise.
  eps = (var.numpy() - m) * np.sqrt(ESS * (h + DELTA))
  np.testing.assert_allclose(eps, opt.noise(0, 1, var), rtol=1e-4, atol=1e-5)


def test_config_round_trip_keeps_the_paper_names():
  opt = tfp_ext.optimizers.IVON(learning_rate=0.2, ess=1000, hess_init=0.5, weight_decay=1e-3,
                                clip_radius=1.0, seed=7)
  config = opt.get_config()
  for key in ("ess", "hess_init", "weight_decay", "beta_1", "beta_2", "mc_samples", "clip_radius"):
    assert key in config
  again = tfp_ext.optimizers.IVON.from_config(config)
  assert again.get_config() == config
  assert again.weight_decay is None  # Keras's own decoupled decay stays off: δ is in the update.


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "ess"),
    (dict(ess=10, hess_init=0.0), "hess_init"),
    (dict(ess=10, weight_decay=0.0), "weight_decay"),
    (dict(ess=10, beta_2=1.0), "beta_2"),
    (dict(ess=10, clip_radius=0.0), "clip_radius"),
    (dict(ess=10, mc_samples=0), "mc_samples"),
    (dict(ess=float("nan")), "ess"),
])
def test_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tfp_ext.optimizers.IVON(**kwargs)


def test_one_step_with_several_samples_matches_the_paper_update():
  """Algorithm 1 with S = 3 samples: ĝ and ĥ are averages over the samples of the step."""
  var = tf.Variable([0.3, -1.2, 2.0])
  opt = tfp_ext.optimizers.IVON(learning_rate=LR, ess=ESS, hess_init=H0, beta_1=B1,
                                beta_2=B2, weight_decay=DELTA, mc_samples=3, seed=4)
  opt.build([var])
  m0 = var.numpy().copy()
  sigma0 = 1 / np.sqrt(ESS * (H0 + DELTA))
  theta = [m0 + np.array([0.05, -0.02, 0.1], np.float32)]  # Sample 0: in the variable.
  for j in (1, 2):  # Samples 1, 2: what a model wrapper evaluates, m + σ ε_j.
    drawn = opt.mc_sample([var], j)[0].numpy()
    np.testing.assert_allclose(drawn, m0 + sigma0 * opt.noise(0, 0, var, j), rtol=1e-6)
    theta.append(drawn)
  var.assign(theta[0])
  g = np.array([[0.4, -3.0, 1.5], [0.1, 0.2, -0.3], [-1.0, 0.5, 2.5]], np.float32)
  opt.apply_gradients([(tf.constant(g), var)])
  q = opt.posterior()
  h_hat = np.mean(g * (np.stack(theta) - m0), axis=0) * ESS * (H0 + DELTA)
  m, h = _paper_first_step(m0, g.mean(0), h_hat)
  np.testing.assert_allclose(q.loc[0], m, rtol=1e-5)
  np.testing.assert_allclose(q.scale[0], 1 / np.sqrt(ESS * (h + DELTA)), rtol=1e-5)
