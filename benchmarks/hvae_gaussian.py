"""Section 4.1 of Caterini et al. (2018), "Hamiltonian Variational Auto-Encoder".

The Gaussian model: z ~ N(0, I_d), x_i | z ~ N(z + Delta, diag(sigma^2)), i = 1..N
(N = 10,000), one z per data set, Delta = (-(d-1)/2, ..., (d-1)/2) / 5 and sigma_j quadratic
from 1 at the edges down to 0.1 in the middle. theta = (Delta, log sigma) is learned by
maximizing each method's ELBO (10 Monte Carlo samples per estimate) from Delta = 0,
log sigma = 3, as in the paper. The error of a run is
||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2, averaged over runs (independent data sets).

Optimizer: the paper's code (github.com/anthonycaterini/hvae-nips, gaussian/experiment_classes.py)
trains every method with `tf.train.RMSPropOptimizer(0.001)`, i.e. TF1's defaults decay 0.9,
momentum 0, epsilon 1e-10, whose "rms" accumulator starts at ones (`_create_slots` uses
`init_ops.ones_initializer`; tensorflow/python/training/rmsprop.py) and whose update is
`ms = 0.9 ms + 0.1 g^2; var -= lr g / sqrt(ms + epsilon)`. `tf_keras.optimizers.RMSprop` with
rho=0.9, momentum=0, epsilon=1e-10 applies the same update (epsilon inside the square root) but
starts its "velocity" accumulator at zeros, so `_Trainer` sets it to ones after `build`.

The paper's protocol (github.com/anthonycaterini/hvae-nips, gaussian/conf.py) is d in `DIMS`,
10 runs, 30,000 iterations. `main()` runs the 30,000 iterations on the groups of `SWEEP` (10 runs
for d <= 3, 5 for d = 5, 11, 3 for d = 25, 2 for d = 51, 1 for d = 101, 3 for d = 201, 301 except
one for the two K = 10 HVAEs), which is what `benchmarks/RESULTS.md` reports;
`report(dims, runs, iterations)` runs any other sweep, e.g. the paper's `report(DIMS, 10, 30_000)`;
`main(quick=True)` is a smoke run (d = 1, 3; one run; 3,000 iterations). `exact_ml_errors` gives
the closed-form maximum-likelihood error on the same data sets as a reference.

Methods:
* HVAE-T K (K = 1, 10): `TemperedHamiltonianFlow` with fixed (quadratic) tempering,
  q_0 = N(0, I), learned per-dimension eps in (0, 0.5) (start 0.005) and beta_0 (start
  1 / sqrt(beta_0) = 5), trained on `tfp_ext.vi.hamiltonian_elbo`.
* HVAE-noT 10: the same flow with tempering="none" (beta_0 = 1).
* VB: mean-field Gaussian q(z) = N(mu, diag s^2), exact (closed-form) ELBO.
* NF-30: 30 planar flows sharing one (u, w, b), q_0 = N(0, I), ELBO by Monte Carlo.

The baseline of the ratio table is VB. The data log-likelihood uses the centered sufficient
statistics (x_bar, sum_i (x_i - x_bar)^2), exact and free of float32 cancellation. Each
(method, d) compiles one XLA program (`tf.function(jit_compile=True)` around a `tf.while_loop`
whose body calls `optimizer.apply_gradients`) that serves all its runs.
"""

import json
import math
import pathlib
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.bijectors import TemperedHamiltonianFlow
from tfp_ext.vi import hamiltonian_elbo

tfd = tfp.distributions

N_DATA = 10_000
DIMS = (1, 2, 3, 5, 11, 25, 51, 101, 201, 301)
NUM_SAMPLES = 10
LEARNING_RATE = 1e-3
MAX_STEP = 0.5
METHODS = ("HVAE-T 1", "HVAE-T 10", "HVAE-noT 10", "VB", "NF-30")
# The sweep of RESULTS.md: the paper's 30,000 iterations; (dims, runs, methods) per group. On the
# shared 2-core CPU (load ~12 from other jobs) one run of HVAE-T 10 took ~25 min at d = 101, so
# the runs are fewer than the paper's 10, and at d = 201, 301 the two K = 10 HVAEs ran once.
SWEEP_ITERS = 30_000
SWEEP = (((1, 2, 3), 10, METHODS),
         ((5, 11, 25), {5: 5, 11: 5, 25: 3}, METHODS),
         ((51, 101), {51: 2, 101: 1}, METHODS),
         ((201, 301), 3, ("HVAE-T 1", "VB", "NF-30")),
         ((201, 301), 1, ("HVAE-T 10", "HVAE-noT 10")))
