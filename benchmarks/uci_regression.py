"""UCI regression protocol of Khan et al. (2018): Vadam, VOGN, IVON and BBVI (DenseFlipout).

For each dataset and split: inputs and targets standardized on the training split; a 50-unit ReLU
MLP; prior N(0, 1) on every weight; batch 32 for the dataset's `n_epochs`; predictions from 100
posterior samples. Test RMSE and test log-likelihood in the original units, mean ± standard error
over the splits. The Gaussian noise variance of the likelihood is set per split, identically for
every method, to the training mean squared residual of a MAP fit (Adam, same network and
epochs), floored at 10⁻³ (standardized units): an empirical-Bayes choice, since the protocol's
published runs tuned it by other means.
"""

import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_ext
from benchmarks import _datasets

BATCH_SIZE = 32
HIDDEN = 50
PRED_SAMPLES = 100
METHODS = ("BBVI", "Vadam", "VOGN", "IVON")


def _flipout_mlp(d, n, seed):
  kl = lambda q, p, _: tfp.distributions.kl_divergence(q, p) / n
  return tf_keras.Sequential([
      tfp.layers.DenseFlipout(HIDDEN, activation="relu", input_shape=(d,), seed=seed,
                              kernel_divergence_fn=kl, bias_divergence_fn=kl),
      tfp.layers.DenseFlipout(1, seed=seed + 1, kernel_divergence_fn=kl, bias_divergence_fn=kl)])


def _nll(noise_var):
  return lambda y, f: 0.5 * tf.reduce_sum(tf.square(y - f), -1) / noise_var


def _fit(model, x, y, epochs, seed):
  model.fit(x, y[:, None], batch_size=BATCH_SIZE, epochs=epochs, verbose=0, shuffle=True)


def _variational(method, d, n, noise_var, epochs, seed):
  model = _datasets.one_hidden_layer_mlp(d, HIDDEN, seed)
  steps = epochs * (n // BATCH_SIZE + 1)
  # Starting at the prior's width (σ = 1) drowns a 50-unit layer in weight noise; every method
  # starts at the same precision instead, N·c/σₙ² with c = 0.5 the order of a standardized
  # network's mean diagonal Gauss-Newton (scale-consistent with the likelihood σₙ²).
  init_precision = 0.5 * n / noise_var
  if method == "Vadam":
    opt = tfp_ext.optimizers.Vadam(learning_rate=1e-3, prior_precision=1.0, num_examples=n,
                                   init_precision=init_precision, seed=seed)
    target = model
  elif method == "VOGN":
    opt = tfp_ext.optimizers.VOGN(learning_rate=0.01, beta_1=0.9, beta_2=0.999,
                                  prior_precision=1.0, num_examples=n,
                                  init_precision=init_precision, seed=seed)
    target = tfp_ext.keras.VariationalModel(model)
  else:
    # β₂ so that h averages over ~10% of training (see IVON's docstring on short runs).
    opt = tfp_ext.optimizers.IVON(learning_rate=0.05, ess=n, weight_decay=1.0 / n,
                                  hess_init=0.5 / noise_var, beta_2=1. - 10. / steps,
                                  seed=seed)
    target = model
  target.compile(optimizer=opt, loss=_nll(noise_var), jit_compile=True)
  return model, target, opt


def run_split(name, split, epochs, seed=0):
  """{method: (rmse, test log-likelihood)} for one split."""
  s = _datasets.load_uci(name, split)
  n, d = s.x_train.shape
  tf_keras.utils.set_random_seed(seed)
  # Noise variance for every method: a MAP fit's training residual variance.
  map_model = _datasets.one_hidden_layer_mlp(d, HIDDEN, seed)
  map_model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse", jit_compile=True)
  _fit(map_model, s.x_train, s.y_train, epochs, seed)
  resid = s.y_train - map_model.predict(s.x_train, verbose=0)[:, 0]
  noise_var = max(float(np.mean(resid**2)), 1e-3)
  noise_std_orig = np.sqrt(noise_var) * s.y_std
  out = {}
  for method in METHODS:
    if method == "BBVI":
      model = _flipout_mlp(d, n, seed)
      model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss=_nll(noise_var))
      _fit(model, s.x_train, s.y_train, epochs, seed)
      preds = np.stack([model(s.x_test, training=False).numpy()[:, 0]
                        for _ in range(PRED_SAMPLES)])
    else:
      model, target, opt = _variational(method, d, n, noise_var, epochs, seed)
      _fit(target, s.x_train, s.y_train, epochs, seed)
      if not all(np.isfinite(v.numpy()).all() for v in model.trainable_variables):
        out[method] = (float("nan"), float("nan"))  # Diverged: reported, not hidden.
        continue
      preds = tfp_ext.posterior.predictive_samples(
          model, opt.posterior(model.trainable_variables), tf.constant(s.x_test),
          PRED_SAMPLES, seed=(seed, 1)).numpy()[:, :, 0]
    preds = preds * s.y_std + s.y_mean
    rmse = float(np.sqrt(np.mean((preds.mean(0) - s.y_test)**2)))
    ll = _datasets.gaussian_mixture_log_likelihood(preds, s.y_test, noise_std_orig)
    out[method] = (rmse, ll)
  return out


def main(quick: bool = False) -> None:
  """Prints test RMSE and log-likelihood (mean ± s.e. over splits) per dataset and method."""
  if quick:
    plan = {"bostonHousing": 2, "yacht": 2}
  else:
    plan = {name: _datasets.uci_num_splits(name) for name in ("bostonHousing", "concrete",
                                                                "energy", "yacht")}
  run(plan)


def run(plan: dict) -> None:
  """Runs the protocol on `plan` = {dataset name: number of splits} and prints the table."""
  print(f"UCI regression, {HIDDEN} ReLU units, batch {BATCH_SIZE}, epochs from n_epochs.txt, "
        f"{PRED_SAMPLES} predictive samples; splits: {plan}")
  print(f"| dataset | splits (finite/run) | method | test RMSE | test log-lik | RMSE / BBVI | seconds |")
  print("|---|---|---|---|---|---|---|")
  for name, num_splits in plan.items():
    epochs = int(np.loadtxt(_datasets.UCI_DIR / name / "n_epochs.txt"))
    results = {m: [] for m in METHODS}
    t0 = time.time()
    for split in range(num_splits):
      for method, r in run_split(name, split, epochs, seed=split).items():
        results[method].append(r)
    seconds = time.time() - t0
    finite = lambda rs, k: [r[k] for r in rs if np.isfinite(r[k])]
    base = _datasets.mean_and_stderr(finite(results["BBVI"], 0))[0]
    for method in METHODS:
      ok = len(finite(results[method], 0))
      if not ok:
        print(f"| {name} | 0/{num_splits} | {method} | diverged | diverged | — | {seconds:.0f} |")
        continue
      rmse = _datasets.mean_and_stderr(finite(results[method], 0))
      ll = _datasets.mean_and_stderr(finite(results[method], 1))
      print(f"| {name} | {ok}/{num_splits} | {method} | {rmse[0]:.3f} ± {rmse[1]:.3f} | "
            f"{ll[0]:.3f} ± {ll[1]:.3f} | {rmse[0] / base:.2f} | {seconds:.0f} (all methods) |",
            flush=True)
