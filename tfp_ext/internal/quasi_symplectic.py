"""The quasi-symplectic step for the underdamped Langevin equation, and its exact inverse.

The Langevin equation with potential U = -log p, diagonal mass M, friction gamma and unit
temperature (Milstein & Tretyakov, 2003, Sec. 1; Wang & Delingette, 2021, Sec. 3):

  dz   = M^-1 rho dt
  drho = grad log p(z) dt - gamma rho dt + sqrt(2 gamma M) dW.

One step of size h splits it into a half drift, a kick with one target gradient, the exact
solution of the friction (an exponential contraction of the momentum, followed in the
stochastic version by the exact Ornstein-Uhlenbeck noise), and a half drift:

  z_half = z + h / 2 M^-1 rho
  rho'   = exp(-gamma h) (rho + h grad log p(z_half)) + sqrt(M (1 - exp(-2 gamma h))) xi
  z'     = z_half + h / 2 M^-1 rho'

with xi ~ N(0, I) (xi = 0: the deterministic flow). The drifts and the kick are shears, the
noise a translation, so the Jacobian determinant is exactly exp(-h sum_j gamma_j) per step,
the phase-volume contraction of the exact Langevin flow over time h, and with gamma = 0 and
xi = 0 the step is the Stormer-Verlet (position / drift-kick-drift leapfrog) step, which is
symplectic: the two properties Milstein & Tretyakov ask of a quasi-symplectic scheme. Each step
evaluates the target gradient once, at z_half; so does the inverse.
"""

import tensorflow as tf

from tfp_ext.internal import leapfrog

__all__ = ["noise_scale", "quasi_symplectic_step", "quasi_symplectic_step_inverse",
           "log_det_per_step"]


def noise_scale(step_size, friction, mass):
  """sqrt(M (1 - exp(-2 gamma h))): the standard deviation of the injected momentum noise."""
  return tf.sqrt(mass * -tf.math.expm1(-2. * friction * step_size))


def log_det_per_step(step_size, friction, latent_size, dtype):
  """log|det J| of one step: -sum_j gamma_j h_j over the l dimensions (a scalar)."""
  per_dim = tf.broadcast_to(friction * step_size, [latent_size])
  return -tf.reduce_sum(tf.cast(per_dim, dtype))


def quasi_symplectic_step(target_log_prob_fn, z, rho, step_size, friction, mass, noise=None):
  """One step `(z, rho) -> (z', rho')`; one target gradient.

  Args:
    target_log_prob_fn: callable, [..., l] -> [...].
    z, rho: positions and momenta, [..., l].
    step_size, friction, mass: h > 0, gamma >= 0 and M > 0, broadcastable to [..., l].
    noise: standard normal xi [..., l] for the stochastic step, or None.
  """
  half = 0.5 * step_size
  inverse_mass = 1. / mass
  z_half = leapfrog.drift(z, rho, half, inverse_mass)
  _, grad = leapfrog.target_and_gradient(target_log_prob_fn, z_half)
  rho_new = tf.exp(-friction * step_size) * leapfrog.kick(rho, grad, step_size)
  if noise is not None:
    rho_new = rho_new + noise_scale(step_size, friction, mass) * noise
  z_new = leapfrog.drift(z_half, rho_new, half, inverse_mass)
  return z_new, rho_new


def quasi_symplectic_step_inverse(target_log_prob_fn, z_new, rho_new, step_size, friction, mass,
                                  noise=None):
  """The exact inverse of `quasi_symplectic_step` for the same noise; one target gradient."""
  half = 0.5 * step_size
  inverse_mass = 1. / mass
  z_half = leapfrog.drift(z_new, rho_new, -half, inverse_mass)
  if noise is not None:
    rho_new = rho_new - noise_scale(step_size, friction, mass) * noise
  _, grad = leapfrog.target_and_gradient(target_log_prob_fn, z_half)
  rho = leapfrog.kick(tf.exp(friction * step_size) * rho_new, grad, -step_size)
  z = leapfrog.drift(z_half, rho, -half, inverse_mass)
  return z, rho