PLOT = pathlib.Path(__file__).resolve().parent / "hvae_gaussian.png"
# Methods other benchmarks add to this experiment (e.g. langevin_vae_gaussian):
# name prefix -> (initial_variables(method, d, rng), negative_elbo(method, v, log_joint, prior,
# seed)); the trainer and the tables then treat them like the methods above.
EXTRA_METHODS = {}


def true_parameters(d):
  """(Delta, sigma) of the paper's experiment."""
  r = np.arange(d, dtype=np.float64) - (d - 1) / 2
  delta = r / 5
  sigma = np.ones(1) if d == 1 else 36 / (10 * (d - 1)**2) * r**2 + 0.1
  return delta, sigma


def make_data(d, run):
  """Sufficient statistics (x_bar, sum_i (x_i - x_bar)^2) of one data set, float64."""
  rng = np.random.default_rng([d, run, 2018])
  delta, sigma = true_parameters(d)
  z = rng.normal(size=d)
  x = z + delta + sigma * rng.normal(size=(N_DATA, d))
  x_bar = x.mean(0)
  return x_bar, ((x - x_bar)**2).sum(0)


def exact_ml_errors(d, run):
  """(Delta error, sigma error) of the exact maximum-likelihood estimate on data set `run`.

  Per dimension the marginal of x_{1..N} is N(Delta 1, sigma^2 I + 1 1^T), whose likelihood is
  maximized by Delta = x_bar and by s = sigma^2 solving N s^2 - (S - N (N - 1)) s - S N = 0,
  S = sum_i (x_i - x_bar)^2, i.e. s = 2 S N / (b + sqrt(b^2 + 4 N^2 S)), b = N (N - 1) - S
  (the stable form of the positive root). A reference for what exact inference reaches: the
  ELBO of an exact posterior is the log-likelihood itself.
  """
  x_bar, sq_dev = make_data(d, run)
  delta, sigma = true_parameters(d)
  n = N_DATA
  b = n * (n - 1.) - sq_dev
  s = 2. * sq_dev * n / (b + np.sqrt(b**2 + 4. * n**2 * sq_dev))
  return float(np.sum((x_bar - delta)**2)), float(np.sum((np.sqrt(s) - sigma)**2))


def _log_lik(z, delta, log_sigma, x_bar, sq_dev):
  """sum_i log N(x_i | z + Delta, diag sigma^2) for z [..., d], from centered statistics."""
  inv_var = tf.exp(-2. * log_sigma)
  resid = x_bar - delta - z
  quad = tf.reduce_sum((sq_dev + N_DATA * tf.square(resid)) * inv_var, -1)
  d = tf.cast(tf.shape(z)[-1], z.dtype)
  return (-N_DATA * tf.reduce_sum(log_sigma) - 0.5 * quad
          - 0.5 * N_DATA * d * math.log(2 * math.pi))


def _log_prior(z):
  d = tf.cast(tf.shape(z)[-1], z.dtype)
  return -0.5 * tf.reduce_sum(tf.square(z), -1) - 0.5 * d * math.log(2 * math.pi)


def _extra(method):
  return next((fns for prefix, fns in EXTRA_METHODS.items() if method.startswith(prefix)), None)


