"""Relativistic HMC vs TFP's HMC: robustness to the step size and to poor scaling, and cost.

The claim of Lu et al. (2017, "Relativistic Monte Carlo", Sections 3-5): bounding the speed makes
HMC robust to the step size and to badly scaled or heavy-tailed targets. Measured here, both
kernels in the same run, same number of leapfrog steps, same seeds, no step-size adaptation:

* Ill-conditioned Gaussian, d = 100, independent coordinates with standard deviations log-spaced
  from 0.01 to 1 (condition number 10^4 of the covariance).
* Heavy-tailed target, d = 10, independent Student-t coordinates with 2.5 degrees of freedom.

For each step size of a sweep: the acceptance rate and the effective sample size per gradient
evaluation (min over coordinates i of the ESS of x_i and of x_i^2, summed over the independent
chains, divided by the gradient evaluations of the sampling phase), for
`tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo` (mass 1, max_speed 1) and `tfp.mcmc.HamiltonianMonteCarlo` (unit mass). Finally the cost of one
leapfrog step (whole transitions timed, divided by the number of leapfrog steps) of the
relativistic kernel relative to TFP's HMC, both under XLA, on the Gaussian (a nearly free
gradient: fixed per-step costs dominate) and on a Bayesian logistic regression (d = 100,
2000 synthetic examples), where the gradient dominates as in real models.
"""

import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_ext

tfd = tfp.distributions

NUM_LEAPFROG = 20
NUM_CHAINS = 4
SEED = (20, 17)


def _ill_conditioned_gaussian():
  scales = np.logspace(-2., 0., 100).astype(np.float32)
  return "Gaussian d=100, sd 0.01..1", tfd.Independent(tfd.Normal(0., scales), 1), 100


def _heavy_tailed():
  return ("Student-t(2.5) d=10", tfd.Independent(tfd.StudentT(2.5, tf.zeros(10), 1.), 1), 10)


def _make_kernel(name, target, step_size, num_leapfrog):
  if name == "RHMC":
    return tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo(
        target.log_prob, step_size=step_size, num_leapfrog_steps=num_leapfrog, mass=1.,
        max_speed=1.)
  return tfp.mcmc.HamiltonianMonteCarlo(target.log_prob, step_size=step_size,
                                        num_leapfrog_steps=num_leapfrog)


def _chain_fn(name, target, dim, num_results, num_burnin, num_leapfrog=NUM_LEAPFROG):
  """One XLA program per (kernel, target); the step size is an argument, so the sweep reuses it."""

  @tf.function(jit_compile=True, autograph=False)
  def run(step_size, seed):
    kernel = _make_kernel(name, target, step_size, num_leapfrog)
    return tfp.mcmc.sample_chain(num_results, tf.zeros([NUM_CHAINS, dim]), kernel=kernel,
                                 num_burnin_steps=num_burnin,
                                 trace_fn=lambda _, pkr: pkr.is_accepted, seed=seed)

  return run


def _ess_per_chain(x):
  """ESS of each column of x [n, k]: Geyer's initial positive and monotone sequence estimator.

  Integrated autocorrelation time tau = -1 + 2 sum_m (rho_2m + rho_2m+1) over the initial
  positive, monotonized pair sums, floored at 1/log10(n) as in Stan: an antithetic chain (rho_1
  near -1, e.g. a bounded-speed particle crossing a narrow mode every transition) would otherwise
  give tau <= 0 and a negative or infinite ESS.
  """
  n = x.shape[0]
  x = x - x.mean(0)
  var = (x**2).mean(0)
  f = np.fft.rfft(x, n=2 * n, axis=0)
  acov = np.fft.irfft(f * np.conj(f), axis=0)[:n] / n
  with np.errstate(invalid="ignore", divide="ignore"):
    rho = acov / var
  ess = np.zeros(x.shape[1])
  for j in range(x.shape[1]):
    if not var[j] > 0:
      continue  # A chain that never moved carries no information.
    pairs = rho[:n - 1:2, j] + rho[1:n:2, j]
    stop = np.argmax(pairs < 0) if np.any(pairs < 0) else len(pairs)
    pairs = np.minimum.accumulate(pairs[:stop])
    tau = max(-1. + 2. * pairs.sum(), 1. / np.log10(n))
    ess[j] = n / tau
  return ess


def _min_ess(samples):
  """Min over coordinates i of the ESS of x_i and of x_i^2, each summed over the chains."""
  samples = np.asarray(samples, np.float64)  # [results, chains, dim]
  if np.any(~np.isfinite(samples)):
    return 0.
  stats = np.concatenate([samples, samples**2], axis=-1)
  total = sum(_ess_per_chain(stats[:, c, :]) for c in range(stats.shape[1]))
  return float(total.min())


