"""Exact answers for stochastic-gradient MCMC on Bayesian linear regression.

Model: w ~ N(0, P0⁻¹ I), y_i | x_i, w ~ N(x_iᵀ w, σ²). The posterior is N(μ, Σ) with
Σ⁻¹ = P0 I + Σ_i x_i x_iᵀ / σ², μ = Σ Σ_i x_i y_i / σ².

Every SGLD / SGLD-CV / SGHMC step on this model is a random affine map of the state z,

  z' = A_B z + b_B + ξ,  ξ ~ N(0, Q),  A_B = A0 + (N/n) Σ_{i∈B} A_i,  b_B = b0 + (N/n) Σ_{i∈B} b_i,

with B a uniformly random n-subset (sampling without replacement, as the kernels do), independent
of z. So the chain's stationary law has an exact mean m = (I − E A)⁻¹ E b and covariance C solving
the linear equation vec C = E[A_B ⊗ A_B] vec C + vec E[e_B e_Bᵀ] + vec Q with e_B = A_B m + b_B − m
(the cross terms vanish because z − m is independent of B and has mean zero). The second moments
of B-sums use the inclusion probabilities π1 = n/N (one index) and π2 = n(n−1)/(N(N−1)) (a pair).
This gives the discretized chain's exact stationary law, including the O(h) discretization bias
and the minibatch-noise bias, to compare long runs against.
"""

import numpy as np
import tensorflow as tf


class LinearRegression:
  """A Bayesian linear regression with its exact posterior, in float64."""

  def __init__(self, num_examples, dim=2, noise_stddev=0.5, prior_precision=1., seed=0):
    rng = np.random.default_rng(seed)
    self.n_total = num_examples
    self.dim = dim
    self.x = rng.normal(size=(num_examples, dim))
    w_true = np.linspace(1., -0.5, dim)
    self.y = self.x @ w_true + noise_stddev * rng.normal(size=num_examples)
    self.sigma2 = noise_stddev ** 2
    self.p0 = prior_precision
    # Per-example gradient of log p(y_i | x_i, w) is c_i − H_i w.
    self.h_i = np.einsum("ni,nj->nij", self.x, self.x) / self.sigma2
    self.c_i = self.x * self.y[:, None] / self.sigma2
    self.precision = self.p0 * np.eye(dim) + self.h_i.sum(0)
    self.cov = np.linalg.inv(self.precision)
    self.mean = self.cov @ self.c_i.sum(0)
    self.data = (tf.constant(self.x), tf.constant(self.y))

  def log_prior_fn(self, w):
    return -0.5 * self.p0 * tf.reduce_sum(tf.square(w), axis=-1)

  def log_likelihood_fn(self, w, batch):
    x, y = batch
    return -0.5 * tf.square(y - tf.linalg.matvec(x, w)) / self.sigma2

  def full_gradient(self, w):
    return -self.p0 * w + self.c_i.sum(0) - self.h_i.sum(0) @ w

  # Random affine maps of each kernel: (A0, A_i [N, k, k], b0, b_i [N, k], Q).
  def sgld_map(self, h, theta_hat=None):
    d, eye = self.dim, np.eye(self.dim)
    a0 = eye - h * self.p0 * eye
    a_i = -h * self.h_i
    if theta_hat is None:
      b0, b_i = np.zeros(d), h * self.c_i
    else:  # The c_i cancel in the control-variate difference; θ̂ enters through G(θ̂).
      b0 = h * (self.full_gradient(theta_hat) + self.p0 * theta_hat)
      b_i = h * self.h_i @ theta_hat
    return a0, a_i, b0, b_i, 2. * h * eye

  def sghmc_map(self, h, friction, mass=1., noise_estimate=0.):
    # r' = r + h(c_B − Â_B θ) − (hC/m) r + ξ,  θ' = θ + (h/m) r'  (momentum first).
    d, eye = self.dim, np.eye(self.dim)
    k = h / mass
    decay = 1. - h * friction / mass
    a0 = np.block([[eye - h * k * self.p0 * eye, k * decay * eye],
                   [-h * self.p0 * eye, decay * eye]])
    a_i = np.zeros((self.n_total, 2 * d, 2 * d))
    a_i[:, :d, :d] = -h * k * self.h_i
    a_i[:, d:, :d] = -h * self.h_i
    b_i = np.concatenate([h * k * self.c_i, h * self.c_i], axis=1)
    s2 = 2. * (friction - noise_estimate) * h  # ξ enters r' directly and θ' scaled by h/m
    q = s2 * np.block([[k * k * eye, k * eye], [k * eye, eye]])
    return a0, a_i, np.zeros(2 * d), b_i, q


