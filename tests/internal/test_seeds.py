"""Seed helpers: reproducible ints, portable normals (same with and without XLA), exact moments."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfp_ext.internal import seeds


def test_int_seed_is_reproducible_across_calls():
  np.testing.assert_array_equal(seeds.sanitize(5), seeds.sanitize(5))
  assert not np.array_equal(seeds.sanitize(5), seeds.sanitize(6))
  np.testing.assert_array_equal(seeds.sanitize(5, salt="a"), seeds.sanitize(5, salt="a"))
  assert not np.array_equal(seeds.sanitize(5, salt="a"), seeds.sanitize(5, salt="b"))
  with pytest.raises(TypeError, match="bool"):
    seeds.sanitize(True)


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 1e-4), (tf.float64, 1e-10)])
def test_normal_is_the_same_under_xla(dtype, tol):
  seed = tf.constant([3, 9], tf.int32)
  eager = seeds.normal([4, 1000], seed, dtype)
  xla = tf.function(lambda s: seeds.normal([4, 1000], s, dtype), jit_compile=True)(seed)
  assert eager.dtype == dtype
  np.testing.assert_allclose(eager, xla, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_normal_is_standard_normal(dtype):
  x = seeds.normal([50000], tf.constant([1, 2]), dtype).numpy()
  assert np.all(np.isfinite(x))
  # KS against N(0, 1): a correct sampler fails at level 1e-3 once in a thousand runs.
  assert scipy.stats.kstest(x, "norm").pvalue > 1e-3


def test_fold_in_gives_distinct_streams():
  s = seeds.sanitize(0)
  a, b = seeds.fold_in(s, 1), seeds.fold_in(s, 2)
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, seeds.fold_in(s, 1))


def test_normal_pairs_are_independent():
  """The Box-Muller halves: (zᵢ, zᵢ₊ₕ) must be two independent normals, not just normal marginals."""
  z = seeds.normal([50001], tf.constant([4, 7])).numpy()  # Odd: the last pair is cut in half.
  assert z.shape == (50001,)
  a, b = z[:25000], z[25001:]
  # Independent N(0, 1) pairs: a² + b² ~ χ²(2) and atan2(b, a) uniform; a wrong pairing (reused
  # uniforms, one stream) fails these at level 1e-3.
  assert scipy.stats.kstest(a**2 + b**2, "chi2", args=(2,)).pvalue > 1e-3
  assert scipy.stats.kstest(np.arctan2(b, a), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
  # Correlation of 25,000 independent pairs: standard error 1/√25000 ≈ 0.0063; 5 of them.
  assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(25000)


def test_normal_shapes():
  seed = tf.constant([1, 1])
  assert seeds.normal([3, 5, 1], seed).shape == (3, 5, 1)
  assert seeds.normal([0, 4], seed).shape == (0, 4)
  dynamic = tf.function(lambda n: seeds.normal(tf.stack([n, 3]), seed),
                        input_signature=[tf.TensorSpec([], tf.int32)])
  np.testing.assert_array_equal(dynamic(tf.constant(7)).shape, (7, 3))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_extreme_bits_stay_inside_the_unit_interval(dtype):
  """All-zero and all-one Philox words must not map to 0 or 1 (log 0 = −∞ in Box-Muller)."""
  extreme = tf.constant([0, 2**32 - 1, 2**31, 1], tf.uint32)
  words = tf.stack([extreme, extreme[::-1]]) if dtype == tf.float64 else extreme
  u = seeds._unit_interval(words, dtype).numpy()  # pylint: disable=protected-access
  assert np.all(u > 0) and np.all(u < 1), u
  assert np.all(np.isfinite(np.sqrt(-2 * np.log(u))))


# Under XLA: one ulp-level error of the reduced series. Without XLA: TF's cos/sin of the rounded
# angle 2πu, whose rounding (half an ulp of 2π ≈ 2.4e-7 in float32) dominates.
@pytest.mark.parametrize("dtype, jit, tol", [(np.float32, True, 2e-7), (np.float64, True, 2e-15),
                                             (np.float32, False, 6e-7),
                                             (np.float64, False, 2e-15)])
def test_cos_sin_2pi_match_float64_truth(dtype, jit, tol):
  """cos/sin of 2πu (under XLA a quarter-turn reduction and Taylor series): check them against
  NumPy at every quarter-turn boundary, the ends of (0, 1) and a dense grid; a wrong quadrant sign
  or swap would be an O(1) error."""
  u = np.concatenate([np.arange(1, 2**14) / 2**14, [2**-24, 1 - 2**-24],
                      np.random.default_rng(1).uniform(size=100000)]).astype(dtype)
  fn = tf.function(seeds._cos_sin_2pi, jit_compile=jit)  # pylint: disable=protected-access
  cos, sin = fn(tf.constant(u))
  exact = 2 * np.pi * u.astype(np.float64)
  np.testing.assert_allclose(cos, np.cos(exact), rtol=0, atol=tol)
  np.testing.assert_allclose(sin, np.sin(exact), rtol=0, atol=tol)
