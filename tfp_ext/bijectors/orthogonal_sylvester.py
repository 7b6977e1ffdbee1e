"""Orthogonal Sylvester flow bijector."""

import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import sylvester

__all__ = ["OrthogonalSylvester"]


class OrthogonalSylvester(sylvester.SylvesterBase):
  """Compute `Y = g(X) = X + Q R1 tanh(R2 Q^T X + b)` with `Q` `D x M` orthonormal.

  The orthogonal Sylvester flow (O-SNF) of [van den Berg et al. (2018)][1]. With `Q` `[D, M]`
  having orthonormal columns and `R1`, `R2` `[M, M]` upper triangular, Sylvester's determinant
  identity `det(I_D + A B) = det(I_M + B A)` gives the exact O(M) log-determinant ([1], Eq. 13):

  `log|det dy/dx| = sum_i log(1 + tanh'((R2 Q^T x + b)_i) R1_ii R2_ii)`.

  Only the upper triangles of `r1` and `r2` are used; their diagonals are passed through `tanh`
  ([1], Section 4) so that `R1_ii R2_ii > -1` and the map is invertible for any real parameters.

  Orthogonalization of `q`: the paper iterates `Q <- Q (I + (I - Q^T Q) / 2)`, which converges
  only when the singular values of the (scaled) `q` lie in `(0, sqrt(3))` and slowly when `q` is
  ill-conditioned. Here `Q` is the Q factor of the Householder QR decomposition of `q`, with the
  column signs fixed so that `diag(R) >= 0`: it is orthonormal to machine precision in one pass,
  with nothing to converge, and equals `q` whenever `q` already has orthonormal columns. For full
  column-rank `q` it is a smooth function of `q` (the sign fix makes it unique); for rank-deficient
  `q` it is still orthonormal (the map stays invertible) but its gradient w.r.t. `q` is undefined.

  The inverse is exact up to floating point: in `v = Q^T x` coordinates the map is triangular,
  solved from the last coordinate back with one bracketed Newton solve each (to a few ulps); the
  part of `x` orthogonal to the columns of `Q` passes through.

  Parameters may carry leading batch dimensions (amortized by an encoder): `q: [..., D, M]`,
  `r1, r2: [..., M, M]`, `b: [..., M]`, `M <= D`.

  #### Examples

  ```python
  tfd = tfp.distributions
  d, m = 5, 2
  bij = tfp_ext.bijectors.OrthogonalSylvester(
      q=tf.random.stateless_normal([d, m], seed=(1, 2)),
      r1=tf.eye(m), r2=tf.eye(m), b=tf.zeros(m))
  q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(d)), bij)
  q.log_prob(tf.ones(d))
  ```

  #### References

  [1]: Rianne van den Berg, Leonard Hasenclever, Jakub M. Tomczak and Max Welling. Sylvester
       Normalizing Flows for Variational Inference. In _Uncertainty in Artificial
       Intelligence_, 2018. https://arxiv.org/abs/1803.05649
  """

  def __init__(self,
               q,
               r1,
               r2,
               b,
               validate_args: bool = False,
               name: str = "orthogonal_sylvester"):
    """Instantiates the `OrthogonalSylvester` bijector.

    Args:
      q: Floating-point `Tensor` `[..., D, M]`, `M <= D`; orthogonalized inside (QR).
      r1: Floating-point `Tensor` `[..., M, M]`; its upper triangle (diagonal through tanh) is R1.
      r2: Floating-point `Tensor` `[..., M, M]`; likewise for R2.
      b: Floating-point `Tensor` `[..., M]`, the bias.
      validate_args: Python `bool`; if `True`, parameters are checked for NaN/Inf, shapes,
        `R1_ii R2_ii > -1` after rounding, and `Q^T Q = I`.
      name: Python `str` name given to ops managed by this object.

    Raises:
      ValueError: if static shapes are inconsistent or `M > D`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([q, r1, r2, b], dtype_hint=tf.float32)
      self._q_param = tensor_util.convert_nonref_to_tensor(q, dtype=dtype, name="q")
      self._r1 = tensor_util.convert_nonref_to_tensor(r1, dtype=dtype, name="r1")
      self._r2 = tensor_util.convert_nonref_to_tensor(r2, dtype=dtype, name="r2")
      self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
      owner = "OrthogonalSylvester"
      sylvester.check_last_dims(owner, self._q_param, "q", [None, None])
      d, m = self._q_param.shape[-2], self._q_param.shape[-1]
      if d is not None and m is not None and m > d:
        raise ValueError(f"{owner}: `q` [..., D, M] needs M <= D for orthonormal columns, got "
                         f"shape {self._q_param.shape}.")
      sylvester.check_last_dims(owner, self._b, "b", [m])
      m = m if m is not None else self._b.shape[-1]
      sylvester.check_last_dims(owner, self._r1, "r1", [m, m])
      sylvester.check_last_dims(owner, self._r2, "r2", [m, m])
      super().__init__(
          forward_min_event_ndims=1,
          dtype=dtype,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        q=parameter_properties.ParameterProperties(event_ndims=2),
        r1=parameter_properties.ParameterProperties(event_ndims=2),
        r2=parameter_properties.ParameterProperties(event_ndims=2),
        b=parameter_properties.ParameterProperties(event_ndims=1))

  @property
  def q(self):
    """The raw (not yet orthogonalized) `q`, `[..., D, M]`."""
    return self._q_param

  def orthonormal_matrix(self) -> tf.Tensor:
    """The `[..., D, M]` matrix `Q` with orthonormal columns used by the map."""
    q, r = tf.linalg.qr(tf.convert_to_tensor(self._q_param))
    # LAPACK's column signs are arbitrary; diag(R) >= 0 makes Q unique (and Q = q if q^T q = I).
    signs = tf.where(sylvester.diag_part(r) < 0., -tf.ones([], q.dtype), tf.ones([], q.dtype))
    return q * signs[..., None, :]

  def _q(self):
    return self.orthonormal_matrix()

  def _event_size(self):
    return tf.compat.dimension_value(self._q_param.shape[-2])

  def _raw_parameters(self):
    return dict(q=self._q_param, r1=self._r1, r2=self._r2, b=self._b)

  def _extra_assertions(self):
    q = self.orthonormal_matrix()
    m = tf.shape(q)[-1]
    gram = tf.linalg.matmul(q, q, transpose_a=True)
    err = tf.reduce_max(tf.abs(gram - tf.eye(m, dtype=q.dtype)))
    # Householder QR is backward stable: |Q^T Q - I| ~ D eps; 1e3 eps flags a broken q (NaN).
    tol = 1e3 * dtype_util.eps(q.dtype)
    return [
        tf.debugging.assert_equal(
            tf.shape(self._b)[-1], m,
            message=f"{self.name}: `b` must have trailing size M = q.shape[-1]."),
        tf.debugging.assert_less_equal(
            err, tf.constant(tol, q.dtype),
            message=f"{self.name}: orthogonalization of `q` failed (Q^T Q != I).")]
