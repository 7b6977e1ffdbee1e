"""Permutation alignment of two variational runs: marginalized loss barriers before and after.

The experiment of Rossi, Singh & Hannagan (NeurIPS 2023) on a small scale: two independent runs
(different initialization and noise seeds) of the same MLP, 64-64-64-10 ReLU, on scikit-learn's
8×8 digits (1,198 training and 599 test examples, the split of notebook 02), 20 epochs of batch
64, trained with IVON (cosine-decayed α from 0.1) and with Vadam (cosine-decayed α from 0.03),
both with prior precision 30 on every weight (prior sd 0.18; with precision 1 both runs' σ stay
near 0.5 and the predictive is at 0.7-0.9 test error). For each pair, three versions of q_b:

* as trained (no alignment),
* weight matching of the two posterior means alone (Git Re-Basin, Ainsworth et al., 2023:
  `align(..., cost="means")`),
* the paper's alignment, the 2-Wasserstein distance of the mean-field Gaussians (`align`).

Printed per version: W₂² between q_a and q_b, the marginalized loss barrier on the test set
(the predictive's NLL along the Wasserstein interpolation, 11 points, S Monte Carlo draws, with
its standard error), and the test error / NLL of the predictive at t = ½ next to the endpoints'.
The curves go to `benchmarks/permutation_alignment.png`.

Served ensembles: the midpoint posterior q_½ of the aligned and of the unaligned pair is exported
with `tfp_ext.serving.export` and its `serving_default` signature is run on the test set (as a
server would); printed: test error, NLL and expected calibration error (15 equal-width bins of the
top-class probability), next to q_a alone and the two runs' mixture (half the samples from each).
"""

import os
import pathlib
import tempfile
import time

import numpy as np

from benchmarks._datasets import load_digits_split

EPOCHS, BATCH, NUM_SAMPLES, NUM_POINTS, PRIOR_PRECISION, VADAM_RATE = 20, 64, 32, 11, 30.0, 0.03
PLOT = pathlib.Path(__file__).resolve().parent / "permutation_alignment.png"


def _model(seed, d, width):
  import tf_keras  # pylint: disable=g-import-not-at-top
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=seed * 10 + k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(width, activation="relu", input_shape=(d,), kernel_initializer=init(1)),
      tf_keras.layers.Dense(width, activation="relu", kernel_initializer=init(2)),
      tf_keras.layers.Dense(10, kernel_initializer=init(3))])


def _train(method, seed, data, epochs, width, prior_precision=PRIOR_PRECISION):
  """One run; returns (model, posterior)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  x_train, y_train = data[0], data[1]
  n, d = x_train.shape
  steps = epochs * (n // BATCH + 1)
  tf_keras.utils.set_random_seed(seed)
  model = _model(seed, d, width)
  if method == "IVON":
    rate = tf_keras.optimizers.schedules.CosineDecay(0.1, decay_steps=steps)
    opt = tfp_ext.optimizers.IVON(learning_rate=rate, ess=n, weight_decay=prior_precision / n,
                                  hess_init=0.1, beta_2=1 - 10 / steps, seed=seed)
  else:
    rate = tf_keras.optimizers.schedules.CosineDecay(VADAM_RATE, decay_steps=steps)
    opt = tfp_ext.optimizers.Vadam(learning_rate=rate, beta_1=0.9, beta_2=0.995,
                                   prior_precision=prior_precision, num_examples=n, seed=seed)
  model.compile(optimizer=opt, loss=tf_keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), jit_compile=True)
  model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0)
  return model, opt.posterior()


def _metrics(probs, y):
  """Test error, NLL and 15-bin expected calibration error of predictive probabilities."""
  conf, pred = probs.max(1), probs.argmax(1)
  nll = float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))
  bins = np.minimum((conf * 15).astype(int), 14)
  ece = sum(abs(np.mean(pred[bins == b] == y[bins == b]) - np.mean(conf[bins == b]))
            * np.mean(bins == b) for b in range(15) if np.any(bins == b))
  return float(np.mean(pred != y)), nll, float(ece)


def _served(model, posterior, x, directory):
  """The classification predictive of an export, run through its `serving_default` signature."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  path = tfp_ext.serving.export(model, posterior, directory, num_samples=NUM_SAMPLES,
                                task="classification", seed=0)
  signature = tf.saved_model.load(path).signatures["serving_default"]
  return signature(x=tf.constant(x))["mean"].numpy()


