"""Vprop: the paper's update equations and exact Bayesian linear regression."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_ext
from tests.optimizers import bayesian_linear_regression as blr

LR, RHO, PRIOR, N, INIT = 0.05, 0.9, 2.0, 10, 5.0


def _gradient(theta):
  """An arbitrary nonlinear gradient field, evaluated at the sample the variables hold."""
  return [t - 0.3 + 0.5 * tf.sin(3.0 * t) for t in theta]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_update_matches_paper_equations(jit):
  """Khan et al. (2018), Section 3 (Vprop), step by step in float64 NumPy with the same ε."""
  initial = [np.linspace(-0.4, 0.6, 6).reshape(3, 2), np.array([0.7, -1.1])]
  variables = [tf.Variable(v.astype(np.float32)) for v in initial]
  opt = tfp_ext.optimizers.Vprop(learning_rate=LR, rho=RHO, prior_precision=PRIOR,
                                 num_examples=N, init_precision=INIT, seed=4)
  opt.build(variables)
  opt.assign_sample(variables)
  apply = lambda: opt.apply_gradients(zip(_gradient(variables), variables))
  apply = tf.function(apply, jit_compile=True) if jit else apply
  steps, thetas = 4, []
  for _ in range(steps):
    thetas.append([v.numpy().astype(np.float64) for v in variables])
    apply()
  q = opt.posterior()

  for i, v in enumerate(variables):
    mu = initial[i].astype(np.float32).astype(np.float64)
    s = np.full_like(mu, (INIT - PRIOR) / N)
    for t in range(steps):
      theta = mu + opt.noise(i, t, v).numpy() / np.sqrt(N * s + PRIOR)  # σ = 1/sqrt(N(s + λ̃))
      np.testing.assert_allclose(thetas[t][i], theta, rtol=1e-5, atol=1e-6)
      g = theta - 0.3 + 0.5 * np.sin(3.0 * theta)
      s = RHO * s + (1 - RHO) * g * g
      mu = mu - LR * (g + PRIOR / N * mu) / (np.sqrt(s) + PRIOR / N)
    np.testing.assert_allclose(q.loc[i].numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.scale[i].numpy(), 1 / np.sqrt(N * s + PRIOR), rtol=1e-5,
                               atol=1e-6)


def test_bayesian_linear_regression_batch_size_one():
  """μ → the exact posterior mean; σ² → the mean-field variances 1/diag(XᵀX/σ² + λ)."""
  lr = 0.003  # no momentum averaging: a smaller step keeps μ's fluctuations as small as Vadam's
  opt = tfp_ext.optimizers.Vprop(learning_rate=lr, rho=0.999,
                                 prior_precision=blr.PRIOR_PRECISION,
                                 num_examples=blr.NUM_EXAMPLES, seed=0)
  blr.check_recovers_posterior(opt, lr, beta_1=0.0, beta_2=0.999)
