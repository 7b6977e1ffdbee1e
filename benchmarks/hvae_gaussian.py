"""Section 4.1 of Caterini et al. (2018), "Hamiltonian Variational Auto-Encoder".

The Gaussian model: z ~ N(0, I_d), x_i | z ~ N(z + Delta, diag(sigma^2)), i = 1..N
(N = 10,000), one z per data set, Delta = (-(d-1)/2, ..., (d-1)/2) / 5 and sigma_j quadratic
from 1 at the edges down to 0.1 in the middle. theta = (Delta, log sigma) is learned by
maximizing each method's ELBO with RMSProp (learning rate 1e-3, 10 Monte Carlo samples per
ELBO, TF1's RMSProp: decay 0.9, accumulator initialized at 1, epsilon 1e-10), from Delta = 0,
log sigma = 3, as in the paper. The paper runs 30,000 iterations, 10 runs and d up to 301
(`report(DIMS, 10, 30_000)`); `main` runs 10,000 iterations, 2 runs, d in (1, 3, 11), which fits
a shared 2-core CPU. The error of a run is ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2,
averaged over runs (independent data sets).

Methods:
* HVAE-T K (K = 1, 10): `TemperedHamiltonianFlow` with fixed (quadratic) tempering,
  q_0 = N(0, I), learned per-dimension eps in (0, 0.5) (start 0.005) and beta_0 (start
  1 / sqrt(beta_0) = 5), trained on `tfp_ext.vi.hamiltonian_elbo`.
* HVAE-noT 10: the same flow with tempering="none" (beta_0 = 1).
* VB: mean-field Gaussian q(z) = N(mu, diag s^2), exact (closed-form) ELBO.
* NF-30: 30 planar flows sharing one (u, w, b), q_0 = N(0, I), ELBO by Monte Carlo.

The baseline of the ratio table is VB. The data log-likelihood uses the centered sufficient
statistics (x_bar, sum_i (x_i - x_bar)^2), exact and free of float32 cancellation.
"""

import math
import pathlib
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_ext.bijectors import TemperedHamiltonianFlow
from tfp_ext.vi import hamiltonian_elbo

tfd = tfp.distributions

N_DATA = 10_000
DIMS = (1, 2, 3, 5, 11, 25, 51, 101, 201, 301)
NUM_SAMPLES = 10
LEARNING_RATE = 1e-3
MAX_STEP = 0.5
METHODS = ("HVAE-T 1", "HVAE-T 10", "HVAE-noT 10", "VB", "NF-30")
PLOT = pathlib.Path(__file__).resolve().parent / "hvae_gaussian.png"


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


def _initial_variables(method, d, rng):
  """Variational parameters' starting values (the paper's)."""
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


def _trainer(method, d, num_iters):
  """An XLA-compiled function running the whole optimization; returns (Delta, sigma)."""

  @tf.function(jit_compile=True)
  def train(init, x_bar, sq_dev, seed):
    params = {"delta": tf.zeros([d]), "log_sigma": tf.fill([d], 3.), **init}
    names = sorted(params)
    ms = {n: tf.ones_like(params[n]) for n in names}  # TF1 RMSProp starts its accumulator at 1.

    def body(i, params, ms):
      with tf.GradientTape() as tape:
        tape.watch(list(params.values()))
        loss = _negative_elbo(method, params, params["delta"], params["log_sigma"], x_bar,
                              sq_dev, tf.random.experimental.stateless_fold_in(seed, i))
      grads = tape.gradient(loss, params)
      new_ms, new_params = {}, {}
      for n in names:
        new_ms[n] = 0.9 * ms[n] + 0.1 * tf.square(grads[n])
        new_params[n] = params[n] - LEARNING_RATE * grads[n] / (tf.sqrt(new_ms[n]) + 1e-10)
      return i + 1, new_params, new_ms

    _, params, _ = tf.while_loop(lambda i, p, m: i < num_iters, body, (0, params, ms))
    return params["delta"], tf.exp(params["log_sigma"])

  return train


