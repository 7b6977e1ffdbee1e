"""UCI regression protocol of Khan et al. (2018): Vadam, VOGN, IVON and BBVI (DenseFlipout).

Protocol (Khan et al., 2018, UCI experiments and App. J, following Gal & Ghahramani, 2016), on
the 20 train/test splits of `../shared/data/uci`: inputs and targets standardized on the training
split; one hidden layer of 50 ReLU units; 40 epochs; test RMSE and test log-likelihood in the
original units from 100 posterior samples, mean ± standard error over the splits.

Settings taken from the authors' released code (github.com/emtiyaz/vadam,
`pytorch/uci_code/run_experiments.py`, `bayesopt.py`, `experiments.py`, `README.md`):

* batch 32 on the small sets (bostonHousing, concrete, energy, yacht), 128 on the large ones
  (kin8nm, naval-propulsion-plant, power-plant, wine-quality-red);
* Vadam: learning rate 0.01, betas (0.9, 0.99), initial precision equal to the prior precision
  (s₀ = 0; the README corrects App. J, which says 10);
* BBVI (Bayes by Backprop): Adam, learning rate 0.01, betas (0.9, 0.99), initial posterior
  precision 10 (σ₀ ≈ 0.32), prior N(0, 1/λ).

Differences from the paper, all applied identically to every method:

* The paper picks the prior precision λ and the noise precision per split by Bayesian
  optimization (30 evaluations) of the 5-fold cross-validated log-likelihood inside the training
  split. That is ~150 trainings per split, out of reach here. Instead λ = 1 everywhere, and the
  noise variance of each split is the held-out mean squared error of a maximum-likelihood fit
  (Adam, same network and epochs) trained on 80% of the training split and evaluated on the
  other 20% (standardized units). Test data are never used to set anything.
* One weight sample per training step for every method (the paper: 10 or 5 for Vadam, 20 or 10
  for BBVI); DenseFlipout draws one flipout sample per step.
* VOGN and IVON have no published UCI setting in Khan et al. (2018) or Osawa et al. (2019); they
  start at precision 0.5·N/σₙ² (about the mean diagonal Gauss-Newton of a standardized network)
  with VOGN at learning rate 0.01, betas (0.9, 0.999) and IVON at learning rate 0.05, weight
  decay 1/N, β₂ = 1 − 10/steps. Chosen once, not tuned per dataset.

For speed every (dataset, method) pair compiles one model with XLA and reuses it for all splits:
before each split the weights are re-initialized (seeded by the split) and the optimizer state is
copied from a fresh optimizer built for that split. The weight-noise seed is therefore common to
the splits of a dataset (common random numbers). A split whose weights end non-finite would be
excluded and counted.
"""

import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_ext
from benchmarks import _datasets

HIDDEN = 50
EPOCHS = 40
PRED_SAMPLES = 100
PRIOR_PRECISION = 1.0
LEARNING_RATE = 0.01
BETAS = (0.9, 0.99)
BBVI_INIT_PRECISION = 10.0
HOLDOUT_FRACTION = 0.2
LARGE = ("kin8nm", "naval-propulsion-plant", "power-plant", "wine-quality-red")
METHODS = ("BBVI", "Vadam", "VOGN", "IVON")
ALL_DATASETS = ("yacht", "bostonHousing", "energy", "concrete", "wine-quality-red", "kin8nm",
                "power-plant", "naval-propulsion-plant")  # Smallest first.


def batch_size(name: str) -> int:
  """The paper's minibatch size for dataset `name` (32 small, 128 large)."""
  return 128 if name in LARGE else 32


def _nll(noise_var: tf.Variable):
  """Per-example Gaussian NLL (up to a constant); `noise_var` is read at run time."""
  return lambda y, f: 0.5 * tf.reduce_sum(tf.square(y - f), -1) / noise_var