def _sweep(target_fn, step_sizes, num_results, num_burnin):
  label, target, dim = target_fn()
  rows = []
  fns = {k: _chain_fn(k, target, dim, num_results, num_burnin) for k in ("RHMC", "HMC")}
  grads = num_results * NUM_CHAINS * NUM_LEAPFROG
  for eps in step_sizes:
    row = [label, eps]
    for k in ("RHMC", "HMC"):
      samples, accepted = fns[k](tf.constant(eps, tf.float32), tf.constant(SEED, tf.int32))
      row += [float(np.mean(accepted)), _min_ess(samples) / grads]
    rows.append(row)
  return rows


def _logistic_regression():
  """Bayesian logistic regression, d = 100, 2000 synthetic examples: a gradient that costs."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 100)).astype(np.float32)
  y = (x @ rng.normal(size=100) + rng.logistic(size=2000) > 0).astype(np.float32)
  x, y = tf.constant(x), tf.constant(y)

  def log_prob(w):
    logits = tf.linalg.matmul(w, x, transpose_b=True)  # [chains, examples]
    lik = -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(y, tf.shape(logits)),
                                                   logits=logits)
    return tf.reduce_sum(lik, -1) - 0.5 * tf.reduce_sum(tf.square(w), -1)

  return "logistic regression d=100, n=2000", log_prob


def _time_per_leapfrog(name, target_log_prob, num_results, step_size):
  """Seconds per leapfrog step (all chains) under XLA, best of 5 timed runs after compiling."""
  if name == "RHMC":
    make = lambda: tfp_ext.mcmc.RelativisticHamiltonianMonteCarlo(  # noqa: E731
        target_log_prob, step_size=step_size, num_leapfrog_steps=NUM_LEAPFROG, mass=1.,
        max_speed=1.)
  else:
    make = lambda: tfp.mcmc.HamiltonianMonteCarlo(  # noqa: E731
        target_log_prob, step_size=step_size, num_leapfrog_steps=NUM_LEAPFROG)

  @tf.function(jit_compile=True, autograph=False)
  def chain(seed):
    return tfp.mcmc.sample_chain(num_results, tf.zeros([NUM_CHAINS, 100]), kernel=make(),
                                 trace_fn=None, seed=seed)

  seed = tf.constant(SEED, tf.int32)
  chain(seed).numpy()
  best = np.inf
  for _ in range(5):
    start = time.perf_counter()
    chain(seed).numpy()
    best = min(best, time.perf_counter() - start)
  return best / (num_results * NUM_LEAPFROG)


def main(quick: bool = False) -> None:
  """Prints the step-size sweep on both targets and the per-leapfrog-step cost ratio."""
  num_results, num_burnin = (300, 100) if quick else (1000, 300)
  gaussian_steps = [0.01, 0.02, 0.05, 0.2] if quick else [0.005, 0.01, 0.015, 0.02, 0.03, 0.05,
                                                            0.1, 0.2]
  heavy_steps = [0.1, 0.5, 2.0] if quick else [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
  print(f"{NUM_CHAINS} chains x {num_results} results after {num_burnin} burn-in, "
        f"{NUM_LEAPFROG} leapfrog steps, XLA. RHMC: mass 1, max_speed 1. HMC: unit mass.")
  print("ESS/grad = min over coordinates i of the ESS of x_i and x_i^2 (summed over chains) / "
        "gradient evaluations of the sampling phase.")
  header = ("| target | step size | RHMC accept | HMC accept | RHMC ESS/grad | HMC ESS/grad "
            "| ESS/grad ratio RHMC/HMC |")
  print(header)
  print("|" + "---|" * 7)
  for target_fn, steps in ((_ill_conditioned_gaussian, gaussian_steps),
                           (_heavy_tailed, heavy_steps)):
    for label, eps, acc_r, ess_r, acc_h, ess_h in _sweep(target_fn, steps, num_results, num_burnin):
      ratio = f"{ess_r / ess_h:.2f}" if ess_h > 0 else "inf (HMC: 0)"
      print(f"| {label} | {eps:g} | {acc_r:.3f} | {acc_h:.3f} | {ess_r:.2e} | {ess_h:.2e} "
            f"| {ratio} |")
  timing_results = 200 if quick else 1000
  gauss_label, gauss, _ = _ill_conditioned_gaussian()
  logreg_label, logreg = _logistic_regression()
  print()
  print("| cost per leapfrog step, 4 chains, XLA | RHMC (us) | HMC (us) | ratio RHMC/HMC |")
  print("|---|---|---|---|")
  for label, log_prob, eps in ((gauss_label, gauss.log_prob, 0.005), (logreg_label, logreg, 0.01)):
    t_r = _time_per_leapfrog("RHMC", log_prob, timing_results, eps)
    t_h = _time_per_leapfrog("HMC", log_prob, timing_results, eps)
    print(f"| {label} | {1e6 * t_r:.1f} | {1e6 * t_h:.1f} | {t_r / t_h:.2f} |")