def _expected_kron(x0, x_i, y0, y_i, n, n_total):
  """E[X_B ⊗ Y_B] for X_B = X0 + (N/n) Σ_{i∈B} X_i (same for Y), B an n-subset w/o replacement."""
  s = n_total / n
  pi1 = n / n_total
  pi2 = n * (n - 1) / (n_total * (n_total - 1)) if n_total > 1 else 0.
  sx, sy = x_i.sum(0), y_i.sum(0)
  # Σ_i X_i ⊗ Y_i, vectorized: (X ⊗ Y)[(i k), (j l)] = X[i, j] Y[k, l].
  r, c = x0.shape[0] * y0.shape[0], x0.shape[1] * y0.shape[1]
  diag = np.einsum("nij,nkl->ikjl", x_i, y_i).reshape(r, c)
  return (np.kron(x0, y0) + np.kron(x0, sy) + np.kron(sx, y0)
          + s * s * (pi1 * diag + pi2 * (np.kron(sx, sy) - diag)))


def stationary_moments(affine_map, batch_size, n_total):
  """Exact stationary mean and covariance of z' = A_B z + b_B + ξ (see the module docstring)."""
  a0, a_i, b0, b_i, q = affine_map
  k = a0.shape[0]
  mean_a = a0 + a_i.sum(0)
  mean_b = b0 + b_i.sum(0)
  m = np.linalg.solve(np.eye(k) - mean_a, mean_b)
  e0 = a0 @ m + b0 - m
  e_i = a_i @ m + b_i
  kaa = _expected_kron(a0, a_i, a0, a_i, batch_size, n_total)
  kee = _expected_kron(e0[:, None], e_i[:, :, None], e0[:, None], e_i[:, :, None], batch_size,
                       n_total).reshape(k, k)
  vec_c = np.linalg.solve(np.eye(k * k) - kaa, (kee + q).reshape(-1))
  c = vec_c.reshape(k, k)
  return m, 0.5 * (c + c.T)


def batch_means_se(samples, num_batches=40):
  """Monte Carlo standard error of the mean of each column, from `num_batches` batch means."""
  samples = np.asarray(samples)
  t = samples.shape[0] // num_batches * num_batches
  means = samples[:t].reshape(num_batches, -1, *samples.shape[1:]).mean(1)
  return means.std(0, ddof=1) / np.sqrt(num_batches)


def batch_means_z(samples, reference, num_batches=40):
  """|mean(f) − E f| / SE for each column of f, SE from `num_batches` batch means.

  With batches much longer than the autocorrelation time the batch means are ~ iid normal, so
  the ratio is Student-t with `num_batches − 1` degrees of freedom.
  """
  samples = np.asarray(samples)
  t = samples.shape[0] // num_batches * num_batches
  means = samples[:t].reshape(num_batches, -1, *samples.shape[1:]).mean(1)
  se = means.std(0, ddof=1) / np.sqrt(num_batches)
  return np.abs(means.mean(0) - reference) / se


def moment_features(theta, mean):
  """Per-sample statistics whose expectations are the mean and the covariance entries."""
  theta = np.asarray(theta)
  d = theta.shape[-1]
  c = theta - mean
  iu = np.triu_indices(d)
  return np.concatenate([theta, (c[:, :, None] * c[:, None, :])[:, iu[0], iu[1]]], axis=1)


def moment_targets(mean, cov):
  """The expectations of `moment_features` under N(mean, cov) centred at `mean`."""
  iu = np.triu_indices(len(mean))
  return np.concatenate([mean, cov[iu]])
