"""The Hamiltonian ELBO (Caterini et al., 2018, eq. 12): an unbiased, reparameterized estimator."""

import collections
from typing import Callable

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_ext.bijectors.tempered_hamiltonian_flow import TemperedHamiltonianFlow
from tfp_ext.internal import flow_elbo
from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int

__all__ = ["hamiltonian_elbo", "HamiltonianELBOResult"]


class HamiltonianELBOResult(
    tfp.mcmc.internal.util.PrettyNamedTupleMixin,
    collections.namedtuple("HamiltonianELBOResult", [
        "elbo", "elbo_samples", "variance", "standard_error", "log_weights",
        "initial_state", "final_state"])):
  """What `hamiltonian_elbo` returns.

  Fields:
    elbo: the estimate, the mean of `elbo_samples` over samples; shape = the batch shape.
    elbo_samples: `[num_samples, *batch]` i.i.d. unbiased single-sample estimates (momentum
      and, when analytic, the q_0 entropy term Rao-Blackwellized).
    variance: the sample variance of `elbo_samples` (n - 1 denominator), `[*batch]`.
    standard_error: `sqrt(variance / num_samples)`, the Monte Carlo error of `elbo`.
    log_weights: `[num_samples, *batch]` importance log-weights
      `log p(x, z_K) N(rho_K | 0, I) - log q_K(z_K, rho_K)` without Rao-Blackwellization;
      `logsumexp(log_weights, 0) - log(num_samples)` is a stochastic lower bound on `log p(x)`
      (importance-sampled log-likelihood) and `mean(log_weights, 0)` is also unbiased for the ELBO.
    initial_state: `(z_0, rho_0)`, each `[num_samples, *batch, l]`.
    final_state: `(z_K, rho_K)`, each `[num_samples, *batch, l]`.
  """
  __slots__ = ()


def hamiltonian_elbo(target_log_prob_fn: Callable[[tf.Tensor], tf.Tensor],
                     initial_distribution: tfp.distributions.Distribution,
                     flow: TemperedHamiltonianFlow,
                     num_samples: int,
                     seed,
                     analytic_entropy: bool = True,
                     name: str = "hamiltonian_elbo") -> HamiltonianELBOResult:
  """Unbiased, reparameterized estimate of the HVAE evidence lower bound.

  Samples `z_0 ~ q_0` (`initial_distribution`, reparameterized), `gamma_0 ~ N(0, I_l)`,
  `rho_0 = gamma_0 / sqrt(beta_0)`, pushes `(z_0, rho_0)` through the tempered Hamiltonian
  `flow` to `(z_K, rho_K)` and scores it against the extended target `p(x, z) N(rho | 0, I)`.
  Because `log |det J| = (l / 2) log beta_0` cancels the `beta_0` in the density of `rho_0`,

  ```none
  log p(x, z_K) + log N(rho_K | 0, I) - log q_0(z_0) - log N(rho_0 | 0, I / beta_0)
      + (l / 2) log beta_0
    = log p(x, z_K) - rho_K^T rho_K / 2 - log q_0(z_0) + gamma_0^T gamma_0 / 2,
  ```

  whose expectation is the ELBO. Replacing `gamma_0^T gamma_0 / 2` by its mean `l / 2` and
  `-log q_0(z_0)` by the entropy `H[q_0]` (Rao-Blackwellization; eq. 12 of the paper) keeps
  the estimator unbiased for the value and for its reparameterization gradient:

  ```none
  ELBO_hat = log p(x, z_K) - rho_K^T rho_K / 2 + H[q_0] + l / 2.
  ```

  Args:
    target_log_prob_fn: `log p(x, z)`, positions `[..., l]` -> `[...]` (the same function the
      flow integrates; it may close over a batch of data).
    initial_distribution: q_0(z), event shape `[l]`, reparameterized (e.g. the encoder's
      `tfd.MultivariateNormalDiag`); its batch shape is the data batch shape.
    flow: a `tfp_ext.bijectors.TemperedHamiltonianFlow` whose target is `target_log_prob_fn`.
    num_samples: Python int >= 1 (>= 2 for `variance` to be defined), samples per estimate.
    seed: a stateless seed (int or `[2]` tensor); the same seed gives the same estimate.
    analytic_entropy: use `initial_distribution.entropy()` for the `-log q_0(z_0)` term
      (lower variance); `False` uses the sampled `-log q_0(z_0)`.
    name: name scope of the ops.

  Returns:
    A `HamiltonianELBOResult`.

  Raises:
    TypeError: if `flow` is not a `TemperedHamiltonianFlow`.
    ValueError: on a non-positive `num_samples`, a q_0 that is not reparameterized or does
      not have vector events, or a q_0 event size the flow cannot take.
  """
  if not isinstance(flow, TemperedHamiltonianFlow):
    raise TypeError(f"`flow` must be a TemperedHamiltonianFlow, got {type(flow).__name__}.")
  num_samples = check_int("num_samples", num_samples)
  l = flow_elbo.check_initial_distribution(initial_distribution)
  with tf.name_scope(name):
    z_seed, rho_seed = tfp.random.split_seed(seeds.sanitize(seed), n=2)
    z0 = initial_distribution.sample(num_samples, seed=z_seed)
    dtype = z0.dtype
    gamma0 = tf.random.stateless_normal(tf.shape(z0), seed=rho_seed, dtype=dtype,
                                        alg=seeds.RNG_ALG)
    beta0 = tf.cast(flow.initial_inverse_temperature(), dtype)
    rho0 = gamma0 * tf.math.rsqrt(beta0)
    # A fresh tensor each call: the bijector's cache must never hand back another call's result.
    y = flow.forward(tf.concat([z0, rho0], axis=-1))
    zk, rhok = tf.split(y, 2, axis=-1)
    log_target = target_log_prob_fn(zk)
    half_rho_sq = 0.5 * tf.reduce_sum(tf.square(rhok), axis=-1)
    log_q0 = initial_distribution.log_prob(z0)
    if analytic_entropy:
      neg_log_q0_term = initial_distribution.entropy()
    else:
      neg_log_q0_term = -log_q0
    elbo_samples = log_target - half_rho_sq + neg_log_q0_term + 0.5 * l
    elbo_samples = tf.broadcast_to(elbo_samples, tf.shape(log_target))
    # Non-Rao-Blackwellized weights; the l/2 log(2 pi) of N(rho_K) and of N(gamma_0) cancel.
    log_weights = (log_target - half_rho_sq - log_q0
                   + 0.5 * tf.reduce_sum(tf.square(gamma0), axis=-1))
    elbo, variance, standard_error = flow_elbo.summarize(elbo_samples, num_samples)
    return HamiltonianELBOResult(
        elbo=elbo, elbo_samples=elbo_samples, variance=variance,
        standard_error=standard_error, log_weights=log_weights,
        initial_state=(z0, rho0), final_state=(zk, rhok))
