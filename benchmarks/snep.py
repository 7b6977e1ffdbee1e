"""SNEP on the posterior server (Hasenclever et al., 2017): accuracy, wall time, scaling, a network.

Part 1 (Australian credit, the fixed split of `../shared/data/classification`): Bayesian logistic
regression on the 14 features standardized on the training split plus an intercept (d = 15),
prior N(0, I). Reference: a long full-data `tfp.mcmc.HamiltonianMonteCarlo` run (4 chains,
adapted step size), with its own Monte Carlo standard errors (effective sample sizes across
chains). Compared on the same K = 4 shards (example i goes to shard i mod K):

* SNEP on the posterior server, diagonal covariance, SGLD on each site's tilted distribution,
  for K = 1, 2, 4 workers of a `LocalCluster` (real `tf.distribute.Server`s on loopback, the
  coordinator in this process, asynchronous rounds); the K = 4 shards also synchronously without
  a strategy, diagonal and full covariance;
* consensus Monte Carlo (Scott et al., 2016): each shard's sub-posterior, with the prior raised
  to 1/K, sampled by HMC; draws combined by averaging weighted by the sub-posteriors' sample
  precisions;
* single-machine SGLD on all data (the SG-MCMC kernel SNEP's sites use, minibatch 32).

Posterior error: the largest and the root-mean-square error of the global mean in HMC posterior
standard deviations, the range of the marginal variance ratios v / v_HMC, and KL(N_HMC ‖ q), where
N_HMC is the Gaussian with the HMC draws' mean and covariance. SNEP's global state fluctuates from
round to round with the Monte Carlo noise of its tilted moments; the tables give its last state
and the average of its means and variances over the last half of the rounds.

Part 2 (scaling, simulated workers: the synchronous schedule in this process): seconds per round
(K site updates of `iters_per_sync` SNEP iterations) against K and against the number of examples
on synthetic logistic-regression data (d = 15), and the bytes a site round moves: the state
variable's read and the delta written, from its shape, as implemented, next to what the natural
parameters alone would need.

Part 3 (scikit-learn digits, notebook 02's split): a 64-32-10 ReLU network trained with SNEP over 4
shards (diagonal, SGLD on each site) vs VOGN and IVON on all the training data, same prior;
test accuracy and log-loss of `tfp_ext.posterior.predictive` with 32 weight samples.

Writes `benchmarks/snep.png` (error against rounds and against wall time).
"""

import functools
import os
import pathlib
import time
import warnings

import numpy as np

PLOT = pathlib.Path(__file__).resolve().parent / "snep.png"
PRIOR_PRECISION = 1.0
SGLD_BATCH = 32
SGLD_STEP = 2e-3          # h·λ_max ≈ 0.05 for the posterior precision of the standardized model
# SNEP's settings for Australian (chosen on the training data's own HMC run, not the test set):
SNEP = dict(learning_rate=0.02, iters_per_sync=50, iters_per_damp=1, num_results=20,
            initial_site_precision=5.0)
HMC = dict(num_chains=4, num_results=5000, num_burnin_steps=1000, num_leapfrog_steps=20)
CLUSTER_TIMEOUT = 150     # seconds per cluster run; a hung run is reported, not waited for
_HUNG = []
HANG_DUMP = pathlib.Path("/tmp/snep_benchmark_hang_traceback.txt")
DIGITS = dict(hidden=32, prior_precision=10.0, epochs=20, batch=64, rounds=20,
              iters_per_sync=20, num_results=10, step_size=5e-4, learning_rate=0.05,
              initial_site_precision=None)


# -- Data and reference ------------------------------------------------------------------------


def _australian():
  from benchmarks import _datasets  # pylint: disable=g-import-not-at-top
  x, y, x_te, y_te = _datasets.load_australian()
  mean, std = x.mean(0), x.std(0)
  std[std == 0] = 1.
  add = lambda a: np.concatenate([(a - mean) / std, np.ones((len(a), 1))], 1).astype(np.float32)
  return add(x), y, add(x_te), y_te