def _num_steps(n, batch, epochs):
  return epochs * -(-n // batch)


class _Trainer:
  """One compiled model for one (dataset, method), re-initialized and retrained on every split."""

  def __init__(self, method: str, d: int, n: int, batch: int, seed: int):
    self.method, self.d, self.n, self.batch = method, d, n, batch
    self.steps = _num_steps(n, batch, EPOCHS)
    self.noise_var = tf.Variable(1.0, trainable=False, dtype=tf.float32)
    self.model = self._fresh_model(0)
    self.target = (tfp_ext.keras.VariationalModel(self.model) if method == "VOGN"
                   else self.model)
    self.seed = seed  # Of the weight noise, shared by every split.
    self.opt = None  # Created and compiled by the first fit, with that split's noise variance.
    self._forward = None

  def _compile(self, noise_var):
    if self.method == "MAP":
      self.opt = self._adam()
      self.target.compile(optimizer=self.opt, loss="mse", jit_compile=True)
    elif self.method == "BBVI":
      self.opt = self._adam()
      # DenseFlipout's stateful sampling stays out of XLA.
      self.target.compile(optimizer=self.opt, loss=_nll(self.noise_var))
    else:
      self.opt = self._variational_optimizer(noise_var, self.seed)
      self.target.compile(optimizer=self.opt, loss=_nll(self.noise_var), jit_compile=True)

  def _adam(self):
    return tf_keras.optimizers.Adam(LEARNING_RATE, beta_1=BETAS[0], beta_2=BETAS[1])

  def _fresh_model(self, split):
    """The network with the initial weights of `split` (same for every method but BBVI)."""
    if self.method != "BBVI":
      return _datasets.one_hidden_layer_mlp(self.d, HIDDEN, split)
    tf_keras.utils.set_random_seed(split)
    n = self.n
    kl = lambda q, p, _: tfp.distributions.kl_divergence(q, p) / n
    scale0 = 1. / math.sqrt(BBVI_INIT_PRECISION)
    posterior = tfp.layers.default_mean_field_normal_fn(
        untransformed_scale_initializer=tf.constant_initializer(
            float(tfp.math.softplus_inverse(scale0))))
    prior_scale = 1. / math.sqrt(PRIOR_PRECISION)
    prior = lambda dtype, shape, name, trainable, add_variable_fn: tfp.distributions.Independent(
        tfp.distributions.Normal(tf.zeros(shape, dtype), prior_scale),
        reinterpreted_batch_ndims=len(shape))
    layer = lambda units, **kw: tfp.layers.DenseFlipout(
        units, kernel_posterior_fn=posterior, bias_posterior_fn=posterior,
        kernel_prior_fn=prior, bias_prior_fn=prior,
        kernel_divergence_fn=kl, bias_divergence_fn=kl, **kw)
    return tf_keras.Sequential([layer(HIDDEN, activation="relu", input_shape=(self.d,), seed=1),
                                layer(1, seed=2)])

  def _variational_optimizer(self, noise_var, seed):
    n = self.n
    # VOGN and IVON start at precision c·N/σₙ², c = 0.5 the order of a standardized network's
    # mean diagonal Gauss-Newton; Vadam starts at the prior (s₀ = 0), as in the paper's code.
    init_precision = 0.5 * n / noise_var
    if self.method == "Vadam":
      return tfp_ext.optimizers.Vadam(
          learning_rate=LEARNING_RATE, beta_1=BETAS[0], beta_2=BETAS[1],
          prior_precision=PRIOR_PRECISION, num_examples=n, seed=seed)
    if self.method == "VOGN":
      return tfp_ext.optimizers.VOGN(
          learning_rate=0.01, beta_1=0.9, beta_2=0.999, prior_precision=PRIOR_PRECISION,
          num_examples=n, init_precision=max(init_precision, PRIOR_PRECISION), seed=seed)
    if self.method == "IVON":
      # β₂ so that h averages over ~10% of training (see IVON's docstring on short runs).
      return tfp_ext.optimizers.IVON(
          learning_rate=0.05, ess=n, weight_decay=PRIOR_PRECISION / n,
          hess_init=0.5 / noise_var, beta_2=1. - 10. / self.steps, seed=seed)
    raise ValueError(f"unknown method {self.method!r}")

  def _reset(self, split, noise_var):
    """Initial weights of `split` and a fresh optimizer state, without recompiling."""
    self.model.set_weights(self._fresh_model(split).get_weights())
    self.noise_var.assign(noise_var)
    if self.opt is None:
      self._compile(noise_var)  # The first fit builds the optimizer from these weights.
      return
    if self.method in ("MAP", "BBVI"):
      for v in self.opt.variables:
        v.assign(tf.zeros_like(v))  # Adam starts from zeros (iteration count included).
      return
    fresh = self._variational_optimizer(noise_var, self.seed)
    fresh.build(self.target.trainable_variables)  # μ from the new weights, slots at their start.
    if len(fresh.variables) != len(self.opt.variables):
      raise RuntimeError("optimizer state layout changed between splits")
    for v, f in zip(self.opt.variables, fresh.variables):
      v.assign(f)

  def fit(self, x, y, split, noise_var=1.0):
    """Trains from split `split`'s initial weights; the model then holds the posterior mean."""
    self._reset(split, noise_var)
    self.target.fit(x, y[:, None], batch_size=self.batch, epochs=EPOCHS, verbose=0,
                    shuffle=True)
    return all(np.isfinite(v.numpy()).all() for v in self.model.trainable_variables)

  def predict_samples(self, x, split):
    """[PRED_SAMPLES, B] predictions (standardized units)."""
    if self.method == "MAP":
      return self.model(x, training=False).numpy()[None, :, 0]
    if self.method == "BBVI":
      if self._forward is None:  # Each call of the traced forward pass draws new weights.
        self._forward = tf.function(lambda x: self.model(x, training=False))
      x = tf.constant(x)
      return np.stack([self._forward(x).numpy()[:, 0] for _ in range(PRED_SAMPLES)])
    return tfp_ext.posterior.predictive_samples(
        self.model, self.opt.posterior(self.model.trainable_variables), tf.constant(x),
        PRED_SAMPLES, seed=(split, 1)).numpy()[:, :, 0]


def heldout_noise_var(map_trainer: _Trainer, s: _datasets.UciSplit, split: int) -> float:
  """Held-out MSE (standardized units) of a maximum-likelihood fit on 80% of the training split."""
  n = len(s.x_train)
  perm = np.random.default_rng(split).permutation(n)
  k = int(round(HOLDOUT_FRACTION * n))
  val, fit = perm[:k], perm[k:]
  map_trainer.fit(s.x_train[fit], s.y_train[fit], split)
  resid = s.y_train[val] - map_trainer.predict_samples(s.x_train[val], split)[0]
  return max(float(np.mean(resid**2)), 1e-6)


def run_dataset(name: str, num_splits: int, seed: int = 0, budget: float = float("inf")):
  """Per-split results {method: [(rmse, log-lik)]}, the trainers, noise variances and timings.

  With a `budget` in seconds, no new split starts once it is spent (at least two splits run).
  """
  t_start = time.time()
  s0 = _datasets.load_uci(name, 0)
  n, d = s0.x_train.shape
  batch = batch_size(name)
  n_fit = n - int(round(HOLDOUT_FRACTION * n))
  map_trainer = _Trainer("MAP", d, n_fit, batch, seed)
  trainers = {m: _Trainer(m, d, n, batch, seed) for m in METHODS}
  results = {m: [] for m in METHODS}
  noise_vars, seconds = [], []
  method_seconds = {m: [] for m in ("MAP",) + METHODS}
  for split in range(num_splits):
    if split >= 2 and time.time() - t_start > budget:
      break
    t0 = time.time()
    tf_keras.utils.set_random_seed(split)  # Minibatch order.
    s = _datasets.load_uci(name, split)
    if s.x_train.shape != (n, d):
      raise ValueError(f"{name} split {split}: training set shape {s.x_train.shape} differs "
                       f"from split 0's {(n, d)}")
    t1 = time.time()
    noise_var = heldout_noise_var(map_trainer, s, split)
    method_seconds["MAP"].append(time.time() - t1)
    noise_vars.append(noise_var)
    noise_std_orig = math.sqrt(noise_var) * s.y_std
    for method, trainer in trainers.items():
      t1 = time.time()
      finite = trainer.fit(s.x_train, s.y_train, split, noise_var)
      preds = trainer.predict_samples(s.x_test, split) * s.y_std + s.y_mean if finite else None
      method_seconds[method].append(time.time() - t1)
      if not finite:
        results[method].append((float("nan"), float("nan")))  # Diverged: reported, not hidden.
        continue
      rmse = float(np.sqrt(np.mean((preds.mean(0) - s.y_test)**2)))
      ll = _datasets.gaussian_mixture_log_likelihood(preds, s.y_test, noise_std_orig)
      results[method].append((rmse, ll))
    seconds.append(time.time() - t0)
  return results, trainers, noise_vars, seconds, method_seconds


def main(quick: bool = False) -> None:
  """Prints test RMSE and log-likelihood (mean ± s.e. over splits) per dataset and method."""
  if quick:
    plan = {"yacht": 2, "bostonHousing": 2}
  else:
    plan = {name: _datasets.uci_num_splits(name) for name in ALL_DATASETS}
  run(plan)


def run(plan: dict, budgets: dict = None) -> None:
  """Runs the protocol on `plan` = {dataset name: number of splits}; one table per dataset.

  `budgets` = {dataset name: seconds} stops starting new splits of that dataset once its budget
  is spent; the table then says how many splits ran.
  """
  budgets = budgets or {}
  print(f"UCI regression, {HIDDEN} ReLU units, {EPOCHS} epochs, batch 32 (128 on {LARGE}), "
        f"lr {LEARNING_RATE}, prior precision {PRIOR_PRECISION}, noise variance from a 20% "
        f"held-out part of each training split, {PRED_SAMPLES} predictive samples; "
        f"splits: {plan}", flush=True)
  for name, num_splits in plan.items():
    t0 = time.time()
    results, trainers, noise_vars, seconds, method_seconds = run_dataset(
        name, num_splits, budget=budgets.get(name, float("inf")))
    num_splits = len(seconds)
    total = time.time() - t0
    finite = lambda rs, k: [r[k] for r in rs if np.isfinite(r[k])]
    base = _datasets.mean_and_stderr(finite(results["BBVI"], 0))[0]
    print(f"\n{name}: {num_splits} splits, {total:.0f} s ({np.mean(seconds[1:] or seconds):.1f} "
          f"s per split after the first, all methods); held-out noise std (standardized) "
          f"{np.mean(np.sqrt(noise_vars)):.3f}", flush=True)
    # Seconds per split of one method (training and prediction), the first split (compile) aside.
    per_split = {m: np.mean(t[1:] or t) for m, t in method_seconds.items()}
    print(f"noise-variance fit (MAP on 80%): {per_split['MAP']:.1f} s per split")
    print("| dataset | method | splits (finite/run) | test RMSE | test log-lik | RMSE / BBVI | "
          "s per split |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
      ok = len(finite(results[method], 0))
      if not ok:
        print(f"| {name} | {method} | 0/{num_splits} | diverged | diverged | — | "
              f"{per_split[method]:.1f} |")
        continue
      rmse = _datasets.mean_and_stderr(finite(results[method], 0))
      ll = _datasets.mean_and_stderr(finite(results[method], 1))
      print(f"| {name} | {method} | {ok}/{num_splits} | {rmse[0]:.3f} ± {rmse[1]:.3f} | "
            f"{ll[0]:.3f} ± {ll[1]:.3f} | {rmse[0] / base:.2f} | "
            f"{per_split[method]:.1f} |", flush=True)
