"""Sylvester flows: bijector throughput, and a flow-VAE comparison on binarized digits.

Part 1 (throughput): forward + log-det of one flow layer on a batch of latent vectors, XLA
compiled, in samples per second, as a ratio to `tfb.MaskedAutoregressiveFlow` (MADE sized to a
similar parameter count) measured in the same run; Pyro's `Sylvester` (Householder-Sylvester,
PyTorch CPU) in the same table when torch and pyro-ppl are importable.

Part 2 (flow VAE): scikit-learn's 8x8 digits binarized at 8/16, a fixed 1500/297 train/test
split, one encoder/decoder architecture and training budget for the plain Gaussian VAE and the
planar, IAF, O-, H- and T-Sylvester posteriors (`tfp_ext.vi.FlowVAE`, `model.fit` with XLA).
Test -ELBO and importance-sampled NLL (500 samples per test image, the same draws for both),
in nats; differences against the Gaussian VAE with the paired standard error over test images.
"""

import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext import bijectors as tfpeb
from tfp_ext.vi import FlowVAE

tfb = tfp.bijectors

# -- part 1: throughput ---------------------------------------------------------------------------


def _num_params(tensors):
  return int(sum(np.prod(t.shape) for t in tensors))


def _tf_rate(bij, params, x, reps):
  """Samples/s of forward + fldj under XLA (the median of `reps` timed calls)."""
  def run(x):
    x = x + 0.  # as for Pyro (whose transforms cache by input object): the same work per call
    return bij.forward(x), bij.forward_log_det_jacobian(x, event_ndims=1)
  fn = tf.function(run, jit_compile=True)
  for _ in range(3):
    [t.numpy() for t in fn(x)]
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    [t.numpy() for t in fn(x)]
    times.append(time.perf_counter() - t0)
  return x.shape[0] / float(np.median(times)), _num_params(params)


def _pyro_rate(d, n, reps):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from pyro.distributions.transforms import Sylvester  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(2)
  flow = Sylvester(d, count_transforms=1)
  x = torch.randn(n, d)
  with torch.no_grad():
    def run():
      xi = x + 0.  # a new tensor: Pyro's transforms return a cached result for the same `x`
      y = flow(xi)
      return flow.log_abs_det_jacobian(xi, y)
    for _ in range(3):
      run()
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      run()
      times.append(time.perf_counter() - t0)
  params = sum(p.numel() for p in flow.parameters())
  return n / float(np.median(times)), int(params)


def throughput(quick):
  d, n = 32, 4096 if not quick else 512
  reps = 30 if not quick else 5
  rng = np.random.RandomState(0)
  p = lambda *shape: tf.constant(0.3 * rng.randn(*shape), tf.float32)
  x = p(n, d)
  rows = []
  made_hidden = 21  # 3 * 32 * 21 + 21 + 64 = 2101 weights ~ 2112 of a D x D Sylvester layer
  made = tfb.AutoregressiveNetwork(params=2, event_shape=[d], hidden_units=[made_hidden])
  made.build([None, d])
  maf = tfb.MaskedAutoregressiveFlow(made)
  rows.append(("MaskedAutoregressiveFlow (IAF direction: inverse)",)
              + _tf_rate(tfb.Invert(maf), made.trainable_variables, x, reps))
  planar = [p(d), p(d), p(1)[0]]
  rows.append(("Planar",) + _tf_rate(tfpeb.Planar(*planar), planar, x, reps))
  m = d // 2
  orth = [p(d, m), p(m, m), p(m, m), p(m)]
  rows.append((f"OrthogonalSylvester (M={m})",)
              + _tf_rate(tfpeb.OrthogonalSylvester(*orth), orth, x, reps))
  house = [p(1, d), p(d, d), p(d, d), p(d)]
  rows.append(("HouseholderSylvester (H=1)",)
              + _tf_rate(tfpeb.HouseholderSylvester(*house), house, x, reps))
  tri = [p(d, d), p(d, d), p(d)]
  rows.append(("TriangularSylvester",) + _tf_rate(tfpeb.TriangularSylvester(*tri), tri, x, reps))
  pyro = _pyro_rate(d, n, reps)
  if pyro is None:
    print("(Pyro's Sylvester skipped: torch / pyro-ppl not importable)")
  else:
    rows.append(("Pyro Sylvester (H=1, PyTorch CPU, eager)",) + pyro)
  base = rows[0][1]
  print(f"\nForward + log-det, one layer, D={d}, batch {n}, float32, median of {reps} calls")
  print("| flow | parameters | samples/s | ratio vs MAF |")
  print("|---|---:|---:|---:|")
  for name, rate, params in rows:
    print(f"| {name} | {params} | {rate:,.0f} | {rate / base:.2f} |")


