"""MeanFieldGaussian: exact moments, stateless reproducibility, input validation."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_ext.posterior import MeanFieldGaussian


def _q():
  return MeanFieldGaussian([tf.constant([1., -2.]), tf.constant([[0.5]])],
                           [tf.constant([0.1, 2.]), tf.constant([[3.]])])


def test_sample_moments_match_parameters():
  q = _q()
  n = 20000
  w = q.sample(n, seed=3)
  assert [t.shape for t in w] == [(n, 2), (n, 1, 1)]
  for part, loc, scale in zip(w, q.loc, q.scale):
    m = part.numpy().mean(0)
    s = part.numpy().std(0)
    # Mean: SE = scale/sqrt(n); std: SE ≈ scale/sqrt(2n). Five standard errors.
    np.testing.assert_array_less(np.abs(m - loc.numpy()), 5 * scale.numpy() / np.sqrt(n))
    np.testing.assert_array_less(np.abs(s - scale.numpy()), 5 * scale.numpy() / np.sqrt(2 * n))


def test_same_seed_same_samples_different_seed_different():
  q = _q()
  a, b, c = q.sample(4, seed=7), q.sample(4, seed=7), q.sample(4, seed=8)
  for x, y, z in zip(a, b, c):
    np.testing.assert_array_equal(x, y)
    assert not np.allclose(x, z)


def test_sample_under_xla_matches_eager():
  q = _q()
  f = tf.function(lambda s: q.sample(3, seed=s), jit_compile=True)
  seed = tf.constant([1, 2], tf.int32)
  # The normals agree up to the rounding of the Box-Muller angle (≤ 4e-7, see
  # `seeds._cos_sin_2pi`) times the radius (≤ 5.8): 3e-6 standard deviations.
  for x, y, scale in zip(f(seed), q.sample(3, seed=seed), q.scale):
    assert np.all(np.abs(x - y) <= 3e-6 * scale.numpy()), (x, y)


@pytest.mark.parametrize("loc, scale, match", [
    ([tf.zeros(2)], [tf.ones(2), tf.ones(2)], "parts"),
    ([tf.zeros(2)], [tf.ones(3)], "shape"),
    ([tf.zeros(2)], [-tf.ones(2)], "positive"),
    ([tf.constant([0., np.nan])], [tf.ones(2)], "non-finite"),
    ([tf.zeros(2, tf.float64)], [tf.ones(2, tf.float32)], "dtype"),
    ([], [], "at least one"),
])
def test_bad_parameters_raise_clear_errors(loc, scale, match):
  with pytest.raises(ValueError, match=match):
    MeanFieldGaussian(loc, scale)


def test_tracked_as_variables_and_checkpoint_roundtrip(tmp_path):
  q = _q()
  assert len(q.trainable_variables) == 0 and len(q.variables) == 4
  path = tf.train.Checkpoint(q=q).save(str(tmp_path / "ckpt"))
  q2 = MeanFieldGaussian([tf.zeros(2), tf.zeros([1, 1])], [tf.ones(2), tf.ones([1, 1])])
  tf.train.Checkpoint(q=q2).restore(path).assert_consumed()
  for a, b in zip(q.loc + q.scale, q2.loc + q2.scale):
    np.testing.assert_array_equal(a, b)
