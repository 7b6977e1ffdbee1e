"""The Langevin ELBO (Wang & Delingette, 2021): an unbiased, reparameterized estimator."""

import collections
from typing import Callable

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_ext.bijectors.langevin_flow import LangevinFlow
from tfp_ext.internal import flow_elbo
from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int

__all__ = ["langevin_elbo", "LangevinELBOResult"]


class LangevinELBOResult(
    tfp.mcmc.internal.util.PrettyNamedTupleMixin,
    collections.namedtuple("LangevinELBOResult", [
        "elbo", "elbo_samples", "variance", "standard_error", "log_weights",
        "initial_state", "final_state", "noise"])):
  """What `langevin_elbo` returns (the fields of `HamiltonianELBOResult`, plus `noise`).

  Fields:
    elbo: the estimate, the mean of `elbo_samples` over samples; shape = the batch shape.
    elbo_samples: `[num_samples, *batch]` i.i.d. unbiased single-sample estimates (the initial
      momentum and, when analytic, the q_0 entropy term Rao-Blackwellized).
    variance: the sample variance of `elbo_samples` (n - 1 denominator), `[*batch]`.
    standard_error: `sqrt(variance / num_samples)`, the Monte Carlo error of `elbo`.
    log_weights: `[num_samples, *batch]` importance log-weights of the extended state (see
      `langevin_elbo`) without Rao-Blackwellization; `logsumexp(log_weights, 0) -
      log(num_samples)` is a stochastic lower bound on `log p(x)`.
    initial_state: `(z_0, rho_0)`, each `[num_samples, *batch, l]`.
    final_state: `(z_K, rho_K)`, each `[num_samples, *batch, l]`.
    noise: the injected standard normals xi, `[K, num_samples, *batch, l]`, or `None` for the
      deterministic flow.
  """
  __slots__ = ()


