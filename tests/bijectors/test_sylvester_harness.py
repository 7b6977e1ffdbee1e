"""The shared bijector checks (tests/bijectors/harness.py) on the four Sylvester-family flows."""

import pytest
import tensorflow as tf

from tests.bijectors import harness
from tfp_ext import bijectors as tfpeb


def _normal(seed, shape, dtype, salt):
  # Drawn in float64 and cast, so float32 and float64 bijectors share parameter values.
  s = tf.random.experimental.stateless_fold_in(seed, salt, alg="philox")
  return tf.cast(tf.random.stateless_normal(shape, seed=s, dtype=tf.float64, alg="philox"), dtype)


def make_planar(dtype, batch_shape, d, seed, param_scale):
  p = lambda salt, shape: param_scale * _normal(seed, list(batch_shape) + shape, dtype, salt)
  return tfpeb.Planar(u=p(0, [d]), w=p(1, [d]), b=p(2, []))


def _triangular_params(dtype, batch_shape, m, seed, param_scale):
  p = lambda salt, shape: param_scale * _normal(seed, list(batch_shape) + shape, dtype, salt)
  return dict(r1=p(10, [m, m]), r2=p(11, [m, m]), b=p(12, [m]))


def make_orthogonal(dtype, batch_shape, d, seed, param_scale):
  m = max(d - 1, 1)  # M < D, so the orthogonal complement of Q's columns is exercised.
  # q is scale-invariant (only its column space matters), so it is not scaled; at scale 1e3 the
  # other parameters are what is extreme. An exactly zero q is rank-deficient (no gradient).
  q = _normal(seed, list(batch_shape) + [d, m], dtype, 13)
  return tfpeb.OrthogonalSylvester(q=q, **_triangular_params(dtype, batch_shape, m, seed,
                                                             param_scale))


def make_householder(dtype, batch_shape, d, seed, param_scale):
  v = param_scale * _normal(seed, list(batch_shape) + [2, d], dtype, 14)
  return tfpeb.HouseholderSylvester(householder_vectors=v,
                                    **_triangular_params(dtype, batch_shape, d, seed, param_scale))


def make_triangular(flip):
  def make(dtype, batch_shape, d, seed, param_scale):
    return tfpeb.TriangularSylvester(flip=flip, **_triangular_params(dtype, batch_shape, d, seed,
                                                                     param_scale))
  return make


CASES = [
    harness.BijectorCase(name="planar", make=make_planar),
    harness.BijectorCase(name="orthogonal_sylvester", make=make_orthogonal, event_size=4),
    harness.BijectorCase(name="householder_sylvester", make=make_householder),
    # flip=True exercises the permutation Q; flip=False is checked in test_sylvester_bijectors.
    harness.BijectorCase(name="triangular_sylvester", make=make_triangular(True)),
]


@pytest.mark.parametrize("check", harness.CHECKS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bijector(case, check):
  harness.run_check(check, case)