def _shards(x, y, k):
  """K equal shards, example i in shard i mod K (the caller makes N a multiple of K)."""
  assert len(x) % k == 0, (len(x), k)
  return [(x[i::k], y[i::k]) for i in range(k)]


def _sgld_builder(shard_size, batch_size, step_size):
  """The site kernel builder, with the shard's example count made static.

  On a cluster the posterior server's per-worker dataset has a dynamic leading dimension
  (`[None, ...]`), which the SG-MCMC kernels refuse; equal shards and `tf.ensure_shape` work
  around it (see the report in RESULTS.md).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top

  def build(log_prior_fn, log_likelihood_fn, data):
    data = tf.nest.map_structure(
        lambda t: tf.ensure_shape(t, [shard_size] + t.shape.as_list()[1:]), data)
    return tfp_ext.mcmc.StochasticGradientLangevinDynamics(
        log_prior_fn, log_likelihood_fn, data, batch_size=batch_size, step_size=step_size)

  return build


def _hmc(x, y, prior_precision, num_chains, num_results, num_burnin_steps, num_leapfrog_steps,
         seed):
  """Full-data HMC draws `[chains, results, d]`, acceptance rate and seconds (incl. compile)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  d = x.shape[1]
  xc, yc = tf.constant(x), tf.constant(y)

  def target(w):  # w [chains, d]
    logits = tf.einsum("cd,nd->cn", w, xc)
    ll = -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(yc, tf.shape(logits)),
                                                  logits=logits)
    return -0.5 * prior_precision * tf.reduce_sum(w * w, -1) + tf.reduce_sum(ll, -1)

  kernel = tfp.mcmc.SimpleStepSizeAdaptation(
      tfp.mcmc.HamiltonianMonteCarlo(target, step_size=0.05,
                                     num_leapfrog_steps=num_leapfrog_steps),
      num_adaptation_steps=int(0.8 * num_burnin_steps))

  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return tfp.mcmc.sample_chain(num_results, tf.zeros([num_chains, d]), kernel=kernel,
                                 num_burnin_steps=num_burnin_steps, seed=seed,
                                 trace_fn=lambda _, r: r.inner_results.is_accepted)

  start = time.perf_counter()
  draws, accepted = run(tf.constant(seed, tf.int32))
  draws = np.transpose(draws.numpy(), [1, 0, 2]).astype(np.float64)
  return draws, float(np.mean(accepted)), time.perf_counter() - start


