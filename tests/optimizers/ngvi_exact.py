"""Exact references for the natural-gradient VI optimizers: Bayesian linear and logistic regression.

* Linear regression with known noise σₙ and prior N(0, 1/λ): the posterior is Gaussian with
  precision P = XᵀX/σₙ² + λI and mean P⁻¹Xᵀy/σₙ²; the optimal mean-field Gaussian has the same
  mean and precisions diag(P).
* Logistic regression: no closed form; a long HMC run (`tfp.mcmc`, several chains, effective
  sample size measured) gives the posterior mean with a known Monte Carlo standard error.

`run_and_average` trains with `fit` and averages snapshots of the optimizer's posterior over the
second half of training, returning the average and its standard error (the snapshots are
spaced by more than the optimizer's correlation time, ~1/α steps for μ and ~1/(1 − β₂) for the
precision, so they are treated as independent).
"""

import functools

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.internal import seeds

NOISE_STD = 0.5
PRIOR_PRECISION = 1.0


def linear_problem(n=64, d=3, seed=0):
  """(X, y, exact mean, exact mean-field precision diag(XᵀX/σₙ² + λ)), float32 data."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = x @ rng.normal(size=d) + NOISE_STD * rng.normal(size=n)
  prec = x.T @ x / NOISE_STD**2 + PRIOR_PRECISION * np.eye(d)
  mean = np.linalg.solve(prec, x.T @ y / NOISE_STD**2)
  return x.astype(np.float32), y.astype(np.float32), mean, np.diag(prec)


def gaussian_nll(y_true, y_pred):
  """Per-example −log N(y | f, σₙ²) up to a constant: (y − f)² / (2σₙ²), shape [B]."""
  return 0.5 * tf.reduce_sum(tf.square(y_true - y_pred), axis=-1) / NOISE_STD**2


def vogn_squared_gradient_fixed_point(x, y, mean):
  """The precision VOGN's per-example-squared-gradient curvature converges to, in closed form.

  With gᵢ = −(yᵢ − xᵢᵀθ) xᵢ / σₙ² and θ ~ N(μ, diag(v)), E[gᵢⱼ²] = xᵢⱼ² ((yᵢ − xᵢᵀμ)² +
  Σₖ xᵢₖ² vₖ) / σₙ⁴; the stationary s = (1/N) Σᵢ E[gᵢ²] and v = 1/(N s + λ) are solved by
  fixed-point iteration (a contraction here). Returns the precision N s + λ.
  """
  x = x.astype(np.float64)
  n = x.shape[0]
  resid2 = np.square(y - x @ mean)
  v = np.full(x.shape[1], 1. / PRIOR_PRECISION)
  for _ in range(500):
    e_r2 = resid2 + np.square(x) @ v
    s = (np.square(x) * e_r2[:, None]).mean(0) / NOISE_STD**4
    v = 1. / (n * s + PRIOR_PRECISION)
  return 1. / v


def logistic_problem(n=100, d=2, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  w = np.array([1.5, -1.0])[:d]
  y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ w))).astype(np.float64)
  return x.astype(np.float32), y.astype(np.float32)


@functools.lru_cache(maxsize=None)
def hmc_logistic_reference(num_chains=8, num_results=1500):
  """(posterior mean, posterior std, Monte Carlo standard error of the mean) by HMC."""
  x, y = logistic_problem()
  x64, y64 = tf.constant(x, tf.float64), tf.constant(y, tf.float64)

  def target(w):  # w: [chains, d]
    logits = tf.einsum("nd,cd->cn", x64, w)
    ll = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.broadcast_to(y64, tf.shape(logits)), logits=logits), axis=-1)
    return ll - 0.5 * PRIOR_PRECISION * tf.reduce_sum(tf.square(w), axis=-1)

  kernel = tfp.mcmc.HamiltonianMonteCarlo(target, step_size=0.15, num_leapfrog_steps=8)

  @tf.function(jit_compile=True)
  def run(seed):
    return tfp.mcmc.sample_chain(num_results, tf.zeros([num_chains, x.shape[1]], tf.float64),
                                 kernel=kernel, num_burnin_steps=300, trace_fn=None, seed=seed)

  samples = run(seeds.sanitize(2024)).numpy()  # [R, C, d]
  ess = tfp.mcmc.effective_sample_size(samples, cross_chain_dims=1).numpy()
  flat = samples.reshape(-1, samples.shape[-1])
  mean, std = flat.mean(0), flat.std(0)
  return mean, std, std / np.sqrt(ess)


class _Snapshots(tf_keras.callbacks.Callback):

  def __init__(self, optimizer, start_epoch):
    super().__init__()
    self._opt, self._start = optimizer, start_epoch
    self.loc, self.prec = [], []

  def on_epoch_end(self, epoch, logs=None):
    if epoch >= self._start:
      q = self._opt.posterior()
      self.loc.append(np.concatenate([l.numpy().ravel() for l in q.loc]))
      self.prec.append(np.concatenate([1. / np.square(s.numpy().ravel()) for s in q.scale]))


def run_and_average(model, x, y, batch_size, epochs, steps_per_epoch=100, seed=0):
  """Fits `model` (compiled) on repeated shuffled batches; averages the posterior's second half.

  Returns ((loc mean, loc standard error), (precision mean, precision standard error)), with the
  standard error std/√K over the K snapshots (one per epoch of `steps_per_epoch` steps).
  """
  ds = (tf.data.Dataset.from_tensor_slices((x, y)).repeat()
        .shuffle(4 * len(x), seed=seed).batch(batch_size, drop_remainder=True))
  snaps = _Snapshots(model.optimizer, epochs // 2)
  model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=[snaps])
  loc, prec = np.array(snaps.loc), np.array(snaps.prec)
  k = len(loc)
  return ((loc.mean(0), loc.std(0, ddof=1) / np.sqrt(k)),
          (prec.mean(0), prec.std(0, ddof=1) / np.sqrt(k)))
