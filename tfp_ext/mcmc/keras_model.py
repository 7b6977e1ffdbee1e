"""Stochastic-gradient MCMC over the weights of a tf_keras model.

The state is the list of weight tensors aligned with `model.trainable_variables`; the model is
evaluated at a state with `tfp_ext.posterior.functional_call` (no variable is assigned), so the
chain is differentiable, XLA-compilable, and its samples feed `tfp_ext.posterior.SampleEnsemble`.
"""

from typing import Any, Callable, Optional, Union

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.posterior.functional import functional_call

__all__ = ["keras_log_likelihood_fn", "keras_log_prior_fn", "sample_keras_weights"]


def _per_example_loss_fn(loss):
  if isinstance(loss, str):
    loss = tf_keras.losses.get(loss)
  if isinstance(loss, tf_keras.losses.Loss):
    # `Loss.call` returns the unreduced loss; `__call__` would average it over the batch.
    return loss.call
  if callable(loss):
    return loss
  raise TypeError(f"`loss` must be a tf_keras loss, its name, or a callable, got {loss!r}.")


def keras_log_likelihood_fn(model: tf_keras.Model,
                            loss: Union[str, Callable, tf_keras.losses.Loss]
                            ) -> Callable[[list, Any], tf.Tensor]:
  """(weights, (x, y)) -> per-example log-likelihoods `[n]` = −loss(y, model(x; weights)).

  Args:
    model: a built tf_keras model.
    loss: the per-example negative log-likelihood in nats, e.g.
      `tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)` or
      `tf_keras.losses.BinaryCrossentropy(from_logits=True)`. (A squared error is a Gaussian
      negative log-likelihood only after dividing by 2σ², so pass such a callable for regression.)

  Returns:
    A `log_likelihood_fn` for the stochastic-gradient kernels; the state is a list of tensors
    aligned with `model.trainable_variables` (one chain: no batch-of-chains dimensions), and
    the data is an in-memory pair `(x, y)` that the kernel minibatches itself.
  """
  if not model.built:
    raise ValueError("Build the model (call it once or give it an input shape) before sampling "
                     "its weights.")
  per_example = _per_example_loss_fn(loss)

  def log_likelihood_fn(weights, batch):
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
      raise ValueError("The data of a Keras model must be a pair (x, y).")
    x, y = batch
    outputs = functional_call(model, weights, x, training=False)
    ll = -tf.convert_to_tensor(per_example(y, outputs))
    # Reduce any trailing output dims (e.g. [n, 1] from a regression head) to [n].
    if ll.shape.rank == 1:
      return ll
    return tf.reduce_sum(tf.reshape(ll, [tf.shape(ll)[0], -1]), axis=-1)

  return log_likelihood_fn


def keras_log_prior_fn(model: tf_keras.Model, stddev: float = 1.) -> Callable[[list], tf.Tensor]:
  """An isotropic Gaussian prior N(0, stddev² I) on all trainable weights: weights -> scalar."""
  if stddev <= 0:
    raise ValueError(f"`stddev` must be > 0, got {stddev}.")
  num_parts = len(model.trainable_variables)

  def log_prior_fn(weights):
    if len(weights) != num_parts:
      raise ValueError(f"Got {len(weights)} weight parts for {num_parts} trainable variables.")
    return tf.add_n([
        tf.reduce_sum(tfp.distributions.Normal(tf.zeros([], w.dtype), tf.cast(stddev, w.dtype))
                      .log_prob(w)) for w in weights])

  return log_prior_fn


def sample_keras_weights(model: tf_keras.Model,
                         kernel: tfp.mcmc.TransitionKernel,
                         num_results: int,
                         num_burnin_steps: int = 0,
                         num_steps_between_results: int = 0,
                         seed=None,
                         initial_weights: Optional[list] = None,
                         trace_fn: Optional[Callable] = None,
                         jit_compile: bool = True):
  """Runs `kernel` over the model's weights, starting from their current values.

  Args:
    model: the tf_keras model the kernel's log-likelihood was built from.
    kernel: a kernel over a list of tensors aligned with `model.trainable_variables`, e.g. a
      `StochasticGradientHamiltonianMonteCarlo` with `keras_log_likelihood_fn(model, loss)`.
    num_results: samples kept.
    num_burnin_steps: steps discarded first.
    num_steps_between_results: thinning inside the chain.
    seed: stateless seed.
    initial_weights: starting weights; default: the model's current weights.
    trace_fn: passed to `tfp.mcmc.sample_chain`; default traces nothing.
    jit_compile: compile the chain with XLA.

  Returns:
    `samples` (a list of `[num_results, *var.shape]` tensors, ready for
    `tfp_ext.posterior.SampleEnsemble`), or `(samples, trace)` when `trace_fn` is given.
    The model's variables are left unchanged.
  """
  init = list(initial_weights) if initial_weights is not None else [
      tf.convert_to_tensor(v) for v in model.trainable_variables]
  if len(init) != len(model.trainable_variables):
    raise ValueError(f"Got {len(init)} initial weight parts for "
                     f"{len(model.trainable_variables)} trainable variables.")
  seed = tfp.random.sanitize_seed(seed)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def run(init, seed):
    return tfp.mcmc.sample_chain(
        num_results, init, kernel=kernel, num_burnin_steps=num_burnin_steps,
        num_steps_between_results=num_steps_between_results,
        trace_fn=trace_fn, seed=seed)

  return run(init, seed)