def _initial_variables(method, d, rng):
  """Variational parameters' starting values (the paper's)."""
  if _extra(method):
    return _extra(method)[0](method, d, rng)
  if method.startswith("HVAE"):
    v = {"logit_eps": np.full(d, math.log(0.005 / (MAX_STEP - 0.005)))}
    if method.startswith("HVAE-T"):
      v["log_t0"] = np.array(math.log(5. - 1.))  # 1 / sqrt(beta_0) = 1 + exp(log_t0) = 5.
    return v
  if method == "VB":
    return {"mu": np.zeros(d), "log_s": np.ones(d)}
  trunc = lambda: np.clip(0.1 * rng.normal(size=d), -0.2, 0.2)
  return {"u": trunc(), "w": trunc(), "b": np.array(0.1)}


def _negative_elbo(method, v, delta, log_sigma, x_bar, sq_dev, seed):
  d = x_bar.shape[-1]
  log_joint = lambda z: _log_prior(z) + _log_lik(z, delta, log_sigma, x_bar, sq_dev)
  prior = tfd.MultivariateNormalDiag(tf.zeros([d]))
  if _extra(method):
    return _extra(method)[1](method, v, log_joint, prior, seed)
  if method.startswith("HVAE"):
    k = int(method.split()[-1])
    eps = MAX_STEP * tf.sigmoid(v["logit_eps"])
    if method.startswith("HVAE-T"):
      beta0 = tf.square(1. / (1. + tf.exp(v["log_t0"])))
      flow = TemperedHamiltonianFlow(log_joint, num_steps=k, step_size=eps, tempering="fixed",
                                     initial_inverse_temperature=beta0, max_step_size=MAX_STEP)
    else:
      flow = TemperedHamiltonianFlow(log_joint, num_steps=k, step_size=eps, tempering="none",
                                     max_step_size=MAX_STEP)
    return -hamiltonian_elbo(log_joint, prior, flow, NUM_SAMPLES, seed).elbo
  if method == "VB":
    # E_q[log p(x, z)] + H[q] in closed form for q = N(mu, diag s^2).
    mu, s2 = v["mu"], tf.exp(2. * v["log_s"])
    inv_var = tf.exp(-2. * log_sigma)
    e_quad = tf.reduce_sum((sq_dev + N_DATA * (tf.square(x_bar - delta - mu) + s2)) * inv_var)
    e_lik = (-N_DATA * tf.reduce_sum(log_sigma) - 0.5 * e_quad
             - 0.5 * N_DATA * d * math.log(2 * math.pi))
    e_prior = -0.5 * tf.reduce_sum(tf.square(mu) + s2) - 0.5 * d * math.log(2 * math.pi)
    entropy = tf.reduce_sum(v["log_s"]) + 0.5 * d * (1. + math.log(2 * math.pi))
    return -(e_lik + e_prior + entropy)
  # Planar flows (Rezende & Mohamed, 2015) sharing (u, w, b); u is reparameterized so that
  # w^T u_hat >= -1 (invertibility): u_hat = u + (softplus(w^T u) - 1 - w^T u) w / ||w||^2.
  u, w, b = v["u"], v["w"], v["b"]
  wu = tf.reduce_sum(w * u)
  u_hat = u + (tf.math.softplus(wu) - 1. - wu) * w / tf.reduce_sum(tf.square(w))
  z0 = prior.sample(NUM_SAMPLES, seed=seed)
  z, log_det = z0, tf.zeros([NUM_SAMPLES])
  for _ in range(30):
    h = tf.tanh(tf.linalg.matvec(z, w) + b)
    log_det += tf.math.log(tf.abs(1. + (1. - tf.square(h)) * tf.reduce_sum(u_hat * w)))
    z = z + u_hat * h[:, tf.newaxis]
  return -tf.reduce_mean(log_joint(z) - prior.log_prob(z0) + log_det)


def _optimizer():
  """TF1's `tf.train.RMSPropOptimizer(1e-3)` as a Keras optimizer (see the module docstring)."""
  return tf_keras.optimizers.RMSprop(learning_rate=LEARNING_RATE, rho=0.9, momentum=0.,
                                     epsilon=1e-10, centered=False)


