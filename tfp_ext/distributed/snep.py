"""Stochastic natural-gradient EP (SNEP): one site's local iterations, and tilted-moment estimators.

SNEP (Hasenclever et al., JMLR 2017) approximates p(θ | D) ∝ p₀(θ) Π_k p(D_k | θ) by
q(θ) ∝ p₀(θ) Π_k f_k(θ), one Gaussian site f_k per data shard, in natural parameters
η_q = η₀ + Σ_k η_k (`gaussian_family`). Worker k holds site k; its conditional prior is
η₀ + Σ_{j≠k} η_j (what the posterior server sends back), so its posterior is
η_post = η_cond + η_k. One local iteration, in the order of the authors' worker loop
(BigBayes/PosteriorServer, `src/Worker.jl`, `run` with `algep = :snep`):

```none
η_post   = η_cond + η_k
η_damp   ← η_post                      every `iters_per_damp` iterations (the damping copy)
η_cavity = η_damp − η_k / β            (power β)
μ̂_tilted = E[s(θ)] under  q_tilted(θ) ∝ exp(η_cavityᵀ s(θ)) · p(D_k | θ)^{1/β}
μ_k      ← project(μ_k + ε (μ̂_tilted − μ(η_post)))        μ_k = mean parameters of the site
η_k      = η(μ_k)
```

The site moves in mean-parameter space along (tilted moments − posterior moments), which is a
stochastic natural-gradient step on the paper's convergent (damped, power-β) EP objective; at a
fixed point the tilted and posterior moments agree, which is EP's moment matching. The
projection keeps every site a proper Gaussian (means and variances clipped to limits). The
paper's full text was not available when this was written, so equation numbers are not cited;
the order of operations and the parameterization are the reference implementation's.

A tilted-moment estimator is any callable `(family, cavity, data, state, seed) -> (Mean, state)`:
`ConjugateGaussianTilted` computes them exactly for a linear-Gaussian likelihood (tests, where the
fixed point is the exact posterior), `KernelTilted` estimates them from an SG-MCMC chain of
`tfp_ext.mcmc` run on the tilted distribution (any kernel: SNEP never knows which).
"""

from typing import Any, Callable, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_ext.distributed.gaussian_family import GaussianFamily
from tfp_ext.distributed.gaussian_family import Mean
from tfp_ext.distributed.gaussian_family import Natural
from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int

__all__ = ["SiteState", "snep_iterations", "ConjugateGaussianTilted", "KernelTilted"]


class SiteState(NamedTuple):
  """What worker k keeps between synchronizations."""
  site: Natural        # η_k
  damper: Natural      # η_damp
  chain: tf.Tensor     # the tilted sampler's state θ, [d]
  iteration: tf.Tensor  # local iterations done (float64, for the damping schedule)


def _add(a, b, scale=1.):
  return type(a)(a[0] + scale * b[0], a[1] + scale * b[1])


def snep_iterations(family: GaussianFamily, state: SiteState, cond_prior: Natural, data,
                    tilted: Callable, num_iterations: int, learning_rate: float, beta: float,
                    iters_per_damp: int, mean_limits, variance_limits, seed) -> SiteState:
  """`num_iterations` SNEP iterations of one site against a fixed conditional prior."""
  num_iterations = check_int("num_iterations", num_iterations)
  lr = tf.constant(learning_rate, tf.float64)

  def body(i, site, damper, chain, iteration):
    posterior = _add(cond_prior, site)
    refresh = tf.equal(tf.math.floormod(iteration, float(iters_per_damp)), 0.)
    damper = Natural(tf.where(refresh, posterior.shift, damper.shift),
                     tf.where(refresh, posterior.neg_precision, damper.neg_precision))
    cavity = _add(damper, site, -1. / beta)
    stats, chain = tilted(family, cavity, data, chain, seeds.fold_in(seed, i))
    post_mean = family.to_mean(posterior)
    site_mean = family.to_mean(site)
    step = Mean(site_mean.first + lr * (stats.first - post_mean.first),
                site_mean.half_second + lr * (stats.half_second - post_mean.half_second))
    site = family.to_natural(family.project(step, mean_limits, variance_limits))
    return i + 1, site, damper, chain, iteration + 1.

  _, site, damper, chain, iteration = tf.while_loop(
      lambda i, *_: i < num_iterations, body, (tf.constant(0), *state))
  return SiteState(site, damper, chain, iteration)


