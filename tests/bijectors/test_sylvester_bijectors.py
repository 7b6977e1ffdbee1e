"""Sylvester-family bijectors against the paper's equations, validation, and the exact inverse."""

import numpy as np
import pytest
import tensorflow as tf

from tests.bijectors import harness
from tests.bijectors import test_sylvester_harness as cases
from tfp_ext import bijectors as tfpeb
from tfp_ext.internal import sylvester


def _rand(seed, *shape):
  return np.random.RandomState(seed).randn(*shape)


def _reference(z, q, r1_raw, r2_raw, b):
  """z' = z + Q R1 tanh(R2 Q^T z + b) and its log-det, straight from van den Berg et al. (2018)."""
  def tri(r):
    out = np.triu(r, 1)
    out[np.diag_indices_from(out)] = np.tanh(np.diag(r))
    return out
  r1, r2 = tri(r1_raw), tri(r2_raw)
  a = z @ q @ r2.T + b
  y = z + np.tanh(a) @ r1.T @ q.T
  logdet = np.log(np.abs(1. + (1. - np.tanh(a) ** 2) * np.diag(r1) * np.diag(r2))).sum(-1)
  return y, logdet


def test_orthogonal_matches_paper_equations():
  d, m = 5, 3
  z, q, r1, r2, b = _rand(0, 6, d), _rand(1, d, m), _rand(2, m, m), _rand(3, m, m), _rand(4, m)
  bij = tfpeb.OrthogonalSylvester(q, r1, r2, b)
  q_orth = bij.orthonormal_matrix().numpy()
  np.testing.assert_allclose(q_orth.T @ q_orth, np.eye(m), atol=1e-13)
  # Same column space as q (Q R = q with R upper triangular, positive diagonal).
  r = q_orth.T @ q
  np.testing.assert_allclose(q_orth @ r, q, atol=1e-12)
  np.testing.assert_allclose(np.tril(r, -1), 0., atol=1e-12)
  assert np.all(np.diag(r) > 0)
  y, logdet = _reference(z, q_orth, r1, r2, b)
  np.testing.assert_allclose(bij.forward(z), y, rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(z, event_ndims=1), logdet, rtol=1e-12)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_orthogonalization_batched(dtype):
  q = tf.constant(_rand(5, 4, 7, 3), dtype)
  bij = tfpeb.OrthogonalSylvester(q, tf.zeros([4, 3, 3], dtype), tf.zeros([4, 3, 3], dtype),
                                  tf.zeros([4, 3], dtype), validate_args=True)
  qq = bij.orthonormal_matrix()
  gram = tf.linalg.matmul(qq, qq, transpose_a=True).numpy()
  # Householder QR: |Q^T Q - I| is a small multiple of D eps.
  np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape),
                             atol=50 * np.finfo(dtype.as_numpy_dtype).eps)
  # An already orthonormal q is returned unchanged.
  q0 = np.linalg.qr(_rand(6, 7, 3))[0] * np.array([1., -1., 1.])
  q0 = q0 * np.sign(np.diag(np.linalg.qr(q0)[1]))  # any orthonormal q: signs make diag(R) > 0
  same = tfpeb.OrthogonalSylvester(q0, np.zeros([3, 3]), np.zeros([3, 3]), np.zeros(3))
  np.testing.assert_allclose(same.orthonormal_matrix(), q0, atol=1e-13)


def test_householder_matches_paper_equations():
  d, h = 4, 3
  z, v, r1, r2, b = _rand(7, 5, d), _rand(8, h, d), _rand(9, d, d), _rand(10, d, d), _rand(11, d)
  q = np.eye(d)
  for k in range(h):
    q = q @ (np.eye(d) - 2. * np.outer(v[k], v[k]) / (v[k] @ v[k]))
  bij = tfpeb.HouseholderSylvester(v, r1, r2, b)
  np.testing.assert_allclose(bij.orthonormal_matrix(), q, atol=1e-13)
  y, logdet = _reference(z, q, r1, r2, b)
  np.testing.assert_allclose(bij.forward(z), y, rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(z, event_ndims=1), logdet, rtol=1e-12)


@pytest.mark.parametrize("flip", [False, True])
def test_triangular_matches_paper_equations(flip):
  d = 4
  z, r1, r2, b = _rand(12, 5, d), _rand(13, d, d), _rand(14, d, d), _rand(15, d)
  q = np.eye(d)[::-1] if flip else np.eye(d)
  bij = tfpeb.TriangularSylvester(r1, r2, b, flip=flip)
  y, logdet = _reference(z, q, r1, r2, b)
  np.testing.assert_allclose(bij.forward(z), y, rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(z, event_ndims=1), logdet, rtol=1e-12)


def test_triangular_without_flip_round_trip_and_jacobian():
  case = harness.BijectorCase(name="triangular_no_flip", make=cases.make_triangular(False))
  harness.check_round_trip(case)
  harness.check_log_det_jacobian(case)


def test_planar_matches_rezende_mohamed():
  d = 3
  z, u, w, b = _rand(16, 6, d), _rand(17, d), _rand(18, d), 0.7
  s = w @ u
  u_hat = u + (-1. + np.log1p(np.exp(s)) - s) * w / (w @ w)
  y = z + np.outer(np.tanh(z @ w + b), u_hat)
  logdet = np.log(np.abs(1. + (1. - np.tanh(z @ w + b) ** 2) * (w @ u_hat)))
  bij = tfpeb.Planar(u, w, b)
  np.testing.assert_allclose(bij.forward(z), y, rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(z, event_ndims=1), logdet, rtol=1e-12)
  assert w @ u_hat > -1.