class _Trainer:
  """The variables, the RMSProp optimizer and the XLA-compiled training loop of one (method, d).

  One instance serves every run of a (method, d): `reset` assigns a run's starting values and
  re-initializes the optimizer's state (accumulators at 1, iteration count 0), `train` runs
  iterations `[start, stop)` in one compiled `tf.while_loop`. Iteration i draws its Monte Carlo
  noise from `fold_in(seed, i)`, so training in several `train` calls gives the same result as
  one call.
  """

  def __init__(self, method, d):
    self.method, self.d = method, d
    init = _initial_variables(method, d, np.random.default_rng(0))
    self.variables = {n: tf.Variable(tf.zeros(np.shape(v)), name=n) for n, v in init.items()}
    self.variables["delta"] = tf.Variable(tf.zeros([d]), name="delta")
    self.variables["log_sigma"] = tf.Variable(tf.zeros([d]), name="log_sigma")
    self.names = sorted(self.variables)
    self.optimizer = _optimizer()
    self.optimizer.build([self.variables[n] for n in self.names])
    # TF1's RMSPropOptimizer creates its "rms" slot with ones_initializer (Keras: zeros).
    self.accumulators = [v for v in self.optimizer.variables if "velocity" in v.name]
    if len(self.accumulators) != len(self.names):
      raise RuntimeError(f"expected {len(self.names)} RMSprop accumulators, found "
                         f"{[v.name for v in self.optimizer.variables]}")
    self.train = tf.function(self._train, jit_compile=True)

  def reset(self, init):
    """Starting values: Delta = 0, log sigma = 3 and the method's `init`; fresh optimizer state."""
    self.variables["delta"].assign(tf.zeros([self.d]))
    self.variables["log_sigma"].assign(tf.fill([self.d], 3.))
    for n, v in init.items():
      self.variables[n].assign(tf.constant(v, tf.float32))
    for a in self.accumulators:
      a.assign(tf.ones_like(a))
    self.optimizer.iterations.assign(0)

  def _train(self, x_bar, sq_dev, seed, start, stop):
    v = self.variables
    var_list = [v[n] for n in self.names]

    def body(i):
      with tf.GradientTape() as tape:
        loss = _negative_elbo(self.method, v, v["delta"], v["log_sigma"], x_bar, sq_dev,
                              tf.random.experimental.stateless_fold_in(seed, i))
      self.optimizer.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
      return i + 1

    # An explicit while_loop: with autograph's `for i in tf.range(start, stop)` XLA recompiled
    # the program on every call (seen in its compilation log); this compiles once per (method, d).
    tf.while_loop(lambda i: i < stop, body, [start])
    return tf.identity(v["delta"]), tf.exp(v["log_sigma"])


def _errors(delta_hat, sigma_hat, delta, sigma):
  return (float(np.sum((delta_hat.numpy() - delta)**2)),
          float(np.sum((sigma_hat.numpy() - sigma)**2)))


def run(dims, num_runs, num_iters, methods=METHODS, log=print, results_path=None):
  """Trains every method on `num_runs` data sets per d.

  Returns `errors[method][d]`, a list over runs of `(delta_error, sigma_error, delta_error_23,
  sigma_error_23, run)`: the squared errors at the end and after 2/3 of the iterations (a
  convergence check) and the run's index. Run r of dimension d always uses the same data set,
  initialization and noise, so runs can be split over processes and merged (`merge_results`).
  `num_runs` is an int (runs 0..n-1), or a dict {d: int or iterable of run indices}. With
  `results_path`, the errors are written as JSON after each d, so a partial sweep keeps what it
  finished.
  """
  errors = {m: {} for m in methods}
  checkpoint = (2 * num_iters) // 3
  for d in dims:
    runs = num_runs[d] if isinstance(num_runs, dict) else num_runs
    run_ids = list(range(runs)) if isinstance(runs, int) else list(runs)
    data = [make_data(d, r) for r in run_ids]
    delta, sigma = true_parameters(d)
    for m in methods:
      t0 = time.time()
      trainer = _Trainer(m, d)
      out = []
      for r, (x_bar, sq_dev) in zip(run_ids, data):
        trainer.reset(_initial_variables(m, d, np.random.default_rng([d, 7, r])))
        args = (tf.constant(x_bar, tf.float32), tf.constant(sq_dev, tf.float32),
                tf.constant([d, r], tf.int32))
        # Tensor bounds: one trace and compilation serves both calls and every run.
        mid = _errors(*trainer.train(*args, tf.constant(0), tf.constant(checkpoint)), delta,
                      sigma)
        end = _errors(*trainer.train(*args, tf.constant(checkpoint), tf.constant(num_iters)),
                      delta, sigma)
        out.append(end + mid + (r,))
      errors[m][d] = out
      log(f"  d={d:<4d} {m:<12s} error {np.mean([e[0] + e[1] for e in out]):.4g} "
          f"(at 2/3: {np.mean([e[2] + e[3] for e in out]):.4g}), runs {run_ids}, "
          f"{time.time() - t0:.1f} s")
    log("| " + " | ".join([str(d)] + [_mean_se(errors[m][d]) for m in methods]) + " |")
    if results_path is not None:
      done = {m: {str(k): v for k, v in by_d.items()} for m, by_d in errors.items()}
      pathlib.Path(results_path).write_text(json.dumps(
          {"num_iters": num_iters, "errors": done}, indent=1))
  return errors


