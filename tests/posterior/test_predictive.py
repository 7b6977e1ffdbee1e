"""Predictive summaries against closed forms, vectorization, XLA and thread safety."""

import concurrent.futures
import re

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


def _mlp_and_posterior(in_dim=4, hidden=16):
  model = tf_keras.Sequential([
      tf_keras.layers.Dense(hidden, activation="relu", input_shape=(in_dim,)),
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


# By default one vectorized group in eager mode and under XLA; in a plain graph one plain call per
# sample from 257 rows on for this model (its largest kernel has 4·16 elements, 257·64 > 128·128),
# and below that four groups with TF's Eigen kernels (6 samples → 2, 2, 1, 1), one with oneDNN's.
# Explicit counts apply everywhere, capped at S.
@pytest.mark.parametrize("mode, groups, rows", [
    ("eager", None, 5), ("graph", None, 5), ("graph", None, 300), ("xla", None, 300),
    ("eager", 3, 5), ("graph", 1, 64), ("xla", 4, 5), ("graph", 9, 5), ("xla", 6, 5)])
def test_vectorized_samples_equal_per_sample_calls(mode, groups, rows):
  model, q = _mlp_and_posterior()
  x = tf.random.stateless_normal([rows, 4], seed=[2, 3])
  call = lambda x: predictive_samples(model, q, x, 6, seed=1, sample_groups=groups)
  if mode != "eager":
    call = tf.function(call, jit_compile=mode == "xla")
  out = call(x)
  assert out.shape == (6, rows, 3)
  _assert_per_sample_answers(out, q, x, 6)


# A serving signature's batch size is known only when it runs. 5 rows of 4 features (20 input
# elements) are copied per sample; 40 rows of 300 (12000) are not, and with one hidden unit (the
# largest kernel 300·1, so plain calls from 55 rows) stay vectorized; 2100 rows run one plain call
# per sample (and are not copied under XLA).
@pytest.mark.parametrize("rows, in_dim, hidden", [(5, 4, 16), (40, 300, 1), (2100, 4, 16)])
@pytest.mark.parametrize("jit", [False, True])
def test_batch_size_known_only_when_run(rows, in_dim, hidden, jit):
  model, q = _mlp_and_posterior(in_dim, hidden)
  fn = tf.function(lambda x: predictive_samples(model, q, x, 6, seed=1),
                   input_signature=[tf.TensorSpec([None, in_dim])], jit_compile=jit)
  x = tf.random.stateless_normal([rows, in_dim], seed=[2, 3])
  _assert_per_sample_answers(fn(x), q, x, 6)


# Sparse inputs are never copied; their batch size still picks the plain per-sample calls (from
# 513 rows for this model: its largest kernel has 4·8 elements).
@pytest.mark.parametrize("rows", [3, 600])
def test_sparse_inputs(rows):
  inputs = tf_keras.Input((4,), sparse=True)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(
      tf_keras.layers.Dense(8, activation="relu")(inputs)))
  q = MeanFieldGaussian(model.trainable_variables,
                        [tf.fill(v.shape, 0.1) for v in model.trainable_variables])
  dense = tf.random.stateless_normal([rows, 4], seed=[1, 2]) * tf.cast(
      tf.random.stateless_uniform([rows, 4], seed=[3, 4]) < 0.5, tf.float32)
  fn = tf.function(lambda x: predictive_samples(model, q, x, 6, seed=1),
                   input_signature=[tf.SparseTensorSpec([None, 4], tf.float32)])
  out = fn(tf.sparse.from_dense(dense))
  weights = q.predictive_weights(6, seed=1)
  for i in range(6):
    ref = functional_call(model, [w[i] for w in weights], dense)
    np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [3, 600])
def test_grouped_samples_keep_nested_outputs_and_order(rows):
  inputs = tf_keras.Input((4,))
  hidden = tf_keras.layers.Dense(8, activation="tanh")(inputs)
  model = tf_keras.Model(inputs, {"a": tf_keras.layers.Dense(2)(hidden),
                                  "b": tf_keras.layers.Dense(1)(hidden)})
  q = MeanFieldGaussian(model.trainable_variables,
                        [tf.fill(v.shape, 0.1) for v in model.trainable_variables])
  x = tf.random.stateless_normal([rows, 4], seed=[5, 6])
  eager = predictive_samples(model, q, x, 7, seed=2)  # One group.
  # 2, 2, 2, 1 samples at 3 rows with Eigen kernels, one plain call per sample at 600.
  graph = tf.function(lambda x: predictive_samples(model, q, x, 7, seed=2))(x)
  assert set(graph) == {"a", "b"}
  for k in eager:
    assert graph[k].shape == (7, rows) + eager[k].shape[2:]
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


_ONEDNN = onednn_enabled()


# Each Dense layer over a stacked (per-sample) input is one batched matmul per vectorized group;
# over the shared input batch the first is a plain matmul, and a plain call per sample has plain
# matmuls only. A batch of at most 8192 input elements is copied per sample (2 and 200 rows here), a
# larger one (4096 rows) is not. Each sample is a plain call (4096 and 300 rows; not under XLA)
# once the rows times the largest kernel's size exceed 128·128: from 257 rows with 16 hidden units
# (4·16), from 33 with 128 (4·128), and with oneDNN's kernels from 16 rows at least. With the
# batch size unknown every variant is built and the size picks one when the graph runs. Below
# that, 4 groups with Eigen kernels, 1 with oneDNN's and under XLA.
@pytest.mark.parametrize("jit, groups, rows, hidden, eigen, onednn", [
    (False, None, 2, 16, (8, 0), (2, 0)), (False, None, 4096, 16, (0, 16), (0, 16)),
    (False, None, 200, 16, (8, 0), (2, 0)), (False, None, 300, 16, (0, 16), (0, 16)),
    (False, None, 32, 128, (8, 0), (2, 0)), (False, None, 33, 128, (0, 16), (0, 16)),
    (False, None, None, 16, (12, 20), (3, 17)),
    (True, None, 2, 16, (2, 0), (2, 0)), (True, None, 4096, 16, (1, 1), (1, 1)),
    (True, None, None, 16, (3, 1), (3, 1)), (False, 2, 4096, 16, (2, 2), (2, 2)),
    (True, 3, 2, 16, (6, 0), (6, 0)), (False, 8, 2, 16, (0, 16), (0, 16))])
def test_default_groups_and_copies_follow_the_kernels(jit, groups, rows, hidden, eigen, onednn):
  model, q = _mlp_and_posterior(hidden=hidden)
  fn = tf.function(lambda x: predictive_samples(model, q, x, 8, seed=1, sample_groups=groups),
                   jit_compile=jit)
  graph_def = fn.get_concrete_function(tf.TensorSpec([rows, 4])).graph.as_graph_def()
  nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
  # vectorized_map leaves the body it vectorized in the graph, unused: "loop_body/…" outside pfor.
  unused = lambda name: "/pfor/" not in name and re.search(r"(^|/)loop_body(_\d+)?/", name)
  ops = [n.op for n in nodes if not unused(n.name)]
  assert (ops.count("BatchMatMulV2"), ops.count("MatMul")) == (onednn if _ONEDNN else eigen)


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