def test_static_shape_errors():
  with pytest.raises(ValueError, match="`w` must have trailing shape"):
    tfpeb.Planar(u=tf.zeros([3]), w=tf.zeros([4]), b=0.)
  with pytest.raises(ValueError, match="M <= D"):
    tfpeb.OrthogonalSylvester(tf.zeros([2, 3]), tf.zeros([3, 3]), tf.zeros([3, 3]), tf.zeros(3))
  with pytest.raises(ValueError, match="`r1` must have trailing shape"):
    tfpeb.OrthogonalSylvester(tf.ones([4, 2]), tf.zeros([3, 3]), tf.zeros([2, 2]), tf.zeros(2))
  with pytest.raises(ValueError, match="`b` must have trailing shape"):
    tfpeb.HouseholderSylvester(tf.ones([1, 3]), tf.zeros([3, 3]), tf.zeros([3, 3]), tf.zeros(2))
  with pytest.raises(ValueError, match="`r2` must have trailing shape"):
    tfpeb.TriangularSylvester(tf.zeros([3, 3]), tf.zeros([2, 3]), tf.zeros(3))
  with pytest.raises(ValueError, match="event size 3"):
    tfpeb.TriangularSylvester(tf.zeros([3, 3]), tf.zeros([3, 3]), tf.zeros(3)).forward(tf.ones(4))


def test_validate_args_nan_and_invertibility():
  with pytest.raises(tf.errors.InvalidArgumentError, match="`b` has NaN or Inf"):
    tfpeb.TriangularSylvester(tf.zeros([2, 2]), tf.zeros([2, 2]), [0., np.nan],
                              validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="`u` has NaN or Inf"):
    tfpeb.Planar([np.inf, 0.], [1., 0.], 0., validate_args=True)
  # float32 tanh(+-10) rounds to +-1 (float64 keeps 1 - 4e-9), so R1_ii R2_ii = -1 exactly: not invertible after rounding.
  r1 = tf.constant([[10., 0.], [0., 0.]])
  r2 = tf.constant([[-10., 0.], [0., 0.]])
  with pytest.raises(tf.errors.InvalidArgumentError, match="R1_ii \\* R2_ii must be > -1"):
    tfpeb.TriangularSylvester(r1, r2, tf.zeros(2), validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="w\\^T u_hat must be > -1"):
    tfpeb.Planar(tf.constant([-200., 0.]), tf.constant([1., 0.]), 0., validate_args=True)
  # The same values in float64 are fine, and without validation float32 stays finite.
  tfpeb.TriangularSylvester(tf.cast(r1, tf.float64), tf.cast(r2, tf.float64),
                            tf.zeros(2, tf.float64), validate_args=True)
  x = tf.zeros([1, 2])
  fldj = tfpeb.TriangularSylvester(r1, r2, tf.zeros(2)).forward_log_det_jacobian(x, 1)
  assert np.all(np.isfinite(fldj))
  # Variables are validated at call time.
  v = tf.Variable([0., np.nan])
  bij = tfpeb.TriangularSylvester(tf.zeros([2, 2]), tf.zeros([2, 2]), v, validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="`b` has NaN or Inf"):
    bij.forward(tf.zeros([2]))


def test_solver_near_singular_and_implicit_gradient():
  # a s = -1 + 1e-12: the slope vanishes to 1e-12 at the inflection point, Newton falls back on
  # bisection; the root must still be found to float64 precision.
  y = tf.constant(np.linspace(-3., 3., 13))
  a = tf.constant(2., tf.float64)
  s = tf.constant(-0.5 + 5e-13, tf.float64)
  k = tf.constant(0.3, tf.float64)
  with tf.GradientTape() as tape:
    tape.watch([y, a])
    x = sylvester.solve_tanh_equation(y, a, s, k)
  resid = x + a * tf.math.tanh(s * x + k) - y
  np.testing.assert_allclose(resid, 0., atol=1e-12)
  # Implicit function theorem: dx/dy = 1 / g'(x) (summed over elements; each depends on its y).
  slope = 1. + a * s * (1. - tf.math.tanh(s * x + k) ** 2)
  dx_dy, _ = tape.gradient(x, [y, a]), None
  finite = np.abs(slope.numpy()) > 1e-6
  np.testing.assert_allclose(dx_dy[0].numpy()[finite], (1. / slope).numpy()[finite], rtol=1e-8)


@pytest.mark.parametrize("make", [cases.make_planar, cases.make_orthogonal,
                                  cases.make_householder, cases.make_triangular(True)],
                         ids=["planar", "orthogonal", "householder", "triangular"])
def test_inverse_jacobian_is_inverse_matrix(make):
  """Gradients through the exact inverse (implicit derivative) equal inv(forward Jacobian)."""
  bij = make(tf.float64, (), 3 if make is not cases.make_orthogonal else 4,
             tf.constant([3, 4]), 1.0)
  d = 3 if make is not cases.make_orthogonal else 4
  x = tf.constant(_rand(20, 5, d))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    fwd = bij.forward(x)
  j_fwd = tape.batch_jacobian(fwd, x, experimental_use_pfor=False)
  y_fresh = tf.identity(fwd)  # a new tensor: the bijector cache cannot answer the inverse
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(y_fresh)
    inv = bij.inverse(y_fresh)
  j_inv = tape.batch_jacobian(inv, y_fresh, experimental_use_pfor=False)
  np.testing.assert_allclose(j_inv, tf.linalg.inv(j_fwd), rtol=1e-8, atol=1e-10)
