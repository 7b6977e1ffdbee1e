"""Vadam: the paper's update equations, exact Bayesian linear regression, predictive uncertainty."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext
from tests.optimizers import bayesian_linear_regression as blr

LR, BETA_1, BETA_2, PRIOR, N, INIT = 0.05, 0.8, 0.9, 2.0, 10, 5.0


def _gradient(theta):
  """An arbitrary nonlinear gradient field, evaluated at the sample the variables hold."""
  return [t - 0.3 + 0.5 * tf.sin(3.0 * t) for t in theta]


def _run(opt, variables, steps, jit):
  apply = lambda: opt.apply_gradients(zip(_gradient(variables), variables))
  apply = tf.function(apply, jit_compile=True) if jit else apply
  thetas = []
  for _ in range(steps):
    thetas.append([v.numpy().astype(np.float64) for v in variables])
    apply()
  q = opt.posterior()
  return thetas, [l.numpy() for l in q.loc], [s.numpy() for s in q.scale]


def _new_variables():
  return [tf.Variable(tf.reshape(tf.range(6, dtype=tf.float32) / 5.0 - 0.4, [3, 2])),
          tf.Variable(tf.constant([0.7, -1.1]))]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_update_matches_paper_equations(jit):
  """Khan et al. (2018), Fig. 1, step by step in float64 NumPy with the same ε."""
  variables = _new_variables()
  opt = tfp_ext.optimizers.Vadam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2,
                                 prior_precision=PRIOR, num_examples=N, init_precision=INIT,
                                 seed=11)
  opt.build(variables)
  opt.assign_sample(variables)
  steps = 4
  thetas, loc, scale = _run(opt, variables, steps, jit)

  for i, v in enumerate(variables):
    mu = _new_variables()[i].numpy().astype(np.float64)
    m = np.zeros_like(mu)
    s = np.full_like(mu, (INIT - PRIOR) / N)  # N·s₀ + λ = init_precision
    for t in range(steps):
      sigma = 1 / np.sqrt(N * s + PRIOR)
      eps = opt.noise(i, t, v).numpy()
      theta = mu + sigma * eps
      # The variables held exactly this sample when the gradient was taken (float32 rounding).
      np.testing.assert_allclose(thetas[t][i], theta, rtol=1e-5, atol=1e-6)
      g = theta - 0.3 + 0.5 * np.sin(3.0 * theta)
      m = BETA_1 * m + (1 - BETA_1) * (g + PRIOR / N * mu)
      s = BETA_2 * s + (1 - BETA_2) * g * g
      m_hat, s_hat = m / (1 - BETA_1**(t + 1)), s / (1 - BETA_2**(t + 1))
      mu = mu - LR * m_hat / (np.sqrt(s_hat) + PRIOR / N)
    np.testing.assert_allclose(loc[i], mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale[i], 1 / np.sqrt(N * s + PRIOR), rtol=1e-5, atol=1e-6)
    # After the last step the variables hold the next sample.
    np.testing.assert_allclose(
        variables[i].numpy(), mu + 1 / np.sqrt(N * s + PRIOR) * opt.noise(i, steps, v).numpy(),
        rtol=1e-5, atol=1e-6)


def test_noise_is_standard_normal_and_fresh():
  opt = tfp_ext.optimizers.Vadam(num_examples=N, seed=5)
  v = tf.Variable(tf.zeros([100_000]))
  eps = opt.noise(0, 3, v).numpy().astype(np.float64)
  n = eps.size
  # Monte Carlo standard errors: mean 1/sqrt(n), variance sqrt(2/n); 5 of them.
  assert abs(eps.mean()) < 5 / np.sqrt(n)
  assert abs(eps.var() - 1) < 5 * np.sqrt(2 / n)
  np.testing.assert_array_equal(eps, opt.noise(0, 3, v).numpy())  # a pure function
  for other in (opt.noise(1, 3, v), opt.noise(0, 4, v),
                tfp_ext.optimizers.Vadam(num_examples=N, seed=6).noise(0, 3, v)):
    corr = np.corrcoef(eps, other.numpy())[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)  # independent streams: correlation SE 1/sqrt(n)


def test_bayesian_linear_regression_batch_size_one():
  """μ → the exact posterior mean; σ² → the mean-field variances 1/diag(XᵀX/σ² + λ)."""
  lr = 0.01
  opt = tfp_ext.optimizers.Vadam(learning_rate=lr, beta_1=0.9, beta_2=0.999,
                                 prior_precision=blr.PRIOR_PRECISION,
                                 num_examples=blr.NUM_EXAMPLES, seed=0)
  blr.check_recovers_posterior(opt, lr, beta_1=0.9, beta_2=0.999)


def test_predictive_stddev_grows_away_from_data():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(64, 1)).astype(np.float32)
  y = (np.sin(3 * x) + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
  init = lambda k: tf_keras.initializers.HeNormal(seed=k)
  model = tf_keras.Sequential([
      tf_keras.layers.Dense(32, activation="relu", kernel_initializer=init(1), input_shape=(1,)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2))])
  opt = tfp_ext.optimizers.Vadam(learning_rate=0.02, num_examples=len(x), prior_precision=1.0,
                                 init_precision=100.0, seed=0)
  noise = 0.1
  model.compile(optimizer=opt, steps_per_execution=4,
                loss=lambda t, f: 0.5 * tf.reduce_mean(tf.square(t - f), -1) / noise**2)
  model.fit(x, y, batch_size=16, epochs=30, verbose=0)
  near = np.linspace(-0.9, 0.9, 7, dtype=np.float32)[:, None]
  far = np.array([[-4.0], [-3.0], [3.0], [4.0]], np.float32)
  out = tfp_ext.posterior.predictive(model, opt.posterior(), np.concatenate([near, far]),
                                     num_samples=128, seed=0, task="regression")
  stddev = out["stddev"].numpy().reshape(-1)
  # With S = 128 samples a stddev estimate has relative standard error ≈ 1/sqrt(2S) ≈ 6%, so a
  # factor of 2 between the averages is far outside Monte Carlo error.
  assert stddev[len(near):].mean() > 2 * stddev[:len(near)].mean(), stddev
