"""Stochastic-gradient MCMC: Bayesian logistic regression on Australian, and SGLD vs SGLD-CV cost.

Part 1 (Australian credit, LIBSVM scaling, the fixed split in ../shared/data/classification): a
Bayesian logistic regression with an intercept and a N(0, I) prior. The reference posterior is a
long full-batch `tfp.mcmc.HamiltonianMonteCarlo` run (4 chains, adapted step size). Every
stochastic-gradient sampler uses minibatches of 32 and the same number of steps; we report steps
per second (after compilation) against `tfp.optimizer.StochasticGradientLangevinDynamics`
(preconditioned SGLD, a tf_keras legacy optimizer) measured in the same run, the error of the
posterior mean in units of the reference posterior standard deviation, the ratio of posterior
standard deviations, and the test accuracy of the posterior predictive next to HMC's. BlackJAX's
`sgld` (JAX on CPU) runs too when `blackjax` is importable.

Part 2 (the claim of Nagapetyan et al., 2017): Bayesian linear regression (d = 2, exact Gaussian
posterior) with N = 10³, 10⁴ (and 10⁵ without --quick), batch n = 10 and step size h = 0.05 / N
(a fixed h·λ(Σ⁻¹)) for both SGLD and SGLD-CV. We report the measured error of the chains'
estimates of the posterior mean and covariance and the cost, in per-example gradient evaluations
(SGLD: n per step; SGLD-CV: 2n per step plus N per Adam step and one full gradient to find θ̂),
to bring the running covariance estimate within 30% (relative Frobenius error) of Σ.
"""

import pathlib
import time
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_ext
from tfp_ext.internal import stochastic_gradients

tfd = tfp.distributions

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 32


def _load_australian():
  base = DATA / "classification" / "australian_presplit"
  if not base.is_dir():
    raise FileNotFoundError(f"{base} not found: the benchmark data lives in ../shared/data.")
  load = lambda name: np.loadtxt(base / f"australian_scale_{name}.csv")
  x_tr, y_tr, x_te, y_te = load("X_tr"), load("y_tr"), load("X_te"), load("y_te")
  add_bias = lambda x: np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float32)
  return add_bias(x_tr), y_tr.astype(np.float32), add_bias(x_te), y_te.astype(np.float32)


def _log_prior(w):
  return -0.5 * tf.reduce_sum(tf.square(w), axis=-1)


def _log_lik(w, batch):
  x, y = batch
  logits = tf.linalg.matvec(x, w)
  return -tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)


def _timed(fn, *args):
  """Runs `fn` once to compile, then returns (result, seconds) of a second, timed run."""
  fn(*args)
  start = time.perf_counter()
  out = fn(*args)
  out = tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
  return out, time.perf_counter() - start


def _accuracy(samples, x_te, y_te):
  probs = tf.reduce_mean(tf.sigmoid(tf.einsum("sd,nd->sn", samples, x_te)), axis=0).numpy()
  return float(np.mean((probs > 0.5) == (y_te > 0.5)))


def _hmc_reference(x, y, num_results, num_burnin):
  d = x.shape[1]
  def target_fn(w):  # w: [chains, d]
    logits = tf.einsum("cd,nd->cn", w, x)
    ll = -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(y, logits.shape),
                                                  logits=logits)
    return _log_prior(w) + tf.reduce_sum(ll, axis=-1)

  kernel = tfp.mcmc.SimpleStepSizeAdaptation(
      tfp.mcmc.HamiltonianMonteCarlo(target_fn, step_size=0.05, num_leapfrog_steps=10),
      num_adaptation_steps=int(0.8 * num_burnin))

  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return tfp.mcmc.sample_chain(num_results, tf.zeros([4, d]), kernel=kernel,
                                 num_burnin_steps=num_burnin, seed=seed,
                                 trace_fn=lambda _, r: r.inner_results.is_accepted)

  (samples, accepted), seconds = _timed(run, tf.constant([0, 1]))
  steps = (num_results + num_burnin) * 4
  return samples.reshape(-1, d), float(np.mean(accepted)), steps / seconds


def _run_kernel(kernel, d, num_steps, num_burnin, seed=(1, 2)):
  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return tfp.mcmc.sample_chain(num_steps - num_burnin, tf.zeros([d]), kernel=kernel,
                                 num_burnin_steps=num_burnin, seed=seed, trace_fn=None)

  samples, seconds = _timed(run, tf.constant(seed))
  return samples, num_steps / seconds


