"""Stochastic-gradient Langevin dynamics (SGLD) and SGLD with control variates (SGLD-CV)."""

import collections
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_ext.internal import seeds
from tfp_ext.internal import stochastic_gradients as sg

__all__ = [
    "StochasticGradientLangevinDynamics",
    "StochasticGradientLangevinDynamicsKernelResults",
]


class StochasticGradientLangevinDynamicsKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        "StochasticGradientLangevinDynamicsKernelResults",
        ["target_log_prob", "grads_target_log_prob", "step_size", "seed"])):
  """Results of one SGLD step.

  Attributes:
    target_log_prob: the minibatch estimate log π̂ at the state the step started from (the only
      place the kernel evaluates the target), with the batch-of-chains shape.
    grads_target_log_prob: the gradient estimate used for the step, one tensor per state part.
    step_size: the step size h of every state part.
    seed: the stateless seed of the step (minibatch and noise are both derived from it).
  """
  __slots__ = ()


class StochasticGradientLangevinDynamics(tfp.mcmc.TransitionKernel):
  """Runs one step of stochastic-gradient Langevin dynamics, optionally with control variates.

  SGLD (Welling & Teh, 2011) is the Euler–Maruyama discretization of the Langevin diffusion
  dθ = ∇log π(θ) dt + √2 dW, with the gradient replaced by an unbiased minibatch estimate:

  ```none
  θ' = θ + h ∇̂log π(θ) + √(2h) ξ,   ξ ~ N(0, I),
  ∇̂log π(θ) = ∇log p(θ) + (N/n) Σ_{i∈B} ∇log p(x_i | θ).
  ```

  The minibatch B (n of the N examples, drawn WITHOUT replacement) and ξ come from the step's
  stateless seed, so a chain is a pure function of its seed and XLA-compiles.

  With `control_variate_state` θ̂ (SGLD-CV, Nagapetyan et al., 2017) the estimate becomes

  ```none
  ∇̂log π(θ) = ∇log π(θ̂) + ∇log p(θ) − ∇log p(θ̂)
              + (N/n) Σ_{i∈B} [∇log p(x_i | θ) − ∇log p(x_i | θ̂)],
  ```

  where the full-data ∇log π(θ̂) is computed once, when the kernel is built. Its variance is
  O(‖θ − θ̂‖²) instead of O(N²/n), so near the posterior mode the injected gradient noise nearly
  vanishes; `find_control_variate_state` finds θ̂.

  The chain is not Metropolis-corrected (`is_calibrated` is False): its stationary law differs
  from π by O(h) plus a term from the gradient noise.

  The state may carry leading batch-of-chains dimensions, as long as `log_prior_fn` returns them
  and `log_likelihood_fn` returns `[*batch_of_chains, n]`. All chains share the step's minibatch
  and draw independent noise.

  #### Examples

  ```python
  def log_prior_fn(w):
    return tfd.Normal(0., 1.).log_prob(w).sum()   # scalar
  def log_likelihood_fn(w, batch):
    x, y = batch
    return tfd.Bernoulli(logits=x @ w).log_prob(y)   # [n]

  kernel = tfp_ext.mcmc.StochasticGradientLangevinDynamics(
      log_prior_fn, log_likelihood_fn, data=(x, y), batch_size=32, step_size=1e-4)
  samples = tfp.mcmc.sample_chain(1000, tf.zeros([d]), kernel=kernel, seed=(1, 2),
                                  trace_fn=None)
  ```

  #### References

  [1]: Max Welling and Yee Whye Teh. Bayesian Learning via Stochastic Gradient Langevin Dynamics.
       ICML 2011.
  [2]: Tigran Nagapetyan, Andrew B. Duncan, Leonard Hasenclever, Sebastian J. Vollmer, Lukasz
       Szpruch, Konstantinos Zygalakis. The True Cost of Stochastic Gradient Langevin Dynamics.
       arXiv:1706.02692, 2017.
  """

  def __init__(self,
               log_prior_fn: Callable[[Any], tf.Tensor],
               log_likelihood_fn: Callable[[Any, Any], tf.Tensor],
               data: Any,
               batch_size: int,
               step_size: Any,
               control_variate_state: Optional[Any] = None,
               name: Optional[str] = None):
    """Initializes this transition kernel.

    Args:
      log_prior_fn: state -> log p(θ), a scalar (or the batch-of-chains shape).
      log_likelihood_fn: (state, batch) -> per-example log-likelihoods, shape `[n]` (or
        `[*batch_of_chains, n]`), where `batch` has the structure of `data` with n rows.
      data: nested structure of tensors sharing the leading dimension N.
      batch_size: Python int n in [1, N]; n = N gives full-batch (unadjusted) Langevin.
      step_size: h > 0, a float or one per state part.
      control_variate_state: θ̂ (structured like the state), or None for plain SGLD.
      name: name prefixed to the ops.

    Raises:
      ValueError: mismatched leading dimensions in `data`, a batch size outside [1, N], a
        non-positive step size, or a non-finite control variate state.
    """
    with tf.name_scope(name or "StochasticGradientLangevinDynamics") as scope:
      if not callable(log_prior_fn) or not callable(log_likelihood_fn):
        raise TypeError("`log_prior_fn` and `log_likelihood_fn` must be callable.")
      data = tf.nest.map_structure(tf.convert_to_tensor, data)
      self._num_examples = sg.check_data(data, batch_size)
      sg.check_positive("step_size", step_size)
      control_variate = None
      if control_variate_state is not None:
        _, cv_is_list = sg.check_control_variate_state(control_variate_state)
        control_variate = sg.make_control_variate(
            log_prior_fn, log_likelihood_fn, data, control_variate_state, cv_is_list)
      self._control_variate = control_variate
      self._parameters = dict(
          log_prior_fn=log_prior_fn,
          log_likelihood_fn=log_likelihood_fn,
          data=data,
          batch_size=batch_size,
          step_size=step_size,
          control_variate_state=control_variate_state,
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
  def control_variate_state(self):
    return self._parameters["control_variate_state"]

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

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs one SGLD step; returns `(next_state, kernel_results)`."""
    with tf.name_scope(mcmc_util.make_name(self.name, "sgld", "one_step")):
      parts, is_list = sg.prepare_state(current_state)
      seed = seeds.sanitize(seed)
      batch_seed, noise_seed = tfp.random.split_seed(seed, n=2)
      target_log_prob, grads = self._estimate(parts, is_list, batch_seed)
      step_sizes = sg.broadcast_per_part("step_size", self.step_size, parts)
      noise_seeds = tfp.random.split_seed(noise_seed, n=len(parts))
      next_parts = []
      for x, g, h, s in zip(parts, grads, step_sizes, noise_seeds):
        xi = tf.random.stateless_normal(tf.shape(x), seed=s, dtype=x.dtype, alg=seeds.RNG_ALG)
        next_parts.append(x + h * g + tf.sqrt(2. * h) * xi)
      results = StochasticGradientLangevinDynamicsKernelResults(
          target_log_prob=target_log_prob, grads_target_log_prob=grads,
          step_size=step_sizes, seed=seed)
      return (next_parts if is_list else next_parts[0]), results

  def bootstrap_results(self, init_state):
    """Results for `init_state`: the target estimated on a fixed minibatch (seed (0, 0))."""
    with tf.name_scope(mcmc_util.make_name(self.name, "sgld", "bootstrap_results")):
      parts, is_list = sg.prepare_state(init_state)
      target_log_prob, grads = self._estimate(parts, is_list, tf.zeros([2], tf.int32))
      return StochasticGradientLangevinDynamicsKernelResults(
          target_log_prob=target_log_prob, grads_target_log_prob=grads,
          step_size=sg.broadcast_per_part("step_size", self.step_size, parts),
          seed=tf.zeros([2], tf.int32))
