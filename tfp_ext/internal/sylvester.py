"""Shared math of the planar and Sylvester flows (van den Berg et al., 2018).

All Sylvester variants are `z' = z + Q R1 h(R2 Q^T z + b)` with `h = tanh`, an orthonormal
`Q` [D, M] and upper-triangular `R1`, `R2` [M, M]. They differ only in how `Q` is built, so the
map, its exact log-determinant and its exact inverse live here, in `SylvesterBase`; each public
bijector supplies `Q`.

In `v = Q^T z` coordinates the map is `v' = v + R1 h(R2 v + b)`, and component `i` of the
update depends only on `v_i .. v_M`: the inverse solves for `v_M`, then `v_{M-1}`, ... with one
1-D monotone root-find each (`solve_tanh_equation`); the component of `z` orthogonal to the
columns of `Q` passes through unchanged.
"""

from typing import Tuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import tensor_util

__all__ = [
    "SylvesterBase",
    "check_last_dims",
    "finite_assertions",
    "constrained_triangular",
    "log_cosh",
    "matvec",
    "log_one_plus_tanh_prime_times",
    "solve_tanh_equation",
]

tfb = tfp.bijectors


def check_last_dims(owner: str, tensor: tf.Tensor, arg: str, expected) -> None:
  """Raises ValueError unless `tensor`'s static trailing dims match `expected` (None = any)."""
  rank = tensor.shape.rank
  if rank is None:
    return
  if rank < len(expected):
    raise ValueError(f"{owner}: `{arg}` must have rank >= {len(expected)} (trailing shape "
                     f"{list(expected)}), got shape {tensor.shape}.")
  for got, want in zip(tensor.shape[rank - len(expected):], expected):
    if got is not None and want is not None and got != want:
      raise ValueError(f"{owner}: `{arg}` must have trailing shape {list(expected)}, got shape "
                       f"{tensor.shape}.")


def finite_assertions(owner: str, **tensors):
  """`tf.debugging.assert_all_finite` for each named parameter (NaN/Inf parameters)."""
  return [tf.debugging.assert_all_finite(tf.convert_to_tensor(t),
                                         message=f"{owner}: `{arg}` has NaN or Inf entries.")
          for arg, t in tensors.items()]


def matvec(matrix: tf.Tensor, vec: tf.Tensor, transpose_a: bool = False) -> tf.Tensor:
  """`tf.linalg.matvec`, as one matrix product when `matrix` is a single (unbatched) matrix.

  `tf.linalg.matvec([M, M], [N, M])` broadcasts the matrix to `[N, M, M]` and runs N tiny
  products; `vec @ matrix^T` is a single GEMM.
  """
  if matrix.shape.rank == 2 and vec.shape.rank is not None and vec.shape.rank >= 2:
    return tf.linalg.matmul(vec, matrix, transpose_b=not transpose_a)
  return tf.linalg.matvec(matrix, vec, transpose_a=transpose_a)


def log_cosh(x: tf.Tensor) -> tf.Tensor:
  """log(cosh(x)), without overflow for large |x|."""
  ax = tf.abs(x)
  return ax + tf.math.softplus(-2. * ax) - np.log(2.).astype(x.dtype.as_numpy_dtype)


def _tiny(dtype) -> float:
  return np.finfo(dtype.as_numpy_dtype).tiny


def log_one_plus_tanh_prime_times(preact: tf.Tensor, log_one_plus_c: tf.Tensor) -> tf.Tensor:
  """log(1 + tanh'(a) c) for c > -1 given as log(1 + c); stays finite for extreme arguments.

  With t = tanh(a) and tanh'(a) = 1 - t^2: `1 + (1 - t^2) c = t^2 + sech^2(a) (1 + c)`, a sum of
  two non-negative terms, so no cancellation happens when c is close to -1 (the naive form rounds
  to log(0) once tanh of the raw diagonals rounds to +-1). The result is floored at the dtype's
  smallest normal number, reached only when both terms underflow.

  Args:
    preact: `a`, the tanh pre-activation.
    log_one_plus_c: `log(1 + c)`, broadcastable with `preact`.

  Returns:
    `log(1 + tanh'(a) c)`.
  """
  t = tf.math.tanh(preact)
  d = tf.math.square(t) + tf.math.exp(log_one_plus_c - 2. * log_cosh(preact))
  return tf.math.log(tf.maximum(d, _tiny(preact.dtype)))