# -- part 2: flow VAE on digits -------------------------------------------------------------------


def load_binarized_digits():
  """Binarized 8x8 digits (pixel > 8 of 16), a fixed shuffled 1500 / 297 train / test split."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  x = (load_digits().data > 8.).astype(np.float32)
  perm = np.random.RandomState(0).permutation(len(x))
  return x[perm[:1500]], x[perm[1500:]]


def make_vae(posterior, latent_size=8, num_flows=4, hidden=128, seed=0, kl_warmup_steps=1000):
  """The benchmark's VAE: two-hidden-layer MLP encoder and decoder (ReLU), Bernoulli pixels."""
  tf_keras.utils.set_random_seed(seed)
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(hidden, "relu"),
                                 tf_keras.layers.Dense(hidden, "relu")], name="encoder")
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(hidden, "relu"),
                                 tf_keras.layers.Dense(hidden, "relu"),
                                 tf_keras.layers.Dense(64)], name="decoder")
  return FlowVAE(encoder, decoder, latent_size=latent_size, posterior=posterior,
                 num_flows=num_flows, num_columns=latent_size // 2, num_householder=2,
                 iaf_hidden_units=(64,), kl_warmup_steps=kl_warmup_steps, seed=seed)


def evaluate(model, x, num_samples, seed=1, batch_size=100):
  """Per-image (-ELBO, NLL) from the same `num_samples` importance draws."""
  nelbo, nll = [], []
  for i in range(0, len(x), batch_size):
    lw, _, _ = model.log_weights(x[i:i + batch_size], num_samples, seed=(seed, i))
    nelbo.append(-tf.reduce_mean(lw, 0).numpy())
    nll.append(-(tf.reduce_logsumexp(lw, 0) - math.log(num_samples)).numpy())
  return np.concatenate(nelbo), np.concatenate(nll)


def flow_vae(quick):
  x_train, x_test = load_binarized_digits()
  epochs = 40 if not quick else 3
  num_samples = 500 if not quick else 50
  results = {}
  for posterior in ("gaussian", "planar", "iaf", "orthogonal", "householder", "triangular"):
    model = make_vae(posterior, kl_warmup_steps=1000 if not quick else 10)
    model.compile(tf_keras.optimizers.Adam(1e-3), jit_compile=True)
    t0 = time.perf_counter()
    model.fit(x_train, epochs=epochs, batch_size=100, verbose=0)
    train_s = time.perf_counter() - t0
    nelbo, nll = evaluate(model, x_test, num_samples)
    params = _num_params(model.trainable_variables)
    results[posterior] = (nelbo, nll, train_s, params)
    print(f"  trained {posterior}: {train_s:.0f}s", flush=True)
  base_elbo, base_nll = results["gaussian"][:2]
  se = lambda v: v.std(ddof=1) / math.sqrt(len(v))
  print(f"\nBinarized digits, latent 8, K=4 flow layers, {epochs} epochs of batch 100, Adam 1e-3, "
        f"KL warm-up; test set {len(x_test)} images, {num_samples} importance samples")
  print("| posterior | parameters | train s | test -ELBO | test NLL | NLL - VAE NLL (paired) |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, (nelbo, nll, train_s, params) in results.items():
    diff = nll - base_nll
    print(f"| {name} | {params} | {train_s:.0f} | {nelbo.mean():.2f} ± {se(nelbo):.2f} | "
          f"{nll.mean():.2f} ± {se(nll):.2f} | {diff.mean():+.3f} ± {se(diff):.3f} |")
  del base_elbo


def main(quick: bool = False) -> None:
  """Prints the throughput table and the flow-VAE table."""
  throughput(quick)
  flow_vae(quick)
