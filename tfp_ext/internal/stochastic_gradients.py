"""Minibatches and (control-variate) gradient estimates shared by the stochastic-gradient kernels.

For a target log π(θ) = log p(θ) + Σ_{i=1}^N log p(x_i | θ) and a minibatch B of n indices,

  log π̂(θ) = log p(θ) + (N / n) Σ_{i∈B} log p(x_i | θ)

is an unbiased estimate of log π(θ) and of its gradient. With a control variate centred at θ̂
(Nagapetyan et al., 2017; Baker et al., 2019) the estimate is

  ∇̂ log π(θ) = ∇log π(θ̂) + ∇log π̂(θ) − ∇log π̂(θ̂),

still unbiased, with a variance that vanishes as θ → θ̂ (∇log π(θ̂) uses all the data, once).

Minibatches are drawn WITHOUT replacement: the n indices with the largest of N stateless uniform
draws (`tf.math.top_k`), a uniformly random n-subset, XLA-compilable and a pure function of the
seed. With n = N the estimate is the exact full-data gradient.
"""

import collections

import numpy as np
import tensorflow as tf

from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int

__all__ = [
    "ControlVariate", "batch_ndims_of", "check_data", "full_data_target", "make_control_variate",
    "minibatch", "minibatch_indices", "target_and_gradients",
]


class ControlVariate(collections.namedtuple(
    "ControlVariate", ["state", "target_log_prob", "grads_target_log_prob"])):
  """The centring point θ̂ of SGLD-CV with the full-data log π(θ̂) and ∇log π(θ̂)."""
  __slots__ = ()


def check_data(data, batch_size):
  """Returns N (the common leading dimension of `data`); raises a ValueError on bad input.

  N is a Python int when the leading dimension is static, else a scalar int32 tensor (data that
  arrive from a dataset traced for shards of several sizes, as on a parameter-server worker).
  """
  leaves = [tf.convert_to_tensor(x) for x in tf.nest.flatten(data)]
  if not leaves:
    raise ValueError("`data` must hold at least one tensor with a leading example dimension.")
  sizes = set()
  for x in leaves:
    if x.shape.rank is None or x.shape.rank < 1:
      raise ValueError(f"Every tensor in `data` needs a leading example dimension; got shape "
                       f"{x.shape}.")
    if x.shape[0] is not None:
      sizes.add(int(x.shape[0]))
    if tf.executing_eagerly() and x.dtype.is_floating and not bool(
        tf.reduce_all(tf.math.is_finite(x))):
      raise ValueError(f"`data` has NaN or infinite values (a tensor of shape {x.shape}).")
  if len(sizes) > 1:
    raise ValueError(f"All tensors in `data` must have the same leading dimension N, got "
                     f"{sorted(sizes)}.")
  batch_size = check_int("batch_size", batch_size)
  if any(x.shape[0] is None for x in leaves):
    num_examples = tf.shape(leaves[0])[0]
    checks = [tf.debugging.assert_equal(tf.shape(x)[0], num_examples,
                                        message="`data` tensors differ in N") for x in leaves]
    checks.append(tf.debugging.assert_less_equal(
        batch_size, num_examples, message="`batch_size` is larger than N"))
    with tf.control_dependencies(checks):
      return tf.identity(num_examples)
  num_examples = sizes.pop()
  if batch_size > num_examples:
    raise ValueError(f"`batch_size` must be in [1, N={num_examples}], got {batch_size}.")
  return num_examples


def minibatch_indices(seed, num_examples: int, batch_size: int):
  """`batch_size` distinct indices in [0, num_examples), uniformly at random, from the seed."""
  u = tf.random.stateless_uniform([num_examples], seed=seed, alg=seeds.RNG_ALG)
  return tf.math.top_k(u, k=batch_size, sorted=False).indices


def minibatch(data, seed, num_examples: int, batch_size: int):
  """The minibatch of `data` (a nested structure) selected by `minibatch_indices`."""
  if isinstance(num_examples, int) and batch_size == num_examples:
    return data  # The whole data set: no gather needed, and the estimate is exact.
  idx = minibatch_indices(seed, num_examples, batch_size)
  return tf.nest.map_structure(lambda x: tf.gather(x, idx), data)


def _log_prob_estimate(log_prior_fn, log_likelihood_fn, state, batch, scale):
  ll = tf.convert_to_tensor(log_likelihood_fn(state, batch))
  if ll.shape.rank is not None and ll.shape.rank < 1:
    raise ValueError("`log_likelihood_fn` must return per-example log-likelihoods with the "
                     f"batch of examples as the last axis, got a scalar (shape {ll.shape}).")
  lp = tf.convert_to_tensor(log_prior_fn(state), dtype=ll.dtype)
  return lp + tf.cast(scale, ll.dtype) * tf.reduce_sum(ll, axis=-1)


