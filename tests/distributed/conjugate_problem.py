"""Bayesian linear regression split over K shards: the exact posterior SNEP must reach.

With a linear-Gaussian likelihood the tilted distributions are Gaussian, so with their exact
moments (`ConjugateGaussianTilted`) and β = 1 every fixed point of SNEP has each site equal to
its shard's likelihood factor, and the global approximation equals the exact posterior
N(m, C), C = (λI + XᵀX/σ²)⁻¹, m = C Xᵀy/σ², for any number of shards and any order of updates.
"""

import numpy as np

from tfp_ext.distributed import ConjugateGaussianTilted
from tfp_ext.distributed import PosteriorServer

D, N, NOISE, PRIOR = 3, 60, 4.0, 1.0
# A site moves in mean-parameter space, where its slowest direction contracts by about
# 1 − ε·(posterior variance / site variance)² an iteration: slower for more sites. ε = 0.5 from
# sites of precision 5 reaches float64 rounding within 16 rounds of 500 iterations for K = 2, 3.
# XLA compiles a round in seconds, more than short runs take without it: tests that check the
# compiled path ask for it.
SETTINGS = dict(covariance="full", learning_rate=0.5, iters_per_sync=500, iters_per_damp=1,
                initial_site_precision=5.0, jit_compile=False)


def problem(k):
  """K shards of (x, y), and the exact posterior's mean and covariance."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D))
  y = x @ rng.normal(size=D) + np.sqrt(NOISE) * rng.normal(size=N)
  cov = np.linalg.inv(PRIOR * np.eye(D) + x.T @ x / NOISE)
  return [(x[i::k], y[i::k]) for i in range(k)], cov @ (x.T @ y / NOISE), cov


def server(shards, tilted=None, **kwargs):
  """The conjugate problem's server: exact tilted moments unless `tilted` is given."""
  return PosteriorServer(D, prior=PRIOR, shards=shards,
                         tilted=tilted or ConjugateGaussianTilted(NOISE), **{**SETTINGS, **kwargs})
