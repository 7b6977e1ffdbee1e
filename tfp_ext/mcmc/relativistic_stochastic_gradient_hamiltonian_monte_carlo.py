"""Relativistic stochastic-gradient HMC: SGHMC whose velocity is bounded by a speed of light."""

import collections
from typing import Any, Callable, Optional

import tensorflow as tf
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_ext.internal import relativistic
from tfp_ext.internal import stochastic_gradients as sg
from tfp_ext.mcmc.stochastic_gradient_hamiltonian_monte_carlo import (
    StochasticGradientHamiltonianMonteCarlo)

__all__ = [
    "RelativisticStochasticGradientHamiltonianMonteCarlo",
    "RelativisticStochasticGradientHamiltonianMonteCarloKernelResults",
]


class RelativisticStochasticGradientHamiltonianMonteCarloKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        "RelativisticStochasticGradientHamiltonianMonteCarloKernelResults",
        ["target_log_prob", "grads_target_log_prob", "momentum", "step_size", "seed"])):
  """Results of one relativistic SGHMC step (fields as for SGHMC)."""
  __slots__ = ()


class RelativisticStochasticGradientHamiltonianMonteCarlo(StochasticGradientHamiltonianMonteCarlo):
  """Runs one step of relativistic SGHMC (Lu et al., 2017).

  SGHMC with the relativistic kinetic energy K(p) = m c² √(pᵀp / (m² c²) + 1), whose velocity

  ```none
  v(p) = ∇K(p) = p / (m √(pᵀp / (m² c²) + 1)),   ‖v‖ < c,
  ```

  replaces M⁻¹ r in both the position update and the friction term:

  ```none
  p' = p + h ∇̂log π(θ) − h D v(p) + N(0, 2 (D − B̂) h),
  θ' = θ + h v(p').
  ```

  This discretizes dθ = v(p) dt, dp = ∇log π(θ) dt − D v(p) dt + √(2D) dW, whose stationary
  law is π(θ) exp(−K(p)) / Z. Because every step moves θ by less than h·c, large stochastic
  gradients cannot throw the chain far away, which makes the sampler robust to step sizes that
  blow up SGHMC. `kinetic_energy_mode="joint"` bounds the speed of the whole state vector (one
  particle); `"independent"` bounds each coordinate, as in the authors' experiments. The kinetic
  energy and velocity are the ones of `tfp_ext.internal.relativistic`, shared with relativistic HMC.

  #### Examples

  ```python
  kernel = tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo(
      log_prior_fn, log_likelihood_fn, data=(x, y), batch_size=32, step_size=1e-3,
      friction=10., mass=1., max_speed=1.)
  ```

  #### References

  [1]: Xiaoyu Lu, Valerio Perrone, Leonard Hasenclever, Yee Whye Teh, Sebastian J. Vollmer.
       Relativistic Monte Carlo. AISTATS 2017.
  """

  def __init__(self,
               log_prior_fn: Callable[[Any], tf.Tensor],
               log_likelihood_fn: Callable[[Any, Any], tf.Tensor],
               data: Any,
               batch_size: int,
               step_size: Any,
               friction: float = 1.,
               mass: float = 1.,
               max_speed: float = 1.,
               kinetic_energy_mode: str = relativistic.INDEPENDENT,
               noise_estimate: float = 0.,
               control_variate_state: Optional[Any] = None,
               name: Optional[str] = None):
    """Initializes this transition kernel.

    Args:
      log_prior_fn: state -> log p(θ), a scalar (or the batch-of-chains shape).
      log_likelihood_fn: (state, batch) -> per-example log-likelihoods `[..., n]`.
      data: nested structure of tensors sharing the leading dimension N.
      batch_size: Python int n in [1, N].
      step_size: h > 0, a float or one per state part.
      friction: D > 0.
      mass: m > 0.
      max_speed: the speed of light c > 0.
      kinetic_energy_mode: "independent" (per coordinate) or "joint" (whole state).
      noise_estimate: B̂ with 0 ≤ B̂ ≤ D.
      control_variate_state: θ̂ for control-variate gradients, or None.
      name: name prefixed to the ops.
    """
    if kinetic_energy_mode not in (relativistic.JOINT, relativistic.INDEPENDENT):
      raise ValueError(f"`kinetic_energy_mode` must be {relativistic.JOINT!r} or "
                       f"{relativistic.INDEPENDENT!r}, got {kinetic_energy_mode!r}.")
    sg.check_positive("max_speed", max_speed)
    super().__init__(
        log_prior_fn, log_likelihood_fn, data, batch_size, step_size, friction=friction,
        mass=mass, noise_estimate=noise_estimate, control_variate_state=control_variate_state,
        name=name or "RelativisticStochasticGradientHamiltonianMonteCarlo")
    self._parameters["max_speed"] = max_speed
    self._parameters["kinetic_energy_mode"] = kinetic_energy_mode

  @property
  def max_speed(self):
    return self._parameters["max_speed"]

  @property
  def kinetic_energy_mode(self) -> str:
    return self._parameters["kinetic_energy_mode"]

  def _velocity(self, momentum_parts, batch_ndims):
    dtype = momentum_parts[0].dtype
    event_ndims = [p.shape.rank - batch_ndims for p in momentum_parts]
    return relativistic.velocity(
        momentum_parts, tf.cast(self.mass, dtype), tf.cast(self.max_speed, dtype), event_ndims,
        mode=self.kinetic_energy_mode)

  def _results_type(self):
    return RelativisticStochasticGradientHamiltonianMonteCarloKernelResults
