"""The tempered Hamiltonian flow of the Hamiltonian Variational Auto-Encoder."""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tensorflow_probability.python.bijectors import bijector as bijector_lib
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import leapfrog
from tfp_ext.internal.validation import check_int

__all__ = ["TemperedHamiltonianFlow"]

FIXED = "fixed"
FREE = "free"
NONE = "none"
_TEMPERINGS = (FIXED, FREE, NONE)


class TemperedHamiltonianFlow(bijector_lib.Bijector):
  """Tempered Hamiltonian flow: K leapfrog steps on a target, each followed by momentum cooling.

  The Hamiltonian importance sampler of [Caterini et al. (2018)][1] as a bijector on the joint
  state `x = concat([z, rho], -1)` (event shape `[2 * l]`: position then momentum). With the
  potential `U(z) = -target_log_prob_fn(z)`, step `k = 1..K` is a leapfrog step (eqs. 7-9),

  ```none
  rho_half = rho_{k-1} - eps_k / 2 * grad U(z_{k-1})
  z_k      = z_{k-1} + eps_k * rho_half
  rho'     = rho_half - eps_k / 2 * grad U(z_k)
  rho_k    = alpha_k * rho'
  ```

  with per-dimension step sizes `eps_k` in `(0, max_step_size)` (one `[l]` vector for all steps,
  or `[K, l]`, one per step) and tempering factors `alpha_k` in `(0, 1]`:

  * `tempering="fixed"` (Algorithm 1): from the initial inverse temperature `beta_0` in `(0, 1]`,
    `sqrt(beta_k) = 1 / ((1 - 1 / sqrt(beta_0)) k^2 / K^2 + 1 / sqrt(beta_0))` and
    `alpha_k = sqrt(beta_{k-1} / beta_k)`, so that `beta_K = 1`.
  * `tempering="free"`: the `alpha_k` are given (and typically learned); `beta_0 = prod alpha_k^2`.
  * `tempering="none"`: `alpha_k = 1`, `beta_0 = 1` (plain leapfrog).

  Leapfrog preserves volume and each tempering multiplies the `l` momenta by `alpha_k`, so

  ```none
  log |det J| = l * sum_k log alpha_k = (l / 2) log beta_0,
  ```

  the same for every input. The inverse runs the steps backwards exactly (divide the momentum by
  `alpha_k`, then a leapfrog step with `-eps_k`). In the HVAE the initial state is
  `z_0 ~ q_0(z | x)`, `rho_0 ~ N(0, I / beta_0)`, and the flowed state is scored against
  `p(x, z_K) N(rho_K | 0, I)`; see `tfp_ext.vi.hamiltonian_elbo`.

  `target_log_prob_fn` maps positions `[..., l]` to log-densities `[...]`. It may close over a
  batch of data (amortized, per-example targets): the flow then transforms states whose batch
  shape matches that data, e.g. `[num_samples, batch, 2 * l]`. Rows must not interact.

  To learn `step_size`, `initial_inverse_temperature` or `alphas`, pass
  `tfp.util.TransformedVariable`s whose bijectors keep them in range (e.g.
  `tfb.Sigmoid(high=max_step_size)`); gradients flow through the flow into them.

  #### Examples

  ```python
  tfb = tfp.bijectors
  tfd = tfp.distributions
  l = 2
  target = tfd.MultivariateNormalDiag(loc=[1., -1.], scale_diag=[0.5, 2.])
  step_size = tfp.util.TransformedVariable(
      [0.1, 0.1], tfb.Sigmoid(low=0., high=0.5))
  beta0 = tfp.util.TransformedVariable(0.25, tfb.Sigmoid())
  flow = TemperedHamiltonianFlow(target.log_prob, num_steps=5, step_size=step_size,
                                 tempering="fixed", initial_inverse_temperature=beta0)
  z0 = tf.random.stateless_normal([100, l], seed=[1, 2])
  rho0 = tf.random.stateless_normal([100, l], seed=[3, 4]) / tf.sqrt(beta0)
  y = flow.forward(tf.concat([z0, rho0], -1))   # [100, 4]
  zK, rhoK = tf.split(y, 2, axis=-1)
  flow.forward_log_det_jacobian(y, event_ndims=1)   # l / 2 * log(beta0), shape [100]
  ```

  #### References

  [1]: Anthony L. Caterini, Arnaud Doucet, and Dino Sejdinovic. Hamiltonian Variational
       Auto-Encoder. In _Neural Information Processing Systems_, 2018.
       https://arxiv.org/abs/1805.11328

  [2]: Radford M. Neal. MCMC using Hamiltonian dynamics. In _Handbook of Markov Chain Monte
       Carlo_, 2011. https://arxiv.org/abs/1206.1901
  """

  def __init__(self,
               target_log_prob_fn: Callable[[tf.Tensor], tf.Tensor],
               num_steps: int,
               step_size,
               tempering: str = FIXED,
               initial_inverse_temperature=None,
               alphas=None,
               max_step_size: float = 0.5,
               validate_args: bool = False,
               name: str = "tempered_hamiltonian_flow"):
    """Instantiates the `TemperedHamiltonianFlow` bijector.

    Args:
      target_log_prob_fn: Python callable, positions `[..., l]` -> log-density `[...]` (the
        unnormalized posterior `log p(x, z)`); the potential is its negative.
      num_steps: Python `int` K >= 1, the number of leapfrog + tempering steps.
      step_size: floating-point `Tensor` (or variable) of leapfrog step sizes `eps` in
        `(0, max_step_size)`: a scalar, `[l]` (per dimension, shared by all steps) or `[K, l]`.
      tempering: `"fixed"` (quadratic schedule from `initial_inverse_temperature`), `"free"`
        (learned `alphas`) or `"none"`.
      initial_inverse_temperature: `beta_0` in `(0, 1]`, required for `"fixed"`; must be
        omitted (or 1) for `"none"` and omitted for `"free"` (where it is `prod alphas^2`).
      alphas: `[K]` tempering factors in `(0, 1)`, required for `"free"` only.
      max_step_size: upper bound on `step_size` (0.5 in the paper's experiments).
      validate_args: Python `bool`, whether to check parameter ranges at runtime.
      name: Python `str` name prefixed to ops created by this object.

    Raises:
      ValueError: on an unknown `tempering`, a parameter missing or superfluous for it, a
        wrong static shape, or a statically known out-of-range value.
      TypeError: if `target_log_prob_fn` is not callable or `num_steps` is not an int.
    """
    parameters = dict(locals())
    if not callable(target_log_prob_fn):
      raise TypeError(f"`target_log_prob_fn` must be callable, got {type(target_log_prob_fn)}.")
    num_steps = check_int("num_steps", num_steps)
    if tempering not in _TEMPERINGS:
      raise ValueError(f"`tempering` must be one of {_TEMPERINGS}, got {tempering!r}.")
    if step_size is None:
      raise ValueError("`step_size` is required.")
    if tempering == FIXED and initial_inverse_temperature is None:
      raise ValueError('tempering="fixed" needs `initial_inverse_temperature` (beta_0 in (0, 1]).')
    if tempering == FREE and alphas is None:
      raise ValueError('tempering="free" needs `alphas` ([num_steps] values in (0, 1)).')
    if tempering == FREE and initial_inverse_temperature is not None:
      raise ValueError('tempering="free" derives beta_0 = prod(alphas**2); do not pass '
                       '`initial_inverse_temperature`.')
    if tempering != FREE and alphas is not None:
      raise ValueError(f'`alphas` is only used with tempering="free", not {tempering!r}.')
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype(
          [step_size, initial_inverse_temperature, alphas, max_step_size],
          dtype_hint=tf.float32)
      self._target_log_prob_fn = target_log_prob_fn
      self._num_steps = int(num_steps)
      self._tempering = tempering
      self._step_size = tensor_util.convert_nonref_to_tensor(
          step_size, dtype=dtype, name="step_size")
      self._max_step_size = tensor_util.convert_nonref_to_tensor(
          max_step_size, dtype=dtype, name="max_step_size")
      if tempering == NONE and initial_inverse_temperature is not None:
        beta0 = tf.get_static_value(tf.convert_to_tensor(initial_inverse_temperature, dtype))
        if beta0 is None or np.any(beta0 != 1):
          raise ValueError('tempering="none" means beta_0 = 1; got `initial_inverse_temperature`'
                           f"={initial_inverse_temperature!r}.")
      self._initial_inverse_temperature = tensor_util.convert_nonref_to_tensor(
          initial_inverse_temperature, dtype=dtype, name="initial_inverse_temperature")
      self._alphas = tensor_util.convert_nonref_to_tensor(alphas, dtype=dtype, name="alphas")
      self._check_static_shapes()
      self._check_static_values()
      super().__init__(
          forward_min_event_ndims=1,
          is_constant_jacobian=False,  # The log-det is constant; the Jacobian matrix is not.
          validate_args=validate_args,
          dtype=dtype,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # The parameters describe one flow; batching over flows is not supported, so every
    # dimension of every parameter is an event dimension (batch shape []).
    def _rank(attr):
      # Bijector event_ndims callables also receive the x event rank, unused here.
      return lambda self, x_event_ndims=None: (
          0 if getattr(self, attr) is None else _static_rank(getattr(self, attr)))
    return {
        "step_size": parameter_properties.ParameterProperties(
            event_ndims=_rank("_step_size"),
            default_constraining_bijector_fn=parameter_properties
            .BIJECTOR_NOT_IMPLEMENTED),
        "initial_inverse_temperature": parameter_properties.ParameterProperties(
            default_constraining_bijector_fn=parameter_properties
            .BIJECTOR_NOT_IMPLEMENTED),
        "alphas": parameter_properties.ParameterProperties(
            event_ndims=1,
            default_constraining_bijector_fn=parameter_properties
            .BIJECTOR_NOT_IMPLEMENTED),
        "max_step_size": parameter_properties.ParameterProperties(
            default_constraining_bijector_fn=parameter_properties
            .BIJECTOR_NOT_IMPLEMENTED),
    }

  @property
  def target_log_prob_fn(self) -> Callable[[tf.Tensor], tf.Tensor]:
    """The target log-density `log p(x, z)` whose negative is the potential."""
    return self._target_log_prob_fn

  @property
  def num_steps(self) -> int:
    """K, the number of leapfrog + tempering steps."""
    return self._num_steps

  @property
  def tempering(self) -> str:
    """`"fixed"`, `"free"` or `"none"`."""
    return self._tempering

  @property
  def step_size(self):
    """The leapfrog step sizes eps (scalar, `[l]` or `[K, l]`)."""
    return self._step_size

  @property
  def max_step_size(self):
    """The upper bound on the step sizes."""
    return self._max_step_size

  @property
  def alphas(self):
    """The given tempering factors (`"free"` tempering), else `None`; see `tempering_factors`."""
    return self._alphas

  def initial_inverse_temperature(self) -> tf.Tensor:
    """beta_0: the given value (`"fixed"`), `prod alphas^2` (`"free"`) or 1 (`"none"`)."""
    if self._tempering == FIXED:
      return tf.convert_to_tensor(self._initial_inverse_temperature)
    if self._tempering == FREE:
      return tf.exp(2. * tf.reduce_sum(tf.math.log(tf.convert_to_tensor(self._alphas))))
    return tf.ones([], self.dtype)

  def _sqrt_inverse_temperatures(self):
    """sqrt(beta_k) for k = 0..K, shape [K + 1] (beta_K = 1 always)."""
    k_over_k = tf.range(self._num_steps + 1, dtype=self.dtype) / self._num_steps
    if self._tempering == FIXED:
      inv_sqrt_b0 = tf.math.rsqrt(tf.convert_to_tensor(self._initial_inverse_temperature))
      return 1. / ((1. - inv_sqrt_b0) * tf.square(k_over_k) + inv_sqrt_b0)
    if self._tempering == FREE:
      log_a = tf.math.log(tf.convert_to_tensor(self._alphas))
      # alpha_k = sqrt(beta_{k-1} / beta_k), beta_K = 1  =>  log sqrt(beta_k) = sum_{j>k} log a_j.
      tail = tf.math.cumsum(log_a, reverse=True, exclusive=False)
      return tf.exp(tf.concat([tail, tf.zeros([1], self.dtype)], 0))
    return tf.ones_like(k_over_k)

  def inverse_temperatures(self) -> tf.Tensor:
    """beta_0, ..., beta_K as a `[K + 1]` tensor (beta_K = 1)."""
    return tf.square(self._sqrt_inverse_temperatures())

  def tempering_factors(self) -> tf.Tensor:
    """alpha_1, ..., alpha_K as a `[K]` tensor; step k multiplies the momentum by alpha_k."""
    if self._tempering == FREE:
      return tf.convert_to_tensor(self._alphas)
    s = self._sqrt_inverse_temperatures()
    return s[:-1] / s[1:]

  def _log_det(self):
    """(l / 2) log beta_0 divided by l, i.e. sum_k log alpha_k (exact for every tempering)."""
    if self._tempering == FIXED:
      return 0.5 * tf.math.log(tf.convert_to_tensor(self._initial_inverse_temperature))
    if self._tempering == FREE:
      return tf.reduce_sum(tf.math.log(tf.convert_to_tensor(self._alphas)))
    return tf.zeros([], self.dtype)

  def _step_sizes(self, latent_size):
    """A list of K step-size tensors broadcastable to [..., l]."""
    eps = tf.convert_to_tensor(self._step_size)
    if eps.shape.rank is not None and eps.shape.rank >= 1:
      n = tf.compat.dimension_value(eps.shape[-1])
      if n is not None and n != latent_size:
        raise ValueError(f"`step_size` has {n} dimensions but the state has l = {latent_size} "
                         f"positions (event size {2 * latent_size}).")
    if eps.shape.rank == 2:
      return tf.unstack(eps, num=self._num_steps, axis=0)
    return [eps] * self._num_steps

  def _split(self, x):
    return leapfrog.split_state(x)

  def _forward(self, x):
    z, rho, l = self._split(x)
    eps = self._step_sizes(l)
    alphas = tf.unstack(self.tempering_factors(), num=self._num_steps)
    grad = None
    for k in range(self._num_steps):
      z, rho, grad = leapfrog.leapfrog_step(self._target_log_prob_fn, z, rho, eps[k], grad)
      if self._tempering != NONE:
        rho = alphas[k] * rho
    return tf.concat([z, rho], axis=-1)

  def _inverse(self, y):
    z, rho, l = self._split(y)
    eps = self._step_sizes(l)
    alphas = tf.unstack(self.tempering_factors(), num=self._num_steps)
    grad = None
    for k in reversed(range(self._num_steps)):
      if self._tempering != NONE:
        rho = rho / alphas[k]
      # A leapfrog step with -eps exactly undoes the step with +eps.
      z, rho, grad = leapfrog.leapfrog_step(self._target_log_prob_fn, z, rho, -eps[k], grad)
    return tf.concat([z, rho], axis=-1)

  def _forward_log_det_jacobian(self, x):
    _, _, l = self._split(x)
    ldj = tf.cast(l, self.dtype) * self._log_det()
    return tf.broadcast_to(ldj, tf.shape(x)[:-1])

  def _inverse_log_det_jacobian(self, y):
    _, _, l = self._split(y)
    ldj = -tf.cast(l, self.dtype) * self._log_det()
    return tf.broadcast_to(ldj, tf.shape(y)[:-1])

  def _check_static_shapes(self):
    k = self._num_steps
    rank = _static_rank(self._step_size)
    if rank is not None and rank > 2:
      raise ValueError(f"`step_size` must be a scalar, [l] or [num_steps, l]; got shape "
                       f"{self._step_size.shape}.")
    if rank == 2:
      k0 = tf.compat.dimension_value(self._step_size.shape[0])
      if k0 is not None and k0 != k:
        raise ValueError(f"`step_size` of shape [K, l] needs K = num_steps = {k}; got shape "
                         f"{self._step_size.shape}.")
    if self._initial_inverse_temperature is not None:
      r = _static_rank(self._initial_inverse_temperature)
      if r not in (0, None):
        raise ValueError("`initial_inverse_temperature` must be a scalar; got shape "
                         f"{self._initial_inverse_temperature.shape}.")
    if self._alphas is not None:
      shape = self._alphas.shape
      if shape.rank is not None and (shape.rank != 1 or
                                     tf.compat.dimension_value(shape[0]) not in (None, k)):
        raise ValueError(f"`alphas` must have shape [num_steps] = [{k}]; got {shape}.")

  def _check_static_values(self):
    """Raises now on out-of-range values that are known at construction time."""
    def static(x):
      if x is None or tensor_util.is_ref(x):
        return None
      return tf.get_static_value(x)
    eps, emax = static(self._step_size), static(self._max_step_size)
    if eps is not None:
      if not np.all(np.isfinite(eps)):
        raise ValueError(f"`step_size` must be finite; got {eps}.")
      if np.any(eps <= 0):
        raise ValueError(f"`step_size` must be positive; got {eps}.")
      if emax is not None and np.any(eps >= emax):
        raise ValueError(f"`step_size` must be below `max_step_size` = {emax}; got {eps}.")
    b0 = static(self._initial_inverse_temperature)
    if b0 is not None and not (0 < b0 <= 1):
      raise ValueError(f"`initial_inverse_temperature` (beta_0) must be in (0, 1]; got {b0}.")
    a = static(self._alphas)
    if a is not None and not np.all((a > 0) & (a < 1)):
      raise ValueError(f"`alphas` must lie in (0, 1); got {a}.")

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    assertions = []
    eps = self._step_size
    if is_init != tensor_util.is_ref(eps) or is_init != tensor_util.is_ref(self._max_step_size):
      eps = tf.convert_to_tensor(eps)
      assertions.append(assert_util.assert_positive(
          eps, message="`step_size` must be positive."))
      assertions.append(assert_util.assert_less(
          eps, tf.convert_to_tensor(self._max_step_size),
          message="`step_size` must be below `max_step_size`."))
    b0 = self._initial_inverse_temperature
    if b0 is not None and is_init != tensor_util.is_ref(b0):
      b0 = tf.convert_to_tensor(b0)
      assertions.append(assert_util.assert_positive(
          b0, message="`initial_inverse_temperature` must be positive."))
      assertions.append(assert_util.assert_less_equal(
          b0, tf.ones([], self.dtype),
          message="`initial_inverse_temperature` must be at most 1."))
    a = self._alphas
    if a is not None and is_init != tensor_util.is_ref(a):
      a = tf.convert_to_tensor(a)
      assertions.append(assert_util.assert_positive(a, message="`alphas` must be positive."))
      assertions.append(assert_util.assert_less(
          a, tf.ones([], self.dtype), message="`alphas` must be below 1."))
    return assertions


def _static_rank(x) -> Optional[int]:
  """Static rank of a tensor-like (None when unknown)."""
  return getattr(x, "shape", tf.TensorShape(None)).rank
