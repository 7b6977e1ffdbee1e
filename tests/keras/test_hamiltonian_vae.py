"""Tests of the HVAE tf_keras model.

A linear-Gaussian decoder (x | z ~ N(W z + b, I), z ~ N(0, I)) makes log p(x) exact for the
model's current weights: x ~ N(b, W W^T + I). That checks the importance-sampled NLL and the ELBO
bound against closed forms after `fit` under XLA.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tf_keras

from tfp_ext.keras import HamiltonianVAE

LATENT, DIM, N = 2, 6, 256


def _data():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(DIM, LATENT))
  z = rng.normal(size=(N, LATENT))
  return (z @ w.T + 0.5 + rng.normal(size=(N, DIM))).astype(np.float32)


def _model(likelihood="gaussian", **kwargs):
  tf_keras.utils.set_random_seed(1)
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(16, "tanh"),
                                 tf_keras.layers.Dense(2 * LATENT)])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(DIM)])  # Linear: exact marginal.
  kwargs = {"num_steps": 2, "initial_step_size": 0.05, "seed": 5, **kwargs}
  return HamiltonianVAE(encoder, decoder, latent_size=LATENT, likelihood=likelihood, **kwargs)


def _exact_log_evidence(model, x):
  dense = model.decoder.layers[0]
  w, b = dense.kernel.numpy().astype(np.float64).T, dense.bias.numpy().astype(np.float64)
  return scipy.stats.multivariate_normal(b, w @ w.T + np.eye(DIM)).logpdf(x)


@pytest.fixture(scope="module")
def trained():
  x = _data()
  model = _model()
  model.compile(tf_keras.optimizers.Adam(0.02), jit_compile=True)
  before = model.elbo(x, num_samples=16, seed=11)
  init = (model.step_size().numpy(), model.inverse_temperature().numpy())
  history = model.fit(x, epochs=8, batch_size=64, verbose=0)
  return model, x, before, init, history


def test_fit_under_xla_improves_the_elbo_and_learns_the_flow(trained):
  model, x, before, init, history = trained
  assert model.train_function is not None and len(history.history["loss"]) == 8
  after = model.elbo(x, num_samples=16, seed=11)
  # Per-example mean over 16 samples; the mean over N examples has standard error
  # sqrt(sum_i se_i^2) / N. The improvement must exceed 5 combined standard errors.
  se = np.sqrt(np.sum(before.standard_error**2) + np.sum(after.standard_error**2)) / N
  gain = np.mean(after.elbo) - np.mean(before.elbo)
  assert gain > 5 * se, (gain, se)
  # The flow's own parameters received gradients.
  assert np.max(np.abs(model.step_size().numpy() - init[0])) > 1e-3
  assert abs(model.inverse_temperature().numpy() - init[1]) > 1e-3
  assert np.all((model.step_size().numpy() > 0) & (model.step_size().numpy() < 0.5))


def test_importance_sampled_nll_matches_the_exact_marginal(trained):
  model, x, *_ = trained
  x = x[:64]
  s = 256
  exact = _exact_log_evidence(model, x)
  lw = model.elbo(x, num_samples=s, seed=21).log_weights.numpy().astype(np.float64)
  nll = model.importance_sampled_nll(x, num_samples=s, seed=21).numpy()
  # Same seed, same weights: the NLL is -logmeanexp of exactly these log-weights.
  m = lw.max(0)
  w = np.exp(lw - m)
  np.testing.assert_allclose(nll, -(m + np.log(w.mean(0))), rtol=1e-5)
  # Delta-method standard error of each example's log-estimate, se_i = sd(w)/(mean(w) sqrt(S));
  # the mean error over 64 independent examples has sd sqrt(sum se_i^2)/64 and a Jensen bias of
  # about mean(se_i^2)/2. Allow 5 sd plus the bias.
  se = w.std(0, ddof=1) / (w.mean(0) * np.sqrt(s))
  err = np.mean(-nll - exact)
  assert abs(err) < 5 * np.sqrt(np.sum(se**2)) / len(x) + np.mean(se**2), (err, se.mean())
  # Chunked evaluation is the same computation with per-chunk seeds: same distribution.
  chunked = model.importance_sampled_nll(x, num_samples=s, seed=21, batch_size=32).numpy()
  assert chunked.shape == (64,) and np.all(np.isfinite(chunked))


def test_elbo_is_below_the_exact_evidence(trained):
  model, x, *_ = trained
  result = model.elbo(x, num_samples=32, seed=31)
  exact = _exact_log_evidence(model, x)
  gap = np.mean(exact - result.elbo.numpy())
  se = np.sqrt(np.sum(result.standard_error.numpy()**2)) / N
  assert gap > -3 * se, (gap, se)


def test_same_seed_same_estimate(trained):
  model, x, *_ = trained
  a = model.importance_sampled_nll(x[:8], num_samples=4, seed=3)
  b = model.importance_sampled_nll(x[:8], num_samples=4, seed=3)
  c = model.importance_sampled_nll(x[:8], num_samples=4, seed=4)
  np.testing.assert_array_equal(a, b)
  assert np.all(a.numpy() != c.numpy())


def test_bernoulli_log_joint_matches_hand_computation():
  model = _model("bernoulli", tempering="free")
  x = (np.random.default_rng(1).uniform(size=(4, DIM)) > 0.5).astype(np.float32)
  z = np.random.default_rng(2).normal(size=(3, 4, LATENT)).astype(np.float32)
  model(x)  # Builds the layers.
  logits = model.decoder(z.reshape(-1, LATENT)).numpy().reshape(3, 4, DIM).astype(np.float64)
  lik = np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), -1)
  prior = scipy.stats.norm.logpdf(z).sum(-1)
  np.testing.assert_allclose(model.log_joint_fn(x)(tf.constant(z)), prior + lik, rtol=1e-5)
  # "free" tempering: beta_0 = prod alpha^2 starts at the requested 0.5.
  np.testing.assert_allclose(model.inverse_temperature(), 0.5, rtol=1e-5)


def test_config_round_trip():
  model = _model(tempering="none", num_steps=2, step_size_per_step=True)
  x = _data()[:8]
  model(x)
  clone = HamiltonianVAE.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config()["tempering"] == "none" and clone.raw_step_size.shape == (2, LATENT)
  np.testing.assert_allclose(clone.elbo(x, 4, seed=1).elbo, model.elbo(x, 4, seed=1).elbo,
                             rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tempering="warm"), "tempering"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(initial_step_size=0.7), "initial_step_size"),
    (dict(initial_inverse_temperature=1.0), "initial_inverse_temperature"),
    (dict(num_elbo_samples=0), "num_elbo_samples"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _model(**kwargs)


def test_encoder_output_size_is_checked():
  model = HamiltonianVAE(tf_keras.layers.Dense(3), tf_keras.layers.Dense(DIM), latent_size=2)
  with pytest.raises(ValueError, match="2 \\* latent_size"):
    model.elbo(_data()[:4])
