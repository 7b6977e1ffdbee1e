"""Relativistic Hamiltonian Monte Carlo (Lu et al., 2017), a gradient-based MCMC algorithm."""

import collections

import numpy as np

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_ext.internal import relativistic
from tfp_ext.internal import seeds as seeds_lib

__all__ = [
    "RelativisticHamiltonianMonteCarlo",
    "UncalibratedRelativisticHamiltonianMonteCarlo",
]


class UncalibratedRelativisticHamiltonianMonteCarloKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        "UncalibratedRelativisticHamiltonianMonteCarloKernelResults",
        [
            "log_acceptance_correction",
            "target_log_prob",        # For "next_state".
            "grads_target_log_prob",  # For "next_state".
            "initial_momentum",
            "final_momentum",
            "step_size",
            "num_leapfrog_steps",
            # Seed received by one_step, to reproduce divergent transitions etc.
            "seed",
        ])):
  """Internal state and diagnostics for uncalibrated relativistic HMC."""
  __slots__ = ()


class RelativisticHamiltonianMonteCarlo(tfp.mcmc.TransitionKernel):
  """Runs one step of relativistic Hamiltonian Monte Carlo.

  Hamiltonian Monte Carlo with the kinetic energy of a relativistic particle of mass `m` whose
  speed is bounded by `c` (`max_speed`), as proposed by Lu et al. (2017):

  ```none
  H(x, p) = -log pi(x) + K(p),    K(p) = m c^2 sqrt(p^T p / (m^2 c^2) + 1),
  dx/dt = v(p) = p / (m sqrt(p^T p / (m^2 c^2) + 1)),   ||v(p)|| < c,
  dp/dt = grad log pi(x).
  ```

  Each step draws the momentum exactly from the density proportional to `exp(-K(p))` (a
  Gaussian scale mixture with generalized-inverse-Gaussian mixing, see
  `tfp_ext.distributions.GeneralizedInverseGaussian`), runs `num_leapfrog_steps` leapfrog steps
  of the relativistic dynamics (kick, drift with the velocity `v(p)`, kick) and accepts with the
  Metropolis-Hastings ratio `exp(-H(x', p') + H(x, p))`.

  Because a drift moves each position by at most `step_size * c`, a large gradient (a bad step
  size, heavy tails, poor scaling) cannot throw the chain arbitrarily far: the acceptance rate
  degrades gracefully with the step size where Gaussian-momentum HMC collapses. For `c -> inf`
  the kinetic energy tends to `m c^2 + p^T p / (2m)` and this is ordinary HMC with mass `m`.

  With `independent_momenta=True` the kinetic energy is the sum of one-dimensional relativistic
  energies, one per coordinate (the authors' `independent_momenta` option): every coordinate's
  speed, rather than the whole velocity's norm, is bounded by `c`.

  The state may be a tensor or a list of tensors (state parts); the leading dims common to all
  parts, the shape of `target_log_prob_fn`'s result, index independent chains. In joint mode the
  momentum of all parts is one vector: `p^T p` sums over every part's event dims.

  #### Examples

  ```python
  import tensorflow as tf
  import tensorflow_probability as tfp
  import tfp_ext

  target = tfp.distributions.MultivariateNormalDiag(scale_diag=[1., 10.])
  kernel = tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo(
      target.log_prob, step_size=0.5, num_leapfrog_steps=10, mass=1., max_speed=1.)
  samples, is_accepted = tfp.mcmc.sample_chain(
      num_results=1000, current_state=tf.zeros([4, 2]), kernel=kernel, num_burnin_steps=200,
      trace_fn=lambda _, pkr: pkr.is_accepted, seed=(1, 2))
  ```

  Step size adaptation works as for `tfp.mcmc.HamiltonianMonteCarlo`:

  ```python
  adaptive = tfp.mcmc.DualAveragingStepSizeAdaptation(kernel, num_adaptation_steps=160)
  ```

  #### References

  [1]: Xiaoyu Lu, Valerio Perrone, Leonard Hasenclever, Yee Whye Teh and Sebastian J. Vollmer.
       Relativistic Monte Carlo. In _Artificial Intelligence and Statistics_, 2017.
       https://arxiv.org/abs/1609.04388
  """

  def __init__(self,
               target_log_prob_fn,
               step_size,
               num_leapfrog_steps,
               mass=1.0,
               max_speed=1.0,
               independent_momenta: bool = False,
               store_parameters_in_results: bool = False,
               name: str = None):
    """Initializes this transition kernel.

    Args:
      target_log_prob_fn: Python callable which takes an argument like `current_state` (or
        `*current_state` if it is a list) and returns its (possibly unnormalized) log-density.
      step_size: float `Tensor` or list of `Tensor`s (one per state part) broadcasting with the
        state parts: the leapfrog step size.
      num_leapfrog_steps: positive integer, the number of leapfrog steps per proposal.
      mass: m > 0, float scalar (or broadcastable to the batch of chains).
      max_speed: c > 0, float scalar (or broadcastable to the batch of chains): the bound on the
        speed, so a drift moves the position by at most `step_size * max_speed`.
      independent_momenta: Python `bool`; `True` uses the coordinate-wise (separable) kinetic
        energy.
      store_parameters_in_results: if `True`, `step_size` and `num_leapfrog_steps` are read from
        the kernel results, so step-size adaptation kernels can change them.
      name: Python `str` name prefixed to the ops created by this kernel.
    """
    self._impl = tfp.mcmc.MetropolisHastings(
        inner_kernel=UncalibratedRelativisticHamiltonianMonteCarlo(
            target_log_prob_fn=target_log_prob_fn,
            step_size=step_size,
            num_leapfrog_steps=num_leapfrog_steps,
            mass=mass,
            max_speed=max_speed,
            independent_momenta=independent_momenta,
            store_parameters_in_results=store_parameters_in_results,
            name=name or "relativistic_hmc_kernel"))
    self._parameters = self._impl.inner_kernel.parameters.copy()

  @property
  def target_log_prob_fn(self):
    return self._impl.inner_kernel.target_log_prob_fn

  @property
  def step_size(self):
    """The step size (see `store_parameters_in_results`)."""
    return self._impl.inner_kernel.step_size

  @property
  def num_leapfrog_steps(self):
    """The number of leapfrog steps (see `store_parameters_in_results`)."""
    return self._impl.inner_kernel.num_leapfrog_steps

  @property
  def mass(self):
    return self._impl.inner_kernel.mass

  @property
  def max_speed(self):
    return self._impl.inner_kernel.max_speed

  @property
  def independent_momenta(self):
    return self._impl.inner_kernel.independent_momenta

  @property
  def name(self):
    return self._impl.inner_kernel.name

  @property
  def parameters(self):
    """Return `dict` of ``__init__`` arguments and their values."""
    return self._parameters

  @property
  def is_calibrated(self):
    return True

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs one iteration of relativistic HMC.

    Args:
      current_state: `Tensor` or list of `Tensor`s, the current state(s) of the chain(s).
      previous_kernel_results: the results of the previous step or of `bootstrap_results`.
      seed: stateless seed; see `tfp.random.sanitize_seed`.

    Returns:
      next_state: the state after one step, structured like `current_state`.
      kernel_results: `tfp.mcmc.MetropolisHastingsKernelResults` wrapping
        `UncalibratedRelativisticHamiltonianMonteCarloKernelResults`.
    """
    return self._impl.one_step(current_state, previous_kernel_results, seed=seed)

  def bootstrap_results(self, init_state):
    """Creates initial `previous_kernel_results` using a supplied `state`."""
    return self._impl.bootstrap_results(init_state)


class UncalibratedRelativisticHamiltonianMonteCarlo(tfp.mcmc.TransitionKernel):
  """Proposes one relativistic HMC step, without the Metropolis-Hastings correction.

  Warning: alone, this kernel does not leave the target invariant. Use
  `RelativisticHamiltonianMonteCarlo(...)` or
  `tfp.mcmc.MetropolisHastings(UncalibratedRelativisticHamiltonianMonteCarlo(...))`; its
  `log_acceptance_correction` is `K(p0) - K(p1)`.

  See `RelativisticHamiltonianMonteCarlo` for the algorithm and the arguments.
  """

  def __init__(self,
               target_log_prob_fn,
               step_size,
               num_leapfrog_steps,
               mass=1.0,
               max_speed=1.0,
               independent_momenta: bool = False,
               store_parameters_in_results: bool = False,
               name: str = None):
    """Initializes this transition kernel; see `RelativisticHamiltonianMonteCarlo`."""
    if not callable(target_log_prob_fn):
      raise TypeError(f"`target_log_prob_fn` must be callable, got {type(target_log_prob_fn)}")
    for arg_name, value in (("mass", mass), ("max_speed", max_speed)):
      static = tf.get_static_value(value) if tf.is_tensor(value) else value
      if static is not None and not np.all(np.asarray(static) > 0):
        raise ValueError(f"`{arg_name}` must be positive, got {static}")
    static_steps = (tf.get_static_value(num_leapfrog_steps) if tf.is_tensor(num_leapfrog_steps)
                    else num_leapfrog_steps)
    if static_steps is not None and int(static_steps) < 1:
      raise ValueError(f"`num_leapfrog_steps` must be a positive integer, got {static_steps}")
    if not store_parameters_in_results:
      mcmc_util.warn_if_parameters_are_not_simple_tensors(
          dict(step_size=step_size, num_leapfrog_steps=num_leapfrog_steps))
    self._parameters = dict(
        target_log_prob_fn=target_log_prob_fn,
        step_size=step_size,
        num_leapfrog_steps=num_leapfrog_steps,
        mass=mass,
        max_speed=max_speed,
        independent_momenta=independent_momenta,
        store_parameters_in_results=store_parameters_in_results,
        name=name)

  @property
  def target_log_prob_fn(self):
    return self._parameters["target_log_prob_fn"]

  @property
  def step_size(self):
    """The step size; with `store_parameters_in_results` the one in the results is used."""
    return self._parameters["step_size"]

  @property
  def num_leapfrog_steps(self):
    """Leapfrog steps; with `store_parameters_in_results` the number in the results is used."""
    return self._parameters["num_leapfrog_steps"]

  @property
  def mass(self):
    return self._parameters["mass"]

  @property
  def max_speed(self):
    return self._parameters["max_speed"]

  @property
  def independent_momenta(self):
    return self._parameters["independent_momenta"]

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

  @property
  def _mode(self):
    return relativistic.INDEPENDENT if self.independent_momenta else relativistic.JOINT

  def _prepare(self, state, step_size, target_log_prob=None, grads=None):
    state_parts, _ = mcmc_util.prepare_state_parts(state, name="current_state")
    for i, x in enumerate(state_parts):
      if not x.dtype.is_floating:
        raise TypeError(f"state part {i} must be floating point, got dtype {x.dtype.name}")
      if x.shape.rank is None:
        raise ValueError(f"state part {i} must have a statically known rank")
    target_log_prob, grads = mcmc_util.maybe_call_fn_and_grads(
        self.target_log_prob_fn, state_parts, target_log_prob, grads)
    step_sizes, _ = mcmc_util.prepare_state_parts(
        step_size, dtype=target_log_prob.dtype, name="step_size")
    if len(step_sizes) == 1:
      step_sizes *= len(state_parts)
    if len(step_sizes) != len(state_parts):
      raise ValueError(f"`step_size` must be one tensor or a list of {len(state_parts)} (one per "
                       f"state part), got {len(step_sizes)}")
    batch_rank = target_log_prob.shape.rank
    event_ndims = [x.shape.rank - batch_rank for x in state_parts]
    if any(nd < 0 for nd in event_ndims):
      raise ValueError(f"`target_log_prob_fn` returned rank {batch_rank}, larger than the rank of "
                       f"a state part {[x.shape.rank for x in state_parts]}")
    return state_parts, step_sizes, target_log_prob, grads, event_ndims

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Proposes a new state; see `RelativisticHamiltonianMonteCarlo.one_step`."""
    with tf.name_scope(mcmc_util.make_name(self.name, "relativistic_hmc", "one_step")):
      if self.parameters["store_parameters_in_results"]:
        step_size = previous_kernel_results.step_size
        num_leapfrog_steps = previous_kernel_results.num_leapfrog_steps
      else:
        step_size = self.step_size
        num_leapfrog_steps = self.num_leapfrog_steps
      state_parts, step_sizes, tlp, grads, event_ndims = self._prepare(
          current_state, step_size, previous_kernel_results.target_log_prob,
          previous_kernel_results.grads_target_log_prob)
      dtype = tlp.dtype
      mass = tf.convert_to_tensor(self.mass, dtype, name="mass")
      max_speed = tf.convert_to_tensor(self.max_speed, dtype, name="max_speed")

      seed = seeds_lib.sanitize(seed)  # Retained in the results for diagnostics.
      momentum = relativistic.sample_momentum(
          state_parts, mass, max_speed, event_ndims, mode=self._mode, seed=seed)

      def velocity(p):
        return relativistic.velocity(p, mass, max_speed, event_ndims, mode=self._mode)

      next_momentum, next_state, next_tlp, next_grads = _relativistic_leapfrog(
          self.target_log_prob_fn, velocity, step_sizes, num_leapfrog_steps,
          momentum, state_parts, tlp, grads)

      kinetic = lambda p: relativistic.kinetic_energy(  # noqa: E731
          p, mass, max_speed, event_ndims, mode=self._mode)

      def maybe_flatten(x):
        return x if mcmc_util.is_list_like(current_state) else x[0]

      results = previous_kernel_results._replace(
          log_acceptance_correction=kinetic(momentum) - kinetic(next_momentum),
          target_log_prob=next_tlp,
          grads_target_log_prob=next_grads,
          initial_momentum=momentum,
          final_momentum=next_momentum,
          seed=seed)
      return maybe_flatten(next_state), results

  def bootstrap_results(self, init_state):
    """Creates initial `previous_kernel_results` using a supplied `state`."""
    with tf.name_scope(mcmc_util.make_name(self.name, "relativistic_hmc", "bootstrap_results")):
      state_parts, _, tlp, grads, _ = self._prepare(init_state, self.step_size)
      results = UncalibratedRelativisticHamiltonianMonteCarloKernelResults(
          log_acceptance_correction=tf.zeros_like(tlp),
          target_log_prob=tlp,
          grads_target_log_prob=grads,
          initial_momentum=[tf.zeros_like(x) for x in state_parts],
          final_momentum=[tf.zeros_like(x) for x in state_parts],
          step_size=[],
          num_leapfrog_steps=[],
          seed=tf.zeros([2], tf.int32))  # Room for one_step's seed.
      if self.parameters["store_parameters_in_results"]:
        results = results._replace(
            step_size=tf.nest.map_structure(
                lambda x: tf.convert_to_tensor(x, dtype=tlp.dtype, name="step_size"),
                self.step_size),
            num_leapfrog_steps=tf.convert_to_tensor(
                self.num_leapfrog_steps, dtype=tf.int32, name="num_leapfrog_steps"))
      return results


