"""The generalized inverse Gaussian distribution, with an exact sampler."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import seeds as seeds_lib

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["GeneralizedInverseGaussian"]


class GeneralizedInverseGaussian(tfd.AutoCompositeTensorDistribution):
  """Generalized inverse Gaussian (GIG) distribution on the positive reals.

  #### Mathematical details

  With `power` lambda (any real), `chi` > 0 and `psi` > 0,

  ```none
  pdf(x; lambda, chi, psi) = (psi / chi)**(lambda / 2) / (2 K_lambda(omega))
                             * x**(lambda - 1) * exp(-(chi / x + psi * x) / 2),   x > 0,
  omega = sqrt(chi * psi),
  ```

  where `K_lambda` is the modified Bessel function of the second kind. With `eta = sqrt(chi / psi)`,
  `X = eta * Y` where `Y` has the two-parameter density proportional to
  `y**(lambda - 1) exp(-omega (y + 1/y) / 2)`, and `1 / Y` is the same law with `-lambda`.

  `sample` is exact: the rejection algorithms of Hormann and Leydold (2014), chosen per batch
  member by their regions of efficiency:

  * ratio-of-uniforms with the mode shift of Dagpunar (1989) and Lehner (1989) for
    `|lambda| > 2` or `omega > 3`;
  * ratio-of-uniforms without shift for `|lambda| >= 1 - 2.25 omega**2` or `omega > 0.2`;
  * the three-piece rejection hat of Hormann and Leydold (2014, Section 4) otherwise
    (`|lambda| < 1` and small `omega`).

  Each is an exact rejection sampler for the target density, so the choice only changes the
  expected number of trials (uniformly bounded over all parameters, see the reference). The trials
  run as one vectorized `tf.while_loop` over the whole batch with stateless Philox draws, so
  sampling is reproducible from a seed and compiles with XLA. The setup runs in float64 whatever
  the dtype, since the mode-shift rectangle comes from the roots of a cubic.

  The mixture `sqrt(W) * z`, `z ~ N(0, I_d)`, `W ~ GIG((d + 1)/2, m**2 c**2, c**2)` has density
  proportional to `exp(-c sqrt(|p|**2 + m**2 c**2))`: the relativistic momentum distribution.

  #### Examples

  ```python
  gig = tfp_ext.distributions.GeneralizedInverseGaussian(power=1.5, chi=2., psi=0.5)
  x = gig.sample(1000, seed=(1, 2))
  gig.log_prob(x), gig.mean(), gig.variance()
  ```

  #### References

  [1]: Wolfgang Hormann and Josef Leydold. Generating generalized inverse Gaussian random
       variates. _Statistics and Computing_, 24:547-557, 2014.
  [2]: John S. Dagpunar. An easily implemented generalised inverse Gaussian generator.
       _Communications in Statistics - Simulation and Computation_, 18:703-710, 1989.
  """

  def __init__(self,
               power,
               chi,
               psi,
               validate_args: bool = False,
               allow_nan_stats: bool = True,
               name: str = "GeneralizedInverseGaussian"):
    """Constructs a GIG distribution.

    Args:
      power: float `Tensor`, lambda, any real value.
      chi: float `Tensor` > 0, the coefficient of `1/x` in the exponent.
      psi: float `Tensor` > 0, the coefficient of `x` in the exponent.
      validate_args: Python `bool`; when `True`, `chi` and `psi` are checked to be positive and
        samples to be positive.
      allow_nan_stats: Python `bool`; see `tfd.Distribution`.
      name: Python `str` name prefixed to the ops created by this class.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([power, chi, psi], dtype_hint=tf.float32)
      self._power = tensor_util.convert_nonref_to_tensor(power, dtype=dtype, name="power")
      self._chi = tensor_util.convert_nonref_to_tensor(chi, dtype=dtype, name="chi")
      self._psi = tensor_util.convert_nonref_to_tensor(psi, dtype=dtype, name="psi")
      super().__init__(
          dtype=dtype,
          reparameterization_type=tfd.NOT_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=allow_nan_stats,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    positive = lambda: tfb.Softplus(low=np.finfo(np.dtype(dtype.as_numpy_dtype)).eps)  # noqa: E731
    return dict(
        power=tfp.util.ParameterProperties(),
        chi=tfp.util.ParameterProperties(default_constraining_bijector_fn=positive),
        psi=tfp.util.ParameterProperties(default_constraining_bijector_fn=positive))

  @property
  def power(self):
    """The power parameter lambda."""
    return self._power

  @property
  def chi(self):
    """The coefficient chi of `1/x` in the exponent."""
    return self._chi

  @property
  def psi(self):
    """The coefficient psi of `x` in the exponent."""
    return self._psi

  def _event_shape(self):
    return tf.TensorShape([])

  def _event_shape_tensor(self):
    return tf.constant([], dtype=tf.int32)

  def _params(self):
    return (tf.convert_to_tensor(self.power), tf.convert_to_tensor(self.chi),
            tf.convert_to_tensor(self.psi))

  def _log_normalizer(self, power, chi, psi):
    # log of 1 / [(psi/chi)^(lambda/2) / (2 K_lambda(omega))];  K_{-lambda} = K_lambda and
    # log K_v(z) = log_bessel_kve(v, z) - z.
    omega = tf.sqrt(chi * psi)
    log_k = tfp.math.log_bessel_kve(tf.abs(power), omega) - omega
    return np.log(2.) + log_k - 0.5 * power * (tf.math.log(psi) - tf.math.log(chi))

  def _log_prob(self, x):
    power, chi, psi = self._params()
    return ((power - 1.) * tf.math.log(x) - 0.5 * (chi / x + psi * x)
            - self._log_normalizer(power, chi, psi))

  def _bessel_ratios(self):
    # K_{lambda+1}/K_lambda and K_{lambda+2}/K_lambda at omega, from one call of the exponentially
    # scaled log-Bessel function (K_{-v} = K_v); also returns eta = sqrt(chi / psi).
    power, chi, psi = self._params()
    omega, eta = tf.sqrt(chi * psi), tf.sqrt(chi / psi)
    orders = tf.abs(power[tf.newaxis] + tf.reshape(tf.constant([0., 1., 2.], power.dtype),
                                                   [3] + [1] * len(power.shape)))
    log_k = tfp.math.log_bessel_kve(orders, omega[tf.newaxis])
    return tf.exp(log_k[1] - log_k[0]), tf.exp(log_k[2] - log_k[0]), eta

  def _mean(self):
    r1, _, eta = self._bessel_ratios()
    return eta * r1

  def _variance(self):
    r1, r2, eta = self._bessel_ratios()
    return tf.square(eta) * (r2 - tf.square(r1))

  def _mode(self):
    power, chi, psi = self._params()
    return ((power - 1.) + tf.sqrt(tf.square(power - 1.) + chi * psi)) / psi

  def _sample_n(self, n, seed=None):
    power, chi, psi = self._params()
    batch_shape = self._batch_shape_tensor()
    shape = tf.concat([[n], batch_shape], axis=0)
    f64 = tf.float64
    lam = tf.broadcast_to(tf.cast(power, f64), shape)
    chi64 = tf.broadcast_to(tf.cast(chi, f64), shape)
    psi64 = tf.broadcast_to(tf.cast(psi, f64), shape)
    omega = tf.sqrt(chi64 * psi64)
    eta = tf.sqrt(chi64 / psi64)
    static_power = tf.get_static_value(power)
    static_min = None if static_power is None else float(np.min(np.abs(static_power)))
    y = _sample_standard_gig(tf.abs(lam), omega, seeds_lib.sanitize(seed, salt="gig"),
                             static_min_lam=static_min)
    y = tf.where(lam < 0., 1. / y, y)
    return tf.stop_gradient(tf.cast(eta * y, self.dtype))

  def _default_event_space_bijector(self):
    return tfb.Softplus(validate_args=self.validate_args)

  def _sample_control_dependencies(self, x):
    if not self.validate_args:
      return []
    return [tf.debugging.assert_positive(x, message="GIG samples must be positive.")]

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    assertions = []
    for pname in ("chi", "psi"):
      value = getattr(self, pname)
      if is_init != tensor_util.is_ref(value):
        assertions.append(tf.debugging.assert_positive(
            value, message=f"Argument `{pname}` must be positive."))
    return assertions


def _mode_standard(lam, omega):
  """Mode of y^(lam-1) exp(-omega (y + 1/y) / 2), in a form without cancellation for each lam."""
  return tf.where(
      lam >= 1.,
      (tf.sqrt(tf.square(lam - 1.) + tf.square(omega)) + (lam - 1.)) / omega,
      omega / (tf.sqrt(tf.square(1. - lam) + tf.square(omega)) + (1. - lam)))


def _sample_standard_gig(lam, omega, seed, static_min_lam=None):
  """Exact draws of y^(lam-1) exp(-omega (y + 1/y) / 2), lam >= 0, omega > 0 (float64 tensors).

  Every member draws two uniforms per round and keeps its first accepted proposal; rounds repeat
  until all members have accepted. Each member uses only the proposal of its own algorithm, so the
  three algorithms can share the uniforms. `static_min_lam`, a Python lower bound on `lam` when
  known while tracing, leaves out the algorithms no member can use (lam >= 1: no three-piece hat;
  lam > 2: mode shift only), which shrinks the graph, e.g. for relativistic momenta.
  """
  needs_hat = static_min_lam is None or static_min_lam < 1.
  needs_noshift = static_min_lam is None or static_min_lam <= 2.
  use_shift = (lam > 2.) | (omega > 3.)
  use_noshift = ~use_shift & ((lam >= 1. - 2.25 * tf.square(omega)) | (omega > 0.2))
  use_hat = ~use_shift & ~use_noshift  # Implies lam < 1 and omega <= 0.2.

  # sqrt of the density, scaled to 1 at the mode: exp(t log y - s (y + 1/y) - nc).
  t = 0.5 * (lam - 1.)
  s = 0.25 * omega
  xm = _mode_standard(lam, omega)
  nc = t * tf.math.log(xm) - s * (xm + 1. / xm)

  def log_sqrt_density(y):
    return t * tf.math.log(y) - s * (y + 1. / y) - nc

  # Ratio-of-uniforms with mode shift: the rectangle [u-, u+] x [0, 1] bounds
  # {(u, v): 0 < v <= h(u/v + xm)}; u-/u+ are extrema of (y - xm) h(y), the roots in (0, xm) and
  # (xm, inf) of y^3 + a y^2 + b y + c = 0 (set d/dy [(y - xm) h(y)] = 0 and multiply by -y^2/s).
  # Members not using this algorithm get harmless placeholder parameters (no NaN in where()).
  lam_s = tf.where(use_shift, lam, 3.)
  om_s = tf.where(use_shift, omega, 1.)
  xm_s = _mode_standard(lam_s, om_s)
  a = -(2. * (lam_s + 1.) / om_s + xm_s)
  b = 2. * (lam_s - 1.) * xm_s / om_s - 1.
  c = xm_s
  p = b - tf.square(a) / 3.
  q = 2. * a ** 3 / 27. - a * b / 3. + c
  # Three real roots (trigonometric Cardano); clip guards acos against rounding just past +-1.
  phi = tf.acos(tf.clip_by_value(-q / (2. * tf.sqrt(-p ** 3 / 27.)), -1., 1.))
  fak = 2. * tf.sqrt(-p / 3.)
  y_hi = fak * tf.cos(phi / 3.) - a / 3.
  y_lo = fak * tf.cos(phi / 3. + 4. / 3. * np.pi) - a / 3.
  t_s, s_s = 0.5 * (lam_s - 1.), 0.25 * om_s
  nc_s = t_s * tf.math.log(xm_s) - s_s * (xm_s + 1. / xm_s)
  h_s = lambda y: tf.exp(t_s * tf.math.log(y) - s_s * (y + 1. / y) - nc_s)  # noqa: E731
  u_plus = (y_hi - xm_s) * h_s(y_hi)
  u_minus = (y_lo - xm_s) * h_s(y_lo)

  # Ratio-of-uniforms without shift: u in [0, u_max], u_max = max_y y h(y) at the positive root of
  # (omega/2) y^2 - (lam + 1) y - omega/2 = 0.
  ym = ((lam + 1.) + tf.sqrt(tf.square(lam + 1.) + tf.square(omega))) / omega
  u_max = tf.exp(0.5 * (lam + 1.) * tf.math.log(ym) - s * (ym + 1. / ym) - nc)

  # Three-piece hat for the density itself (not its root), lam < 1, small omega:
  #   [0, x0]: the mode value k0;  [x0, 2/omega]: k1 y^(lam-1) with k1 = exp(-omega) since
  #   y + 1/y >= 2;  [max(x0, 2/omega), inf): k2 exp(-omega y / 2) with
  #   k2 = max(x0, 2/omega)^(lam-1) since y^(lam-1) decreases.  x0 = omega / (1 - lam).
  if needs_hat:
    lam_h = tf.where(use_hat, lam, 0.5)
    om_h = tf.where(use_hat, omega, 0.1)
    xm_h = _mode_standard(lam_h, om_h)
    x0 = om_h / (1. - lam_h)
    two_over_om = 2. / om_h
    k0 = tf.exp((lam_h - 1.) * tf.math.log(xm_h) - 0.5 * om_h * (xm_h + 1. / xm_h))
    area0 = k0 * x0
    has_mid = x0 < two_over_om
    k1 = tf.exp(-om_h)
    lam_safe = tf.where(lam_h > 0., lam_h, 1.)
    area1_pow = k1 / lam_safe * (two_over_om ** lam_safe - x0 ** lam_safe)
    area1_log = k1 * tf.math.log(two_over_om / x0)
    area1 = tf.where(has_mid, tf.where(lam_h > 0., area1_pow, area1_log), 0.)
    tail_start = tf.maximum(x0, two_over_om)
    k2 = tail_start ** (lam_h - 1.)
    area2 = k2 * 2. / om_h * tf.exp(-0.5 * om_h * tail_start)
    area_total = area0 + area1 + area2

  def propose(u1, u2):
    # Mode shift.
    v = u2
    y_shift = (u_minus + (u_plus - u_minus) * u1) / v + xm
    y_shift_safe = tf.where(y_shift > 0., y_shift, 1.)
    ok_shift = (y_shift > 0.) & (tf.math.log(v) <= log_sqrt_density(y_shift_safe))
    if not needs_noshift:
      return y_shift, ok_shift & tf.math.is_finite(y_shift)
    # No shift.
    y_noshift = u_max * u1 / v
    ok_noshift = tf.math.log(v) <= log_sqrt_density(y_noshift)
    if not needs_hat:
      y = tf.where(use_shift, y_shift, y_noshift)
      ok = tf.where(use_shift, ok_shift, ok_noshift)
      return y, ok & tf.math.is_finite(y)
    # Three-piece hat, inverted piece by piece.
    w = area_total * u1
    in0 = w <= area0
    w1 = w - area0
    in1 = ~in0 & (w1 <= area1)
    w2 = tf.maximum(w1 - area1, 0.)
    y0 = x0 * w / area0
    w1_mid = tf.clip_by_value(w1, 0., area1)
    y1_pow = (x0 ** lam_safe + lam_safe / k1 * w1_mid) ** (1. / lam_safe)
    y1_log = x0 * tf.exp(w1_mid / k1)
    y1 = tf.where(lam_h > 0., y1_pow, y1_log)
    y2 = -2. / om_h * tf.math.log(tf.exp(-0.5 * om_h * tail_start) - 0.5 * om_h / k2 * w2)
    y_hat = tf.where(in0, y0, tf.where(in1, y1, y2))
    hat = tf.where(in0, k0, tf.where(in1, k1 * y1 ** (lam_h - 1.), k2 * tf.exp(-0.5 * om_h * y2)))
    y_hat_safe = tf.where(y_hat > 0., y_hat, 1.)
    ok_hat = (y_hat > 0.) & (tf.math.log(u2 * hat) <= (lam_h - 1.) * tf.math.log(y_hat_safe)
                              - 0.5 * om_h * (y_hat_safe + 1. / y_hat_safe))
    y = tf.where(use_shift, y_shift, tf.where(use_noshift, y_noshift, y_hat))
    ok = tf.where(use_shift, ok_shift, tf.where(use_noshift, ok_noshift, ok_hat))
    return y, ok & tf.math.is_finite(y)

  shape = tf.shape(lam)

  def body(seed, y, done):
    seed, draw_seed = tf.unstack(tfp.random.split_seed(seed, n=2))
    u = tf.random.stateless_uniform(tf.concat([[2], shape], 0), draw_seed, dtype=tf.float64,
                                    alg=seeds_lib.RNG_ALG)
    # Open interval (0, 1): u = 0 would give v = 0 or log(0) above.
    u = tf.maximum(u, np.finfo(np.float64).tiny)
    proposal, ok = propose(u[0], u[1])
    take = ok & ~done
    return seed, tf.where(take, proposal, y), done | ok

  _, y, _ = tf.while_loop(
      lambda seed, y, done: ~tf.reduce_all(done),
      body,
      (seed, tf.ones(shape, tf.float64), tf.zeros(shape, tf.bool)))
  return y