def constrained_triangular(raw: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Upper triangle of `raw` [..., M, M] with diagonal tanh(diag(raw)); also returns diag(raw).

  The paper's constraint: |R_ii| < 1 for both factors, hence R1_ii R2_ii > -1 = -1/sup h', which
  makes every component of the map strictly increasing (invertible) for any real `raw`.
  """
  m = tf.compat.dimension_value(raw.shape[-1])
  if m is None:
    upper = tf.linalg.band_part(raw, 0, -1)
    raw_diag = tf.linalg.diag_part(raw)
    return tf.linalg.set_diag(upper, tf.math.tanh(raw_diag)), raw_diag
  # Constant masks instead of set_diag: the gradient of set_diag builds a zeros tensor of a
  # run-time shape, which XLA rejects when the batch size is dynamic (Keras' last batch).
  eye = np.eye(m, dtype=raw.dtype.as_numpy_dtype)
  strict_upper = np.triu(np.ones([m, m], raw.dtype.as_numpy_dtype), 1)
  raw_diag = tf.reduce_sum(raw * eye, axis=-1)
  return raw * strict_upper + tf.math.tanh(raw_diag)[..., None] * eye, raw_diag


def diag_part(raw: tf.Tensor) -> tf.Tensor:
  """The diagonal of `raw` [..., M, M] (masked sum when M is static: XLA-differentiable)."""
  m = tf.compat.dimension_value(raw.shape[-1])
  if m is None:
    return tf.linalg.diag_part(raw)
  return tf.reduce_sum(raw * np.eye(m, dtype=raw.dtype.as_numpy_dtype), axis=-1)


def log_one_plus_tanh_product(a1: tf.Tensor, a2: tf.Tensor) -> tf.Tensor:
  """log(1 + tanh(a1) tanh(a2)) = log cosh(a1 + a2) - log cosh(a1) - log cosh(a2), exactly."""
  return log_cosh(a1 + a2) - log_cosh(a1) - log_cosh(a2)


def solve_tanh_equation(y: tf.Tensor, a: tf.Tensor, s: tf.Tensor, k: tf.Tensor,
                        max_iterations: int = 100) -> tf.Tensor:
  """Solves `x + a tanh(s x + k) = y` elementwise, given `a s > -1` (a monotone equation).

  The left side is strictly increasing (slope `1 + a s sech^2 >= min(1, 1 + a s) > 0`) and differs
  from `x` by at most `|a|`, so the root lies in `[y - |a|, y + |a|]`. Newton steps are kept
  inside this bracket, which shrinks at every step; a step leaving it is replaced by bisection.
  The loop stops when every step is below `4 eps (1 + |x|)` or after `max_iterations`; by then
  bisection alone has shrunk the bracket by `2^-max_iterations`, so the result cannot silently be
  far from the root: with the default 100 iterations it is exact to the dtype's precision for
  `|a| < 2^40` (float64) — Newton usually stops after 3-8 steps.

  Gradients: the loop is run without gradients and one final Newton step is taken with them, so
  derivatives w.r.t. `y, a, s, k` are the exact implicit-function derivatives `-dg/dθ / g'`.

  Args:
    y, a, s, k: broadcastable floating tensors.
    max_iterations: Python `int`, cap on the number of safeguarded Newton steps.

  Returns:
    `x`, with the broadcast shape of the arguments.
  """
  shape = ps.broadcast_shape(ps.broadcast_shape(ps.shape(y), ps.shape(a)),
                             ps.broadcast_shape(ps.shape(s), ps.shape(k)))
  y, a, s, k = [tf.broadcast_to(t, shape) for t in (y, a, s, k)]
  eps = np.finfo(y.dtype.as_numpy_dtype).eps
  ys, as_, ss, ks = [tf.stop_gradient(t) for t in (y, a, s, k)]

  def residual_and_slope(x, y, a, s, k):
    t = tf.math.tanh(s * x + k)
    return x + a * t - y, 1. + a * s * (1. - tf.math.square(t))

  def body(i, x, lo, hi, done):
    g, dg = residual_and_slope(x, ys, as_, ss, ks)
    lo = tf.where(g < 0., x, lo)
    hi = tf.where(g > 0., x, hi)
    newton = x - g / dg
    inside = (newton > lo) & (newton < hi)
    x_new = tf.where(inside, newton, 0.5 * (lo + hi))
    x_new = tf.where(g == 0., x, x_new)
    done = tf.abs(x_new - x) <= 4. * eps * (1. + tf.abs(x))
    return i + 1, x_new, lo, hi, done

  def cond(i, x, lo, hi, done):
    return (i < max_iterations) & ~tf.reduce_all(done)

  width = tf.abs(as_)
  lo, hi = ys - width, ys + width
  # The fixed-point guess is exact when a = 0 and good when |a s| is small.
  x0 = tf.clip_by_value(ys - as_ * tf.math.tanh(ss * ys + ks), lo, hi)
  _, x, _, _, _ = tf.while_loop(
      cond, body, (tf.constant(0), x0, lo, hi, tf.zeros(shape, tf.bool)),
      maximum_iterations=max_iterations)
  x = tf.stop_gradient(x)
  g, dg = residual_and_slope(x, y, a, s, k)
  return x - g / tf.stop_gradient(dg)


class SylvesterBase(tfb.AutoCompositeTensorBijector):
  """`z' = z + Q R1 tanh(R2 Q^T z + b)` with exact log-det and inverse; subclasses provide `Q`.

  Subclasses call `_init_sylvester(r1, r2, b)` in their constructor (inside their name scope, after
  converting their own parameters) and implement `_q()` returning the orthonormal `[..., D, M]`
  matrix, or override `_to_v` / `_from_v` (multiplication by `Q^T` and `Q`) when `Q` is a
  permutation. `r1`, `r2` and `b` stay raw (unconstrained) tensors; the constraint is applied at
  use, so variables can be passed and trained.
  """

  @property
  def r1(self):
    """The raw `r1` (upper triangle used, diagonal through tanh)."""
    return self._r1

  @property
  def r2(self):
    """The raw `r2` (upper triangle used, diagonal through tanh)."""
    return self._r2

  @property
  def b(self):
    """The bias `b`."""
    return self._b

  def _to_v(self, z: tf.Tensor) -> tf.Tensor:
    return matvec(self._q(), z, transpose_a=True)

  def _from_v(self, v: tf.Tensor) -> tf.Tensor:
    return matvec(self._q(), v)

  def _q(self) -> tf.Tensor:
    raise NotImplementedError

  def _triangular_factors(self):
    r1, raw_d1 = constrained_triangular(tf.convert_to_tensor(self._r1))
    r2, raw_d2 = constrained_triangular(tf.convert_to_tensor(self._r2))
    return r1, r2, raw_d1, raw_d2

  def _event_size(self) -> int:
    raise NotImplementedError

  def _check_event(self, x: tf.Tensor) -> None:
    d = self._event_size()
    if x.shape.rank is not None and x.shape.rank < 1:
      raise ValueError(f"{self.name}: input must have rank >= 1 (an event of size {d}), got a "
                       "scalar.")
    if d is not None and x.shape[-1] is not None and x.shape[-1] != d:
      raise ValueError(f"{self.name}: the last dimension of the input must be the event size {d},"
                       f" got shape {x.shape}.")

  def _forward(self, x):
    self._check_event(x)
    r1, r2, _, _ = self._triangular_factors()
    v = self._to_v(x)
    h = tf.math.tanh(matvec(r2, v) + self._b)
    return x + self._from_v(matvec(r1, h))

  def _forward_log_det_jacobian(self, x):
    self._check_event(x)
    r2, _ = constrained_triangular(tf.convert_to_tensor(self._r2))
    raw_d1 = diag_part(tf.convert_to_tensor(self._r1))
    raw_d2 = diag_part(tf.convert_to_tensor(self._r2))
    preact = matvec(r2, self._to_v(x)) + self._b
    # det(I_D + Q R1 diag(h') R2 Q^T) = det(I_M + diag(h') R2 R1) (Sylvester's determinant
    # identity); R2 R1 is upper triangular with diagonal R1_ii R2_ii, so the log-det is a sum.
    return tf.reduce_sum(log_one_plus_tanh_prime_times(
        preact, log_one_plus_tanh_product(raw_d1, raw_d2)), axis=-1)

  def _inverse(self, y):
    self._check_event(y)
    r1, r2, _, _ = self._triangular_factors()
    b = tf.convert_to_tensor(self._b)
    v_target = self._to_v(y)
    m = self._num_columns()
    batch = ps.broadcast_shape(ps.shape(v_target), ps.shape(b))
    batch = ps.broadcast_shape(batch, ps.shape(r1)[:-1])
    v_target = tf.broadcast_to(v_target, batch)
    zeros = tf.zeros(batch, dtype=y.dtype)

    # Back-substitution from the last coordinate: unknown entries of v and h are zero, so
    # row i of R2 @ v and of R1 @ h only sums the already-solved coordinates j > i.
    def body(i, v, h):
      one_hot = tf.one_hot(i, m, dtype=y.dtype)
      r1_row = tf.gather(r1, i, axis=-2)
      r2_row = tf.gather(r2, i, axis=-2)
      r1_ii = tf.gather(r1_row, i, axis=-1)
      r2_ii = tf.gather(r2_row, i, axis=-1)
      c = tf.reduce_sum(r2_row * v, -1) + tf.gather(b, i, axis=-1)
      rhs = tf.gather(v_target, i, axis=-1) - tf.reduce_sum(r1_row * h, -1)
      v_i = solve_tanh_equation(rhs, r1_ii, r2_ii, c)
      h_i = tf.math.tanh(r2_ii * v_i + c)
      return i - 1, v + v_i[..., None] * one_hot, h + h_i[..., None] * one_hot

    _, _, h = tf.while_loop(lambda i, v, h: i >= 0, body, (tf.constant(m - 1), zeros, zeros),
                            maximum_iterations=m)
    return y - self._from_v(matvec(r1, h))

  def _num_columns(self) -> int:
    m = tf.compat.dimension_value(self._b.shape[-1])
    if m is None:
      raise ValueError(f"{self.name}: the number of columns M (last dimension of `b`) must be "
                       "known statically to invert.")
    return m

  def _invertibility_assertions(self):
    """Assertions that R1_ii R2_ii > -1 holds numerically (it does in exact arithmetic)."""
    r1, r2, _, _ = self._triangular_factors()
    prod = diag_part(r1) * diag_part(r2)
    return [tf.debugging.assert_greater(
        prod, tf.constant(-1., prod.dtype),
        message=(f"{self.name}: R1_ii * R2_ii must be > -1 for invertibility; tanh of the raw "
                 "diagonals rounded to +-1 (raw diagonal entries are too large for this dtype)."))]

  def _raw_parameters(self):
    """Name -> raw parameter tensor, for validation (subclasses extend)."""
    return dict(r1=self._r1, r2=self._r2, b=self._b)

  def _extra_assertions(self):
    return []

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    params = self._raw_parameters()
    # At construction for tensors; at every call when some parameter is a variable.
    if is_init == any(tensor_util.is_ref(v) for v in params.values()):
      return []
    r1 = tf.convert_to_tensor(self._r1)
    r2 = tf.convert_to_tensor(self._r2)
    b = tf.convert_to_tensor(self._b)
    m = tf.shape(b)[-1]
    assertions = finite_assertions(self.name, **params)
    for arg, t in (("r1", r1), ("r2", r2)):
      assertions.append(tf.debugging.assert_equal(
          tf.shape(t)[-2:], tf.stack([m, m]),
          message=f"{self.name}: `{arg}` must have trailing shape [M, M] with M = b.shape[-1]."))
    return assertions + self._extra_assertions() + self._invertibility_assertions()
