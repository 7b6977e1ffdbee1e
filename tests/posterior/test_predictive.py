"""Predictive summaries against closed forms, vectorization, XLA and thread safety."""

import concurrent.futures

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.internal.runtime import onednn_enabled
from tfp_ext.posterior import MeanFieldGaussian, predictive, predictive_samples, summarize
from tfp_ext.posterior.functional import functional_call


def _linear_model():
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, use_bias=False, input_shape=(2,))])
  return model


def test_linear_model_predictive_matches_closed_form():
  # y = x·w with w ~ N(mu, diag(s²)): E y = x·mu, Var y = Σ x_j² s_j² (+ noise²).
  model = _linear_model()
  mu, s = np.array([[0.5], [-1.0]], np.float32), np.array([[0.3], [0.2]], np.float32)
  q = MeanFieldGaussian([mu], [s])
  x = np.array([[1., 0.], [0., 2.], [3., -1.], [0., 0.]], np.float32)
  n, noise = 20000, 0.5
  out = predictive(model, q, x, num_samples=n, seed=0, noise_stddev=noise)
  exact_mean = x @ mu
  exact_var = (x ** 2) @ (s ** 2)
  epi_sd = np.sqrt(exact_var)
  # SE of the mean is sd/sqrt(n); SE of the sample sd is ≈ sd/sqrt(2n). Five standard errors.
  np.testing.assert_array_less(np.abs(out["mean"] - exact_mean), 5 * epi_sd / np.sqrt(n) + 1e-6)
  np.testing.assert_array_less(np.abs(out["epistemic_stddev"] - epi_sd),
                               5 * epi_sd / np.sqrt(2 * n) + 1e-6)
  np.testing.assert_allclose(out["aleatoric_stddev"], np.full_like(exact_mean, noise))
  np.testing.assert_allclose(out["stddev"] ** 2,
                             out["epistemic_stddev"] ** 2 + noise ** 2, rtol=1e-5)
  assert set(out) == {"mean", "stddev", "epistemic_stddev", "aleatoric_stddev"}


def test_classification_summaries_match_numpy():
  logits = tf.random.stateless_normal([7, 5, 3], seed=[4, 4]) * 2.
  out = summarize(logits, task="classification")
  p = tf.nn.softmax(logits).numpy()
  pm = p.mean(0)
  h = lambda q: -(q * np.log(q)).sum(-1)
  np.testing.assert_allclose(out["mean"], pm, rtol=1e-5)
  np.testing.assert_allclose(out["stddev"], p.std(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out["predictive_entropy"], h(pm), rtol=1e-5)
  np.testing.assert_allclose(out["mutual_information"], h(pm) - h(p).mean(0), rtol=1e-4, atol=1e-6)
  assert np.all(out["mutual_information"].numpy() >= 0)


def test_bernoulli_logits():
  logits = tf.constant([[[0.], [2.]], [[0.], [-2.]]])  # [S=2, B=2, 1]
  out = summarize(logits, task="classification")
  p = 1 / (1 + np.exp(-np.array([2., -2.])))
  np.testing.assert_allclose(out["mean"][:, 0], [0.5, p.mean()], rtol=1e-6)
  # Identical members for row 0: no disagreement, mutual information 0, entropy log 2.
  np.testing.assert_allclose(out["mutual_information"][0], 0., atol=1e-7)
  np.testing.assert_allclose(out["predictive_entropy"][0], np.log(2.), rtol=1e-6)
  assert out["mutual_information"][1] > 0


def _mlp_and_posterior():
  model = tf_keras.Sequential([tf_keras.layers.Dense(16, activation="relu", input_shape=(4,)),
                               tf_keras.layers.Dense(3)])
  q = MeanFieldGaussian(model.trainable_variables,
                        [tf.fill(v.shape, 0.05) for v in model.trainable_variables])
  return model, q


def _assert_per_sample_answers(out, q, x, n):
  weights = q.predictive_weights(n, seed=1)
  for i in range(n):
    w = [t[i] for t in weights]
    ref = tf.nn.relu(x @ w[0] + w[1]) @ w[2] + w[3]
    np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-5)


# By default one vectorized group in eager mode and under XLA, four in a plain graph run by TF's
# Eigen kernels (6 samples → 2, 2, 1, 1). Explicit counts apply everywhere, capped at S.
@pytest.mark.parametrize("mode, groups", [("eager", None), ("graph", None), ("xla", None),
                                          ("eager", 3), ("graph", 1), ("xla", 4), ("graph", 9)])
def test_vectorized_samples_equal_per_sample_calls(mode, groups):
  model, q = _mlp_and_posterior()
  x = tf.random.stateless_normal([5, 4], seed=[2, 3])
  call = lambda x: predictive_samples(model, q, x, 6, seed=1, sample_groups=groups)
  if mode != "eager":
    call = tf.function(call, jit_compile=mode == "xla")
  out = call(x)
  assert out.shape == (6, 5, 3)
  _assert_per_sample_answers(out, q, x, 6)


# A serving signature's batch size is known only when it runs; 5 rows (20 input elements) are
# copied per sample, 2100 (8400) are not.
@pytest.mark.parametrize("rows", [5, 2100])
@pytest.mark.parametrize("jit", [False, True])
def test_batch_size_known_only_when_run(rows, jit):
  model, q = _mlp_and_posterior()
  fn = tf.function(lambda x: predictive_samples(model, q, x, 6, seed=1),
                   input_signature=[tf.TensorSpec([None, 4])], jit_compile=jit)
  x = tf.random.stateless_normal([rows, 4], seed=[2, 3])
  _assert_per_sample_answers(fn(x), q, x, 6)


