"""Pieces shared by the ELBO estimators of the target-informed flows (Hamiltonian, Langevin)."""

import math

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["check_initial_distribution", "summarize"]


def check_initial_distribution(initial_distribution) -> int:
  """Checks q_0 is reparameterized with a static vector event `[l]`; returns l."""
  if (initial_distribution.reparameterization_type
      != tfp.distributions.FULLY_REPARAMETERIZED):
    raise ValueError("`initial_distribution` must be fully reparameterized for gradients of "
                     "the ELBO; got " + initial_distribution.name)
  event_shape = initial_distribution.event_shape
  if event_shape.rank != 1 or event_shape[0] is None:
    raise ValueError("`initial_distribution` must have a static vector event shape [l]; got "
                     f"{event_shape}.")
  return int(event_shape[0])


def summarize(elbo_samples, num_samples: int):
  """`(mean, variance, standard_error)` over the leading sample axis (n - 1 denominator)."""
  elbo = tf.reduce_mean(elbo_samples, axis=0)
  if num_samples > 1:
    variance = tf.reduce_sum(tf.square(elbo_samples - elbo), axis=0) / (num_samples - 1.)
  else:
    variance = tf.fill(tf.shape(elbo), tf.constant(math.nan, elbo_samples.dtype))
  return elbo, variance, tf.sqrt(variance / num_samples)