def _run_tfp_optimizer_sgld(x, y, num_steps, num_burnin, learning_rate):
  """tfp.optimizer.StochasticGradientLangevinDynamics: loss = mean NLL + prior / N, per its docs.

  The optimizer refuses eager execution (its preconditioner gradient needs a graph), so it runs
  the TF1 way it is documented for: a graph, a session, one `session.run` per step. Minibatches
  are drawn in-graph exactly as the tfp_ext kernels draw them.
  """
  n_total, d = x.shape
  graph = tf.Graph()
  with graph.as_default():
    w = tf.compat.v1.get_variable("w", initializer=tf.zeros([d]), use_resource=True)
    step = tf.compat.v1.placeholder(tf.int32, [])
    idx = stochastic_gradients.minibatch_indices(
        tf.random.experimental.stateless_fold_in(tf.constant([1, 2]), step), n_total, BATCH)
    batch = (tf.gather(tf.constant(x), idx), tf.gather(tf.constant(y), idx))
    loss = -tf.reduce_mean(_log_lik(w, batch)) - _log_prior(w) / n_total
    opt = tfp.optimizer.StochasticGradientLangevinDynamics(
        learning_rate=learning_rate, data_size=n_total, burnin=0)
    train = opt.apply_gradients([(tf.gradients(loss, [w])[0], w)])
    with tf.control_dependencies([train]):
      new_w = tf.identity(w.read_value())
    init = tf.compat.v1.global_variables_initializer()
  samples = np.zeros((num_steps, d), np.float32)
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(init)
    for t in range(20):  # warm-up (graph setup), then re-initialize
      sess.run(new_w, {step: t})
    sess.run(init)
    start = time.perf_counter()
    for t in range(num_steps):
      samples[t] = sess.run(new_w, {step: t})
    seconds = time.perf_counter() - start
  return samples[num_burnin:], num_steps / seconds


def _run_blackjax_sgld(x, y, num_steps, num_burnin, step_size):
  """BlackJAX's sgld on the same model (JAX on CPU); None if BlackJAX is not installed."""
  try:
    import blackjax  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  n_total, d = x.shape
  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def logdensity_estimator(w, batch):
    xb, yb = batch
    logits = xb @ w
    ll = yb * jax.nn.log_sigmoid(logits) + (1 - yb) * jax.nn.log_sigmoid(-logits)
    return -0.5 * jnp.sum(w * w) + n_total / xb.shape[0] * jnp.sum(ll)

  grad_fn = jax.grad(logdensity_estimator)
  sgld = blackjax.sgld(grad_fn)

  @jax.jit
  def run(key):
    def step(w, key):
      k1, k2 = jax.random.split(key)
      idx = jax.random.choice(k1, n_total, (BATCH,), replace=False)
      w = sgld.step(k2, w, (xj[idx], yj[idx]), step_size)
      return w, w
    keys = jax.random.split(key, num_steps)
    _, ws = jax.lax.scan(step, jnp.zeros(d), keys)
    return ws[num_burnin:]

  key = jax.random.PRNGKey(0)
  run(key).block_until_ready()
  start = time.perf_counter()
  samples = np.asarray(run(key).block_until_ready())
  return samples, num_steps / (time.perf_counter() - start)


def _australian(quick):
  x, y, x_te, y_te = _load_australian()
  n_total, d = x.shape
  data = (tf.constant(x), tf.constant(y))
  num_steps = 4000 if quick else 40000
  num_burnin = num_steps // 5
  ref, acc_rate, hmc_steps_per_s = _hmc_reference(
      x, y, num_results=500 if quick else 5000, num_burnin=500 if quick else 2000)
  ref_mean, ref_sd = ref.mean(0), ref.std(0)
  ref_acc = _accuracy(ref, x_te, y_te)
  h = 2e-3  # h·λ_max ≈ 0.37 for the Laplace precision at the mode (λ_max ≈ 185): stable
  theta_hat = tfp_ext.mcmc.find_control_variate_state(_log_prior, _log_lik, data, tf.zeros([d]))
  rows = []
  base_samples, base_speed = _run_tfp_optimizer_sgld(x, y, num_steps, num_burnin,
                                                     learning_rate=2 * h)
  rows.append(("tfp.optimizer.StochasticGradientLangevinDynamics (baseline)", base_samples,
               base_speed))
  kernels = {
      "tfp_ext SGLD": tfp_ext.mcmc.StochasticGradientLangevinDynamics(
          _log_prior, _log_lik, data, BATCH, step_size=h),
      "tfp_ext SGLD-CV": tfp_ext.mcmc.StochasticGradientLangevinDynamics(
          _log_prior, _log_lik, data, BATCH, step_size=h, control_variate_state=theta_hat),
      "tfp_ext SGHMC": tfp_ext.mcmc.StochasticGradientHamiltonianMonteCarlo(
          _log_prior, _log_lik, data, BATCH, step_size=0.02, friction=20.),
      "tfp_ext relativistic SGHMC": (
          tfp_ext.mcmc.RelativisticStochasticGradientHamiltonianMonteCarlo(
              _log_prior, _log_lik, data, BATCH, step_size=0.02, friction=20., max_speed=2.)),
  }
  for name, kernel in kernels.items():
    samples, speed = _run_kernel(kernel, d, num_steps, num_burnin)
    rows.append((name, samples, speed))
  bj = _run_blackjax_sgld(x, y, num_steps, num_burnin, step_size=h)
  if bj is not None:
    rows.append(("BlackJAX sgld (JAX, CPU)", bj[0], bj[1]))
  print(f"\nAustralian (N={n_total}, d={d}), batch {BATCH}, {num_steps} steps "
        f"({num_burnin} burn-in); reference: HMC, {len(ref)} draws, acceptance {acc_rate:.2f}, "
        f"{hmc_steps_per_s:.0f} full-batch chain-steps/s; HMC test accuracy {ref_acc:.3f}")
  print("| sampler | steps/s | speed vs baseline | max |mean error| / sd_HMC | mean sd / sd_HMC "
        "| test acc | acc vs HMC |")
  print("|---|---|---|---|---|---|---|")
  for name, samples, speed in rows:
    err = np.max(np.abs(samples.mean(0) - ref_mean) / ref_sd)
    sd_ratio = np.mean(samples.std(0) / ref_sd)
    acc = _accuracy(samples, x_te, y_te)
    print(f"| {name} | {speed:,.0f} | {speed / base_speed:.2f} | {err:.2f} | {sd_ratio:.2f} | "
          f"{acc:.3f} | {acc / ref_acc:.3f} |")
  if bj is None:
    print("(BlackJAX is not installed in this environment: its row is omitted.)")