class ConjugateGaussianTilted:
  """Exact tilted moments for y = Xθ + noise, noise ~ N(0, σ²): the tilted is Gaussian.

  q_tilted ∝ exp(η_cavityᵀ s(θ)) · N(y | Xθ, σ²I)^{1/β} has η = η_cavity + (Xᵀy, −XᵀX)/(σ²β)
  (the diagonal family's cavity is a diagonal Gaussian; the tilted is then a full one, whose
  diagonal moments are returned). `data` is the shard `(x [n, d], y [n])`.
  """

  def __init__(self, noise_variance: float, beta: float = 1.0):
    self.noise_variance = float(noise_variance)
    self.beta = float(beta)

  def __call__(self, family, cavity, data, state, seed):
    del seed
    x, y = (tf.cast(t, tf.float64) for t in data)
    scale = 1. / (self.noise_variance * self.beta)
    neg_precision = cavity.neg_precision if family.full else tf.linalg.diag(
        cavity.neg_precision)
    full = GaussianFamily(family.dim, "full")
    tilted = Natural(cavity.shift + scale * tf.linalg.matvec(x, tf.reshape(y, [-1]),
                                                             transpose_a=True),
                     neg_precision - scale * tf.matmul(x, x, transpose_a=True))
    mu = full.to_mean(tilted)
    if not family.full:
      mu = Mean(mu.first, tf.linalg.diag_part(mu.half_second))
    return mu, state


class KernelTilted:
  """Tilted moments from an SG-MCMC chain of `tfp_ext.mcmc` run on the tilted distribution.

  `make_kernel(log_prior_fn, log_likelihood_fn, data)` returns the kernel, for instance
  `lambda lp, ll, d: tfp_ext.mcmc.StochasticGradientLangevinDynamics(lp, ll, d, batch_size=32,
  step_size=1e-3)`; SNEP passes the cavity's log-density as the prior and the shard's
  per-example log-likelihood over β. Each call continues the chain from `state` (kept in
  float64 by the server) in `dtype` for `num_burnin_steps + num_results` steps and returns the
  mean sufficient statistics of the last `num_results` states.
  """

  def __init__(self, make_kernel: Callable, log_likelihood_fn: Callable[[tf.Tensor, Any],
                                                                         tf.Tensor],
               num_results: int = 20, num_burnin_steps: int = 0, beta: float = 1.0,
               dtype=tf.float32):
    self.make_kernel = make_kernel
    self.log_likelihood_fn = log_likelihood_fn
    self.num_results = check_int("num_results", num_results)
    self.num_burnin_steps = check_int("num_burnin_steps", num_burnin_steps, minimum=0)
    self.beta = float(beta)
    self.dtype = tf.as_dtype(dtype)

  def __call__(self, family, cavity, data, state, seed):
    dtype = self.dtype

    def log_prior_fn(theta):  # exp(ηᵀ s(θ)), unnormalized: only its gradient matters.
      theta64 = tf.cast(theta, tf.float64)
      quad = (tf.reduce_sum(theta64 * tf.linalg.matvec(cavity.neg_precision, theta64))
              if family.full else tf.reduce_sum(cavity.neg_precision * theta64 * theta64))
      return tf.cast(tf.reduce_sum(cavity.shift * theta64) + 0.5 * quad, dtype)

    def log_likelihood_fn(theta, batch):
      return self.log_likelihood_fn(theta, batch) / tf.cast(self.beta, dtype)

    kernel = self.make_kernel(log_prior_fn, log_likelihood_fn, data)
    # Folded-in seeds come as int64; TFP's samplers take int32 (the cast keeps the low bits).
    samples = tfp.mcmc.sample_chain(self.num_results, tf.cast(state, dtype), kernel=kernel,
                                    num_burnin_steps=self.num_burnin_steps,
                                    trace_fn=None, seed=tf.cast(seed, tf.int32))
    return family.statistics(samples), tf.cast(samples[-1], state.dtype)
