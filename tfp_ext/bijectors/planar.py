"""Planar flow bijector."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import sylvester

__all__ = ["Planar"]

tfb = tfp.bijectors


class Planar(tfb.AutoCompositeTensorBijector):
  """Compute `Y = g(X) = X + u_hat * tanh(w^T X + b)`, the planar flow.

  The planar flow of [Rezende and Mohamed (2015)][1] moves every point along the direction
  `u_hat` by an amount that depends on its projection on `w`:

  `y = x + u_hat tanh(w^T x + b)`,
  `log|det dy/dx| = log(1 + tanh'(w^T x + b) w^T u_hat)`.

  It is invertible iff `w^T u_hat >= -1`. Any real `u` is mapped to a `u_hat` satisfying this
  (the reparameterization of [1], Appendix A):

  `u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`,  `m(s) = -1 + softplus(s)`,

  so that `w^T u_hat = m(w^T u) > -1`. (When `w = 0` the map is the shift `x + u tanh(b)`.)

  The inverse is exact up to floating point: `a = w^T x` solves the scalar monotone equation
  `a + (w^T u_hat) tanh(a + b) = w^T y`, found by a bracketed Newton iteration to a few ulps
  (see `tfp_ext.internal.sylvester.solve_tanh_equation`), then `x = y - u_hat tanh(a + b)`.
  `TransformedDistribution.log_prob` therefore works at any point, not only at cached samples.

  Parameters may carry leading batch dimensions (e.g. produced by an encoder, one flow per data
  point): `u, w: [..., D]`, `b: [...]`.

  #### Examples

  ```python
  tfd = tfp.distributions
  flow = tfd.TransformedDistribution(
      tfd.MultivariateNormalDiag(loc=tf.zeros(2)),
      tfp_ext.bijectors.Planar(u=[2., 0.], w=[3., 1.], b=0.5))
  x = flow.sample(5, seed=(1, 2))
  flow.log_prob(x)
  flow.log_prob([0.3, -1.])  # a fresh point: uses the exact inverse
  ```

  #### References

  [1]: Danilo Jimenez Rezende and Shakir Mohamed. Variational Inference with Normalizing Flows.
       In _International Conference on Machine Learning_, 2015. https://arxiv.org/abs/1505.05770
  """

  def __init__(self,
               u,
               w,
               b,
               validate_args: bool = False,
               name: str = "planar"):
    """Instantiates the `Planar` bijector.

    Args:
      u: Floating-point `Tensor` of shape `[..., D]`, the unconstrained direction.
      w: Floating-point `Tensor` of shape `[..., D]`.
      b: Floating-point `Tensor` of shape `[...]`, the bias.
      validate_args: Python `bool`; if `True`, parameters are checked for NaN/Inf and for
        invertibility (`w^T u_hat > -1` must still hold after rounding).
      name: Python `str` name given to ops managed by this object.

    Raises:
      ValueError: if the static shapes of `u` and `w` do not end in the same event size `D`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([u, w, b], dtype_hint=tf.float32)
      self._u = tensor_util.convert_nonref_to_tensor(u, dtype=dtype, name="u")
      self._w = tensor_util.convert_nonref_to_tensor(w, dtype=dtype, name="w")
      self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
      sylvester.check_last_dims("Planar", self._u, "u", [None])
      sylvester.check_last_dims("Planar", self._w, "w", [self._u.shape[-1]])
      super().__init__(
          forward_min_event_ndims=1,
          dtype=dtype,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        u=parameter_properties.ParameterProperties(event_ndims=1),
        w=parameter_properties.ParameterProperties(event_ndims=1),
        b=parameter_properties.ParameterProperties(event_ndims=0))

  @property
  def u(self):
    """The unconstrained direction `u`."""
    return self._u

  @property
  def w(self):
    """The projection vector `w`."""
    return self._w

  @property
  def b(self):
    """The bias `b`."""
    return self._b

  def _constrained(self):
    """Returns (u_hat, w, w^T u_hat, log(1 + w^T u_hat))."""
    u = tf.convert_to_tensor(self._u)
    w = tf.convert_to_tensor(self._w)
    s = tf.reduce_sum(w * u, axis=-1)
    w_sq = tf.reduce_sum(tf.math.square(w), axis=-1)
    nonzero = w_sq > 0.
    safe_w_sq = tf.where(nonzero, w_sq, tf.ones_like(w_sq))
    # m(s) - s = softplus(-s) - 1, written without the cancellation of softplus(s) - s.
    coef = tf.where(nonzero, (tf.math.softplus(-s) - 1.) / safe_w_sq, tf.zeros_like(s))
    u_hat = u + coef[..., None] * w
    wu_hat = tf.where(nonzero, tf.math.softplus(s) - 1., tf.zeros_like(s))
    # log softplus(s) = s + log1p(-e^s/2 + ...) -> s below log(eps), where softplus underflows.
    threshold = np.log(np.finfo(s.dtype.as_numpy_dtype).eps).astype(s.dtype.as_numpy_dtype)
    safe_s = tf.maximum(s, threshold)
    log_softplus = tf.where(s < threshold, s, tf.math.log(tf.math.softplus(safe_s)))
    log_one_plus_wu_hat = tf.where(nonzero, log_softplus, tf.zeros_like(s))
    return u_hat, w, wu_hat, log_one_plus_wu_hat

  def _check_event(self, x):
    d = tf.compat.dimension_value(self._u.shape[-1])
    if x.shape.rank is not None and x.shape.rank < 1:
      raise ValueError(f"{self.name}: input must have rank >= 1, got a scalar.")
    if d is not None and x.shape[-1] is not None and x.shape[-1] != d:
      raise ValueError(f"{self.name}: the last dimension of the input must be the event size {d},"
                       f" got shape {x.shape}.")

  def _forward(self, x):
    self._check_event(x)
    u_hat, w, _, _ = self._constrained()
    return x + u_hat * tf.math.tanh(tf.reduce_sum(w * x, -1) + self._b)[..., None]

  def _inverse(self, y):
    self._check_event(y)
    u_hat, w, wu_hat, _ = self._constrained()
    b = tf.convert_to_tensor(self._b)
    proj = sylvester.solve_tanh_equation(tf.reduce_sum(w * y, -1), wu_hat,
                                         tf.ones([], y.dtype), b)
    return y - u_hat * tf.math.tanh(proj + b)[..., None]

  def _forward_log_det_jacobian(self, x):
    self._check_event(x)
    _, w, _, log_one_plus_wu_hat = self._constrained()
    preact = tf.reduce_sum(w * x, -1) + self._b
    return sylvester.log_one_plus_tanh_prime_times(preact, log_one_plus_wu_hat)

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    params = dict(u=self._u, w=self._w, b=self._b)
    # At construction for tensors; at every call when some parameter is a variable.
    if is_init == any(tensor_util.is_ref(v) for v in params.values()):
      return []
    assertions = sylvester.finite_assertions(self.name, **params)
    u, w = tf.convert_to_tensor(self._u), tf.convert_to_tensor(self._w)
    assertions.append(tf.debugging.assert_equal(
        tf.shape(u)[-1], tf.shape(w)[-1],
        message=f"{self.name}: `u` and `w` must have the same last dimension (event size)."))
    _, _, wu_hat, _ = self._constrained()
    assertions.append(tf.debugging.assert_greater(
        wu_hat, tf.constant(-1., wu_hat.dtype),
        message=(f"{self.name}: w^T u_hat must be > -1 for invertibility; it rounded to -1 "
                 "(w^T u is too negative for this dtype).")))
    return assertions
