"""`tfp_ext.serving.export`: signature layout, exact predictive, determinism, batching, atomicity.

The served numbers are checked against an independent NumPy forward pass over the very weight
samples the signature draws (same stateless seed), so the tolerances are float32 rounding
(1e-5), not Monte Carlo error.
"""

import importlib
import os

import numpy as np
import pytest
import tensorflow as tf

import tfp_ext
from tests.serving.conftest import REG_NOISE
from tests.serving.conftest import REG_SAMPLES
from tests.serving.conftest import mean_field
from tests.serving.conftest import mlp
from tfp_ext.serving import export
from tfp_ext.serving.export import TEMP_PREFIX

# The module (the package re-exports its `export` function under the same name).
export_module = importlib.import_module("tfp_ext.serving.export")

X = np.linspace(-2., 2., 7, dtype=np.float32)[:, None]


def _forward(weights, x):
  """NumPy MLP: [S, B, out] for stacked weights (W1, b1, W2, b2) of shape [S, ...]."""
  w1, b1, w2, b2 = [np.asarray(w, np.float64) for w in weights]
  h = np.tanh(np.einsum("bi,sih->sbh", x, w1) + b1[:, None, :])
  return np.einsum("sbh,sho->sbo", h, w2) + b2[:, None, :]


def _served_weights(exported, num_samples, seed):
  return exported.posterior.predictive_weights(num_samples, seed)


def test_signature_layout(regression):
  sig = regression.signature()
  _, inputs = sig.structured_input_signature
  assert list(inputs) == ["x"]
  assert inputs["x"].shape.as_list() == [None, 1] and inputs["x"].dtype == tf.float32
  outputs = sig.structured_outputs
  assert sorted(outputs) == ["aleatoric_stddev", "epistemic_stddev", "mean", "stddev"]
  for spec in outputs.values():
    assert spec.shape.as_list()[0] is None  # Batch-first: TF Serving's row format needs it.
  loaded = tf.saved_model.load(regression.path)
  assert sorted(loaded.signatures) == ["serving_default", "serving_xla"]


