"""SNEP and the posterior server against the exact posterior of Bayesian linear regression.

With a linear-Gaussian likelihood the tilted distributions are Gaussian, so with their exact
moments (`ConjugateGaussianTilted`) and β = 1 every fixed point of SNEP has each site equal to
its shard's likelihood factor, and the global approximation equals the exact posterior
N(m, C), C = (λI + XᵀX/σ²)⁻¹, m = C Xᵀy/σ², for any number of shards and any order of updates.
The tolerances are float64 rounding of 3×3 solves (1e-9).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_ext
from tfp_ext.distributed import ConjugateGaussianTilted
from tfp_ext.distributed import GaussianFamily
from tfp_ext.distributed import PosteriorServer

from tests.distributed.conjugate_problem import D, NOISE, PRIOR, SETTINGS
from tests.distributed.conjugate_problem import problem as _problem
from tests.distributed.conjugate_problem import server as _server


def _assert_exact(learner, mean, cov):
  m, c = learner.family.mean_and_covariance(learner.global_natural())
  np.testing.assert_allclose(m, mean, atol=1e-9)
  np.testing.assert_allclose(c, cov, atol=1e-9)


def test_gaussian_family_maps_round_trip():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(D, D))
  precision, mean = a @ a.T + np.eye(D), rng.normal(size=D)
  for covariance, p in (("full", precision), ("diagonal", np.diag(precision))):
    family = GaussianFamily(D, covariance)
    eta = family.from_mean_precision(mean, p)
    back = family.to_natural(family.to_mean(eta))
    np.testing.assert_allclose(back.shift, eta.shift, rtol=1e-10)
    np.testing.assert_allclose(back.neg_precision, eta.neg_precision, rtol=1e-10)
    np.testing.assert_allclose(family.unflatten(family.flatten(eta)).neg_precision,
                               eta.neg_precision)
    assert bool(family.is_valid(eta))
    assert not bool(family.is_valid(family.from_mean_precision(mean, -p)))
  # E[s(θ)] from samples: the mean parameters of the distribution sampled, within MC error.
  family = GaussianFamily(D, "full")
  samples = rng.multivariate_normal(mean, np.linalg.inv(precision), size=200_000)
  stats, exact = family.statistics(samples), family.to_mean(
      family.from_mean_precision(mean, precision))
  np.testing.assert_allclose(stats.first, exact.first, atol=5 * 1.0 / np.sqrt(200_000) * 2)
  # Projection clips eigenvalues of the covariance into the limits.
  projected = family.project(exact, (-10., 10.), (1.0, 2.0))
  values = np.linalg.eigvalsh(family.covariance_of(projected))
  assert values.min() >= 1.0 - 1e-9 and values.max() <= 2.0 + 1e-9


@pytest.mark.parametrize("k, jit_compile", [(2, True), (3, False)])
def test_conjugate_fixed_point_is_the_exact_posterior(k, jit_compile):
  shards, mean, cov = _problem(k)
  learner = _server(shards, jit_compile=jit_compile)
  learner.fit(16, verbose=0)
  _assert_exact(learner, mean, cov)
  assert learner.rejected == 0
  # Each site is its shard's likelihood factor: precision XₖᵀXₖ/σ².
  x0 = shards[0][0]
  np.testing.assert_allclose(-learner.site(0).neg_precision, x0.T @ x0 / NOISE, rtol=1e-8)


def test_synchronous_runs_are_deterministic():
  shards, _, _ = _problem(2)
  a = _server(shards).fit(2, verbose=0)
  b = _server(shards).fit(2, verbose=0)
  np.testing.assert_array_equal(a.state_variable.numpy(), b.state_variable.numpy())


def test_invalid_site_update_is_rejected_and_state_kept(caplog):
  shards, _, _ = _problem(2)

  def broken(family, cavity, data, state, seed):  # A diverged chain: non-finite moments.
    mu, state = ConjugateGaussianTilted(NOISE)(family, cavity, data, state, seed)
    return type(mu)(mu.first * np.nan, mu.half_second), state

  learner = _server(shards, broken)
  before = learner.state_variable.numpy()
  learner.fit(1, verbose=0)
  assert learner.rejected == 2
  np.testing.assert_array_equal(learner.state_variable.numpy(), before)
  assert "rejected" in caplog.text
  assert bool(learner.family.is_valid(learner.global_natural()))


@pytest.mark.parametrize("kwargs, match", [
    ({"shards": []}, "empty"),
    ({"shards": [(np.zeros((0, D)), np.zeros(0))]}, "empty"),
    ({"shards": [(np.zeros((4, D)), np.zeros(4)), (np.zeros((4, D)),)]}, "structure"),
    ({"shards": [(np.zeros((4, D)), np.zeros(3))]}, "lengths"),
    ({"prior": 0.0}, "Gaussian prior"),
    ({"prior": float("inf")}, "Gaussian prior"),
    ({"prior": tfp.distributions.StudentT(3., 0., 1.)}, "Gaussian prior"),
    ({"tilted": None}, "exactly one"),
    ({"covariance": "kfac"}, "covariance"),
    ({"learning_rate": 0.0}, "learning_rate"),
])
def test_bad_input_is_refused_at_construction(kwargs, match):
  args = dict(model=D, prior=PRIOR, shards=_problem(2)[0],
              tilted=ConjugateGaussianTilted(NOISE))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    PosteriorServer(**args)


def test_posterior_is_a_weight_posterior():
  """Diagonal: a MeanFieldGaussian of the global means and standard deviations. Full: an
  ensemble of draws from N(m, C), whose sample mean and covariance match within MC error."""
  shards, mean, cov = _problem(2)
  learner = _server(shards, covariance="diagonal", learning_rate=0.2, iters_per_sync=50).fit(
      2, verbose=0)
  q = learner.posterior()
  m, v = learner.family.mean_and_covariance(learner.global_natural())
  assert isinstance(q, tfp_ext.posterior.MeanFieldGaussian) and q.loc[0].shape == [D]
  np.testing.assert_allclose(q.loc[0], m, rtol=1e-6)
  np.testing.assert_allclose(q.scale[0], np.sqrt(v), rtol=1e-6)
  full = _server(shards).fit(16, verbose=0)
  n = 20_000
  ensemble = full.posterior(num_samples=n, seed=3, dtype=tf.float64)
  assert isinstance(ensemble, tfp_ext.posterior.SampleEnsemble)
  draws = ensemble.samples[0].numpy()
  se = np.sqrt(np.diag(cov) / n)
  assert np.all(np.abs(draws.mean(0) - mean) < 5 * se)
  # Var of a sample covariance entry: (C_ij² + C_ii C_jj) / n.
  se_cov = np.sqrt((cov ** 2 + np.outer(np.diag(cov), np.diag(cov))) / n)
  assert np.all(np.abs(np.cov(draws.T) - cov) < 5 * se_cov)


def test_chief_restarted_from_its_backup_resumes_the_run(tmp_path):
  """A chief that dies after round 1 of 3 and is restarted with the same `backup_dir` runs
  rounds 2 and 3 only, and ends where the uninterrupted synchronous run ends."""
  shards, _, _ = _problem(2)
  uninterrupted = _server(shards).fit(3, verbose=0)

  class ChiefDied(Exception):
    pass

  class ChiefDies(tf_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 0:
        raise ChiefDied()

  backup = str(tmp_path / "backup")
  with pytest.raises(ChiefDied):
    _server(shards).fit(3, callbacks=[ChiefDies()], backup_dir=backup, verbose=0)
  seen = []
  resumed = _server(shards).fit(3, backup_dir=backup, verbose=0, callbacks=[
      tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda r, logs: seen.append((r, logs)))])
  assert [r for r, _ in seen] == [1, 2]
  assert all(logs["rejected"] == 0 and logs["max_mean_change"] >= 0 for _, logs in seen)
  np.testing.assert_array_equal(resumed.state_variable.numpy(),
                                uninterrupted.state_variable.numpy())
  assert not tf.io.gfile.glob(backup + "/*"), "the backup outlives a completed fit"


def test_sgmcmc_tilted_mean_is_exact_within_monte_carlo_error():
  """`KernelTilted` with full-batch SGLD on a Gaussian tilted: Langevin's stationary mean is the
  target's for any step size, so the estimate must match the exact tilted mean within 4 standard
  errors (batch means over 20 consecutive calls that continue one chain)."""
  shards, _, _ = _problem(2)
  x, y = (np.asarray(a, np.float32) for a in shards[0])
  family = GaussianFamily(D, "full")
  cavity = family.from_mean_precision(np.full(D, 0.5), 2.0 * np.eye(D))
  exact = ConjugateGaussianTilted(NOISE)(family, cavity, (x, y), None, None)[0].first.numpy()

  def log_likelihood_fn(theta, batch):
    bx, by = batch
    return -0.5 * tf.square(by - tf.linalg.matvec(bx, theta)) / NOISE

  tilted = tfp_ext.distributed.KernelTilted(
      lambda lp, ll, data: tfp_ext.mcmc.StochasticGradientLangevinDynamics(
          lp, ll, data, batch_size=len(x), step_size=1e-2),
      log_likelihood_fn, num_results=500, num_burnin_steps=0)
  state = tf.constant(exact, tf.float32)  # Start at the target: no burn-in bias to wait out.
  estimate = tf.function(lambda s, seed: tilted(family, cavity, (x, y), s, seed))
  means = []
  for i in range(20):
    stats, state = estimate(state, tf.constant([7, i]))
    means.append(stats.first.numpy())
  means = np.array(means)
  standard_error = means.std(0, ddof=1) / np.sqrt(len(means))
  assert np.all(np.abs(means.mean(0) - exact) < 4 * standard_error + 1e-4), (
      means.mean(0), exact, standard_error)


def test_keras_model_with_sgld_reaches_the_exact_posterior_mean_within_monte_carlo_error():
  """The whole user path: a Keras model and its loss, SGLD on each site's tilted distribution.

  The model is the conjugate problem's linear regression (Dense(1) without bias, loss the
  Gaussian negative log-likelihood), so its exact posterior is known. With SG-MCMC moments the
  global mean fluctuates from round to round around SNEP's fixed point; its average over 30
  rounds (after 10 of burn-in) must be within 4 standard errors of the exact mean (standard
  errors from the rounds' spread: each round of 200 SNEP iterations is 2 of the sites' memory
  times 1/ε = 100, so rounds are close to independent).
  """
  shards, mean, cov = _problem(2)
  shards = [(x.astype(np.float32), y.astype(np.float32)[:, None]) for x, y in shards]
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, use_bias=False, input_shape=(D,))])
  learner = PosteriorServer(
      model, loss=lambda y, f: 0.5 * tf.square(y - f)[..., 0] / NOISE, prior=PRIOR,
      shards=shards, kernel=functools.partial(tfp_ext.mcmc.StochasticGradientLangevinDynamics,
                                              batch_size=len(shards[0][0]), step_size=4e-3),
      covariance="full", learning_rate=0.01, iters_per_sync=200, iters_per_damp=1,
      num_results=20, seed=1)
  means = []
  learner.fit(10, verbose=0)
  learner.fit(30, verbose=0, callbacks=[tf_keras.callbacks.LambdaCallback(
      on_epoch_end=lambda r, logs: means.append(learner.global_distribution().mean().numpy()))])
  means = np.array(means)
  standard_error = means.std(0, ddof=1) / np.sqrt(len(means))
  assert np.all(np.abs(means.mean(0) - mean) < 4 * standard_error), (
      means.mean(0), mean, standard_error)
  # The result is a weight posterior of the model's one kernel, ready for export.
  q = learner.posterior(num_samples=8, seed=0)
  assert [s.shape for s in q.samples] == [[8, D, 1]]
