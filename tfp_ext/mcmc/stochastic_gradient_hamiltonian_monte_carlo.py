"""Stochastic-gradient Hamiltonian Monte Carlo (SGHMC) with friction."""

import collections
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_ext.internal import seeds
from tfp_ext.internal import stochastic_gradients as sg

__all__ = [
    "StochasticGradientHamiltonianMonteCarlo",
    "StochasticGradientHamiltonianMonteCarloKernelResults",
]


class StochasticGradientHamiltonianMonteCarloKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        "StochasticGradientHamiltonianMonteCarloKernelResults",
        ["target_log_prob", "grads_target_log_prob", "momentum", "step_size", "seed"])):
  """Results of one SGHMC step.

  Attributes:
    target_log_prob: the minibatch estimate log π̂ at the state the step started from (where the
      kernel takes the gradient), with the batch-of-chains shape.
    grads_target_log_prob: the gradient estimate used for the step, one tensor per part.
    momentum: the momentum r carried to the next step, one tensor per part.
    step_size: the step size h of every state part.
    seed: the stateless seed of the step.
  """
  __slots__ = ()


class StochasticGradientHamiltonianMonteCarlo(tfp.mcmc.TransitionKernel):
  """Runs one step of stochastic-gradient HMC with friction (Chen, Fox & Guestrin, 2014).

  The discretized second-order Langevin dynamics of Eq. (13) of the paper, with momentum r kept
  across steps in the kernel results (starting at 0), mass M, friction C and an estimate B̂ of
  the gradient-noise covariance (scalars, shared by all coordinates). The momentum is updated
  first (as in the paper's Eq. (15), the SGD-with-momentum form), so that even the first step,
  from r = 0, moves θ:

  ```none
  r' = r + h ∇̂log π(θ) − h C M⁻¹ r + N(0, 2 (C − B̂) h),
  θ' = θ + h M⁻¹ r'.
  ```

  where ∇̂log π is the minibatch estimate of `StochasticGradientLangevinDynamics` (minibatches
  drawn without replacement from the step's seed, optionally with a control variate). With
  exact gradients and h → 0 the joint stationary law is π(θ) N(r; 0, M); the friction C
  dissipates the energy the gradient noise injects, and B̂ (0 ≤ B̂ ≤ C, default 0) removes the
  part of the injected noise the minibatch already provides.

  `is_calibrated` is False: there is no Metropolis correction.

  #### Examples

  ```python
  kernel = tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo(
      log_prior_fn, log_likelihood_fn, data=(x, y), batch_size=32, step_size=1e-3,
      friction=10.)
  samples = tfp.mcmc.sample_chain(1000, w0, kernel=kernel, seed=(1, 2), trace_fn=None)
  ```

  #### References

  [1]: Tianqi Chen, Emily B. Fox, Carlos Guestrin. Stochastic Gradient Hamiltonian Monte Carlo.
       ICML 2014.
  """

  def __init__(self,
               log_prior_fn: Callable[[Any], tf.Tensor],
               log_likelihood_fn: Callable[[Any, Any], tf.Tensor],
               data: Any,
               batch_size: int,
               step_size: Any,
               friction: float = 1.,
               mass: float = 1.,
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
      friction: C > 0.
      mass: M > 0.
      noise_estimate: B̂ with 0 ≤ B̂ ≤ C.
      control_variate_state: θ̂ for control-variate gradients, or None.
      name: name prefixed to the ops.

    Raises:
      ValueError: bad data or batch size, non-positive step size / friction / mass, or a noise
        estimate outside [0, friction].
    """
    with tf.name_scope(name or "StochasticGradientHamiltonianMonteCarlo") as scope:
      if not callable(log_prior_fn) or not callable(log_likelihood_fn):
        raise TypeError("`log_prior_fn` and `log_likelihood_fn` must be callable.")
      data = tf.nest.map_structure(tf.convert_to_tensor, data)
      self._num_examples = sg.check_data(data, batch_size)
      sg.check_positive("step_size", step_size)
      sg.check_positive("friction", friction)
      sg.check_positive("mass", mass)
      sg.check_positive("noise_estimate", noise_estimate, allow_zero=True)
      c, b = tf.get_static_value(tf.convert_to_tensor(friction)), tf.get_static_value(
          tf.convert_to_tensor(noise_estimate))
      if c is not None and b is not None and b > c:
        raise ValueError(f"`noise_estimate` ({b}) must not exceed `friction` ({c}): the injected "
                         "noise variance 2(C - B̂)h would be negative.")
      control_variate = None
      if control_variate_state is not None:
        _, cv_is_list = sg.check_control_variate_state(control_variate_state)
        control_variate = sg.make_control_variate(
            log_prior_fn, log_likelihood_fn, data, control_variate_state, cv_is_list)
      self._control_variate = control_variate
      self._parameters = dict(
          log_prior_fn=log_prior_fn, log_likelihood_fn=log_likelihood_fn, data=data,
          batch_size=batch_size, step_size=step_size, friction=friction, mass=mass,
          noise_estimate=noise_estimate, control_variate_state=control_variate_state,
          name=scope.rstrip("/"))

  @property
  def log_prior_fn(self):
    return self._parameters["log_prior_fn"]

  @property
  def log_likelihood_fn(self):
    return self._parameters["log_likelihood_fn"]

  @property
  def data(self):
    return self._parameters["data"]

  @property
  def num_examples(self):
    """N, the number of examples in `data` (an int, or a scalar tensor when not static)."""
    return self._num_examples

  @property
  def batch_size(self) -> int:
    return self._parameters["batch_size"]

  @property
  def step_size(self):
    return self._parameters["step_size"]

  @property
  def friction(self):
    return self._parameters["friction"]

  @property
  def mass(self):
    return self._parameters["mass"]

  @property
  def noise_estimate(self):
    return self._parameters["noise_estimate"]

  @property
  def name(self):
    return self._parameters["name"]

  @property
  def parameters(self):
    """Return `dict` of ``__init__`` arguments and their values."""
    return self._parameters

  @property
  def is_calibrated(self):
    return False

  def _estimate(self, state_parts, is_list, seed):
    batch = sg.minibatch(self.data, seed, self.num_examples, self.batch_size)
    return sg.target_and_gradients(
        self.log_prior_fn, self.log_likelihood_fn, state_parts, batch, self.num_examples,
        self.batch_size, is_list, self._control_variate)

  def _velocity(self, momentum_parts, batch_ndims):
    """M⁻¹ r (the relativistic subclass replaces this with ∇K(r))."""
    del batch_ndims
    return [r / tf.cast(self.mass, r.dtype) for r in momentum_parts]

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs one SGHMC step; returns `(next_state, kernel_results)`."""
    with tf.name_scope(mcmc_util.make_name(self.name, "sghmc", "one_step")):
      parts, is_list = sg.prepare_state(current_state)
      seed = seeds.sanitize(seed)
      batch_seed, noise_seed = tfp.random.split_seed(seed, n=2)
      momentum = list(previous_kernel_results.momentum)
      batch_ndims = sg.batch_ndims_of(previous_kernel_results.target_log_prob)
      step_sizes = sg.broadcast_per_part("step_size", self.step_size, parts)
      velocity = self._velocity(momentum, batch_ndims)
      target_log_prob, grads = self._estimate(parts, is_list, batch_seed)
      noise_seeds = tfp.random.split_seed(noise_seed, n=len(parts))
      next_momentum = []
      for r, v, g, h, s in zip(momentum, velocity, grads, step_sizes, noise_seeds):
        c = tf.cast(self.friction, r.dtype)
        b = tf.cast(self.noise_estimate, r.dtype)
        xi = tf.random.stateless_normal(tf.shape(r), seed=s, dtype=r.dtype, alg=seeds.RNG_ALG)
        next_momentum.append(r + h * g - h * c * v + tf.sqrt(2. * (c - b) * h) * xi)
      next_velocity = self._velocity(next_momentum, batch_ndims)
      next_parts = [x + h * v for x, h, v in zip(parts, step_sizes, next_velocity)]
      results = previous_kernel_results._replace(
          target_log_prob=target_log_prob, grads_target_log_prob=grads, momentum=next_momentum,
          step_size=step_sizes, seed=seed)
      return (next_parts if is_list else next_parts[0]), results

  def bootstrap_results(self, init_state):
    """Zero momentum and the target estimated on a fixed minibatch (seed (0, 0))."""
    with tf.name_scope(mcmc_util.make_name(self.name, "sghmc", "bootstrap_results")):
      parts, is_list = sg.prepare_state(init_state)
      target_log_prob, grads = self._estimate(parts, is_list, tf.zeros([2], tf.int32))
      return self._results_type()(
          target_log_prob=target_log_prob, grads_target_log_prob=grads,
          momentum=[tf.zeros_like(p) for p in parts],
          step_size=sg.broadcast_per_part("step_size", self.step_size, parts),
          seed=tf.zeros([2], tf.int32))

  def _results_type(self):
    return StochasticGradientHamiltonianMonteCarloKernelResults