def _relativistic_leapfrog(target_log_prob_fn, velocity, step_sizes, num_steps, momentum,
                           state, target_log_prob, grads):
  """`num_steps` leapfrog steps of dx/dt = v(p), dp/dt = grad log pi(x).

  Half kick, then `num_steps` times (drift, kick) where the last kick is a half kick: the usual
  Stormer-Verlet scheme, symplectic and reversible (under p -> -p, as v is odd) for any kinetic
  energy, so the Metropolis-Hastings correction exp(-dH) is exact.
  """
  momentum = [p + 0.5 * eps * g for p, eps, g in zip(momentum, step_sizes, grads)]
  num_steps = tf.convert_to_tensor(num_steps, tf.int32)

  def body(i, momentum, state, target_log_prob, grads):
    v = velocity(momentum)
    state = [x + eps * vi for x, eps, vi in zip(state, step_sizes, v)]
    target_log_prob, grads = mcmc_util.maybe_call_fn_and_grads(target_log_prob_fn, state)
    # A full kick between drifts, a half kick after the last one.
    scale = tf.where(i + 1 < num_steps, 1., 0.5)
    momentum = [p + tf.cast(scale, p.dtype) * eps * g
                for p, eps, g in zip(momentum, step_sizes, grads)]
    return i + 1, momentum, state, target_log_prob, grads

  _, momentum, state, target_log_prob, grads = tf.while_loop(
      lambda i, *_: i < num_steps, body, (0, momentum, state, target_log_prob, grads))
  return momentum, state, target_log_prob, grads
