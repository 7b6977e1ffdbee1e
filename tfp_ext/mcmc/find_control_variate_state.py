"""Finds the centring point θ̂ of SGLD-CV / SGHMC-CV: a posterior mode, by Adam on log π."""

from typing import Any, Callable, Optional

import tensorflow as tf

from tfp_ext.internal import seeds
from tfp_ext.internal import stochastic_gradients as sg
from tfp_ext.internal.validation import check_int

__all__ = ["find_control_variate_state"]


def find_control_variate_state(log_prior_fn: Callable[[Any], tf.Tensor],
                               log_likelihood_fn: Callable[[Any, Any], tf.Tensor],
                               data: Any,
                               initial_state: Any,
                               num_steps: int = 500,
                               learning_rate: float = 0.05,
                               batch_size: Optional[int] = None,
                               seed=None,
                               jit_compile: bool = True):
  """Maximizes log π(θ) = log p(θ) + Σ_i log p(x_i | θ) with Adam; returns θ̂ like `initial_state`.

  Adam runs on the per-example objective −log π(θ) / N (so `learning_rate` does not depend on N)
  for `num_steps` steps, with a cosine decay of the learning rate to 0 so that, even with
  minibatches, the iterate settles instead of hovering at the noise level. The result only has to
  be near the mode: SGLD-CV's gradient estimate is unbiased for any θ̂, its variance grows with
  ‖θ − θ̂‖.

  Args:
    log_prior_fn: state -> log p(θ).
    log_likelihood_fn: (state, batch) -> per-example log-likelihoods `[n]`.
    data: nested structure of tensors sharing the leading dimension N.
    initial_state: starting point (a tensor or a list of tensors).
    num_steps: Adam steps.
    learning_rate: Adam's initial learning rate.
    batch_size: minibatch size (without replacement); None uses all N examples every step.
    seed: stateless seed for the minibatches (unused with `batch_size=None`).
    jit_compile: compile the optimization loop with XLA.

  Returns:
    θ̂, structured like `initial_state`.

  #### Examples

  ```python
  w_hat = tfp_ext.mcmc.find_control_variate_state(log_prior_fn, log_likelihood_fn, (x, y),
                                                  tf.zeros([d]))
  kernel = tfp_ext.mcmc.StochasticGradientLangevinDynamics(
      log_prior_fn, log_likelihood_fn, (x, y), batch_size=32, step_size=1e-4,
      control_variate_state=w_hat)
  ```
  """
  data = tf.nest.map_structure(tf.convert_to_tensor, data)
  num_examples = sg.check_data(data, 1)
  if batch_size is not None:
    sg.check_data(data, batch_size)
  batch_size = batch_size or num_examples
  num_steps = check_int("num_steps", num_steps)
  sg.check_positive("learning_rate", learning_rate)
  parts, is_list = sg.prepare_state(initial_state)
  seed = seeds.sanitize(seed if seed is not None else 0, salt="find_control_variate_state")
  beta1, beta2, eps = 0.9, 0.999, 1e-8

  def loss_and_grads(x, step_seed):
    batch = sg.minibatch(data, step_seed, num_examples, batch_size)
    value, grads = sg.target_and_gradients(
        log_prior_fn, log_likelihood_fn, x, batch, num_examples, batch_size, is_list)
    del value
    return [-g / num_examples for g in grads]

  @tf.function(jit_compile=jit_compile, autograph=False)
  def run(x0):
    def body(t, x, m, v):
      g = loss_and_grads(x, seeds.fold_in(seed, t))
      tf_ = tf.cast(t + 1, x[0].dtype)
      lr = learning_rate * 0.5 * (1. + tf.cos(
          3.141592653589793 * tf.cast(t, x[0].dtype) / num_steps))
      m = [beta1 * mi + (1. - beta1) * gi for mi, gi in zip(m, g)]
      v = [beta2 * vi + (1. - beta2) * tf.square(gi) for vi, gi in zip(v, g)]
      x = [xi - lr * (mi / (1. - beta1 ** tf_)) / (tf.sqrt(vi / (1. - beta2 ** tf_)) + eps)
           for xi, mi, vi in zip(x, m, v)]
      return t + 1, x, m, v

    zeros = [tf.zeros_like(p) for p in x0]
    _, x, _, _ = tf.while_loop(lambda t, *_: t < num_steps, body,
                               (tf.constant(0), list(x0), zeros, list(zeros)))
    return x

  result = run(parts)
  if tf.executing_eagerly():
    for i, p in enumerate(result):
      if not bool(tf.reduce_all(tf.math.is_finite(p))):
        raise FloatingPointError(
            f"Optimization diverged: part {i} of θ̂ is not finite; lower `learning_rate`.")
  return result if is_list else result[0]
