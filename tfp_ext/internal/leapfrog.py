"""The leapfrog integrator for H(z, rho) = U(z) + rho^T rho / 2, with U = -target_log_prob.

One step with (per-dimension) step size eps, written with g(z) = grad log p(z) = -grad U(z)
(Neal, 2011, eq. 5.18; Caterini et al., 2018, eqs. 7-9):

  rho_half = rho + eps / 2 * g(z)
  z'       = z + eps * rho_half
  rho'     = rho_half + eps / 2 * g(z')

The map is volume-preserving and time-reversible: a step with -eps undoes a step with eps, which
is the same as negating the momentum, stepping, and negating again. The gradient at the end point
is returned so that consecutive steps evaluate the target gradient only K + 1 times.

The two half-maps, `kick` (momentum moved by the force) and `drift` (position moved by the
velocity), are shared with the quasi-symplectic Langevin step (`quasi_symplectic.py`).
"""

import tensorflow as tf

__all__ = ["split_state", "target_and_gradient", "kick", "drift", "leapfrog_step", "hamiltonian"]


def split_state(x):
  """`(z, rho, l)` from a phase-space state `concat([z, rho], -1)` of static event size 2 * l."""
  event = tf.compat.dimension_value(x.shape[-1]) if x.shape.rank else None
  if event is None:
    raise ValueError("The state's last (event) dimension must be statically known.")
  if event % 2:
    raise ValueError(f"The state is concat([z, rho], -1) with event size 2 * l; got odd size "
                     f"{event}.")
  z, rho = tf.split(x, 2, axis=-1)
  return z, rho, event // 2


def target_and_gradient(target_log_prob_fn, z):
  """`(log p(z), grad log p(z))` for a batch of positions `z` of shape [..., l].

  `target_log_prob_fn` maps [..., l] to [...]; examples in the batch must not interact (each
  row's log-probability depends on that row only), so the gradient of the sum is per-row.
  """
  with tf.GradientTape() as tape:
    tape.watch(z)
    log_prob = target_log_prob_fn(z)
  grad = tape.gradient(log_prob, z, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return log_prob, grad


def kick(rho, grad_log_prob, step_size):
  """Momentum update `rho + step_size * grad log p(z)` (a shear: volume-preserving)."""
  return rho + step_size * grad_log_prob


def drift(z, rho, step_size, inverse_mass=None):
  """Position update `z + step_size * M^-1 rho` (a shear: volume-preserving).

  `inverse_mass` is a diagonal `M^-1` broadcastable to [..., l]; `None` means unit mass.
  """
  velocity = rho if inverse_mass is None else inverse_mass * rho
  return z + step_size * velocity


def leapfrog_step(target_log_prob_fn, z, rho, step_size, grad_log_prob=None):
  """One leapfrog step; returns `(z', rho', grad log p(z'))`.

  Args:
    target_log_prob_fn: callable, [..., l] -> [...].
    z: positions, [..., l].
    rho: momenta, [..., l].
    step_size: eps, broadcastable to [..., l] (per-dimension step sizes allowed); a negative
      step size integrates backwards in time and exactly inverts the positive one.
    grad_log_prob: grad log p(z) if already known (saves one gradient evaluation).
  """
  if grad_log_prob is None:
    _, grad_log_prob = target_and_gradient(target_log_prob_fn, z)
  half = 0.5 * step_size
  rho_half = kick(rho, grad_log_prob, half)
  z_new = drift(z, rho_half, step_size)
  _, grad_new = target_and_gradient(target_log_prob_fn, z_new)
  rho_new = kick(rho_half, grad_new, half)
  return z_new, rho_new, grad_new


def hamiltonian(target_log_prob_fn, z, rho):
  """H(z, rho) = -log p(z) + rho^T rho / 2 (unit mass), shape [...]."""
  return -target_log_prob_fn(z) + 0.5 * tf.reduce_sum(tf.square(rho), axis=-1)