def test_regression_matches_numpy_on_the_same_samples(regression):
  out = regression.signature()(x=tf.constant(X))
  f = _forward(_served_weights(regression, REG_SAMPLES, 3), X)
  epistemic = f.std(axis=0)
  np.testing.assert_allclose(out["mean"], f.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(out["epistemic_stddev"], epistemic, atol=1e-5)
  np.testing.assert_allclose(out["aleatoric_stddev"], np.full_like(epistemic, REG_NOISE), atol=1e-7)
  np.testing.assert_allclose(out["stddev"], np.sqrt(epistemic**2 + REG_NOISE**2), atol=1e-5)


def test_served_answers_are_the_local_predictive_for_the_same_seed(regression, classification):
  """`export(seed=s)` serves `predictive(..., seed=s)`: the same samples, in-graph or stored."""
  cases = [(regression, REG_SAMPLES, 3, "regression", X),
           (classification, 8, 0, "classification", np.array([[0., 0.], [1., -1.]], np.float32))]
  for exported, num_samples, seed, task, x in cases:
    local = tfp_ext.posterior.predictive(exported.model, exported.posterior, tf.constant(x),
                                         num_samples=num_samples, seed=seed, task=task)
    out = exported.signature()(x=tf.constant(x))
    # Equal samples; the signature and the eager predictive group the samples differently, so
    # only float32 rounding of the sums differs (1e-5 on values of order 1).
    for key in ("mean", "stddev") if task == "classification" else ("mean",):
      np.testing.assert_allclose(out[key], local[key], atol=1e-5)


def test_xla_signature_agrees(regression):
  a = regression.signature()(x=tf.constant(X))
  b = regression.signature("serving_xla")(x=tf.constant(X))
  for k in a:
    np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_classification_matches_numpy(classification):
  x = np.array([[0., 0.], [1., -1.], [3., 2.]], np.float32)
  out = classification.signature()(x=tf.constant(x))
  logits = _forward(_served_weights(classification, 8, 0), x)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  mean = p.mean(0)
  entropy = -(mean * np.log(mean)).sum(-1)
  expected_entropy = -(p * np.log(p)).sum(-1).mean(0)
  assert sorted(out) == ["mean", "mutual_information", "predictive_entropy", "stddev"]
  np.testing.assert_allclose(out["mean"], mean, atol=1e-5)
  np.testing.assert_allclose(out["stddev"], p.std(0), atol=1e-5)
  np.testing.assert_allclose(out["predictive_entropy"], entropy, atol=1e-5)
  np.testing.assert_allclose(out["mutual_information"], entropy - expected_entropy, atol=1e-5)
  np.testing.assert_allclose(np.sum(out["mean"], -1), 1., atol=1e-6)


def test_sample_ensemble_uses_every_member(ensemble):
  out = ensemble.signature()(x=tf.constant(X))
  f = _forward([v.numpy() for v in ensemble.posterior.samples], X)  # All 5 members, no sampling.
  np.testing.assert_allclose(out["mean"], f.mean(0), atol=1e-5)
  np.testing.assert_allclose(out["stddev"], f.std(0), atol=1e-5)


def test_deterministic_and_independent_of_batch_composition(regression):
  sig = regression.signature()
  full = sig(x=tf.constant(X))
  again = sig(x=tf.constant(X))
  reversed_ = sig(x=tf.constant(X[::-1].copy()))
  mixed = sig(x=tf.constant(np.concatenate([X[3:4], np.full((5, 1), 9., np.float32)])))
  for k in full:
    np.testing.assert_array_equal(full[k], again[k])
    np.testing.assert_allclose(full[k][::-1], reversed_[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(full[k][3], mixed[k][0], rtol=1e-6, atol=1e-7)
    for i in (0, 6):  # A request of one row, as TF Serving sees it before batching.
      np.testing.assert_allclose(full[k][i], sig(x=tf.constant(X[i:i + 1]))[k][0],
                                 rtol=1e-6, atol=1e-7)


def test_posterior_is_saved_as_variables(regression):
  loaded = tf.saved_model.load(regression.path)
  names = [n for n, _ in tf.train.list_variables(
      os.path.join(regression.path, "variables", "variables"))]
  assert any("posterior/_loc" in n for n in names) and any("posterior/_scale" in n for n in names)
  assert any(n.startswith("seed") for n in names)
  before = loaded.signatures["serving_default"](x=tf.constant(X))["mean"].numpy()
  # The signature reads the restored variables (not constants folded in at export time).
  loaded.posterior._loc[3].assign(loaded.posterior._loc[3] + 1.)  # Output bias + 1.
  after = loaded.signatures["serving_default"](x=tf.constant(X))["mean"].numpy()
  np.testing.assert_allclose(after, before + 1., atol=1e-5)


def test_versions_increase(tmp_path):
  model = mlp(1, 4, 1, seed=2)
  q = mean_field(model, 0.1)
  os.makedirs(tmp_path / "7")
  os.makedirs(tmp_path / f"{TEMP_PREFIX}leftover")  # A crashed export's temp: not a version.
  path = export(model, q, str(tmp_path), num_samples=2)
  assert os.path.basename(path) == "8"
  with pytest.raises(ValueError, match="already exists"):
    export(model, q, str(tmp_path), num_samples=2, version=8)


def test_crash_mid_export_leaves_no_version(tmp_path, monkeypatch):
  model = mlp(1, 4, 1, seed=2)
  q = mean_field(model, 0.1)
  real_save = tf.saved_model.save

  def save_then_fail(obj, export_dir, **kwargs):
    real_save(obj, export_dir, **kwargs)  # Every file written, then the "disk fills up".
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    raise OSError("No space left on device (injected)")

  monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
  with pytest.raises(OSError, match="injected"):
    export(model, q, str(tmp_path), num_samples=2, version=1)
  assert os.listdir(tmp_path) == []  # No version directory, and the temp directory is gone.


def test_bad_arguments(tmp_path):
  model = mlp(1, 4, 1, seed=2)
  q = mean_field(model, 0.1)
  other = mean_field(mlp(2, 4, 1, seed=2), 0.1)
  with pytest.raises(ValueError, match="task"):
    export(model, q, str(tmp_path), task="ranking")
  with pytest.raises(ValueError, match="num_samples"):
    export(model, q, str(tmp_path), num_samples=0)
  with pytest.raises(ValueError, match="noise_stddev"):
    export(model, q, str(tmp_path), noise_stddev=-1.)
  with pytest.raises(ValueError, match="noise_stddev"):
    export(model, q, str(tmp_path), task="classification", noise_stddev=0.1)
  with pytest.raises(ValueError, match="version"):
    export(model, q, str(tmp_path), version=0)
  with pytest.raises(ValueError, match="sample_groups"):
    export(model, q, str(tmp_path), sample_groups=0)
  with pytest.raises(ValueError, match="Posterior part 0"):
    export(model, other, str(tmp_path))
  with pytest.raises(TypeError, match="WeightPosterior"):
    export(model, [v.numpy() for v in model.trainable_variables], str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_materialized_samples_give_the_same_answers(regression, tmp_path):
  path = export(regression.model, regression.posterior, str(tmp_path / "m"),
                num_samples=REG_SAMPLES, noise_stddev=REG_NOISE, seed=3, materialize_samples=True)
  names = [n for n, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))]
  # The export stores the drawn samples, not the posterior's parameters.
  assert any("posterior/_samples" in n for n in names)
  assert not any("posterior/_loc" in n for n in names)
  got = tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(X))
  want = regression.signature()(x=tf.constant(X))
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_sample_groups_do_not_change_the_answers(regression, tmp_path):
  want = regression.signature()(x=tf.constant(X))  # The default: 4 groups here, 1 in serving_xla.
  for groups in (1, 3):
    path = export(regression.model, regression.posterior, str(tmp_path / str(groups)),
                  num_samples=REG_SAMPLES, noise_stddev=REG_NOISE, seed=3, xla_signature=True,
                  sample_groups=groups)
    for name in ("serving_default", "serving_xla"):
      got = tf.saved_model.load(path).signatures[name](x=tf.constant(X))
      for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_materialize_samples_auto_follows_the_size_limit(regression, tmp_path, monkeypatch):
  def stored(path):
    names = [n for n, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))]
    return any("posterior/_samples" in n for n in names), any("posterior/_loc" in n for n in names)

  args = (regression.model, regression.posterior)
  # 16 samples of 49 float32 weights: far below the limit, so the default stores the samples.
  assert stored(export(*args, str(tmp_path / "small"), num_samples=16)) == (True, False)
  monkeypatch.setattr(export_module, "MATERIALIZE_LIMIT_BYTES", 16 * 49 * 4 - 1)
  assert stored(export(*args, str(tmp_path / "large"), num_samples=16)) == (False, True)
  with pytest.raises(ValueError, match="materialize_samples"):
    export(*args, str(tmp_path / "bad"), materialize_samples="yes")


def test_sample_ensemble_fixed_subset(ensemble, tmp_path):
  path = export(ensemble.model, ensemble.posterior, str(tmp_path / "subset"), num_samples=3,
                seed=4, xla_signature=True)
  loaded = tf.saved_model.load(path)
  chosen = ensemble.posterior.predictive_weights(3, 4)
  f = _forward([w.numpy() for w in chosen], X)
  # Three distinct members of the five.
  assert len({tuple(np.ravel(w)) for w in chosen[0].numpy()}) == 3
  for name in ("serving_default", "serving_xla"):
    out = loaded.signatures[name](x=tf.constant(X))
    np.testing.assert_allclose(out["mean"], f.mean(0), atol=1e-5)
    np.testing.assert_allclose(out["stddev"], f.std(0), atol=1e-5)