def main(quick: bool = False) -> None:
  """Prints the barrier table and the served-ensemble table; writes the plot."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  import tfp_ext  # pylint: disable=g-import-not-at-top
  from tfp_ext import posterior as tpp  # pylint: disable=g-import-not-at-top

  data = load_digits_split()
  x_test, y_test = data[2], data[3]
  epochs, width = (5, 32) if quick else (EPOCHS, 64)
  nll = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  print(f"digits: {len(data[0])} train / {len(x_test)} test; MLP 64-{width}-{width}-10 ReLU; "
        f"{epochs} epochs of batch {BATCH}; barrier on the test set, {NUM_POINTS} points, "
        f"S = {NUM_SAMPLES} draws (common to all t); oneDNN "
        f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}\n")
  print("| method | q_b | W₂²(q_a, q_b) | sweeps | barrier ± SE (nats) | argmax t | "
        "error t=0 / ½ / 1 | NLL t=0 / ½ / 1 | align s |")
  print("|---|---|---|---|---|---|---|---|---|")
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
  served_rows = []
  for col, method in enumerate(("IVON", "Vadam")):
    start = time.perf_counter()
    model, q_a = _train(method, 1, data, epochs, width)
    _, q_b = _train(method, 2, data, epochs, width)
    train_s = time.perf_counter() - start

    @tf.function(autograph=False)
    def mean_probs(weights, model=model):  # traced once per model, reused for every t
      logits = tf.vectorized_map(lambda w: tpp.functional_call(model, w, x_test), weights)
      return tf.reduce_mean(tf.nn.softmax(logits), axis=0)

    versions = {"unaligned": (q_b, None, 0.)}
    for label, cost in (("weight matching (means)", "means"), ("Wasserstein (paper)",
                                                                "wasserstein")):
      start = time.perf_counter()
      perm = tpp.align(model, q_a, q_b, cost=cost)
      versions[label] = (perm.apply(q_b), perm.report, time.perf_counter() - start)
    for label, (q, report, align_s) in versions.items():
      out = tpp.marginalized_loss_barrier(model, q_a, q, (x_test, y_test), nll,
                                          num_points=NUM_POINTS, num_samples=NUM_SAMPLES, seed=0)
      errors = []
      for t in out.t:
        probs = mean_probs(tpp.interpolate(q_a, q, float(t)).sample(NUM_SAMPLES, seed=0))
        errors.append(float(np.mean(np.argmax(probs, 1) != y_test)))
      mid = len(out.t) // 2
      sweeps = "-" if report is None else f"{report.num_sweeps}{'' if report.converged else '*'}"
      print(f"| {method} | {label} | {tpp.squared_wasserstein_distance(q_a, q):.1f} | {sweeps} | "
            f"{out.barrier:.3f} ± {out.stderr:.3f} | {out.t[int(np.argmax(out.curve))]:.1f} | "
            f"{errors[0]:.3f} / {errors[mid]:.3f} / {errors[-1]:.3f} | "
            f"{out.losses[0]:.3f} / {out.losses[mid]:.3f} / {out.losses[-1]:.3f} | "
            f"{align_s:.2f} |")
      axes[0, col].errorbar(out.t, out.losses, yerr=out.losses_stderr, label=label, capsize=2)
      axes[1, col].plot(out.t, errors, "o-", label=label)
    axes[0, col].set_title(f"{method} (two runs, {train_s:.0f} s)")
    axes[0, col].set_ylabel("test NLL of the predictive of q_t")
    axes[1, col].set_ylabel("test error")
    axes[1, col].set_xlabel("t")
    axes[0, col].legend(fontsize=8)
    with tempfile.TemporaryDirectory() as tmp:
      q_al = versions["Wasserstein (paper)"][0]
      mixture = tpp.SampleEnsemble([tf.concat([a, b], 0) for a, b in zip(
          q_a.sample(NUM_SAMPLES // 2, seed=1), q_al.sample(NUM_SAMPLES // 2, seed=2))])
      for label, q in (("q_a", q_a),
                       ("q_½, unaligned", tpp.interpolate(q_a, q_b, 0.5)),
                       ("q_½, aligned (Wasserstein)", tpp.interpolate(q_a, q_al, 0.5)),
                       ("mixture of q_a and q_b (ensemble of two runs)", mixture)):
        probs = _served(model, q, x_test, os.path.join(tmp, str(len(served_rows))))
        served_rows.append((method, label) + _metrics(probs, y_test))
  fig.tight_layout()
  fig.savefig(PLOT, dpi=80)
  print(f"\n(* = stopped at the sweep cap.) Plot: {PLOT.name}\n")
  print(f"Served through `tfp_ext.serving.export` (S = {NUM_SAMPLES}), test set:\n")
  print("| method | posterior | error | NLL | ECE (15 bins) |")
  print("|---|---|---|---|---|")
  for method, label, err, loss, ece in served_rows:
    print(f"| {method} | {label} | {err:.3f} | {loss:.3f} | {ece:.3f} |")