class Reference:
  """The HMC posterior's mean, covariance, sd, and Monte Carlo standard errors."""

  def __init__(self, draws):
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    self.ess = tfp.mcmc.effective_sample_size(
        np.transpose(draws, [1, 0, 2]), cross_chain_dims=1).numpy()
    flat = draws.reshape(-1, draws.shape[-1])
    self.mean, self.cov = flat.mean(0), np.cov(flat.T)
    self.sd = np.sqrt(np.diag(self.cov))
    # MC standard error of the mean in sd units, and of a variance ratio (≈ sqrt(2 / ESS) for
    # near-Gaussian marginals).
    self.mean_se = 1. / np.sqrt(self.ess)
    self.var_se = np.sqrt(2. / self.ess)

  def errors(self, mean, cov):
    """(max |Δmean| / sd, RMS |Δmean| / sd, min v / v_ref, max v / v_ref, KL(N_ref ‖ q))."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    z = (mean - self.mean) / self.sd
    full = cov if cov.ndim == 2 else np.diag(cov)
    ratio = np.diag(full) / self.sd ** 2
    d = len(mean)
    prec = np.linalg.inv(full)
    diff = mean - self.mean
    kl = 0.5 * (np.trace(prec @ self.cov) + diff @ prec @ diff - d
                + np.linalg.slogdet(full)[1] - np.linalg.slogdet(self.cov)[1])
    return (float(np.max(np.abs(z))), float(np.sqrt(np.mean(z ** 2))), float(ratio.min()),
            float(ratio.max()), float(kl))


# -- Part 1: SNEP and baselines on Australian ---------------------------------------------------


def _log_likelihood(weights, batch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  bx, by = batch
  return -tf.nn.sigmoid_cross_entropy_with_logits(labels=by,
                                                  logits=tf.linalg.matvec(bx, weights[0]))


def _local_cluster(num_workers):
  """`tfp_ext.distributed.LocalCluster` with 4·K + 1 inter-op threads per worker server.

  The posterior server keeps 2K closures in flight (two per worker); with LocalCluster's K + 1
  threads a K = 1 run hung (two XLA-compiled closures waiting in `execute_with_cancellation`,
  no round done after 240 s; see RESULTS.md).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  from tfp_ext.distributed import local_cluster  # pylint: disable=g-import-not-at-top
  cluster = tfp_ext.distributed.LocalCluster.__new__(tfp_ext.distributed.LocalCluster)
  cluster.num_workers, cluster.num_ps = num_workers, 1
  spec = {"worker": [f"127.0.0.1:{local_cluster._free_port()}" for _ in range(num_workers)],  # pylint: disable=protected-access
          "ps": [f"127.0.0.1:{local_cluster._free_port()}"]}  # pylint: disable=protected-access
  cluster.cluster_spec = tf.train.ClusterSpec(spec)
  config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=4 * num_workers + 1)
  cluster.servers = [
      tf.distribute.Server(cluster.cluster_spec, job_name="worker", task_index=i, config=config,
                           protocol="grpc") for i in range(num_workers)] + [
      tf.distribute.Server(cluster.cluster_spec, job_name="ps", task_index=0, protocol="grpc")]
  return cluster


def _snep_run(shards, rounds, strategy=None, covariance="diagonal", seed=0, timeout=None,
              jit_compile=True):
  """SNEP on `shards`; returns (history of (seconds, mean, cov) per round, first-round s, learner)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  d = shards[0][0].shape[1]
  learner = tfp_ext.distributed.PosteriorServer(
      _log_likelihood, prior=PRIOR_PRECISION, shards=shards,
      kernel=_sgld_builder(len(shards[0][0]), SGLD_BATCH, SGLD_STEP),
      strategy=strategy, initial_state=[np.zeros(d, np.float32)], covariance=covariance,
      seed=seed, jit_compile=jit_compile, **SNEP)
  history = []
  start = time.perf_counter()

  def record(r, logs):
    del r, logs
    m, c = learner.family.mean_and_covariance(learner.global_natural())
    history.append((time.perf_counter() - start, m.numpy(), c.numpy()))

  try:
    learner.fit(rounds, verbose=0, timeout=timeout,
                callbacks=[tf_keras.callbacks.LambdaCallback(on_epoch_end=record)])
  except TimeoutError:
    import faulthandler  # pylint: disable=g-import-not-at-top
    with open(HANG_DUMP, "a") as f:
      faulthandler.dump_traceback(f)
    _HUNG.append(timeout)
    print(f"TIMEOUT: {len(history)} of {rounds} rounds after {timeout} s; thread stacks in "
          f"{HANG_DUMP}", flush=True)
  return history, learner


def _averaged(history):
  """Mean and covariance averaged over the last half of the rounds."""
  tail = history[len(history) // 2:]
  return np.mean([h[1] for h in tail], 0), np.mean([h[2] for h in tail], 0)


def _consensus(shards, ref_settings, seed):
  """Consensus Monte Carlo: sub-posteriors p(θ)^{1/K} p(D_k | θ) by HMC, precision-weighted."""
  k = len(shards)
  subs, seconds = [], []
  for i, (x, y) in enumerate(shards):
    draws, _, s = _hmc(x, y, PRIOR_PRECISION / k, seed=(seed, i), **ref_settings)
    subs.append(draws.reshape(-1, draws.shape[-1]))
    seconds.append(s)
  weights = [np.linalg.inv(np.cov(s.T)) for s in subs]
  total = np.linalg.inv(sum(weights))
  combined = np.einsum("ij,sj->si", total, sum(s @ w.T for s, w in zip(subs, weights)))
  return combined, seconds


def _sgld_all_data(x, y, num_steps, seed):
  """Single-machine SGLD on all data: draws `[steps, d]` and seconds (a compiled loop)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  d = x.shape[1]
  kernel = tfp_ext.mcmc.StochasticGradientLangevinDynamics(
      lambda w: -0.5 * PRIOR_PRECISION * tf.reduce_sum(w * w),
      lambda w, b: _log_likelihood([w], b), (tf.constant(x), tf.constant(y)), SGLD_BATCH,
      step_size=SGLD_STEP)

  @tf.function(jit_compile=True, autograph=False)
  def run(seed):
    return tfp.mcmc.sample_chain(num_steps, tf.zeros([d]), kernel=kernel, seed=seed,
                                 trace_fn=None)

  run(tf.constant([seed, 0]))  # compile
  start = time.perf_counter()
  draws = run(tf.constant([seed, 1])).numpy().astype(np.float64)
  return draws, time.perf_counter() - start


