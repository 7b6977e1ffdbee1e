"""Householder Sylvester flow bijector."""

from typing import Callable

import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import sylvester

__all__ = ["HouseholderSylvester"]


class HouseholderSylvester(sylvester.SylvesterBase):
  """Compute `Y = g(X) = X + Q R1 tanh(R2 Q^T X + b)`, `Q` a product of Householder reflections.

  The Householder Sylvester flow (H-SNF) of [van den Berg et al. (2018)][1] builds the `D x D`
  orthogonal matrix from `H` Householder reflections ([1], Section 4; [2]):

  `Q = H_1 H_2 ... H_H`,  `H_k = I - 2 v_k v_k^T / ||v_k||^2`,

  which is exactly orthogonal for any nonzero `v_k` (a zero `v_k` is treated as no reflection).
  `R1`, `R2` are `D x D` upper triangular, diagonals through `tanh` so that the map is invertible
  for any real parameters, and

  `log|det dy/dx| = sum_i log(1 + tanh'((R2 Q^T x + b)_i) R1_ii R2_ii)`.

  `Q` is never formed: `Q^T x` and `Q v` apply the `H` reflections in turn, O(H D) per point.
  The inverse is exact up to floating point (back-substitution with one bracketed Newton solve
  per coordinate, to a few ulps; see `tfp_ext.internal.sylvester`).

  Parameters may carry leading batch dimensions (amortized by an encoder):
  `householder_vectors: [..., H, D]`, `r1, r2: [..., D, D]`, `b: [..., D]`.

  #### Examples

  ```python
  tfd = tfp.distributions
  bij = tfp_ext.bijectors.HouseholderSylvester(
      householder_vectors=tf.random.stateless_normal([2, 3], seed=(1, 2)),
      r1=tf.eye(3), r2=tf.eye(3), b=tf.zeros(3))
  q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(3)), bij)
  q.log_prob([0.1, 0.2, 0.3])
  ```

  #### References

  [1]: Rianne van den Berg, Leonard Hasenclever, Jakub M. Tomczak and Max Welling. Sylvester
       Normalizing Flows for Variational Inference. In _Uncertainty in Artificial
       Intelligence_, 2018. https://arxiv.org/abs/1803.05649

  [2]: Jakub M. Tomczak and Max Welling. Improving Variational Auto-Encoders using Householder
       Flow. _arXiv preprint arXiv:1611.09630_, 2016. https://arxiv.org/abs/1611.09630
  """

  def __init__(self,
               householder_vectors,
               r1,
               r2,
               b,
               validate_args: bool = False,
               name: str = "householder_sylvester"):
    """Instantiates the `HouseholderSylvester` bijector.

    Args:
      householder_vectors: Floating-point `Tensor` `[..., H, D]`, one reflection vector per row.
      r1: Floating-point `Tensor` `[..., D, D]`; its upper triangle (diagonal through tanh) is R1.
      r2: Floating-point `Tensor` `[..., D, D]`; likewise for R2.
      b: Floating-point `Tensor` `[..., D]`, the bias.
      validate_args: Python `bool`; if `True`, parameters are checked for NaN/Inf, shapes, and
        `R1_ii R2_ii > -1` after rounding.
      name: Python `str` name given to ops managed by this object.

    Raises:
      ValueError: if static shapes are inconsistent or the number of reflections `H` is unknown.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([householder_vectors, r1, r2, b], dtype_hint=tf.float32)
      self._householder_vectors = tensor_util.convert_nonref_to_tensor(
          householder_vectors, dtype=dtype, name="householder_vectors")
      self._r1 = tensor_util.convert_nonref_to_tensor(r1, dtype=dtype, name="r1")
      self._r2 = tensor_util.convert_nonref_to_tensor(r2, dtype=dtype, name="r2")
      self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
      owner = "HouseholderSylvester"
      sylvester.check_last_dims(owner, self._householder_vectors, "householder_vectors",
                                [None, None])
      if self._householder_vectors.shape[-2] is None:
        raise ValueError(f"{owner}: the number of Householder vectors "
                         "(householder_vectors.shape[-2]) must be known statically.")
      d = self._householder_vectors.shape[-1]
      sylvester.check_last_dims(owner, self._b, "b", [d])
      d = d if d is not None else self._b.shape[-1]
      sylvester.check_last_dims(owner, self._r1, "r1", [d, d])
      sylvester.check_last_dims(owner, self._r2, "r2", [d, d])
      super().__init__(
          forward_min_event_ndims=1,
          dtype=dtype,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        householder_vectors=parameter_properties.ParameterProperties(event_ndims=2),
        r1=parameter_properties.ParameterProperties(event_ndims=2),
        r2=parameter_properties.ParameterProperties(event_ndims=2),
        b=parameter_properties.ParameterProperties(event_ndims=1))

  @property
  def householder_vectors(self):
    """The reflection vectors `v_k`, `[..., H, D]`."""
    return self._householder_vectors

  def orthonormal_matrix(self) -> tf.Tensor:
    """The `[..., D, D]` orthogonal `Q = H_1 ... H_H` (formed explicitly; the map never does)."""
    v = tf.convert_to_tensor(self._householder_vectors)
    v_sq = tf.reduce_sum(tf.math.square(v), axis=-1)
    nonzero = v_sq > 0.
    scale = tf.where(nonzero, 2. / tf.where(nonzero, v_sq, tf.ones_like(v_sq)),
                     tf.zeros_like(v_sq))
    q = tf.eye(tf.shape(v)[-1], dtype=v.dtype)
    for k in range(v.shape[-2]):
      vk = v[..., k, :]
      # Q H_k = Q - scale_k (Q v_k) v_k^T
      q = q - scale[..., k, None, None] * tf.linalg.matvec(q, vk)[..., :, None] * vk[..., None, :]
    return q

  def _event_size(self):
    return tf.compat.dimension_value(self._householder_vectors.shape[-1])

  def _reflections(self) -> Callable[[tf.Tensor, int], tf.Tensor]:
    v = tf.convert_to_tensor(self._householder_vectors)
    v_sq = tf.reduce_sum(tf.math.square(v), axis=-1)
    nonzero = v_sq > 0.
    # A zero vector has no reflection; the double where keeps its gradient finite.
    scale = tf.where(nonzero, 2. / tf.where(nonzero, v_sq, tf.ones_like(v_sq)),
                     tf.zeros_like(v_sq))

    def reflect(z, k):
      vk = v[..., k, :]
      return z - (scale[..., k] * tf.reduce_sum(vk * z, -1))[..., None] * vk
    return reflect

  def _to_v(self, z):
    reflect = self._reflections()
    for k in range(self._householder_vectors.shape[-2]):  # Q^T z = H_H ... H_1 z
      z = reflect(z, k)
    return z

  def _from_v(self, v):
    reflect = self._reflections()
    for k in reversed(range(self._householder_vectors.shape[-2])):  # Q v = H_1 ... H_H v
      v = reflect(v, k)
    return v

  def _raw_parameters(self):
    return dict(householder_vectors=self._householder_vectors, r1=self._r1, r2=self._r2,
                b=self._b)