def test_grouped_samples_keep_nested_outputs_and_order():
  inputs = tf_keras.Input((4,))
  hidden = tf_keras.layers.Dense(8, activation="tanh")(inputs)
  model = tf_keras.Model(inputs, {"a": tf_keras.layers.Dense(2)(hidden),
                                  "b": tf_keras.layers.Dense(1)(hidden)})
  q = MeanFieldGaussian(model.trainable_variables,
                        [tf.fill(v.shape, 0.1) for v in model.trainable_variables])
  x = tf.random.stateless_normal([3, 4], seed=[5, 6])
  eager = predictive_samples(model, q, x, 7, seed=2)  # One group.
  graph = tf.function(lambda x: predictive_samples(model, q, x, 7, seed=2))(x)  # 2, 2, 2, 1.
  assert set(graph) == {"a", "b"}
  for k in eager:
    assert graph[k].shape == (7, 3) + eager[k].shape[2:]
    np.testing.assert_allclose(graph[k], eager[k], rtol=1e-6, atol=1e-6)


def test_inputs_copied_per_sample_keep_their_structure():
  a, b = tf_keras.Input((3,), name="a"), tf_keras.Input((2,), name="b")
  model = tf_keras.Model({"a": a, "b": b}, tf_keras.layers.Dense(2)(
      tf_keras.layers.Concatenate()([a, tf_keras.layers.Dense(4, activation="relu")(b)])))
  q = MeanFieldGaussian(model.trainable_variables,
                        [tf.fill(v.shape, 0.1) for v in model.trainable_variables])
  x = {"a": tf.random.stateless_normal([5, 3], seed=[1, 1]),
       "b": tf.random.stateless_normal([5, 2], seed=[1, 2])}
  out = tf.function(lambda x: predictive_samples(model, q, x, 6, seed=3))(x)
  weights = q.predictive_weights(6, seed=3)
  for i in range(6):
    ref = functional_call(model, [w[i] for w in weights], x)
    np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-5)


def test_xla_and_deterministic_for_a_fixed_seed():
  model, q = _mlp_and_posterior()
  x = tf.random.stateless_normal([8, 4], seed=[2, 3])
  eager = predictive(model, q, x, 8, seed=5, task="classification")
  xla = tf.function(lambda x: predictive(model, q, x, 8, seed=5, task="classification"),
                    jit_compile=True)(x)
  for k in eager:
    np.testing.assert_allclose(eager[k], xla[k], rtol=1e-4, atol=1e-6)
  again = predictive(model, q, x, 8, seed=5, task="classification")
  for k in eager:
    np.testing.assert_array_equal(eager[k], again[k])


def test_rows_do_not_depend_on_batch_composition():
  model, q = _mlp_and_posterior()
  x = tf.random.stateless_normal([8, 4], seed=[2, 3])
  full = predictive(model, q, x, 8, seed=5)
  half = predictive(model, q, x[4:], 8, seed=5)
  np.testing.assert_allclose(full["mean"][4:], half["mean"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(full["stddev"][4:], half["stddev"], rtol=1e-5, atol=1e-6)


def test_concurrent_calls_give_single_thread_answers():
  model, q = _mlp_and_posterior()
  f = tf.function(lambda x: predictive(model, q, x, 8, seed=5)["mean"])
  xs = [tf.random.stateless_normal([3, 4], seed=[i, 0]) for i in range(16)]
  expected = [f(x).numpy() for x in xs]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(lambda x: f(x).numpy(), xs))
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(e, g)


_GROUPS = 1 if onednn_enabled() else 4


# Each Dense layer over a stacked (per-sample) input is one batched matmul per group; over the
# shared input batch the first is a plain matmul. A batch of at most 8192 input elements is copied
# per sample (2 rows here), a larger one (4096 rows) is not, and with the batch size unknown both
# are built and the size picks one when the graph runs. One group under XLA.
@pytest.mark.parametrize("jit, groups, rows, expected", [
    (False, None, 2, 2 * _GROUPS), (False, None, 4096, _GROUPS), (False, None, None, 3 * _GROUPS),
    (True, None, 2, 2), (True, None, 4096, 1), (True, None, None, 3), (False, 2, 4096, 2),
    (True, 3, 2, 6)])
def test_default_groups_and_copies_follow_the_kernels(jit, groups, rows, expected):
  model, q = _mlp_and_posterior()
  fn = tf.function(lambda x: predictive_samples(model, q, x, 8, seed=1, sample_groups=groups),
                   jit_compile=jit)
  graph_def = fn.get_concrete_function(tf.TensorSpec([rows, 4])).graph.as_graph_def()
  nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
  assert sum(n.op == "BatchMatMulV2" for n in nodes) == expected


@pytest.mark.parametrize("groups", [0, -2, 1.5, True, "4"])
def test_bad_sample_groups(groups):
  model, q = _mlp_and_posterior()
  with pytest.raises(ValueError, match="sample_groups"):
    predictive(model, q, tf.zeros([1, 4]), 4, sample_groups=groups)


def test_mismatched_posterior_and_bad_task():
  model, _ = _mlp_and_posterior()
  q = MeanFieldGaussian([tf.zeros([4, 16])], [tf.ones([4, 16])])
  with pytest.raises(ValueError, match="weight parts"):
    predictive(model, q, tf.zeros([1, 4]))
  with pytest.raises(ValueError, match="task"):
    summarize(tf.zeros([2, 1, 1]), task="ranking")
