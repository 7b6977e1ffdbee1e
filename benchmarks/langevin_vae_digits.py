"""The Langevin VAE vs the tempered HVAE on binarized digits (Wang & Delingette's experiment, small).

The paper compares the Langevin VAE with the HVAE on binarized MNIST by test NLL, gradient
evaluations and memory. Offline and on 2 CPU cores this runs it at small scale on
scikit-learn's 8x8 digits, binarized at 0.5 (first 1,500 images to train, the other 297 to
test): the same encoder and decoder (64 softplus units, latent size 4, Bernoulli likelihood) and
the same number of steps K under `tfp_ext.keras.LangevinVAE` and `tfp_ext.keras.HamiltonianVAE`
(fixed tempering), Adam 1e-3, batch 100, `jit_compile=True`. Reported per model:

The Langevin VAE runs with the paper's injected noise and without it (the deterministic flow).

* test NLL by importance sampling (S = 500 samples of the model's own flow) and test -ELBO;
* decoder evaluations per ELBO, counted eagerly: the Langevin flow differentiates the target
  once per step, the leapfrog K + 1 times, and both evaluate it once more at z_K;
* training time per step (median over epochs after the compiling one).

Peak memory per step is not measured: TF exposes no allocator statistics on CPU.
"""

import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_ext.keras import HamiltonianVAE, LangevinVAE

LATENT, HIDDEN, BATCH = 4, 64, 100


class _Counting(tf_keras.layers.Dense):
  calls = 0

  def call(self, inputs):
    _Counting.calls += 1
    return super().call(inputs)


def _data():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  images = (load_digits().data / 16. > 0.5).astype(np.float32)
  return images[:1500], images[1500:]


def _make(cls, k, counting=False, **kwargs):
  tf_keras.utils.set_random_seed(0)
  dense = _Counting if counting else tf_keras.layers.Dense
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(HIDDEN, "softplus"),
                                 tf_keras.layers.Dense(2 * LATENT)])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(HIDDEN, "softplus"), dense(64)])
  return cls(encoder, decoder, LATENT, num_steps=k, initial_step_size=0.05, seed=1, **kwargs)


def _decoder_calls(cls, k, x):
  model = _make(cls, k, counting=True)
  model.elbo(x[:8], num_samples=2, seed=1)  # Builds (Sequential traces once more).
  _Counting.calls = 0
  model.elbo(x[:8], num_samples=2, seed=1)
  return _Counting.calls


def report(k, epochs):
  x_train, x_test = _data()
  print(f"8x8 digits, train {len(x_train)}, test {len(x_test)}, K = {k}, {epochs} epochs, "
        f"latent {LATENT}, hidden {HIDDEN}, Adam 1e-3, batch {BATCH}, XLA", flush=True)
  rows = []
  variants = (("Langevin VAE", LangevinVAE, {}),
              ("Langevin VAE, no noise", LangevinVAE, {"stochastic": False}),
              ("HVAE-T", HamiltonianVAE, {}))
  for name, cls, kwargs in variants:
    model = _make(cls, k, **kwargs)
    model.compile(tf_keras.optimizers.Adam(1e-3), jit_compile=True)
    times = []

    class _Timer(tf_keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

      def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t0)

    model.fit(x_train, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=[_Timer()])
    steps = int(np.ceil(len(x_train) / BATCH))
    ms_per_step = 1e3 * np.median(times[1:]) / steps
    nll = model.importance_sampled_nll(x_test, num_samples=500, seed=7, batch_size=100)
    e = model.elbo(x_test, num_samples=50, seed=8)
    se = np.sqrt(np.sum(e.standard_error.numpy()**2)) / len(x_test)
    rows.append((name, float(np.mean(nll)), float(-np.mean(e.elbo)), se,
                 _decoder_calls(cls, k, x_train), ms_per_step, times[0]))
    print(f"  {name}: done, first epoch (compiling) {times[0]:.1f} s", flush=True)
  print("\n| model | test NLL (S=500) | test -ELBO (± s.e.) | decoder calls per ELBO | "
        "ms per training step |\n|---|---|---|---|---|")
  for name, nll, neg_elbo, se, calls, ms, _ in rows:
    print(f"| {name} | {nll:.3f} | {neg_elbo:.3f} ± {se:.3f} | {calls} | {ms:.1f} |")


def main(quick: bool = False) -> None:
  report(5, 3 if quick else 100)


if __name__ == "__main__":
  main()
