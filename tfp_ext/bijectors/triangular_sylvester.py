"""Triangular Sylvester flow bijector."""

import tensorflow as tf
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tfp_ext.internal import sylvester

__all__ = ["TriangularSylvester"]


class TriangularSylvester(sylvester.SylvesterBase):
  """Compute `Y = g(X) = X + P R1 tanh(R2 P^T X + b)`, `P` the identity or the reversal.

  The triangular Sylvester flow (T-SNF) of [van den Berg et al. (2018)][1] is the Sylvester
  flow `z' = z + Q R1 h(R2 Q^T z + b)` with `Q` a permutation: the identity, or the reversal of
  the coordinates when `flip=True` (the paper alternates the two between layers so that every
  coordinate gets to depend on every other). `R1`, `R2` are `D x D` upper triangular:

  `y = x + P R1 tanh(R2 P^T x + b)`,
  `log|det dy/dx| = sum_i log(1 + tanh'((R2 P^T x + b)_i) R1_ii R2_ii)`,

  an exact O(D) log-determinant ([1], Eq. 13). Only the upper triangles of `r1` and `r2` are
  used; their diagonals are passed through `tanh` ([1], Section 4), so `R1_ii R2_ii > -1` and the
  map is invertible for any real parameters.

  The inverse is exact up to floating point: in `v = P^T x` coordinates, component `i` of the map
  depends only on `v_i .. v_D`, so `v_D, v_{D-1}, ..., v_1` are found in turn, each by a bracketed
  Newton solve of a monotone scalar equation to a few ulps
  (`tfp_ext.internal.sylvester.solve_tanh_equation`).

  Parameters may carry leading batch dimensions (amortized by an encoder): `r1, r2: [..., D, D]`,
  `b: [..., D]`.

  #### Examples

  ```python
  tfd = tfp.distributions
  d = 4
  flow = tfb.Chain([
      tfp_ext.bijectors.TriangularSylvester(r1, r2, b, flip=k % 2 == 1)
      for k, (r1, r2, b) in enumerate(params)])
  q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(d)), flow)
  q.log_prob(q.sample(3, seed=(1, 2)))
  ```

  #### References

  [1]: Rianne van den Berg, Leonard Hasenclever, Jakub M. Tomczak and Max Welling. Sylvester
       Normalizing Flows for Variational Inference. In _Uncertainty in Artificial
       Intelligence_, 2018. https://arxiv.org/abs/1803.05649
  """

  def __init__(self,
               r1,
               r2,
               b,
               flip: bool = False,
               validate_args: bool = False,
               name: str = "triangular_sylvester"):
    """Instantiates the `TriangularSylvester` bijector.

    Args:
      r1: Floating-point `Tensor` `[..., D, D]`; its upper triangle (diagonal through tanh) is R1.
      r2: Floating-point `Tensor` `[..., D, D]`; likewise for R2.
      b: Floating-point `Tensor` `[..., D]`, the bias.
      flip: Python `bool`; if `True`, `Q` reverses the order of the coordinates.
      validate_args: Python `bool`; if `True`, parameters are checked for NaN/Inf, shapes, and
        `R1_ii R2_ii > -1` after rounding.
      name: Python `str` name given to ops managed by this object.

    Raises:
      ValueError: if static shapes are inconsistent.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([r1, r2, b], dtype_hint=tf.float32)
      self._r1 = tensor_util.convert_nonref_to_tensor(r1, dtype=dtype, name="r1")
      self._r2 = tensor_util.convert_nonref_to_tensor(r2, dtype=dtype, name="r2")
      self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
      self._flip = bool(flip)
      sylvester.check_last_dims("TriangularSylvester", self._b, "b", [None])
      d = self._b.shape[-1] if self._b.shape.rank else None
      sylvester.check_last_dims("TriangularSylvester", self._r1, "r1", [d, d])
      sylvester.check_last_dims("TriangularSylvester", self._r2, "r2", [d, d])
      super().__init__(
          forward_min_event_ndims=1,
          dtype=dtype,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        r1=parameter_properties.ParameterProperties(event_ndims=2),
        r2=parameter_properties.ParameterProperties(event_ndims=2),
        b=parameter_properties.ParameterProperties(event_ndims=1))

  @property
  def flip(self) -> bool:
    """Whether `Q` reverses the coordinates."""
    return self._flip

  def _event_size(self):
    return tf.compat.dimension_value(self._b.shape[-1])

  def _to_v(self, z):
    return tf.reverse(z, axis=[-1]) if self._flip else z

  def _from_v(self, v):
    return tf.reverse(v, axis=[-1]) if self._flip else v
