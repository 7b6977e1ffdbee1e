"""Relativistic kinetic energy and velocity (Lu et al., 2017), shared by the MCMC kernels and optimizers.

With mass m and speed of light c,

  K(p) = m c^2 sqrt(p^T p / (m^2 c^2) + 1),
  v(p) = dK/dp = p / (m sqrt(p^T p / (m^2 c^2) + 1)),   ||v|| < c.

"Joint" reduces p^T p over all state parts (one particle in R^d); "independent" applies the
formulas to each coordinate separately (the authors' `independent_momenta`), which makes each
coordinate's speed, not the whole vector's, bounded by c.

`sample_momentum` draws p exactly from the density proportional to exp(-K(p)): in joint mode
p = sqrt(W) z with z ~ N(0, I_d) and W ~ GIG((d + 1)/2, m^2 c^2, c^2) (d = total event size over
the parts), since that Gaussian scale mixture has density proportional to
exp(-c sqrt(|p|^2 + m^2 c^2)) = exp(-K(p)); in independent mode the same with d = 1 per coordinate.
"""

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["kinetic_energy", "velocity", "sample_momentum", "JOINT", "INDEPENDENT"]

JOINT = "joint"
INDEPENDENT = "independent"


def _check_mode(mode):
  if mode not in (JOINT, INDEPENDENT):
    raise ValueError(f"kinetic energy mode must be {JOINT!r} or {INDEPENDENT!r}, got {mode!r}")


def _sum_event(x, event_ndims):
  return tf.reduce_sum(x, axis=tf.range(-event_ndims, 0)) if event_ndims else x


def _squared_norm_over_parts(parts, event_ndims):
  return tf.add_n([_sum_event(tf.square(p), nd) for p, nd in zip(parts, event_ndims)])


def _constants(momentum_parts, mass, max_speed):
  dtype = momentum_parts[0].dtype
  return (tf.convert_to_tensor(mass, dtype, name="mass"),
          tf.convert_to_tensor(max_speed, dtype, name="max_speed"))


def kinetic_energy(momentum_parts, mass, max_speed, event_ndims, mode=JOINT):
  """K(p) per chain: a tensor of the batch shape (event dims of every part reduced).

  Args:
    momentum_parts: list of tensors, one per state part.
    mass: m > 0, scalar (broadcastable to the batch shape).
    max_speed: c > 0, scalar (broadcastable to the batch shape).
    event_ndims: list of ints, the number of trailing event dims of each part.
    mode: "joint" or "independent".
  """
  _check_mode(mode)
  mass, max_speed = _constants(momentum_parts, mass, max_speed)
  mc2 = mass * tf.square(max_speed)
  m2c2 = tf.square(mass * max_speed)
  if mode == JOINT:
    sq = _squared_norm_over_parts(momentum_parts, event_ndims)
    return mc2 * tf.sqrt(sq / m2c2 + 1.)
  return tf.add_n([
      _sum_event(mc2 * tf.sqrt(tf.square(p) / m2c2 + 1.), nd)
      for p, nd in zip(momentum_parts, event_ndims)])


def velocity(momentum_parts, mass, max_speed, event_ndims, mode=JOINT):
  """dK/dp for every part: a list shaped like `momentum_parts`."""
  _check_mode(mode)
  mass, max_speed = _constants(momentum_parts, mass, max_speed)
  m2c2 = tf.square(mass * max_speed)
  if mode == JOINT:
    sq = _squared_norm_over_parts(momentum_parts, event_ndims)
    outs = []
    for p, nd in zip(momentum_parts, event_ndims):
      denom = mass * tf.sqrt(sq / m2c2 + 1.)
      denom = tf.reshape(denom, tf.concat([tf.shape(denom), tf.ones([nd], tf.int32)], 0))
      outs.append(p / denom)
    return outs
  return [p / (mass * tf.sqrt(tf.square(p) / m2c2 + 1.)) for p in momentum_parts]


def sample_momentum(state_parts, mass, max_speed, event_ndims, mode=JOINT, seed=None):
  """Exact draws from the density proportional to exp(-K(p)), a list shaped like `state_parts`.

  Args:
    state_parts: list of tensors whose shapes and dtypes the momentum takes; their leading
      (non-event) dims are the batch of chains, the same for every part.
    mass: m > 0, scalar (broadcastable to the batch shape).
    max_speed: c > 0, scalar (broadcastable to the batch shape).
    event_ndims: list of ints, the number of trailing event dims of each part.
    mode: "joint" or "independent".
    seed: stateless seed (anything `tfp.random.sanitize_seed` accepts).
  """
  _check_mode(mode)
  # Imported here: the distributions subpackage is optional for users of the energies above.
  from tfp_ext.distributions import generalized_inverse_gaussian as gig_lib  # pylint: disable=g-import-not-at-top,line-too-long
  from tfp_ext.internal import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
  seed = seeds_lib.sanitize(seed, salt="relativistic_momentum")
  mixing_seed, *normal_seeds = tf.unstack(tfp.random.split_seed(seed, n=len(state_parts) + 1))
  dtype = state_parts[0].dtype
  mass = tf.convert_to_tensor(mass, dtype)
  max_speed = tf.convert_to_tensor(max_speed, dtype)
  chi, psi = tf.square(mass * max_speed), tf.square(max_speed)
  shapes = [tf.shape(x) for x in state_parts]
  z = [tf.random.stateless_normal(shp, s, dtype=dtype, alg=seeds_lib.RNG_ALG)
       for shp, s in zip(shapes, normal_seeds)]
  if mode == JOINT:
    x0, nd0 = state_parts[0], event_ndims[0]
    batch_shape = tf.shape(x0)[:len(x0.shape) - nd0]
    event_shapes = [x.shape[len(x.shape) - nd:] for x, nd in zip(state_parts, event_ndims)]
    if all(e.is_fully_defined() for e in event_shapes):
      # A Python power lets the GIG sampler leave out algorithms unused for power >= 1.
      dim = float(sum(e.num_elements() for e in event_shapes))
    else:
      dim = tf.cast(tf.add_n([tf.reduce_prod(tf.shape(x)[len(x.shape) - nd:])
                              for x, nd in zip(state_parts, event_ndims)]), dtype)
    gig = gig_lib.GeneralizedInverseGaussian(
        power=tf.cast(0.5 * (dim + 1.), dtype),
        chi=tf.broadcast_to(chi, batch_shape), psi=tf.broadcast_to(psi, batch_shape))
    scale = tf.sqrt(gig.sample(seed=mixing_seed))
    return [zi * tf.reshape(scale, tf.concat([batch_shape, tf.ones([nd], tf.int32)], 0))
            for zi, nd in zip(z, event_ndims)]
  seeds = tf.unstack(tfp.random.split_seed(mixing_seed, n=len(state_parts)))
  out = []
  for zi, shp, s in zip(z, shapes, seeds):
    gig = gig_lib.GeneralizedInverseGaussian(
        power=tf.constant(1., dtype), chi=tf.broadcast_to(chi, shp), psi=tf.broadcast_to(psi, shp))
    out.append(zi * tf.sqrt(gig.sample(seed=s)))
  return out
