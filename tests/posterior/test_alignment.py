"""align and Permutation: exact recovery of permuted copies, network symmetry, monotone descent."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.posterior import (MeanFieldGaussian, Permutation, SampleEnsemble, align,
                               functional_call, squared_wasserstein_distance)

L = tf_keras.layers


def _mlp():
  return tf_keras.Sequential([L.Dense(6, activation="relu", input_shape=(5,)),
                              L.Dropout(0.1), L.Dense(7, activation="tanh"), L.Dense(3)],
                             name="mlp")


def _cnn_bn():
  inp = L.Input((7, 7, 2))
  x = L.Conv2D(4, 3)(inp)
  x = L.BatchNormalization()(x)
  x = L.ReLU()(x)
  x = L.Conv2D(5, 3, padding="same", use_bias=False)(x)
  x = L.BatchNormalization()(x)
  x = L.MaxPooling2D()(x)
  x = L.Flatten()(x)
  x = L.Dense(6, activation="relu")(x)
  return tf_keras.Model(inp, L.Dense(3)(x), name="cnn_bn")


def _residual():
  """A stream of 6 units: two residual blocks share its permutation, the first block's hidden
  layer has its own, and the second block maps the stream to itself (both kernel axes in one
  group), with a LayerNormalization on the stream."""
  inp = L.Input((4,))
  x = L.Dense(6)(inp)
  h = L.Dense(8, activation="relu")(x)
  x = L.Add()([x, L.Dense(6)(h)])
  x = L.LayerNormalization()(x)
  x = L.Add()([x, L.Dense(6, activation="tanh")(x)])
  x = L.Activation("relu")(x)
  return tf_keras.Model(inp, L.Dense(3)(x), name="residual")


ARCHITECTURES = {"mlp": _mlp, "cnn_bn": _cnn_bn, "residual": _residual}


def _random_posterior(model, seed):
  rng = np.random.default_rng(seed)
  loc = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
  scale = [np.exp(rng.normal(-2., 0.5, size=v.shape)).astype(np.float32)
           for v in model.trainable_variables]
  return MeanFieldGaussian(loc, scale)


def _random_permutation(model, seed):
  rng = np.random.default_rng(seed)
  groups = Permutation.from_indices(model, {}).permutations
  return Permutation.from_indices(model, {name: rng.permutation(len(p))
                                          for name, p in groups.items()})


def _assert_same(q, r):
  for a, b in zip(q.loc + q.scale, r.loc + r.scale):
    np.testing.assert_array_equal(a, b)


def test_unit_groups_follow_the_architecture():
  groups = lambda m: {k: len(v) for k, v in Permutation.from_indices(m, {}).permutations.items()}
  assert groups(_mlp()) == {"dense": 6, "dense_1": 7}
  assert list(groups(_cnn_bn()).values()) == [4, 5, 6]
  # The residual stream is one group of 6 (three layers write to it); the block's hidden layer
  # of 8 is another; input and output units are never permuted.
  assert sorted(groups(_residual()).values()) == [6, 8]
  assert max(groups(_residual()), key=len).count("+") == 2


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_permuted_copy_aligns_back_exactly(name):
  model = ARCHITECTURES[name]()
  q_a = _random_posterior(model, 0)
  shuffle = _random_permutation(model, 1)
  assert not shuffle.is_identity
  q_b = shuffle.apply(q_a)
  perm = align(model, q_a, q_b)
  assert perm.report.converged and perm.report.distances[-1] == 0.
  assert perm.report.distances[0] > 0.
  _assert_same(perm.apply(q_b), q_a)
  # The recovered permutation is the inverse of the shuffle, group by group.
  for (g, found), expected in zip(perm.permutations.items(),
                                  shuffle.inverse().permutations.values()):
    np.testing.assert_array_equal(found, expected, err_msg=g)
  # Order invariance at convergence: any order of visiting the groups gives the same answer.
  for seed in (1, 2, 3):
    other = align(model, q_a, q_b, seed=seed)
    for a, b in zip(other.permutations.values(), perm.permutations.values()):
      np.testing.assert_array_equal(a, b)
  # Weight matching of the means alone (Git Re-Basin) recovers the same permutation.
  means = align(model, q_a, q_b, cost="means")
  for a, b in zip(means.permutations.values(), perm.permutations.values()):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_permutation_is_a_symmetry_of_the_network(name):
  model = ARCHITECTURES[name]()
  rng = np.random.default_rng(2)
  for v in model.non_trainable_variables:  # BatchNormalization statistics away from 0 and 1
    v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))
  q = _random_posterior(model, 3)
  x = rng.normal(size=(4,) + tuple(model.input_shape[1:])).astype(np.float32)
  ensemble = SampleEnsemble(q.sample(3, seed=4))
  before = [functional_call(model, [w[s] for w in ensemble.samples], x).numpy() for s in range(3)]
  shuffle = _random_permutation(model, 5)
  permuted = shuffle.apply(ensemble)
  shuffle.apply_to_model(model)  # the statistics move with their units
  after = [functional_call(model, [w[s] for w in permuted.samples], x).numpy() for s in range(3)]
  for b, a in zip(before, after):
    # Only the order of summation changes: float32 rounding of the sums.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
    assert np.abs(b).max() > 0.1
  # The Gaussian's parameters move the same way as its samples.
  q_perm = shuffle.apply(q)
  for w_perm, w, loc_perm, loc in zip(permuted.samples, ensemble.samples, q_perm.loc, q.loc):
    if not np.array_equal(loc_perm, loc):
      assert not np.array_equal(w_perm, w)


def test_alignment_of_ensembles_recovers_the_permutation():
  model = _mlp()
  members = SampleEnsemble(_random_posterior(model, 0).sample(4, seed=1))
  shuffle = _random_permutation(model, 2)
  perm = align(model, members, shuffle.apply(members))
  for a, b in zip(perm.apply(shuffle.apply(members)).samples, members.samples):
    np.testing.assert_array_equal(a, b)


def _all_single_group_changes(model, perm):
  """Every posterior permutation that differs from `perm` in one group only."""
  current = perm.permutations
  for name, p in current.items():
    for candidate in itertools.permutations(range(len(p))):
      yield Permutation.from_indices(model, {**current, name: np.array(candidate)})


def test_descent_never_increases_and_stops_at_a_coordinatewise_minimum():
  # Two unrelated posteriors: nothing aligns exactly. Small groups so every alternative of each
  # group can be enumerated; the residual stream's self-mapping layer makes the per-group
  # problem quadratic, where only the accept-if-lower rule keeps the descent monotone.
  inp = L.Input((3,))
  x = L.Dense(4)(inp)
  x = L.Add()([x, L.Dense(4, activation="tanh")(x)])
  h = L.Dense(4, activation="relu")(x)
  model = tf_keras.Model(inp, L.Dense(2)(h))
  q_a, q_b = _random_posterior(model, 10), _random_posterior(model, 11)
  perm = align(model, q_a, q_b)
  d = np.array(perm.report.distances)
  assert perm.report.converged and len(d) == perm.report.num_sweeps + 2
  assert np.all(np.diff(d) <= 0) and d[-1] < d[0]
  final = squared_wasserstein_distance(q_a, perm.apply(q_b))
  np.testing.assert_allclose(final, d[-1], rtol=1e-12)
  np.testing.assert_allclose(d[0], squared_wasserstein_distance(q_a, q_b), rtol=1e-12)
  for other in _all_single_group_changes(model, perm):
    assert squared_wasserstein_distance(q_a, other.apply(q_b)) >= final * (1 - 1e-12)


def test_one_hidden_layer_finds_the_global_minimum():
  # One group: the linear assignment is the whole problem, so the answer is the best of all 4!.
  model = tf_keras.Sequential([L.Dense(4, activation="relu", input_shape=(3,)), L.Dense(2)])
  q_a, q_b = _random_posterior(model, 20), _random_posterior(model, 21)
  (group,) = Permutation.from_indices(model, {}).permutations
  for cost, dist in (("wasserstein", squared_wasserstein_distance),
                     ("means", lambda a, b: sum(float(np.sum((x - y) ** 2))
                                                for x, y in zip(a.loc, b.loc)))):
    perm = align(model, q_a, q_b, cost=cost)
    best = min(dist(q_a, Permutation.from_indices(model, {group: list(p)}).apply(q_b))
               for p in itertools.permutations(range(4)))
    np.testing.assert_allclose(dist(q_a, perm.apply(q_b)), best, rtol=1e-12)


def test_cap_is_reported():
  model = _residual()
  perm = align(model, _random_posterior(model, 0), _random_posterior(model, 1), max_sweeps=1)
  assert perm.report.num_sweeps == 1 and len(perm.report.distances) == 3
  assert "sweep" in str(perm.report)


def test_mismatched_architectures_raise():
  model = _mlp()
  wider = tf_keras.Sequential([L.Dense(8, activation="relu", input_shape=(5,)),
                               L.Dense(7, activation="tanh"), L.Dense(3)])
  with pytest.raises(ValueError, match="`q_b` does not match model 'mlp'.*part 0"):
    align(model, _random_posterior(model, 0), _random_posterior(wider, 1))
  shuffle = _random_permutation(model, 0)
  with pytest.raises(ValueError, match="weight shapes"):
    shuffle.apply(_random_posterior(wider, 1))
  with pytest.raises(ValueError, match="does not have the variables"):
    shuffle.apply_to_model(wider)


@pytest.mark.parametrize("make, layer", [
    (lambda: tf_keras.Sequential([L.Embedding(10, 4, input_length=3), L.Flatten(), L.Dense(2)]),
     "Embedding"),
    (lambda: tf_keras.Sequential([L.LSTM(4, input_shape=(3, 2)), L.Dense(2)]), "LSTM"),
    (lambda: (lambda i: tf_keras.Model(i, L.Dense(2)(L.MultiHeadAttention(2, 4)(i, i))))(
        L.Input((3, 4))), "MultiHeadAttention"),
    (lambda: tf_keras.Sequential([L.Dense(4, input_shape=(3,)), L.Reshape((2, 2)), L.Flatten(),
                                  L.Dense(2)]), "Reshape"),
])
def test_unsupported_layers_are_named(make, layer):
  model = make()
  with pytest.raises(ValueError, match=rf"layer '.*' \({layer}\).*not supported"):
    Permutation.from_indices(model, {})


def test_other_bad_input():
  class Sub(tf_keras.Model):

    def __init__(self):
      super().__init__()
      self.d = L.Dense(2)

    def call(self, x):
      return self.d(x)

  sub = Sub()
  sub(tf.zeros([1, 3]))
  with pytest.raises(ValueError, match="subclassed"):
    Permutation.from_indices(sub, {})
  model = _mlp()
  q = _random_posterior(model, 0)
  with pytest.raises(ValueError, match="`cost`"):
    align(model, q, q, cost="kl")
  with pytest.raises(ValueError, match="`max_sweeps`"):
    align(model, q, q, max_sweeps=0)
  with pytest.raises(ValueError, match="`q_a` must be"):
    align(model, [np.zeros(3)], q)
  with pytest.raises(ValueError, match="`q` must be"):
    Permutation.from_indices(model, {}).apply([np.zeros(3)])
  with pytest.raises(ValueError, match="No unit group 'nope'.*'dense"):
    Permutation.from_indices(model, {"nope": [0]})
  first = next(iter(Permutation.from_indices(model, {}).permutations))
  with pytest.raises(ValueError, match="permutation of 0..5"):
    Permutation.from_indices(model, {first: [0, 0, 1, 2, 3, 4]})


def test_wasserstein_cost_uses_the_standard_deviations():
  # Units 0 and 1 have the same means everywhere and differ only in σ: the means cannot tell a
  # swap of them from the identity, the 2-Wasserstein cost can.
  model = tf_keras.Sequential([L.Dense(3, activation="relu", input_shape=(2,)), L.Dense(2)])
  q = _random_posterior(model, 30)
  loc, scale = [t.numpy() for t in q.loc], [t.numpy() for t in q.scale]
  for part, axis in ((0, 1), (1, 0), (2, 0)):  # kernel columns, bias, next kernel rows
    np.put_along_axis(loc[part], np.ones((1,) * loc[part].ndim, int),
                      np.take(loc[part], [0], axis=axis), axis=axis)
    scale[part] = np.moveaxis(scale[part], axis, 0)
    scale[part][1] = scale[part][0] * 3.
    scale[part] = np.moveaxis(scale[part], 0, axis)
  q_a = MeanFieldGaussian(loc, scale)
  (group,) = Permutation.from_indices(model, {}).permutations
  q_b = Permutation.from_indices(model, {group: [1, 0, 2]}).apply(q_a)
  for a, b in zip(q_a.loc, q_b.loc):
    np.testing.assert_array_equal(a, b)  # the swap left every mean in place
  assert squared_wasserstein_distance(q_a, q_b) > 0
  np.testing.assert_array_equal(align(model, q_a, q_b).permutations[group], [1, 0, 2])
  assert squared_wasserstein_distance(q_a, align(model, q_a, q_b).apply(q_b)) == 0.