def _value_and_grads(fn, state_parts):
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(state_parts)
    value = fn(state_parts)
  grads = tape.gradient(value, state_parts)
  for i, g in enumerate(grads):
    if g is None:
      raise ValueError(f"The target does not depend on state part {i}: its gradient is None.")
  return value, grads


def target_and_gradients(log_prior_fn, log_likelihood_fn, state_parts, batch, num_examples,
                         batch_size, is_list, control_variate=None):
  """(log π̂(θ), ∇log π̂(θ)) from one minibatch, with the control variate when one is given.

  Args:
    log_prior_fn: state -> log p(θ) with the batch-of-chains shape.
    log_likelihood_fn: (state, batch) -> per-example log-likelihoods `[..., batch_size]`.
    state_parts: list of tensors.
    batch: the minibatch, a nested structure of tensors.
    num_examples: N.
    batch_size: n.
    is_list: whether the user's state is a list (else a single tensor).
    control_variate: a `ControlVariate` or None.
  """
  scale = (num_examples / batch_size if isinstance(num_examples, int) else
           tf.cast(num_examples, tf.float64) / batch_size)

  def estimate(parts):
    return _log_prob_estimate(
        log_prior_fn, log_likelihood_fn, parts if is_list else parts[0], batch, scale)

  value, grads = _value_and_grads(estimate, state_parts)
  if control_variate is None:
    return value, grads
  cv_value, cv_grads = _value_and_grads(estimate, list(control_variate.state))
  value = control_variate.target_log_prob + value - cv_value
  grads = [g0 + g - gc for g0, g, gc in zip(control_variate.grads_target_log_prob, grads, cv_grads)]
  return value, grads


def full_data_target(log_prior_fn, log_likelihood_fn, data, is_list):
  """A function parts -> log π(θ) over all the data."""

  def target(parts):
    return _log_prob_estimate(log_prior_fn, log_likelihood_fn, parts if is_list else parts[0],
                              data, 1.)

  return target


def make_control_variate(log_prior_fn, log_likelihood_fn, data, state, is_list):
  """Evaluates log π and ∇log π at θ̂ = `state` over all the data (once)."""
  parts = [tf.convert_to_tensor(s) for s in (state if is_list else [state])]
  value, grads = _value_and_grads(
      full_data_target(log_prior_fn, log_likelihood_fn, data, is_list), parts)
  return ControlVariate(parts, value, grads)


def batch_ndims_of(target_log_prob):
  """The number of batch-of-chains dimensions, read off the target's shape."""
  return target_log_prob.shape.rank if target_log_prob.shape.rank is not None else 0


def check_positive(name, value, allow_zero=False):
  """Converts `value` (a float or a list of floats/tensors) and checks it eagerly when it can."""
  values = value if isinstance(value, (list, tuple)) else [value]
  for v in values:
    if isinstance(v, tf.Variable):
      continue  # May be changed later (e.g. a schedule): checked by the caller's graph, not here.
    t = tf.convert_to_tensor(v)
    if not t.dtype.is_floating and not t.dtype.is_integer:
      raise TypeError(f"`{name}` must be numeric, got dtype {t.dtype.name}.")
    arr = tf.get_static_value(t)
    if arr is None:
      continue  # Symbolic (built inside a traced function): nothing to check statically.
    arr = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
      cond = ">= 0" if allow_zero else "> 0"
      raise ValueError(f"`{name}` must be finite and {cond}, got {arr.tolist()}.")
  return value


def broadcast_per_part(name, value, state_parts):
  """A list with one tensor per state part from a scalar/tensor or a list of them."""
  if isinstance(value, (list, tuple)):
    if len(value) != len(state_parts):
      raise ValueError(f"`{name}` has {len(value)} parts but the state has {len(state_parts)}.")
    return [tf.cast(v, p.dtype) for v, p in zip(value, state_parts)]
  return [tf.cast(value, p.dtype) for p in state_parts]


def prepare_state(state):
  """(list of float tensors, whether the user passed a list); raises on non-float parts."""
  is_list = isinstance(state, (list, tuple))
  parts = [tf.convert_to_tensor(s) for s in (state if is_list else [state])]
  for i, p in enumerate(parts):
    if not p.dtype.is_floating:
      raise TypeError(f"State part {i} must be a floating tensor, got {p.dtype.name}.")
  return parts, is_list


def check_control_variate_state(control_variate_state):
  """Tensors of θ̂, checked finite when eager."""
  parts, is_list = prepare_state(control_variate_state)
  if tf.executing_eagerly():
    for i, p in enumerate(parts):
      if not bool(tf.reduce_all(tf.math.is_finite(p))):
        raise ValueError(f"`control_variate_state` part {i} has non-finite values.")
  return parts, is_list
