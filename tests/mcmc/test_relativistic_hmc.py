"""Relativistic HMC: exact momentum law, invariance, moments, integrator, TFP integration."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_ext
from tests.mcmc import harness
from tfp_ext.internal import relativistic
from tfp_ext.mcmc.relativistic_hmc import _relativistic_leapfrog

tfd = tfp.distributions

RHMC = tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo

# Correlated Gaussian target used throughout.
LOC = np.array([1., -1.])
COV = np.array([[1., 0.9], [0.9, 1.]])


def gaussian(dtype=np.float32):
  return tfd.MultivariateNormalTriL(loc=LOC.astype(dtype),
                                    scale_tril=np.linalg.cholesky(COV).astype(dtype))


# --- Momentum sampler ------------------------------------------------------------------------

def _radial_cdf(d, m, c, r):
  """CDF of |p| for density prop. to exp(-K(p)) in R^d: r^(d-1) exp(-c sqrt(m^2 c^2 + r^2)).

  Trapezoid rule on 2e5 points over [0, R], R beyond the largest draw by 60/c (the log density
  falls at least linearly with slope ~c there): error far below the KS resolution 1/sqrt(N).
  """
  grid = np.linspace(0., r.max() + 60. / c, 200_001)
  log_f = scipy.special.xlogy(d - 1, grid) - c * np.sqrt((m * c)**2 + grid**2)
  f = np.exp(log_f - log_f.max())
  cdf = np.concatenate([[0.], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
  return lambda t: np.interp(t, grid, cdf / cdf[-1])


# (event shapes of the state parts, mass, max_speed); the total dimension d is their total size.
MOMENTUM_CASES = [([[1]], 1., 1.), ([[3]], 0.5, 2.), ([[4], [2, 3]], 1., 1.), ([[100]], 2., 0.5)]
N_MOMENTUM = 3000


@pytest.fixture(scope="module")
def momentum_draws():
  @tf.function(autograph=False)
  def draw():
    out = []
    for k, (shapes, m, c) in enumerate(MOMENTUM_CASES):
      parts = [tf.zeros([N_MOMENTUM] + s, tf.float64) for s in shapes]
      out.append(relativistic.sample_momentum(
          parts, m, c, [len(s) for s in shapes], mode=relativistic.JOINT, seed=(3, k)))
    independent = relativistic.sample_momentum(
        [tf.zeros([N_MOMENTUM, 5], tf.float64)], 0.5, 2., [1], mode=relativistic.INDEPENDENT,
        seed=(4, 0))
    return out, independent

  joint, independent = draw()
  return [[p.numpy() for p in parts] for parts in joint], independent[0].numpy()


def test_momentum_radius_matches_exact_radial_law(momentum_draws):
  # KS test of |p| against the numerical CDF of the exact radial law, 4 cases, Bonferroni 1e-3.
  joint, _ = momentum_draws
  for (shapes, m, c), parts in zip(MOMENTUM_CASES, joint):
    flat = np.concatenate([p.reshape(N_MOMENTUM, -1) for p in parts], axis=1)
    d = flat.shape[1]
    assert d == sum(int(np.prod(s)) for s in shapes)
    for p, s in zip(parts, shapes):
      assert p.shape == (N_MOMENTUM, *s)
    r = np.linalg.norm(flat, axis=1)
    pvalue = scipy.stats.kstest(r, _radial_cdf(d, m, c, r)).pvalue
    assert pvalue > 1e-3 / len(MOMENTUM_CASES), (d, m, c, pvalue)


def test_radial_check_rejects_gaussian_momentum(momentum_draws):
  # The check has power: Gaussian momenta (what standard HMC would draw, variance m) are rejected.
  r = np.linalg.norm(np.random.default_rng(0).normal(size=(N_MOMENTUM, 3)) * np.sqrt(0.5), axis=1)
  assert scipy.stats.kstest(r, _radial_cdf(3, 0.5, 2., r)).pvalue < 1e-6


def test_momentum_direction_is_uniform(momentum_draws):
  # For a uniform direction in R^3 the first coordinate of p/|p| is uniform on [-1, 1]
  # (Archimedes), independent of the radius.
  joint, _ = momentum_draws
  p = joint[1][0]
  cos = p[:, 0] / np.linalg.norm(p, axis=1)
  assert scipy.stats.kstest(cos, scipy.stats.uniform(-1., 2.).cdf).pvalue > 1e-3


def test_independent_momentum_coordinates(momentum_draws):
  # Dimension-wise kinetic energy: every coordinate is an independent 1-d relativistic momentum;
  # the 5 coordinates are iid, so |p_i| pooled follows the d = 1 radial law.
  _, p = momentum_draws
  r = np.abs(p).ravel()
  assert scipy.stats.kstest(r, _radial_cdf(1, 0.5, 2., r)).pvalue > 1e-3
  # ... and coordinates are uncorrelated (joint mode would couple them through the common W in
  # |p_i|): correlation of |p_0| and |p_1| has standard error 1/sqrt(N) ~ 0.018.
  assert abs(np.corrcoef(np.abs(p[:, 0]), np.abs(p[:, 1]))[0, 1]) < 4.5 / np.sqrt(N_MOMENTUM)


# --- Relativistic leapfrog -------------------------------------------------------------------

_LEAPFROG_FNS = {}


def _leapfrog64(step_size, num_steps, x0, p0, mode=relativistic.JOINT):
  """Runs the relativistic leapfrog (m = 1, c = 1) on the Gaussian target in float64.

  Returns the final position, final momentum and the change of H = -log pi(x) + K(p). One traced
  function per mode: step size and number of steps are tensors.
  """
  if mode not in _LEAPFROG_FNS:
    target = gaussian(np.float64)

    def energy(x, p, tlp):
      return -tlp + relativistic.kinetic_energy(p, 1., 1., [1], mode=mode)

    def velocity(p):
      return relativistic.velocity(p, 1., 1., [1], mode=mode)

    @tf.function(autograph=False)
    def run(step_size, num_steps, x0, p0):
      tlp, grads = tfp.math.value_and_gradient(target.log_prob, [x0])
      p1, x1, tlp1, _ = _relativistic_leapfrog(target.log_prob, velocity, [step_size], num_steps,
                                               [p0], [x0], tlp, grads)
      return x1[0], p1[0], energy(x1, p1, tlp1) - energy([x0], [p0], tlp)

    _LEAPFROG_FNS[mode] = run
  out = _LEAPFROG_FNS[mode](tf.constant(step_size, tf.float64), tf.constant(num_steps),
                            tf.constant(x0, tf.float64), tf.constant(p0, tf.float64))
  return [o.numpy() for o in out]


@pytest.mark.parametrize("mode", [relativistic.JOINT, relativistic.INDEPENDENT])
def test_leapfrog_reversible_and_second_order(mode):
  x0, p0 = np.array([2.5, 0.3]), np.array([1.7, -2.2])
  x1, p1, _ = _leapfrog64(0.1, 20, x0, p0, mode=mode)
  # Reversibility: flipping the momentum and integrating again returns to the start exactly
  # (up to float64 rounding over 40 steps).
  x2, p2, _ = _leapfrog64(0.1, 20, x1, -p1, mode=mode)
  np.testing.assert_allclose(x2, x0, atol=1e-12)
  np.testing.assert_allclose(p2, -p0, atol=1e-12)
  # Energy error of a second-order symplectic integrator over a fixed time: halving the step
  # divides it by ~4 (ratio in [3, 5] allows the O(eps^4) remainder).
  _, _, dh1 = _leapfrog64(0.04, 25, x0, p0, mode=mode)
  _, _, dh2 = _leapfrog64(0.02, 50, x0, p0, mode=mode)
  assert abs(dh1) < 1e-2
  assert 3. < dh1 / dh2 < 5., (dh1, dh2)


def test_speed_never_exceeds_max_speed():
  # A huge gradient (target sd 1e-2, start 30 sd away) cannot move the joint position by more than
  # step_size * max_speed per leapfrog step; Gaussian-momentum HMC would jump by ~ eps^2 |grad|.
  target = tfd.MultivariateNormalDiag(scale_diag=tf.constant([1e-2, 1e-2], tf.float64))
  kernel = tfp_ext.mcmc.UncalibratedRelativisticHamiltonianMonteCarlo(
      target.log_prob, step_size=0.5, num_leapfrog_steps=3, mass=1., max_speed=0.7)
  x = tf.constant([[0.3, 0.0]], tf.float64)
  nxt, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=(1, 2))
  assert np.linalg.norm(nxt.numpy() - x.numpy()) <= 3 * 0.5 * 0.7 + 1e-12
  v = relativistic.velocity(results.final_momentum, 1., 0.7, [1])[0]
  assert np.all(np.linalg.norm(v.numpy(), axis=-1) < 0.7)


# --- Invariance (TFP's test: exact draws, one step, two-sample KS) ----------------------------

N_INVARIANCE = 2000
DF = 3.


def _two_part_target(shift=0.):
  gauss = gaussian(np.float64)
  student = tfd.StudentT(df=np.float64(DF), loc=np.float64(shift), scale=np.float64(2.))
  return lambda x, y: gauss.log_prob(x) + student.log_prob(y)


def _exact_two_part(seed):
  s1, s2 = tfp.random.split_seed(seed)
  return [gaussian(np.float64).sample(N_INVARIANCE, seed=s1),
          tfd.StudentT(df=np.float64(DF), loc=np.float64(0.), scale=np.float64(2.)).sample(
              N_INVARIANCE, seed=s2)]


@pytest.mark.parametrize("independent", [False, True])
def test_one_step_preserves_target(independent):
  # A Gaussian part and a heavy-tailed Student-t(3) part, one chain per exact draw. The harness
  # runs a KS test per coordinate with family-wise false-alarm rate 1e-3.
  kernel = RHMC(_two_part_target(), step_size=[0.4, 0.8], num_leapfrog_steps=5, mass=1.,
                max_speed=1., independent_momenta=independent)
  harness.assert_preserves_target(kernel, _exact_two_part((1, 2)), _exact_two_part((3, 4)))


def test_invariance_check_catches_a_wrong_target():
  # The same kernel on a Student-t part shifted by 3 scales: one step from exact draws of the true
  # target visibly moves the law, so the KS check above must fail.
  kernel = RHMC(_two_part_target(shift=6.), step_size=[0.4, 0.8], num_leapfrog_steps=5)
  with pytest.raises(AssertionError, match="moved the target"):
    harness.assert_preserves_target(kernel, _exact_two_part((1, 2)), _exact_two_part((3, 4)))


# --- Moments from long chains, tolerances from the chains' ESS -------------------------------

NUM_CHAINS, NUM_RESULTS = 16, 400


def _z_scores(samples, functions, exact):
  """(mean of f over the chains - exact) / Monte Carlo standard error for each f.

  The standard error of the pooled average of f is sd(f) / sqrt(ESS), ESS summed over the
  independent chains, each from `tfp.mcmc.effective_sample_size` (Geyer's initial positive
  sequence). With 5-7 statistics per test, |z| < 4.5 gives a false-alarm rate below 5e-5.
  """
  z = []
  for f, e in zip(functions, exact):
    values = f(samples)  # [num_results, num_chains]
    ess = tfp.mcmc.effective_sample_size(values, filter_beyond_positive_pairs=True).numpy().sum()
    z.append((values.mean() - e) / (values.std() / np.sqrt(ess)))
  return np.array(z)


DF_HEAVY, SCALE_HEAVY = 2.5, 3.


@pytest.fixture(scope="module")
def two_target_chain():
  # One XLA-compiled run samples both targets as two state parts of a product target: the
  # correlated Gaussian and a Student-t(2.5) with scale 3 (heavy tails, infinite 4th moment).
  student = tfd.StudentT(df=np.float32(DF_HEAVY), loc=0., scale=np.float32(SCALE_HEAVY))
  gauss = gaussian()
  kernel = RHMC(lambda x, y: gauss.log_prob(x) + student.log_prob(y), step_size=[0.25, 0.75],
                num_leapfrog_steps=8, mass=1., max_speed=1.5)
  init = [tf.zeros([NUM_CHAINS, 2]), tf.zeros([NUM_CHAINS])]
  # The XLA check of the shared harness on this chain (compiled once, reused below).
  samples = harness.assert_jit_compiles(kernel, init, NUM_RESULTS, seed=(5, 5),
                                        num_burnin_steps=100)
  return [s.astype(np.float64) for s in samples]


def test_correlated_gaussian_moments(two_target_chain):
  x = two_target_chain[0]
  fs = [lambda s: s[..., 0], lambda s: s[..., 1],
        lambda s: (s[..., 0] - LOC[0])**2, lambda s: (s[..., 1] - LOC[1])**2,
        lambda s: (s[..., 0] - LOC[0]) * (s[..., 1] - LOC[1])]
  z = _z_scores(x, fs, [LOC[0], LOC[1], COV[0, 0], COV[1, 1], COV[0, 1]])
  assert np.all(np.abs(z) < 4.5), z


def test_heavy_tailed_moments(two_target_chain):
  # Infinite fourth moment, so the variance estimate has no usable standard error: check the mean
  # and P(|y| < a) at a = scale and 5 scales, bounded statistics with exact values.
  y = two_target_chain[1]
  law = scipy.stats.t(DF_HEAVY, scale=SCALE_HEAVY)
  fs = [lambda s: s] + [lambda s, a=a: (np.abs(s) < a).astype(float)
                        for a in (SCALE_HEAVY, 5 * SCALE_HEAVY)]
  exact = [0.] + [law.cdf(a) - law.cdf(-a) for a in (SCALE_HEAVY, 5 * SCALE_HEAVY)]
  z = _z_scores(y, fs, exact)
  assert np.all(np.abs(z) < 4.5), z


# --- Kernel mechanics through the shared harness ---------------------------------------------

def test_harness_reproducible_parts_and_batches():
  target = _two_part_target()
  kernel = RHMC(target, step_size=0.3, num_leapfrog_steps=3)
  init = [tf.zeros([4, 2], tf.float64), tf.zeros([4], tf.float64)]
  harness.assert_reproducible(kernel, init)  # (XLA: see `two_target_chain`.)
  harness.assert_state_structure(kernel, init)
  harness.assert_batch_of_chains(kernel, init, batch_shape=[4])
  # A single (non-list) float32 state part with a [2, 3] batch of chains.
  single = RHMC(gaussian().log_prob, step_size=0.3, num_leapfrog_steps=3, independent_momenta=True)
  init = tf.zeros([2, 3, 2])  # The same object for both checks: one traced chain.
  harness.assert_state_structure(single, init)
  harness.assert_batch_of_chains(single, init, batch_shape=[2, 3])


def test_results_fields_and_acceptance_correction():
  kernel = RHMC(gaussian(np.float64).log_prob, step_size=0.3, num_leapfrog_steps=4, mass=2.,
                max_speed=0.5)
  x = tf.zeros([3, 2], tf.float64)
  _, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=(1, 2))
  inner = results.accepted_results
  for field in ("target_log_prob", "initial_momentum", "final_momentum", "step_size", "seed",
                "log_acceptance_correction", "grads_target_log_prob"):
    assert field in inner._fields
  proposed = results.proposed_results
  k = lambda p: relativistic.kinetic_energy(p, 2., 0.5, [1])  # noqa: E731
  np.testing.assert_allclose(
      proposed.log_acceptance_correction.numpy(),
      (k(proposed.initial_momentum) - k(proposed.final_momentum)).numpy(), rtol=1e-12)
  np.testing.assert_array_equal(results.seed.numpy(), tfp.random.sanitize_seed((1, 2)).numpy())


@pytest.mark.parametrize("adaptation", ["simple", "dual_averaging"])
def test_step_size_adaptation(adaptation):
  # Both TFP step-size adaptation kernels drive this kernel through its results' `step_size`.
  # Simple adaptation grows the step by at most 1% per step, so from 0.01 it must more than
  # double in 150 steps; dual averaging must also reach a sensible acceptance rate. (Graph mode:
  # XLA compilation of the kernel is covered above.)
  initial = 0.01
  kernel = RHMC(gaussian().log_prob, step_size=initial, num_leapfrog_steps=5)
  if adaptation == "simple":
    adaptive = tfp.mcmc.SimpleStepSizeAdaptation(kernel, num_adaptation_steps=150)
  else:
    adaptive = tfp.mcmc.DualAveragingStepSizeAdaptation(kernel, num_adaptation_steps=150)

  def trace_fn(_, pkr):
    return pkr.inner_results.accepted_results.step_size, pkr.inner_results.is_accepted

  _, (step_size, accepted) = harness.run_chain(adaptive, tf.zeros([8, 2]), 200, seed=(7, 7),
                                               trace_fn=trace_fn)
  if adaptation == "simple":
    assert step_size[-1] > 2 * initial
  else:
    assert step_size[-1] > 10 * initial
    # Target acceptance 0.75; 8 chains x 50 post-adaptation steps -> loose band for correlation.
    assert 0.5 < accepted[150:].mean() < 0.98, accepted[150:].mean()


def test_bad_input_raises():
  lp = gaussian().log_prob
  with pytest.raises(ValueError, match="mass"):
    RHMC(lp, step_size=0.1, num_leapfrog_steps=3, mass=0.)
  with pytest.raises(ValueError, match="max_speed"):
    RHMC(lp, step_size=0.1, num_leapfrog_steps=3, max_speed=-1.)
  with pytest.raises(ValueError, match="num_leapfrog_steps"):
    RHMC(lp, step_size=0.1, num_leapfrog_steps=0)
  with pytest.raises(TypeError, match="callable"):
    RHMC(None, step_size=0.1, num_leapfrog_steps=3)
  kernel = RHMC(_two_part_target(), step_size=[0.1, 0.2, 0.3], num_leapfrog_steps=3)
  with pytest.raises(ValueError, match="step_size"):
    kernel.bootstrap_results([tf.zeros([2, 2], tf.float64), tf.zeros([2], tf.float64)])
  kernel = RHMC(lambda x: -tf.reduce_sum(tf.cast(x, tf.float32)**2, -1), 0.1, 3)
  with pytest.raises(TypeError, match="floating"):
    kernel.bootstrap_results(tf.zeros([2, 2], tf.int32))