def _fmt(errors):
  mx, rms, lo, hi, kl = errors
  return f"{mx:.2f} | {rms:.2f} | {lo:.2f}-{hi:.2f} | {kl:.3f}"


def _part1(quick):
  import tfp_ext  # pylint: disable=g-import-not-at-top
  x, y, _, _ = _australian()
  x, y = x[:len(x) // 4 * 4], y[:len(y) // 4 * 4]  # equal shards for K = 1, 2, 4 (see above)
  n, d = x.shape
  rounds = 10 if quick else 100
  curves, rows = {}, []
  # Asynchronous, on a loopback cluster (first: before this process runs anything else).
  for k in (1, 2, 4):
    cluster = _local_cluster(k)
    history, learner = _snep_run(_shards(x, y, k), rounds, strategy=cluster.strategy(),
                                 timeout=CLUSTER_TIMEOUT)
    curves[f"SNEP K={k}, cluster"] = history
    rows.append((f"SNEP diagonal, K = {k} workers (cluster, async)", history, learner.rejected))
  hmc_settings = dict(HMC, num_results=1000 if quick else HMC["num_results"])
  draws, acceptance, hmc_s = _hmc(x, y, PRIOR_PRECISION, seed=(0, 1), **hmc_settings)
  ref = Reference(draws)
  print(f"Australian: N = {n} (the first {n} of the training split), d = {d} (standardized + intercept), prior N(0, I/{PRIOR_PRECISION:g})."
        f" Reference: HMC {HMC['num_chains']} chains x {hmc_settings['num_results']} draws after "
        f"{HMC['num_burnin_steps']} adapted burn-in, {HMC['num_leapfrog_steps']} leapfrog steps, "
        f"acceptance {acceptance:.2f}, {hmc_s:.1f} s; ESS min {ref.ess.min():.0f} / median "
        f"{np.median(ref.ess):.0f}; MC standard error of the reference mean <= "
        f"{ref.mean_se.max():.3f} sd, of a variance ratio <= {ref.var_se.max():.3f}.")
  print(f"SNEP: SGLD (batch {SGLD_BATCH}, h = {SGLD_STEP:g}) on each site; {SNEP}.")
  # Synchronous, in this process.
  for covariance in ("diagonal",) if quick else ("diagonal", "full"):
    history, learner = _snep_run(_shards(x, y, 4), rounds, covariance=covariance)
    curves[f"SNEP K=4, {covariance}, sync"] = history
    rows.append((f"SNEP {covariance}, K = 4 (in process, sync)", history, learner.rejected))
  print("\n| method | rounds | first round s (incl. XLA compile) | s / later round | "
        "state | max |Δmean|/sd | RMS |Δmean|/sd | v / v_HMC | KL(N_HMC ‖ q) | rejected |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name, history, rejected in rows:
    if not history:
      print(f"| {name} | 0 (hung) | | | | | | | | |")
      continue
    t = [h[0] for h in history]
    per_round = (t[-1] - t[0]) / max(len(t) - 1, 1)
    last = ref.errors(history[-1][1], history[-1][2])
    avg = ref.errors(*_averaged(history))
    print(f"| {name} | {len(history)} | {t[0]:.1f} | {per_round:.3f} | last | {_fmt(last)} | "
          f"{rejected} |")
    print(f"| {name} | {len(history)} | | | mean of last {len(history) - len(history) // 2} | "
          f"{_fmt(avg)} | |")
  # Baselines.
  sub_settings = dict(hmc_settings, num_results=hmc_settings["num_results"] // 2)
  combined, seconds = _consensus(_shards(x, y, 4), sub_settings, seed=2)
  print(f"| consensus MC, K = 4 (HMC {HMC['num_chains']} x {sub_settings['num_results']} per "
        f"shard) | - | {sum(seconds):.1f} total, {max(seconds):.1f} slowest shard | - | draws | "
        f"{_fmt(ref.errors(combined.mean(0), np.cov(combined.T)))} | - |")
  num_steps = 4000 if quick else 40000
  sgld, sgld_s = _sgld_all_data(x, y, num_steps, seed=3)
  burn = num_steps // 5
  checkpoints = np.unique(np.geomspace(burn + 50, num_steps, 20).astype(int))
  sgld_curve = [(sgld_s * c / num_steps, sgld[burn:c].mean(0), np.cov(sgld[burn:c].T))
                for c in checkpoints]
  print(f"| SGLD on all data, batch {SGLD_BATCH}, h = {SGLD_STEP:g}, {num_steps} steps "
        f"({burn} burn-in) | - | - | {sgld_s:.1f} total (after compile) | draws | "
        f"{_fmt(ref.errors(sgld_curve[-1][1], sgld_curve[-1][2]))} | - |")
  return ref, curves, sgld_curve


def _plot(ref, curves, sgld_curve):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for name, history in curves.items():
    errs = np.array([ref.errors(m, c) for _, m, c in history])
    rounds = np.arange(1, len(history) + 1)
    t = np.array([h[0] for h in history])
    axes[0].plot(rounds, errs[:, 1], label=name)
    axes[1].plot(rounds, errs[:, 4], label=name)
    axes[2].plot(t, errs[:, 4], label=name)
  sg = np.array([ref.errors(m, c) for _, m, c in sgld_curve])
  axes[2].plot([h[0] for h in sgld_curve], sg[:, 4], "k--", label="SGLD all data (after compile)")
  axes[0].set(xlabel="round", ylabel="RMS |Δmean| / sd_HMC", yscale="log")
  axes[1].set(xlabel="round", ylabel="KL(N_HMC ‖ q)", yscale="log")
  axes[2].set(xlabel="wall seconds (SNEP: incl. compile)", ylabel="KL(N_HMC ‖ q)", yscale="log",
              xscale="log")
  axes[1].legend(fontsize=7)
  axes[2].legend(fontsize=7)
  fig.suptitle("SNEP on Australian (logistic regression) vs the HMC reference")
  fig.tight_layout()
  fig.savefig(PLOT, dpi=110)
  print(f"\nplot: {PLOT}")


# -- Part 2: scaling -----------------------------------------------------------------------------


def _part2(quick):
  import tfp_ext  # pylint: disable=g-import-not-at-top
  d = 15
  rng = np.random.default_rng(0)
  configs = [(k, 4000) for k in (1, 2, 4, 8)] + [(4, n) for n in (400, 40000)]
  if quick:
    configs = [(1, 4000), (4, 4000)]
  rounds = 3
  print(f"\nScaling: synthetic logistic regression, d = {d}, the synchronous schedule in this "
        f"process (simulated workers), SNEP settings as above, diagonal, not XLA-compiled "
        "(compiling each size would take longer than the part); seconds per round after "
        f"the compiling first round (median of {rounds} rounds; one round = K site updates). "
        "Bytes per site round from the state variable's shape (float64): as implemented, a "
        "closure reads the whole [K, row] state and scatter-adds the change of its own row; the "
        "natural parameters alone are the global η read (2d) and the site's Δη "
        "written (2d).")
  print("| K | N (examples) | N / K | s / round | s / site update | row (floats) | "
        "bytes read + written per site round (implemented) | natural parameters only |")
  print("|---|---|---|---|---|---|---|---|")
  for k, n in configs:
    x = np.concatenate([rng.normal(size=(n, d - 1)), np.ones((n, 1))], 1).astype(np.float32)
    w = rng.normal(size=d) / np.sqrt(d)
    y = (rng.uniform(size=n) < 1. / (1. + np.exp(-x @ w))).astype(np.float32)
    times = []
    learner = None
    import tf_keras  # pylint: disable=g-import-not-at-top
    stamp = [time.perf_counter()]

    def tick(r, logs):
      del r, logs
      now = time.perf_counter()
      times.append(now - stamp[0])
      stamp[0] = now

    learner = tfp_ext.distributed.PosteriorServer(
        _log_likelihood, prior=PRIOR_PRECISION, shards=_shards(x, y, k),
        kernel=functools.partial(tfp_ext.mcmc.StochasticGradientLangevinDynamics,
                                 batch_size=SGLD_BATCH, step_size=SGLD_STEP),
        initial_state=[np.zeros(d, np.float32)], jit_compile=False, **SNEP)
    learner.fit(rounds + 1, verbose=0,
                callbacks=[tf_keras.callbacks.LambdaCallback(on_epoch_end=tick)])
    per_round = float(np.median(times[1:]))
    shape = learner.state_variable.shape
    implemented = (int(np.prod(shape)) + int(shape[1])) * 8
    natural = 2 * 2 * d * 8
    print(f"| {k} | {n:,} | {n // k:,} | {per_round:.3f} | {per_round / k:.4f} | {shape[1]} | "
          f"{implemented:,} | {natural:,} |")
  for covariance in ("diagonal", "full"):
    size = 2 * d if covariance == "diagonal" else d + d * d
    row = 2 * size + d + 1
    print(f"({covariance}, d = {d}: row = 2·{size} + {d} + 1 = {row} floats; with K sites a site "
          f"round moves (K + 1)·{row}·8 bytes as implemented, 2·{size}·8 = {2 * size * 8} bytes of "
          "natural parameters.)")


# -- Part 3: digits ------------------------------------------------------------------------------


def _digits_model(d, seed):
  import tf_keras  # pylint: disable=g-import-not-at-top
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=seed * 10 + k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(DIGITS["hidden"], activation="relu", input_shape=(d,),
                            kernel_initializer=init(1)),
      tf_keras.layers.Dense(10, kernel_initializer=init(2))])


def _part3(quick):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  from benchmarks._datasets import load_digits_split  # pylint: disable=g-import-not-at-top
  x, y, x_te, y_te = load_digits_split()
  x, y = x[:len(x) // 4 * 4], y[:len(y) // 4 * 4]  # 1,196 of the 1,198: equal shards
  n, d = x.shape
  cfg = dict(DIGITS)
  if quick:
    cfg.update(rounds=4, epochs=4)
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  lam = cfg["prior_precision"]

  def metrics(model, q):
    probs = tfp_ext.posterior.predictive(model, q, tf.constant(x_te), num_samples=32, seed=0,
                                         task="classification")["mean"].numpy()
    acc = float(np.mean(probs.argmax(1) == y_te))
    ll = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_te)), y_te], 1e-12, 1.))))
    return acc, ll

  rows = []
  model = _digits_model(d, 0)
  start = time.perf_counter()
  learner = tfp_ext.distributed.PosteriorServer(
      model, loss=loss, prior=lam, shards=_shards(x, y, 4),
      kernel=functools.partial(tfp_ext.mcmc.StochasticGradientLangevinDynamics, batch_size=32,
                               step_size=cfg["step_size"]),
      learning_rate=cfg["learning_rate"], iters_per_sync=cfg["iters_per_sync"],
      iters_per_damp=1, num_results=cfg["num_results"],
      initial_site_precision=cfg["initial_site_precision"], seed=0)
  learner.fit(cfg["rounds"], verbose=0)
  rows.append(("SNEP, K = 4 shards, diagonal, SGLD (sync)", *metrics(model, learner.posterior()),
               time.perf_counter() - start, learner.rejected))
  steps = cfg["epochs"] * -(-n // cfg["batch"])
  for method in ("VOGN", "IVON"):
    tf_keras.utils.set_random_seed(0)
    model = _digits_model(d, 0)
    start = time.perf_counter()
    if method == "VOGN":
      opt = tfp_ext.optimizers.VOGN(learning_rate=0.01, beta_1=0.9, beta_2=0.999,
                                    prior_precision=lam, num_examples=n, init_precision=100.0,
                                    seed=0)
      target = tfp_ext.keras.VariationalModel(model)
    else:
      opt = tfp_ext.optimizers.IVON(
          learning_rate=tf_keras.optimizers.schedules.CosineDecay(0.1, decay_steps=steps),
          ess=n, weight_decay=lam / n, hess_init=0.1, beta_2=1 - 10 / steps, seed=0)
      target = model
    target.compile(optimizer=opt, loss=loss, jit_compile=True)
    target.fit(x, y, batch_size=cfg["batch"], epochs=cfg["epochs"], verbose=0)
    q = opt.posterior(model.trainable_variables) if method == "VOGN" else opt.posterior()
    rows.append((f"{method}, all data, {cfg['epochs']} epochs of batch {cfg['batch']}",
                 *metrics(model, q), time.perf_counter() - start, "-"))
  print(f"\nDigits: {n} train / {len(x_te)} test, MLP 64-{cfg['hidden']}-10 ReLU "
        f"({sum(int(np.prod(v.shape)) for v in model.trainable_variables)} weights), prior "
        f"precision {lam:g}; SNEP: {cfg['rounds']} rounds, iters_per_sync {cfg['iters_per_sync']}, "
        f"num_results {cfg['num_results']}, ε {cfg['learning_rate']}, SGLD h "
        f"{cfg['step_size']:g} batch 32, initial site precision {cfg['initial_site_precision'] or 'λ/K'};"
        " predictive: 32 weight samples.")
  print("| method | test accuracy | test log-loss | seconds (incl. compile) | rejected |")
  print("|---|---|---|---|---|")
  for name, acc, ll, seconds, rejected in rows:
    print(f"| {name} | {acc:.3f} | {ll:.3f} | {seconds:.0f} | {rejected} |")


def main(quick: bool = False) -> None:
  """Prints the three parts' tables and writes the plot."""
  parts = os.environ.get("SNEP_BENCHMARK_PARTS", "123")  # e.g. "3" to re-run part 3 alone
  warnings.filterwarnings("ignore", message=".*TransitionKernel` is not calibrated.*")
  print(f"oneDNN: TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")
  start = time.perf_counter()
  if "1" in parts:
    ref, curves, sgld_curve = _part1(quick)
    _plot(ref, curves, sgld_curve)
    print(f"(part 1: {time.perf_counter() - start:.0f} s)")
  t = time.perf_counter()
  if "2" in parts:
    _part2(quick)
    print(f"(part 2: {time.perf_counter() - t:.0f} s)")
  t = time.perf_counter()
  if "3" in parts:
    _part3(quick)
  print(f"(part 3: {time.perf_counter() - t:.0f} s; total {time.perf_counter() - start:.0f} s)",
        flush=True)
  if _HUNG:  # A hung coordinator also hangs the interpreter's exit (its __del__ joins).
    os._exit(1)