def run(dims, num_runs, num_iters, methods=METHODS, log=print):
  """errors[method][d] = [(delta_error, sigma_error) per run]."""
  errors = {m: {} for m in methods}
  for d in dims:
    data = [make_data(d, r) for r in range(num_runs)]
    delta, sigma = true_parameters(d)
    for m in methods:
      t0 = time.time()
      train = _trainer(m, d, num_iters)
      rng = np.random.default_rng([d, 7])
      out = []
      for r, (x_bar, sq_dev) in enumerate(data):
        init = {k: tf.constant(v, tf.float32) for k, v in _initial_variables(m, d, rng).items()}
        dh, sh = train(init, tf.constant(x_bar, tf.float32), tf.constant(sq_dev, tf.float32),
                       tf.constant([d, r], tf.int32))
        out.append((float(np.sum((dh.numpy() - delta)**2)),
                    float(np.sum((sh.numpy() - sigma)**2))))
      errors[m][d] = out
      log(f"  d={d:<4d} {m:<12s} error {np.mean([a + b for a, b in out]):.4g}  "
          f"({time.time() - t0:.1f} s)")
  return errors


def _plot(errors, dims, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for m, by_d in errors.items():
    ax.plot(dims, [np.mean([a + b for a, b in by_d[d]]) for d in dims], "o-", label=m)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("dimension d")
  ax.set_ylabel(r"$\|\hat\Delta-\Delta\|^2 + \|\hat\sigma-\sigma\|^2$")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def report(dims, num_runs, num_iters, plot_path=None) -> None:
  """Runs `run(dims, num_runs, num_iters)` and prints the tables (and saves a plot if asked)."""
  print(f"N = {N_DATA}, runs = {num_runs}, iterations = {num_iters}, "
        f"{NUM_SAMPLES} samples per ELBO, RMSProp lr {LEARNING_RATE}")
  t0 = time.time()
  errors = run(dims, num_runs, num_iters)
  total = lambda m, d: np.mean([a + b for a, b in errors[m][d]])
  part = lambda m, d, i: np.mean([e[i] for e in errors[m][d]])
  print(f"\nMean over {num_runs} runs of ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2:\n")
  print("| d | " + " | ".join(METHODS) + " |")
  print("|---" * (len(METHODS) + 1) + "|")
  for d in dims:
    print(f"| {d} | " + " | ".join(f"{total(m, d):.3g}" for m in METHODS) + " |")
  print("\nRatio to the VB baseline (same runs; < 1 is more accurate than VB):\n")
  print("| d | " + " | ".join(METHODS) + " |")
  print("|---" * (len(METHODS) + 1) + "|")
  for d in dims:
    print(f"| {d} | " + " | ".join(f"{total(m, d) / total('VB', d):.3g}" for m in METHODS)
          + " |")
  print("\nSplit at the largest d (Delta error / sigma error):\n")
  dmax = dims[-1]
  print("| method | Delta error | sigma error |")
  print("|---|---|---|")
  for m in METHODS:
    print(f"| {m} | {part(m, dmax, 0):.3g} | {part(m, dmax, 1):.3g} |")
  if plot_path is not None:
    try:
      _plot(errors, dims, plot_path)
      print(f"\nplot: {plot_path.name}")
    except ImportError:
      print("\n(matplotlib missing: no plot)")
  print(f"total time {time.time() - t0:.0f} s")


def main(quick: bool = False) -> None:
  """Runs the sweep and prints mean errors, their Delta / sigma split and ratios to VB."""
  # The paper's sweep, report(DIMS, 10, 30_000), takes days on a shared 2-core CPU; the default
  # is a reduced sweep that still converges (log sigma needs ~5,300 RMSProp steps from 3).
  if quick:
    report((1, 3), 1, 3_000)
  else:
    report((1, 3, 11), 2, 10_000, plot_path=PLOT)


if __name__ == "__main__":
  main()
