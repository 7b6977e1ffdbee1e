"""interpolate and marginalized_loss_barrier against closed forms, exact couplings, symmetries."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.posterior import (MeanFieldGaussian, Permutation, SampleEnsemble, align,
                               functional_call, interpolate, marginalized_loss_barrier,
                               optimal_coupling, squared_wasserstein_distance)

L = tf_keras.layers


def _gaussians(shapes, seed):
  rng = np.random.default_rng(seed)
  loc = [rng.normal(size=s).astype(np.float32) for s in shapes]
  scale = [np.exp(rng.normal(-1., 0.5, size=s)).astype(np.float32) for s in shapes]
  return MeanFieldGaussian(loc, scale)


def test_gaussian_interpolation_is_the_wasserstein_geodesic():
  q_a, q_b = _gaussians([(3, 2), (2,)], 0), _gaussians([(3, 2), (2,)], 1)
  for end, q in ((0., q_a), (1., q_b)):
    q_t = interpolate(q_a, q_b, end)
    for x, y in zip(q_t.loc + q_t.scale, q.loc + q.scale):
      np.testing.assert_array_equal(x, y)
  w = math.sqrt(squared_wasserstein_distance(q_a, q_b))
  for t in (0.25, 0.5, 0.9):
    q_t = interpolate(q_a, q_b, t)
    np.testing.assert_allclose(q_t.scale[0], (1 - t) * q_a.scale[0] + t * q_b.scale[0], rtol=1e-6)
    # Constant speed along the geodesic: W(q_a, q_t) = t W(q_a, q_b), W(q_t, q_b) = (1 - t) W.
    np.testing.assert_allclose(math.sqrt(squared_wasserstein_distance(q_a, q_t)), t * w,
                               rtol=1e-5)
    np.testing.assert_allclose(math.sqrt(squared_wasserstein_distance(q_t, q_b)), (1 - t) * w,
                               rtol=1e-5)


def _empirical_w2(a, b):
  """W₂ between two uniform ensembles by brute force over every coupling (S! of them)."""
  flat = lambda q: np.concatenate([np.reshape(p, (q.num_members, -1)) for p in q.samples], 1)
  x, y = flat(a).astype(np.float64), flat(b).astype(np.float64)
  return math.sqrt(min(np.mean(np.sum((x - y[list(p)]) ** 2, axis=1))
                       for p in itertools.permutations(range(len(x)))))


def test_ensemble_interpolation_follows_the_optimal_coupling():
  shapes = [(2, 2), (2,)]
  a = SampleEnsemble(_gaussians(shapes, 2).sample(5, seed=0))
  b = SampleEnsemble(_gaussians(shapes, 3).sample(5, seed=1))
  w = _empirical_w2(a, b)
  coupling = optimal_coupling(a, b)
  moved = SampleEnsemble([tf.gather(s, coupling) for s in b.samples])
  flat = lambda q: np.concatenate([np.reshape(p, (5, -1)) for p in q.samples], 1)
  np.testing.assert_allclose(np.sqrt(np.mean(np.sum((flat(a) - flat(moved)) ** 2, 1))), w,
                             rtol=1e-6)
  for t in (0.3, 0.7):
    e_t = interpolate(a, b, t)
    np.testing.assert_allclose(_empirical_w2(a, e_t), t * w, rtol=1e-5)
    np.testing.assert_allclose(_empirical_w2(e_t, b), (1 - t) * w, rtol=1e-5)


def test_interpolation_bad_input():
  q = _gaussians([(2,)], 0)
  with pytest.raises(ValueError, match="`t` must be a number in \\[0, 1\\]"):
    interpolate(q, q, 1.5)
  with pytest.raises(ValueError, match="must both be MeanFieldGaussian or both SampleEnsemble"):
    interpolate(q, SampleEnsemble(q.sample(2, seed=0)), 0.5)
  with pytest.raises(ValueError, match="different weight parts"):
    interpolate(q, _gaussians([(3,)], 0), 0.5)
  with pytest.raises(ValueError, match="same number of members"):
    interpolate(SampleEnsemble(q.sample(2, seed=0)), SampleEnsemble(q.sample(3, seed=0)), 0.5)


def _gaussian_nll(y, f):
  return 0.5 * tf.reduce_sum(tf.square(y - f), axis=-1) + 0.5 * math.log(2 * math.pi)


def test_barrier_matches_closed_form_on_a_linear_gaussian_model():
  # y = x·w + N(0, 1) with w ~ N(μ, diag σ²): per example the expected loss is
  # ½((y − x·μ)² + Σ x²σ²) + ½ log 2π, and the predictive is N(x·μ, 1 + Σ x²σ²), so both
  # losses of q_t are exact for μ_t, σ_t linear in t.
  model = tf_keras.Sequential([L.Dense(1, use_bias=False, input_shape=(3,))])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 3)).astype(np.float32)
  y = (x @ np.array([[1.], [-1.], [0.5]]) + rng.normal(size=(40, 1))).astype(np.float32)
  q_a = MeanFieldGaussian([np.array([[1.2], [-0.8], [0.4]], np.float32)],
                          [np.array([[0.3], [0.2], [0.5]], np.float32)])
  q_b = MeanFieldGaussian([np.array([[-1.], [1.], [0.]], np.float32)],
                          [np.array([[0.1], [0.6], [0.2]], np.float32)])
  x64, y64 = x.astype(np.float64), y[:, 0].astype(np.float64)
  num = 4000

  def exact(t, marginalize):
    mu = (1 - t) * q_a.loc[0].numpy()[:, 0] + t * q_b.loc[0].numpy()[:, 0]
    sd = (1 - t) * q_a.scale[0].numpy()[:, 0] + t * q_b.scale[0].numpy()[:, 0]
    m, v = x64 @ mu, (x64 ** 2) @ sd ** 2
    if marginalize:
      return np.mean(0.5 * np.log(2 * np.pi * (1 + v)) + 0.5 * (y64 - m) ** 2 / (1 + v))
    return np.mean(0.5 * ((y64 - m) ** 2 + v) + 0.5 * np.log(2 * np.pi))

  for marginalize in (True, False):
    out = marginalized_loss_barrier(model, q_a, q_b, (x, y), _gaussian_nll, num_points=5,
                                    num_samples=num, seed=1, marginalize=marginalize,
                                    batch_size=16)
    want = np.array([exact(t, marginalize) for t in out.t])
    want_curve = want - ((1 - out.t) * want[0] + out.t * want[-1])
    # Within 4 standard errors; the predictive's O(1/S) bias is far smaller than its error here.
    np.testing.assert_array_less(np.abs(out.losses - want), 4 * out.losses_stderr)
    np.testing.assert_array_less(np.abs(out.curve - want_curve)[1:-1], 4 * out.curve_stderr[1:-1])
    np.testing.assert_allclose(out.curve[[0, -1]], 0., atol=1e-12)
    assert out.barrier == out.curve.max() and out.num_samples == num
    # The barrier is away from zero: the check could fail.
    assert np.max(np.abs(want_curve)) > 10 * np.max(out.curve_stderr)
  # The expected loss is a Gaussian quadratic form in w: its standard deviation over draws at
  # t = 0 is exact, ½/N · sqrt(4 r'AA'r + 2 tr((A'A)²)) with A = X diag(σ), r = y − Xμ.
  a_mat = x64 * q_a.scale[0].numpy()[:, 0]
  r = y64 - x64 @ q_a.loc[0].numpy()[:, 0]
  sd = 0.5 / len(x) * math.sqrt(4 * r @ a_mat @ a_mat.T @ r + 2 * np.trace(
      (a_mat.T @ a_mat) @ (a_mat.T @ a_mat)))
  np.testing.assert_allclose(out.losses_stderr[0] * math.sqrt(num), sd, rtol=0.1)


@pytest.fixture(scope="module")
def teacher():
  """An MLP whose labels are its own mean predictions: q_a fits them, a permuted copy too."""
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([L.Dense(16, activation="relu", input_shape=(4,)),
                               L.Dense(16, activation="relu"), L.Dense(3)])
  rng = np.random.default_rng(1)
  loc = [rng.normal(size=v.shape).astype(np.float32) * 1.5 / math.sqrt(v.shape[0])
         for v in model.trainable_variables]
  q_a = MeanFieldGaussian(loc, [np.full(v.shape, 0.05, np.float32)
                                for v in model.trainable_variables])
  x = rng.normal(size=(200, 4)).astype(np.float32)
  y = np.argmax(functional_call(model, q_a.loc, x), axis=-1)
  groups = Permutation.from_indices(model, {}).permutations
  shuffle = Permutation.from_indices(model, {k: rng.permutation(len(v))
                                             for k, v in groups.items()})
  return model, q_a, shuffle, (x, y)


def test_barrier_of_a_permuted_copy_vanishes_after_alignment(teacher):
  model, q_a, shuffle, data = teacher
  nll = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  q_b = shuffle.apply(q_a)
  before = marginalized_loss_barrier(model, q_a, q_b, data, nll, num_points=5, num_samples=16)
  after = marginalized_loss_barrier(model, q_a, align(model, q_a, q_b).apply(q_b), data, nll,
                                    num_points=5, num_samples=16)
  assert before.barrier > 0.1 and before.barrier > 5 * before.stderr
  # Identical endpoints: every q_t is q_a up to the rounding of (1 − t)μ + tμ.
  assert abs(after.barrier) <= max(3 * after.stderr, 1e-5)
  np.testing.assert_allclose(after.curve, 0., atol=1e-5)
  np.testing.assert_allclose(after.losses, after.losses[0], atol=1e-5)


def test_ensemble_barrier_is_exact_over_all_members(teacher):
  model, q_a, shuffle, data = teacher
  nll = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  members = SampleEnsemble(q_a.sample(6, seed=2))
  out = marginalized_loss_barrier(model, members, shuffle.apply(members), data, nll,
                                  num_points=3, num_samples=None)
  assert out.num_samples == 6 and out.stderr == 0. and out.barrier > 0.1
  # The endpoint loss is the ensemble's own: −mean log of the members' average probability.
  probs = np.mean([tf.nn.softmax(functional_call(model, [w[s] for w in members.samples],
                                                 data[0])).numpy() for s in range(6)], axis=0)
  want = -np.mean(np.log(probs[np.arange(len(data[1])), data[1]]))
  np.testing.assert_allclose(out.losses[0], want, rtol=1e-5)


def test_barrier_bad_input(teacher):
  model, q_a, _, (x, y) = teacher
  summed = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(ValueError, match="one value per example"):
    marginalized_loss_barrier(model, q_a, q_a, (x, y), summed, num_points=2, num_samples=2)
  nll = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  with pytest.raises(ValueError, match="`num_points`"):
    marginalized_loss_barrier(model, q_a, q_a, (x, y), nll, num_points=1)
  with pytest.raises(ValueError, match="same number"):
    marginalized_loss_barrier(model, q_a, q_a, (x, y[:5]), nll, num_points=2, num_samples=2)
  other = MeanFieldGaussian([tf.zeros([4, 8])], [tf.ones([4, 8])])
  with pytest.raises(ValueError, match="`q_b` does not match"):
    marginalized_loss_barrier(model, q_a, other, (x, y), nll, num_points=2, num_samples=2)
