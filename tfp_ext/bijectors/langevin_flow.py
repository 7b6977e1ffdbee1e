"""The quasi-symplectic Langevin flow of the Langevin Variational Auto-Encoder."""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tensorflow_probability.python.bijectors import bijector as bijector_lib
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import leapfrog
from tfp_ext.internal import quasi_symplectic
from tfp_ext.internal.validation import check_int

__all__ = ["LangevinFlow"]


class LangevinFlow(bijector_lib.Bijector):
  """Langevin flow: K quasi-symplectic steps of damped Langevin dynamics on a target.

  The flow of the Langevin VAE of [Wang & Delingette (2021)][1] as a bijector on the joint state
  `x = concat([z, rho], -1)` (event shape `[2 * l]`: position then momentum). It integrates the
  underdamped Langevin equation of the potential `U(z) = -target_log_prob_fn(z)`,

  ```none
  dz = M^-1 rho dt,    drho = -grad U(z) dt - gamma rho dt + sqrt(2 gamma M) dW,
  ```

  with a splitting that is quasi-symplectic in the sense of [Milstein & Tretyakov (2003)][2]
  (one target gradient per step, as in the Langevin VAE of [1]): step `k = 1..K` is

  ```none
  z_half = z_{k-1} + h / 2 M^-1 rho_{k-1}
  rho_k  = exp(-gamma h) (rho_{k-1} - h grad U(z_half)) + sqrt(M (1 - exp(-2 gamma h))) xi_k
  z_k    = z_half + h / 2 M^-1 rho_k
  ```

  with step size `h > 0`, friction `gamma >= 0` and diagonal mass `M > 0` (each a scalar or an
  `[l]` vector). Without noise (`xi_k = 0`, the default) the map is deterministic. The drifts
  and the kick are shears, so the friction alone changes volume, by `exp(-h gamma)` per
  dimension and step: the log-determinant is the same for every input,

  ```none
  log |det J| = -K sum_j h_j gamma_j      (= -K h gamma l for scalar h, gamma),
  ```

  which is the exact Langevin flow's phase-volume contraction over time `K h`, and with
  `gamma = 0` a step is the symplectic Stormer-Verlet (drift-kick-drift leapfrog) step with
  log-det 0: the two properties that make a scheme quasi-symplectic in [2]. Each step
  evaluates the target gradient once (the leapfrog of `TemperedHamiltonianFlow` needs K + 1),
  and so does each inverse step: the inverse runs the steps backwards exactly.

  The stochastic flow conditions on the injected noise: `forward(x, noise=xi)` with standard
  normal `xi` of shape `[K, *batch, l]`. For fixed noise the map is still a bijection with the
  same log-det (the noise is a translation), which is what makes the ELBO of
  `tfp_ext.vi.langevin_elbo` reparameterizable.

  `target_log_prob_fn` maps positions `[..., l]` to log-densities `[...]`. It may close over a
  batch of data (per-example targets): the flow then transforms states whose batch shape
  matches that data, e.g. `[num_samples, batch, 2 * l]`. Rows must not interact.

  To learn `step_size` and `friction` (as in [1]), pass `tfp.util.TransformedVariable`s that
  keep them positive (e.g. `tfb.Softplus()`); gradients flow through the flow into them.

  #### Examples

  ```python
  tfb = tfp.bijectors
  tfd = tfp.distributions
  target = tfd.MultivariateNormalDiag(loc=[1., -1.], scale_diag=[0.5, 2.])
  step_size = tfp.util.TransformedVariable([0.1, 0.1], tfb.Softplus())
  friction = tfp.util.TransformedVariable(0.5, tfb.Softplus())
  flow = LangevinFlow(target.log_prob, num_steps=5, step_size=step_size, friction=friction)
  x = tf.random.stateless_normal([100, 4], seed=[1, 2])      # concat([z0, rho0], -1)
  y = flow.forward(x)                                           # [100, 4]: (z_5, rho_5)
  flow.forward_log_det_jacobian(x, event_ndims=1)               # -5 * (0.1 + 0.1) * 0.5
  xi = tf.random.stateless_normal([5, 100, 2], seed=[3, 4])
  y_noisy = flow.forward(x, noise=xi)                           # the stochastic flow
  ```

  #### References

  [1]: Zihao Wang and Herve Delingette. Quasi-symplectic Langevin Variational Autoencoder.
       _arXiv preprint_, 2020 (revised 2021). https://arxiv.org/abs/2009.01675

  [2]: Grigori N. Milstein and Michael V. Tretyakov. Quasi-symplectic methods for Langevin-type
       equations. _IMA Journal of Numerical Analysis_, 23(4):593-626, 2003.

  [3]: Anthony L. Caterini, Arnaud Doucet, and Dino Sejdinovic. Hamiltonian Variational
       Auto-Encoder. In _Neural Information Processing Systems_, 2018.
       https://arxiv.org/abs/1805.11328
  """

  def __init__(self,
               target_log_prob_fn: Callable[[tf.Tensor], tf.Tensor],
               num_steps: int,
               step_size,
               friction,
               mass=1.,
               validate_args: bool = False,
               name: str = "langevin_flow"):
    """Instantiates the `LangevinFlow` bijector.

    Args:
      target_log_prob_fn: Python callable, positions `[..., l]` -> log-density `[...]` (the
        unnormalized posterior `log p(x, z)`); the potential is its negative.
      num_steps: Python `int` K >= 1, the number of quasi-symplectic steps.
      step_size: floating-point `Tensor` (or variable) h > 0, a scalar or `[l]`.
      friction: floating-point `Tensor` (or variable) gamma >= 0, a scalar or `[l]`.
      mass: the diagonal mass M > 0, a scalar or `[l]` (1 by default).
      validate_args: Python `bool`, whether to check parameter ranges at runtime.
      name: Python `str` name prefixed to ops created by this object.

    Raises:
      ValueError: on a missing parameter, a wrong static shape, or a statically known
        out-of-range value.
      TypeError: if `target_log_prob_fn` is not callable.
    """
    parameters = dict(locals())
    if not callable(target_log_prob_fn):
      raise TypeError(f"`target_log_prob_fn` must be callable, got {type(target_log_prob_fn)}.")
    num_steps = check_int("num_steps", num_steps)
    for arg, value in (("step_size", step_size), ("friction", friction), ("mass", mass)):
      if value is None:
        raise ValueError(f"`{arg}` is required.")
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([step_size, friction, mass], dtype_hint=tf.float32)
      self._target_log_prob_fn = target_log_prob_fn
      self._num_steps = int(num_steps)
      self._step_size = tensor_util.convert_nonref_to_tensor(
          step_size, dtype=dtype, name="step_size")
      self._friction = tensor_util.convert_nonref_to_tensor(
          friction, dtype=dtype, name="friction")
      self._mass = tensor_util.convert_nonref_to_tensor(mass, dtype=dtype, name="mass")
      self._check_static()
      super().__init__(
          forward_min_event_ndims=1,
          is_constant_jacobian=False,  # The log-det is constant; the Jacobian matrix is not.
          validate_args=validate_args,
          dtype=dtype,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # One flow, no batch of flows: every dimension of a parameter is an event dimension.
    def _rank(attr):
      return lambda self, x_event_ndims=None: _static_rank(getattr(self, attr)) or 0
    return {
        name: parameter_properties.ParameterProperties(
            event_ndims=_rank("_" + name),
            default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED)
        for name in ("step_size", "friction", "mass")
    }

  @property
  def target_log_prob_fn(self) -> Callable[[tf.Tensor], tf.Tensor]:
    """The target log-density `log p(x, z)` whose negative is the potential."""
    return self._target_log_prob_fn

  @property
  def num_steps(self) -> int:
    """K, the number of steps (and of target gradient evaluations)."""
    return self._num_steps

  @property
  def step_size(self):
    """The step size h (scalar or `[l]`)."""
    return self._step_size

  @property
  def friction(self):
    """The friction gamma (scalar or `[l]`)."""
    return self._friction

  @property
  def mass(self):
    """The diagonal mass M (scalar or `[l]`)."""
    return self._mass

  def log_det_jacobian_per_step(self, latent_size: int) -> tf.Tensor:
    """-sum_j h_j gamma_j, the log-det of one step on an `l = latent_size` state."""
    return quasi_symplectic.log_det_per_step(
        tf.convert_to_tensor(self._step_size), tf.convert_to_tensor(self._friction),
        latent_size, self.dtype)

  def _params(self, latent_size):
    out = []
    for arg, value in (("step_size", self._step_size), ("friction", self._friction),
                       ("mass", self._mass)):
      value = tf.convert_to_tensor(value)
      if value.shape.rank == 1:
        n = tf.compat.dimension_value(value.shape[0])
        if n is not None and n != latent_size:
          raise ValueError(f"`{arg}` has {n} dimensions but the state has l = {latent_size} "
                           f"positions (event size {2 * latent_size}).")
      out.append(value)
    return out

  def _split(self, x):
    return leapfrog.split_state(x)

  def _noises(self, noise, z):
    """K noise tensors (or K `None`s) from a `[K, ..., l]` standard normal `noise`."""
    if noise is None:
      return [None] * self._num_steps
    noise = tf.convert_to_tensor(noise, dtype=z.dtype, name="noise")
    if noise.shape.rank is not None:
      k = tf.compat.dimension_value(noise.shape[0]) if noise.shape.rank else None
      if noise.shape.rank == 0 or k not in (None, self._num_steps):
        raise ValueError(f"`noise` must have shape [num_steps, ..., l] = [{self._num_steps}, "
                         f"..., l]; got {noise.shape}.")
    return tf.unstack(noise, num=self._num_steps, axis=0)

  def _forward(self, x, noise=None):
    z, rho, l = self._split(x)
    h, gamma, mass = self._params(l)
    for xi in self._noises(noise, z):
      z, rho = quasi_symplectic.quasi_symplectic_step(
          self._target_log_prob_fn, z, rho, h, gamma, mass, xi)
    return tf.concat([z, rho], axis=-1)

  def _inverse(self, y, noise=None):
    z, rho, l = self._split(y)
    h, gamma, mass = self._params(l)
    for xi in reversed(self._noises(noise, z)):
      z, rho = quasi_symplectic.quasi_symplectic_step_inverse(
          self._target_log_prob_fn, z, rho, h, gamma, mass, xi)
    return tf.concat([z, rho], axis=-1)

  def _forward_log_det_jacobian(self, x, noise=None):
    del noise  # The noise translates the momentum: no volume change.
    _, _, l = self._split(x)
    ldj = self._num_steps * self.log_det_jacobian_per_step(l)
    return tf.broadcast_to(ldj, tf.shape(x)[:-1])

  def _inverse_log_det_jacobian(self, y, noise=None):
    return -self._forward_log_det_jacobian(y, noise)

  def _check_static(self):
    """Raises now on wrong shapes and out-of-range values known at construction time."""
    for arg, value, low, strict in (("step_size", self._step_size, 0., True),
                                    ("friction", self._friction, 0., False),
                                    ("mass", self._mass, 0., True)):
      rank = _static_rank(value)
      if rank is not None and rank > 1:
        raise ValueError(f"`{arg}` must be a scalar or [l]; got shape {value.shape}.")
      static = None if tensor_util.is_ref(value) else tf.get_static_value(value)
      if static is None:
        continue
      if not np.all(np.isfinite(static)):
        raise ValueError(f"`{arg}` must be finite; got {static}.")
      if np.any(static <= low) if strict else np.any(static < low):
        kind = "positive" if strict else "non-negative"
        raise ValueError(f"`{arg}` must be {kind}; got {static}.")

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    assertions = []
    for arg, value, check in (("step_size", self._step_size, assert_util.assert_positive),
                              ("friction", self._friction, assert_util.assert_non_negative),
                              ("mass", self._mass, assert_util.assert_positive)):
      if is_init != tensor_util.is_ref(value):
        kind = "positive" if check is not assert_util.assert_non_negative else "non-negative"
        assertions.append(check(tf.convert_to_tensor(value), message=f"`{arg}` must be {kind}."))
    return assertions


def _static_rank(x) -> Optional[int]:
  """Static rank of a tensor-like (None when unknown)."""
  return getattr(x, "shape", tf.TensorShape(None)).rank