def _linear_regression(n_total, rng):
  x = rng.normal(size=(n_total, 2))
  y = x @ np.array([1., -0.5]) + 0.5 * rng.normal(size=n_total)
  precision = np.eye(2) + x.T @ x / 0.25
  cov = np.linalg.inv(precision)
  return x, y, cov @ (x.T @ y / 0.25), cov


def _cv_vs_sgld(quick):
  rng = np.random.default_rng(0)
  sizes = (1000, 10000) if quick else (1000, 10000, 100000)
  num_steps = 4000 if quick else 20000
  target = 0.3
  adam_steps = 300
  checkpoints = np.unique(np.geomspace(50, num_steps, 30).astype(int))
  print(f"\nSGLD vs SGLD-CV, Bayesian linear regression (d=2), batch n=10, h=0.05/N, "
        f"{num_steps} steps, chains started at the posterior mean; cost = per-example gradient "
        f"evaluations to bring the running covariance estimate within {target:.0%} of Σ "
        f"(relative Frobenius) for good")
  print("| N | method | mean error / sd | cov error (rel. Frobenius) | cost to target | "
        "cost / N |")
  print("|---|---|---|---|---|---|")
  log_prior = lambda w: -0.5 * tf.reduce_sum(tf.square(w), axis=-1)
  log_lik = lambda w, b: -0.5 * tf.square(b[1] - tf.linalg.matvec(b[0], w)) / 0.25
  for n_total in sizes:
    x, y, mean, cov = _linear_regression(n_total, rng)
    data = (tf.constant(x), tf.constant(y))
    h = 0.05 / n_total
    theta_hat = tfp_ext.mcmc.find_control_variate_state(
        log_prior, log_lik, data, tf.zeros([2], tf.float64), num_steps=adam_steps)
    for name, cv, per_step, setup in (("SGLD", None, 10, 0),
                                      ("SGLD-CV", theta_hat, 20, (adam_steps + 1) * n_total)):
      kernel = tfp_ext.mcmc.StochasticGradientLangevinDynamics(
          log_prior, log_lik, data, 10, step_size=h, control_variate_state=cv)

      @tf.function(jit_compile=True, autograph=False)
      def run(seed, kernel=kernel):
        return tfp.mcmc.sample_chain(num_steps, tf.constant(mean), kernel=kernel, seed=seed,
                                     trace_fn=None)

      s = run(tf.constant([5, 6])).numpy()
      errs = []
      for t in checkpoints:
        c = (s[:t] - mean).T @ (s[:t] - mean) / t
        errs.append(np.linalg.norm(c - cov) / np.linalg.norm(cov))
      errs = np.array(errs)
      ok = np.flatnonzero(errs >= target)
      first = 0 if len(ok) == 0 else ok[-1] + 1
      if first < len(checkpoints):
        cost = setup + per_step * checkpoints[first]
        cost_s, ratio_s = f"{cost:,}", f"{cost / n_total:.2f}"
      else:
        cost_s, ratio_s = f"not reached in {num_steps} steps", "-"
      mean_err = np.max(np.abs(s.mean(0) - mean) / np.sqrt(np.diag(cov)))
      print(f"| {n_total:,} | {name} | {mean_err:.3f} | {errs[-1]:.3f} | {cost_s} | {ratio_s} |")


def main(quick: bool = False) -> None:
  """Prints the Australian table and the SGLD vs SGLD-CV cost table."""
  # Stochastic-gradient kernels are uncalibrated by design; sample_chain warns about each one.
  warnings.filterwarnings("ignore", message=".*TransitionKernel` is not calibrated.*")
  _australian(quick)
  _cv_vs_sgld(quick)
