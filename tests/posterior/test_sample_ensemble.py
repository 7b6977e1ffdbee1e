"""SampleEnsemble: construction, thinning, predictive over members, and a served SGHMC posterior."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext
from tfp_ext.posterior import SampleEnsemble


@pytest.fixture(scope="module")
def sampled():
  """A small classifier sampled with SGHMC by sample_keras_weights (module-scoped: one chain)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", input_shape=(3,)),
                               tf_keras.layers.Dense(2)])
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  kernel = tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo(
      tfp_ext.mcmc.keras_log_prior_fn(model, stddev=1.),
      tfp_ext.mcmc.keras_log_likelihood_fn(model, loss), (x, y), batch_size=16,
      step_size=1e-2, friction=5.)
  before = [v.numpy() for v in model.trainable_variables]
  # Graph mode: the kernels' XLA compilation is checked in tests/mcmc; compiling here would only
  # add time.
  chain = tfp_ext.mcmc.sample_keras_weights(model, kernel, num_results=40, num_burnin_steps=20,
                                            seed=(1, 2), jit_compile=False)
  after = [v.numpy() for v in model.trainable_variables]
  return model, x, y, chain, before, after


def test_keras_helper_log_likelihood_matches_keras_loss(sampled):
  model, x, y, _, _, _ = sampled
  fn = tfp_ext.mcmc.keras_log_likelihood_fn(
      model, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ll = fn([tf.convert_to_tensor(v) for v in model.trainable_variables], (x, y))
  assert ll.shape == [64]
  # Exact: the mean per-example log-likelihood is minus Keras' own reduced loss.
  keras_loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
  np.testing.assert_allclose(-np.mean(ll), keras_loss, rtol=1e-5)


def test_chain_shapes_and_model_untouched(sampled):
  model, _, _, chain, before, after = sampled
  for c, v in zip(chain, model.trainable_variables):
    assert c.shape == [40] + v.shape.as_list()
    assert np.all(np.isfinite(c))
  for b, a in zip(before, after):
    np.testing.assert_array_equal(a, b)


def test_from_chain_thins(sampled):
  _, _, _, chain, _, _ = sampled
  q = SampleEnsemble.from_chain(chain, thin=4, num_burnin=8)
  assert q.num_members == 8  # samples 8, 12, ..., 36
  np.testing.assert_array_equal(q.samples[0], chain[0][8::4])
  np.testing.assert_allclose(q.mean()[1], np.mean(chain[1][8::4], axis=0), rtol=1e-6)
  np.testing.assert_allclose(q.stddev()[1], np.std(chain[1][8::4], axis=0), rtol=1e-5)


def test_predictive_averages_every_member_exactly(sampled):
  model, x, _, chain, _, _ = sampled
  q = SampleEnsemble.from_chain(chain, thin=5)
  q.check_compatible(model.trainable_variables)
  out = tfp_ext.posterior.predictive(model, q, x[:5], num_samples=None, task="classification")
  # Exact answer: set each member's weights into a copy of the model and average softmax outputs.
  clone = tf_keras.models.clone_model(model)
  probs = []
  for s in range(q.num_members):
    clone.set_weights([w[s].numpy() for w in q.samples])
    probs.append(tf.nn.softmax(clone(x[:5])).numpy())
  np.testing.assert_allclose(out["mean"], np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["stddev"], np.std(probs, axis=0), rtol=1e-4, atol=1e-6)


def test_fixed_subset_from_seed(sampled):
  _, _, _, chain, _, _ = sampled
  q = SampleEnsemble(chain)
  a = q.predictive_weights(10, seed=(3, 4))
  b = q.predictive_weights(10, seed=(3, 4))
  c = q.predictive_weights(10, seed=(5, 6))
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  # Distinct members, each one of the chain's samples.
  flat = np.reshape(a[0], (10, -1))
  members = np.reshape(chain[0], (40, -1))
  idx = [int(np.flatnonzero(np.all(members == row, axis=1))[0]) for row in flat]
  assert len(set(idx)) == 10
  assert len(q.sample(100, seed=(1, 1))[0]) == 100


def test_relativistic_hmc_chain_feeds_an_ensemble(sampled):
  # Any kernel over the weight list works with sample_keras_weights, e.g. relativistic HMC.
  model, x, y, _, _, _ = sampled
  log_prior = tfp_ext.mcmc.keras_log_prior_fn(model)
  log_lik = tfp_ext.mcmc.keras_log_likelihood_fn(
      model, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  target = lambda *w: log_prior(list(w)) + tf.reduce_sum(log_lik(list(w), (x, y)))
  kernel = tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo(target, step_size=0.01,
                                                          num_leapfrog_steps=3)
  chain = tfp_ext.mcmc.sample_keras_weights(model, kernel, num_results=6, seed=(5, 6),
                                            jit_compile=False)
  q = SampleEnsemble.from_chain(chain, thin=2)
  assert q.num_members == 3
  out = tfp_ext.posterior.predictive(model, q, x[:4], num_samples=None, task="classification")
  assert out["mean"].shape == [4, 2]
  np.testing.assert_allclose(np.sum(out["mean"], axis=-1), 1., rtol=1e-5)


def test_bad_input(sampled):
  model, _, _, chain, _, _ = sampled
  with pytest.raises(ValueError, match="same number of samples"):
    SampleEnsemble([chain[0], chain[1][:3]])
  with pytest.raises(ValueError, match="non-finite"):
    SampleEnsemble([np.full((2, 3), np.nan, np.float32)])
  with pytest.raises(ValueError, match="thin"):
    SampleEnsemble.from_chain(chain, thin=0)
  with pytest.raises(ValueError, match="num_samples"):
    SampleEnsemble(chain).predictive_weights(41, seed=0)
  with pytest.raises(ValueError, match="trainable"):
    SampleEnsemble(chain[:2]).check_compatible(model.trainable_variables)


def test_export_serves_and_passes_check(sampled, tmp_path):
  model, x, _, chain, _, _ = sampled
  q = SampleEnsemble.from_chain(chain, thin=4)
  path = tfp_ext.serving.export(model, q, str(tmp_path / "sgmcmc"), num_samples=None,
                                task="classification")
  # `tfp-ext check`, the command-line entry point, loads it as TF Serving does.
  proc = subprocess.run([sys.executable, "-m", "tfp_ext.cli", "check", path], capture_output=True,
                        text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  loaded = tf.saved_model.load(path)
  served = loaded.signatures["serving_default"](x=tf.constant(x[:7]))
  expected = tfp_ext.posterior.predictive(model, q, x[:7], num_samples=None, task="classification")
  for key in ("mean", "stddev", "predictive_entropy", "mutual_information"):
    assert served[key].shape[0] == 7
    np.testing.assert_allclose(served[key], expected[key], rtol=1e-5, atol=1e-6)
