"""VOGN: exact posteriors of Bayesian linear regression, logistic regression against HMC, errors."""

import numpy as np
import pytest
import tf_keras

import tfp_ext
from tests.optimizers import ngvi_exact as ne


def _linear_model(d, bias=False):
  return tf_keras.Sequential([tf_keras.layers.Dense(1, use_bias=bias, input_shape=(d,),
                                                    kernel_initializer="zeros")])


def _fit_linear(approximation, beta_1=0.0):
  x, y, mean, prec = ne.linear_problem()
  vm = tfp_ext.keras.VariationalModel(_linear_model(x.shape[1]))
  vm.compile(optimizer=tfp_ext.optimizers.VOGN(
      learning_rate=0.02, beta_1=beta_1, beta_2=0.99, prior_precision=ne.PRIOR_PRECISION,
      num_examples=len(x), hessian_approximation=approximation, seed=3),
             loss=ne.gaussian_nll, steps_per_execution=100)
  # 30 epochs of 100 steps: μ relaxes in ~1/α = 50 steps and s in 1/(1 − β₂) = 100 steps, so
  # the second half (15 snapshots, 100 steps apart) is stationary and nearly uncorrelated.
  return (x, y, mean, prec), ne.run_and_average(vm, x, y, batch_size=16, epochs=30)


def test_ggn_recovers_exact_mean_field_posterior():
  (_, _, mean, prec), ((loc, loc_se), (q_prec, prec_se)) = _fit_linear("ggn")
  # For a linear-Gaussian model the diagonal GGN is the exact Hessian diag(xᵢxᵢᵀ)/σₙ², so the
  # minibatch curvature is unbiased and the stationary mean of s is exact: only Monte Carlo error
  # (minibatch and weight noise) remains. 5 standard errors of the snapshot average, plus 1e-4
  # relative for float32 accumulation over 3000 steps.
  np.testing.assert_array_less(np.abs(loc - mean), 5 * loc_se + 1e-4 * np.abs(mean) + 1e-4)
  np.testing.assert_array_less(np.abs(q_prec - prec), 5 * prec_se + 1e-4 * prec)
  # And the check is informative: it would catch a mean off by 0.3 posterior standard deviations
  # or a precision off by 5%.
  assert np.all(5 * loc_se < 0.3 / np.sqrt(prec))
  assert np.all(5 * prec_se < 0.05 * prec)


def test_per_example_squared_gradients_fixed_point():
  (x, y, mean, _), ((loc, loc_se), (q_prec, prec_se)) = _fit_linear(
      "per_example_squared_gradients", beta_1=0.5)
  # The μ fixed point, E_q[ĝ] + (λ/N)μ = 0, is the exact posterior mean for a linear model
  # whatever the curvature; the precision converges to the closed-form fixed point of
  # s = E_q[(1/N) Σᵢ gᵢ²] (`vogn_squared_gradient_fixed_point`). Tolerances as above, plus the
  # bias of E[(y − xᵀμ_t)²] from μ_t's own jitter around μ (variance ≈ α/2 · posterior variance,
  # i.e. 2.5% of the posterior variance; its effect on s is below 1% of s here).
  expected_prec = ne.vogn_squared_gradient_fixed_point(x, y, mean)
  np.testing.assert_array_less(np.abs(loc - mean), 5 * loc_se + 1e-4 * np.abs(mean) + 1e-4)
  np.testing.assert_array_less(np.abs(q_prec - expected_prec),
                               5 * prec_se + 0.01 * expected_prec)


def test_logistic_regression_mean_matches_hmc():
  x, y = ne.logistic_problem()
  hmc_mean, hmc_std, hmc_se = ne.hmc_logistic_reference()
  vm = tfp_ext.keras.VariationalModel(_linear_model(x.shape[1]))
  vm.compile(optimizer=tfp_ext.optimizers.VOGN(
      learning_rate=0.05, beta_2=0.99, prior_precision=ne.PRIOR_PRECISION, num_examples=len(x),
      hessian_approximation="ggn", seed=5),
             loss=tf_keras.losses.BinaryCrossentropy(from_logits=True), steps_per_execution=100)
  (loc, loc_se), _ = ne.run_and_average(vm, x, y, batch_size=20, epochs=20)
  # Monte Carlo error: 5·√(SE_HMC² + SE_VOGN²). Approximation error: the mean-field Gaussian's
  # mean differs from the exact posterior mean by the posterior's skewness, which for N = 100
  # well-determined examples is a small fraction of a posterior standard deviation; allow 0.15 σ.
  tol = 5 * np.sqrt(hmc_se**2 + loc_se**2) + 0.15 * hmc_std
  np.testing.assert_array_less(np.abs(loc - hmc_mean), tol)


def test_plain_fit_is_refused_with_a_pointer_to_variational_model():
  model = _linear_model(3)
  model.compile(optimizer=tfp_ext.optimizers.VOGN(num_examples=8, seed=0), loss="mse")
  with pytest.raises(ValueError, match="VariationalModel"):
    model.fit(np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), verbose=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "num_examples"),
    (dict(num_examples=10, beta_2=1.0), "beta_2"),
    (dict(num_examples=10, beta_1=-0.1), "beta_1"),
    (dict(num_examples=10, tempering=0.0), "tempering"),
    (dict(num_examples=10, hessian_approximation="fisher"), "hessian_approximation"),
    (dict(num_examples=10, num_samples=0), "num_samples"),
    (dict(num_examples=10, num_samples=1.5), "num_samples"),
    (dict(num_examples=10, prior_precision=-1.0), "prior_precision"),
])
def test_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tfp_ext.optimizers.VOGN(**kwargs)