def merge_results(paths):
  """`errors[method][d]` merged from the JSON files of several `run(..., results_path=...)`."""
  errors = {}
  for path in paths:
    for m, by_d in json.loads(pathlib.Path(path).read_text())["errors"].items():
      for d, runs in by_d.items():
        errors.setdefault(m, {}).setdefault(int(d), []).extend(tuple(e) for e in runs)
  for by_d in errors.values():
    for d, runs in by_d.items():
      ids = [e[4] for e in runs]
      if len(set(ids)) != len(ids):
        raise ValueError(f"run indices {sorted(ids)} of d = {d} appear in more than one file")
      by_d[d] = sorted(runs, key=lambda e: e[4])
  return errors


def _totals(runs, at=0):
  """Per-run total errors at the end (`at=0`) or after 2/3 of training (`at=2`)."""
  return np.array([e[at] + e[at + 1] for e in runs])


def _mean_se(runs, at=0):
  """'mean ± standard error over runs' of the total error."""
  t = _totals(runs, at)
  if len(t) < 2:
    return f"{t.mean():.3g}"
  return f"{t.mean():.3g} ± {t.std(ddof=1) / math.sqrt(len(t)):.2g}"


def _plot(errors, dims, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for i, (m, by_d) in enumerate(errors.items()):
    ds = [d for d in dims if d in by_d]
    totals = [_totals(by_d[d]) for d in ds]
    mean = np.array([t.mean() for t in totals])
    se = np.array([t.std(ddof=1) / math.sqrt(len(t)) if len(t) > 1 else 0. for t in totals])
    # Methods side by side (x shifted by a few percent) so that the error bars stay visible.
    ax.errorbar(np.array(ds) * 1.04**(i - 2), mean, yerr=se, fmt="o-", ms=4, capsize=3,
                label=m)
  ds = [d for d in dims if d in errors["VB"]]
  ml = [np.mean([sum(exact_ml_errors(d, e[4])) for e in errors["VB"][d]]) for d in ds]
  ax.plot(ds, ml, "k--", lw=1, label="exact ML (reference)")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("dimension d")
  ax.set_ylabel(r"$\|\hat\Delta-\Delta\|^2 + \|\hat\sigma-\sigma\|^2$")
  ax.set_title("Gaussian model (Caterini et al., 2018, Sec. 4.1); bars: standard error",
               fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_tables(errors, dims, methods=METHODS):
  """Mean error (± standard error), ratio to VB, 2/3-vs-end check and the Delta / sigma split.

  A method not run at some d shows "—"; the runs column counts VB's runs (every method that ran
  at that d ran on the same data sets, or on the first of them).
  """
  dims = [d for d in dims if d in errors.get("VB", {})]
  head = "| d | runs | " + " | ".join(methods) + " |\n" + "|---" * (len(methods) + 2) + "|"
  has = lambda m, d: d in errors.get(m, {})
  total = lambda m, d: _totals(errors[m][d]).mean()

  def table(title, cell):
    print(title + "\n")
    print(head)
    for d in dims:
      cells = [cell(m, d) if has(m, d) else "—" for m in methods]
      print(f"| {d} | {len(errors['VB'][d])} | " + " | ".join(cells) + " |")

  table("\nMean over runs of ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2 "
        "(± standard error over runs; (n): the method ran n runs only):",
        lambda m, d: _mean_se(errors[m][d]) + (
            f" ({len(errors[m][d])})" if len(errors[m][d]) != len(errors["VB"][d]) else ""))
  print("\nReference: exact maximum likelihood (closed form, no training) on VB's data sets, "
        "mean total error and Delta / sigma split:\n")
  print("| d | runs | exact ML | Delta / sigma |\n|---|---|---|---|")
  for d in dims:
    ml = [exact_ml_errors(d, e[4]) for e in errors["VB"][d]]
    print(f"| {d} | {len(ml)} | {np.mean([a + b for a, b in ml]):.3g} | "
          f"{np.mean([a for a, _ in ml]):.3g} / {np.mean([b for _, b in ml]):.3g} |")
  table("\nRatio to the VB baseline (VB on the same data sets; < 1 is more accurate than VB):",
        lambda m, d: f"{total(m, d) / _vb_total(errors, m, d):.3g}")
  table("\nConvergence: mean error after 2/3 of the iterations / at the end:",
        lambda m, d: f"{_totals(errors[m][d], 2).mean() / total(m, d):.3g}")
  table("\nDelta error / sigma error (means over runs):",
        lambda m, d: f"{np.mean([e[0] for e in errors[m][d]]):.3g} / "
                     f"{np.mean([e[1] for e in errors[m][d]]):.3g}")


def _vb_total(errors, m, d):
  """VB's mean error over the runs (data sets) that method m ran at d."""
  ids = {e[4] for e in errors[m][d]}
  return np.mean([e[0] + e[1] for e in errors["VB"][d] if e[4] in ids])


def report(dims, num_runs, num_iters, plot_path=None, results_path=None,
           methods=METHODS) -> None:
  """Runs `run(dims, num_runs, num_iters, methods)`; prints the tables (and saves a plot)."""
  print(f"N = {N_DATA}, runs = {num_runs}, iterations = {num_iters}, "
        f"{NUM_SAMPLES} samples per ELBO, RMSProp lr {LEARNING_RATE}", flush=True)
  t0 = time.time()
  log = lambda s: print(s, flush=True)
  errors = run(dims, num_runs, num_iters, methods, log=log, results_path=results_path)
  print_tables(errors, dims)
  if plot_path is not None:
    try:
      _plot(errors, dims, plot_path)
      print(f"\nplot: {plot_path.name}")
    except ImportError:
      print("\n(matplotlib missing: no plot)")
  print(f"total time {time.time() - t0:.0f} s")


def report_from_results(paths, plot_path=None) -> None:
  """Prints the tables (and saves the plot) of the merged JSON results of several runs."""
  merged = merge_results(paths)
  errors = {m: merged[m] for m in METHODS if m in merged}
  dims = sorted(errors["VB"])
  print_tables(errors, dims)
  if plot_path is not None:
    _plot(errors, dims, plot_path)


def main(quick: bool = False) -> None:
  """The sweep of `benchmarks/RESULTS.md` (see the module docstring); `quick`: a smoke run."""
  if quick:
    report((1, 3), 1, 3_000)
    return
  print(f"N = {N_DATA}, iterations = {SWEEP_ITERS}, {NUM_SAMPLES} samples per ELBO, "
        f"RMSProp lr {LEARNING_RATE}; (dims, runs, methods): {SWEEP}", flush=True)
  errors = {m: {} for m in METHODS}
  for dims, runs, methods in SWEEP:
    for m, by_d in run(dims, runs, SWEEP_ITERS, methods,
                       log=lambda s: print(s, flush=True)).items():
      for d, runs_of_d in by_d.items():
        errors[m].setdefault(d, []).extend(runs_of_d)
  print_tables(errors, DIMS)
  _plot(errors, DIMS, PLOT)


if __name__ == "__main__":
  main()
