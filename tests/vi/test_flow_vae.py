"""FlowVAE: every posterior runs; bounds ordering; XLA training with a ragged last batch."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.vi import FlowVAE
from tfp_ext.vi.flow_vae import POSTERIORS


def _data():
  x = (np.random.RandomState(0).rand(70, 6) < 0.3).astype(np.float32)
  return x


def _model(posterior, seed=0):
  tf_keras.utils.set_random_seed(seed)
  enc = tf_keras.Sequential([tf_keras.layers.Dense(8, "relu")])
  dec = tf_keras.Sequential([tf_keras.layers.Dense(8, "relu"), tf_keras.layers.Dense(6)])
  return FlowVAE(enc, dec, latent_size=2, posterior=posterior, num_flows=2, num_columns=1,
                 iaf_hidden_units=(4,), iaf_context_size=3, seed=seed)


@pytest.mark.parametrize("posterior", POSTERIORS)
def test_bounds(posterior):
  model = _model(posterior)
  x = _data()[:10]
  lw, log_lik, log_ratio = model.log_weights(x, num_samples=7, seed=(1, 2))
  assert lw.shape == (7, 10)
  np.testing.assert_allclose(lw, log_lik + log_ratio, rtol=1e-6)
  nelbo = model.negative_elbo(x, num_samples=7, seed=(1, 2))
  nll = model.importance_sampled_nll(x, num_samples=7, seed=(1, 2))
  # Same draws: logmeanexp >= mean (Jensen), so the IS estimate never exceeds -ELBO.
  assert np.all(nll.numpy() <= nelbo.numpy() + 1e-5)
  assert np.all(np.isfinite(nll)) and np.all(log_lik.numpy() <= 0.)
  # Same seed, same numbers; batching the NLL does not change per-example seeds' validity.
  np.testing.assert_array_equal(model.importance_sampled_nll(x, 7, seed=(1, 2)), nll)


def test_fit_jit_ragged_batch():
  """XLA training of the QR-based posterior, with a last batch of another (dynamic) shape."""
  x = _data()  # 70 examples, batch 32: the last batch (6) has another shape
  model = _model("orthogonal", seed=3)
  model.compile(tf_keras.optimizers.Adam(1e-2), jit_compile=True)
  model(x[:2])
  before = [w.numpy() for w in model.trainable_variables]
  hist = model.fit(x, epochs=1, batch_size=32, verbose=0, shuffle=False)
  assert np.all(np.isfinite(hist.history["loss"]))
  after = [w.numpy() for w in model.trainable_variables]
  assert all(np.all(np.isfinite(w)) for w in after)
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  # Stateless seeds: the same weights and seed give the same ELBO draws (no hidden RNG state).
  np.testing.assert_array_equal(model.negative_elbo(x, 3, seed=(5, 6)),
                                model.negative_elbo(x, 3, seed=(5, 6)))


def test_errors():
  with pytest.raises(ValueError, match="posterior must be one of"):
    _model("radial")
  with pytest.raises(ValueError, match="batch"):
    _model("planar").log_weights(np.zeros(6, np.float32))
