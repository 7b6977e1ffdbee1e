"""GeneralizedInverseGaussian against scipy.stats.geninvgauss (exact CDF, density, moments)."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from tfp_ext.distributions import GeneralizedInverseGaussian

# (power, chi, psi) chosen to exercise every sampling algorithm (see the class docstring):
PARAMS = np.array([
    [50.5, 1.0, 1.0],    # mode-shift ratio-of-uniforms (power > 2): d = 100 relativistic momentum
    [5.0, 10.0, 4.0],    # mode shift
    [1.5, 2.0, 0.5],     # ratio-of-uniforms without shift
    [1.0, 1.0, 1.0],     # no shift: the dimension-wise relativistic momentum
    [0.3, 0.01, 0.01],   # three-piece hat (power < 1, omega = 0.01)
    [0.0, 0.02, 0.5],    # three-piece hat, power = 0 (logarithmic middle piece)
    [0.9, 0.3, 0.1],     # three-piece hat with the middle piece
    [-0.7, 1.0, 1.0],    # negative power: the reciprocal of power 0.7
    [-3.0, 0.5, 2.0],    # negative power through the mode-shift algorithm
])
N = 4000


def _scipy(power, chi, psi):
  # scipy's geninvgauss(p, b, scale): density prop. to x^(p-1) exp(-b (x/s + s/x) / 2), so
  # b = omega = sqrt(chi psi) and s = eta = sqrt(chi / psi).
  return scipy.stats.geninvgauss(power, np.sqrt(chi * psi), scale=np.sqrt(chi / psi))


def _numerical_cdf(power, chi, psi, x):
  """The exact CDF at `x` by quadrature of scipy's density (independent of the code under test).

  Trapezoid rule in u = log(x) on 2e5 points from 6 e-folds below the smallest to 6 above the
  largest point: the density is smooth in u and its mass outside that range is negligible, so the
  CDF is accurate to ~1e-8, far below the KS statistic's resolution 1/sqrt(N) ~ 0.016.
  """
  law = _scipy(power, chi, psi)
  u = np.linspace(np.log(x.min()) - 6., np.log(x.max()) + 6., 200_001)
  dens = np.exp(law.logpdf(np.exp(u)) + u)
  cdf = np.concatenate([[0.], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(u))])
  assert abs(cdf[-1] - 1.) < 1e-6  # The range holds all the mass.
  return lambda t: np.interp(np.log(t), u, cdf)


@pytest.fixture(scope="module")
def draws():
  dist = GeneralizedInverseGaussian(PARAMS[:, 0], PARAMS[:, 1], PARAMS[:, 2])
  sample = tf.function(lambda seed: dist.sample(N, seed=seed), jit_compile=True)
  return dist, sample, sample(tf.constant([7, 11])).numpy()


def test_samples_match_exact_cdf(draws):
  # One-sample KS test against the exact CDF for each of the 9 parameter sets; Bonferroni: the
  # chance that any correct set fails is at most 9 * (1e-3 / 9) = 1e-3 (and the seed is fixed).
  _, _, x = draws
  assert x.shape == (N, len(PARAMS)) and x.dtype == np.float64
  assert np.all(x > 0)
  for k, (power, chi, psi) in enumerate(PARAMS):
    pvalue = scipy.stats.kstest(x[:, k], _numerical_cdf(power, chi, psi, x[:, k])).pvalue
    assert pvalue > 1e-3 / len(PARAMS), (PARAMS[k], pvalue)


def test_ks_detects_a_wrong_parameter(draws):
  # The check above has power: samples for chi = 1 are rejected against the law with chi = 1.6.
  _, _, x = draws
  assert scipy.stats.kstest(x[:, 3], _numerical_cdf(1.0, 1.6, 1.0, x[:, 3])).pvalue < 1e-6


@pytest.fixture(scope="module")
def statistics(draws):
  dist, _, _ = draws
  x = np.array([0.05, 0.7, 1.3, 6.0, 120.0])[:, None]
  mode = dist.mode().numpy()
  # One log_prob call for all points: the log-Bessel normalizer is slow eagerly and slower to trace.
  points = np.concatenate([np.broadcast_to(x, (5, len(PARAMS))), mode[None], mode[None] * 1.001,
                           mode[None] * 0.999])
  log_prob = dist.log_prob(points).numpy()
  return x, dict(log_prob=log_prob[:5], at_mode=log_prob[5], near_mode=log_prob[6:],
                 mean=dist.mean().numpy(), variance=dist.variance().numpy())


def test_sample_mean_within_monte_carlo_error(draws, statistics):
  # The sample mean of N iid draws has standard error sd / sqrt(N); |z| < 4.5 for 9 sets has a
  # false-alarm probability below 9 * 7e-6.
  _, _, x = draws
  _, stats = statistics
  mean, sd = stats["mean"], np.sqrt(stats["variance"])
  z = (x.mean(0) - mean) / (sd / np.sqrt(N))
  assert np.all(np.abs(z) < 4.5), z


def test_log_prob_mean_variance_mode_match_scipy(statistics):
  x, stats = statistics
  expected = np.stack([_scipy(*p).logpdf(x[:, 0]) for p in PARAMS], axis=1)
  np.testing.assert_allclose(stats["log_prob"], expected, rtol=1e-8, atol=1e-8)
  # E X = eta K_{l+1}(w) / K_l(w),  E X^2 = eta^2 K_{l+2}(w) / K_l(w)  (w = omega, l = power).
  power, chi, psi = PARAMS.T
  omega, eta = np.sqrt(chi * psi), np.sqrt(chi / psi)
  r1 = scipy.special.kve(power + 1, omega) / scipy.special.kve(power, omega)
  r2 = scipy.special.kve(power + 2, omega) / scipy.special.kve(power, omega)
  np.testing.assert_allclose(stats["mean"], eta * r1, rtol=1e-8)
  np.testing.assert_allclose(stats["variance"], eta**2 * (r2 - r1**2), rtol=1e-6)
  # The mode maximizes the density.
  assert np.all(stats["near_mode"] < stats["at_mode"])


def test_seeded_reproducible_and_float32():
  dist = GeneralizedInverseGaussian(np.float32(2.5), np.float32(1.0), np.float32(1.0))
  a = dist.sample(5, seed=(1, 2))
  assert a.dtype == tf.float32 and a.shape == (5,)
  np.testing.assert_array_equal(a.numpy(), dist.sample(5, seed=(1, 2)).numpy())
  assert not np.array_equal(a.numpy(), dist.sample(5, seed=(1, 3)).numpy())
  assert dist.batch_shape == [] and dist.event_shape == []


def test_xla_reproducible(draws):
  # The KS and moment checks above ran on XLA draws; here: same seed, same XLA draws.
  _, sample, x = draws
  np.testing.assert_array_equal(x, sample(tf.constant([7, 11])).numpy())
  assert not np.array_equal(x, sample(tf.constant([7, 12])).numpy())


def test_bad_input_raises():
  with pytest.raises(tf.errors.InvalidArgumentError, match="chi"):
    GeneralizedInverseGaussian(1.0, -1.0, 1.0, validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="psi"):
    GeneralizedInverseGaussian(1.0, 1.0, 0.0, validate_args=True)
  with pytest.raises(TypeError):
    GeneralizedInverseGaussian(np.float32(1.0), np.float64(1.0), 1.0)