def langevin_elbo(target_log_prob_fn: Callable[[tf.Tensor], tf.Tensor],
                  initial_distribution: tfp.distributions.Distribution,
                  flow: LangevinFlow,
                  num_samples: int,
                  seed,
                  stochastic: bool = True,
                  analytic_entropy: bool = True,
                  name: str = "langevin_elbo") -> LangevinELBOResult:
  """Unbiased, reparameterized estimate of the Langevin VAE evidence lower bound.

  Samples `z_0 ~ q_0` (`initial_distribution`, reparameterized), `rho_0 ~ N(0, M)` and, for the
  stochastic flow, the noise `xi_1..K ~ N(0, I_l)`; pushes `(z_0, rho_0)` through the Langevin
  `flow` with that noise to `(z_K, rho_K)`. For fixed noise the flow is a bijection with
  `log |det J| = -K sum_j h_j gamma_j` (`LangevinFlow`), so the extended state
  `(z_K, rho_K, xi)` has the density `q_0(z_0) N(rho_0 | 0, M) N(xi | 0, I) exp(K sum h gamma)`
  (the contraction concentrates the density).
  It is scored against the extended target `p(x, z_K) N(rho_K | 0, M) r(xi)`, which integrates
  to `p(x)` for any density `r` of the noise; with `r = N(0, I)`, the law the noise was drawn
  from, the noise terms `log r(xi) - log N(xi | 0, I)` cancel exactly and

  ```none
  log w = log p(x, z_K) + log N(rho_K | 0, M) - log q_0(z_0) - log N(rho_0 | 0, M)
          - K sum_j h_j gamma_j,
  ```

  whose expectation is a lower bound on `log p(x)` (Jensen); without noise the extended state
  is just `(z_K, rho_K)` and the same formula holds. The friction's volume contraction enters
  as the `- K sum h gamma` term, the log-det of the flow, as the tempering's does in the HVAE
  (Caterini et al., 2018, eq. 12). Replacing `-log N(rho_0 | 0, M)` by its mean and `-log q_0(z_0)` by the entropy
  `H[q_0]` (Rao-Blackwellization) keeps the estimator unbiased for the value and for its
  reparameterization gradient:

  ```none
  ELBO_hat = log p(x, z_K) - rho_K^T M^-1 rho_K / 2 + H[q_0] + l / 2 - K sum_j h_j gamma_j.
  ```

  Every random input (z_0, rho_0, xi) is a reparameterized draw from a stateless seed, so
  gradients reach q_0's parameters, the step size and the friction.

  Args:
    target_log_prob_fn: `log p(x, z)`, positions `[..., l]` -> `[...]` (the same function the
      flow integrates; it may close over a batch of data).
    initial_distribution: q_0(z), event shape `[l]`, reparameterized (e.g. the encoder's
      `tfd.MultivariateNormalDiag`); its batch shape is the data batch shape.
    flow: a `tfp_ext.bijectors.LangevinFlow` whose target is `target_log_prob_fn`.
    num_samples: Python int >= 1 (>= 2 for `variance` to be defined), samples per estimate.
    seed: a stateless seed (int or `[2]` tensor); the same seed gives the same estimate.
    stochastic: inject the Langevin noise (the paper's flow); `False` uses the deterministic
      flow.
    analytic_entropy: use `initial_distribution.entropy()` for the `-log q_0(z_0)` term
      (lower variance); `False` uses the sampled `-log q_0(z_0)`.
    name: name scope of the ops.

  Returns:
    A `LangevinELBOResult`.

  Raises:
    TypeError: if `flow` is not a `LangevinFlow`.
    ValueError: on a non-positive `num_samples`, a q_0 that is not reparameterized or does
      not have vector events, or a q_0 event size the flow cannot take.

  #### References

  [1]: Zihao Wang and Herve Delingette. Quasi-symplectic Langevin Variational Autoencoder.
       _arXiv preprint_, 2020 (revised 2021). https://arxiv.org/abs/2009.01675

  [2]: Anthony L. Caterini, Arnaud Doucet, and Dino Sejdinovic. Hamiltonian Variational
       Auto-Encoder. In _Neural Information Processing Systems_, 2018.
       https://arxiv.org/abs/1805.11328
  """
  if not isinstance(flow, LangevinFlow):
    raise TypeError(f"`flow` must be a LangevinFlow, got {type(flow).__name__}.")
  num_samples = check_int("num_samples", num_samples)
  l = flow_elbo.check_initial_distribution(initial_distribution)
  with tf.name_scope(name):
    z_seed, rho_seed, noise_seed = tfp.random.split_seed(seeds.sanitize(seed), n=3)
    z0 = initial_distribution.sample(num_samples, seed=z_seed)
    dtype = z0.dtype
    mass = tf.broadcast_to(tf.cast(flow.mass, dtype), [l])
    gamma0 = tf.random.stateless_normal(tf.shape(z0), seed=rho_seed, dtype=dtype,
                                        alg=seeds.RNG_ALG)
    rho0 = gamma0 * tf.sqrt(mass)
    noise = None
    if stochastic:
      noise = tf.random.stateless_normal(
          tf.concat([[flow.num_steps], tf.shape(z0)], 0), seed=noise_seed, dtype=dtype,
          alg=seeds.RNG_ALG)
    # A fresh tensor each call: the bijector's cache must never hand back another call's result.
    x0 = tf.concat([z0, rho0], axis=-1)
    y = flow.forward(x0, noise=noise)
    zk, rhok = tf.split(y, 2, axis=-1)
    # log q_K(z_K, rho_K | xi) = log q_0(z_0) + log N(rho_0 | 0, M) - log|det J|.
    log_det = tf.cast(flow.num_steps * flow.log_det_jacobian_per_step(l), dtype)
    log_target = target_log_prob_fn(zk)
    half_rho_sq = 0.5 * tf.reduce_sum(tf.square(rhok) / mass, axis=-1)
    log_q0 = initial_distribution.log_prob(z0)
    if analytic_entropy:
      neg_log_q0_term = initial_distribution.entropy()
    else:
      neg_log_q0_term = -log_q0
    elbo_samples = log_target - half_rho_sq + neg_log_q0_term + 0.5 * l + log_det
    elbo_samples = tf.broadcast_to(elbo_samples, tf.shape(log_target))
    # Not Rao-Blackwellized; the normalizers of N(rho_K | 0, M) and N(rho_0 | 0, M) cancel.
    log_weights = (log_target - half_rho_sq - log_q0
                   + 0.5 * tf.reduce_sum(tf.square(gamma0), axis=-1) + log_det)
    elbo, variance, standard_error = flow_elbo.summarize(elbo_samples, num_samples)
    return LangevinELBOResult(
        elbo=elbo, elbo_samples=elbo_samples, variance=variance,
        standard_error=standard_error, log_weights=log_weights,
        initial_state=(z0, rho0), final_state=(zk, rhok), noise=noise)
