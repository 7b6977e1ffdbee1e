"""`tfp-ext quickstart`: the whole path in one command, from Vadam training to a REST answer.

1. generate a 1-D regression data set with a gap in the inputs (uncertainty should grow there);
2. train a small Bayesian MLP with Vadam in `model.fit` (XLA-compiled);
3. export to `serving/models/quickstart/<version>` for TF Serving;
4. plot the served predictive mean ± 2 stddev with the data (`quickstart.png`);
5. check the export as `tensorflow_model_server` loads it (C++ loader, XLA disabled);
6. serve it locally over TF Serving's REST API, send one request and print the answer.
"""

import json
import os
import sys
import time
from typing import Optional

import numpy as np

from tfp_ext.internal.validation import check_int

__all__ = ["make_gap_data", "build_model", "run", "NOISE_STDDEV", "MODEL_NAME"]

NOISE_STDDEV = 0.1
MODEL_NAME = "quickstart"
_GAP = (-1.0, 1.0)


def make_gap_data(num_examples: int = 256, seed: int = 0):
  """A 1-D regression with no inputs in (-1, 1): y = sin(x) + N(0, 0.1²), x ∈ [-3, 3].

  Returns float32 arrays `x` `[N, 1]` and `y` `[N, 1]`; the same seed gives the same data.
  """
  if num_examples < 2:
    raise ValueError(f"num_examples must be >= 2, got {num_examples}.")
  rng = np.random.default_rng(seed)
  half = num_examples // 2
  x = np.concatenate([rng.uniform(-3.0, _GAP[0], half),
                      rng.uniform(_GAP[1], 3.0, num_examples - half)])
  y = np.sin(x) + NOISE_STDDEV * rng.standard_normal(num_examples)
  return x[:, None].astype(np.float32), y[:, None].astype(np.float32)


def build_model(hidden_units: int = 32, seed: int = 0):
  """A 1 → hidden → hidden → 1 tanh MLP (no regularizers: Vadam holds the prior)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  init = lambda i: tf_keras.initializers.GlorotUniform(seed=seed * 10 + i)
  return tf_keras.Sequential([
      tf_keras.Input((1,), name="x"),
      tf_keras.layers.Dense(hidden_units, activation="tanh", kernel_initializer=init(0)),
      tf_keras.layers.Dense(hidden_units, activation="tanh", kernel_initializer=init(1)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2)),
  ])


def _gaussian_nll(y_true, y_pred):
  # Per-example negative log-likelihood under N(f(x), σ²), up to a constant: Vadam needs the NLL
  # (averaged over the batch by Keras), not the MSE, for its posterior scale to be right.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return 0.5 * tf.reduce_sum(tf.square(y_true - y_pred), axis=-1) / NOISE_STDDEV**2


def _plot(path, x, y, grid, mean, stddev):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.axvspan(*_GAP, color="0.93", label="no training data")
  ax.fill_between(grid, mean - 2 * stddev, mean + 2 * stddev, color="C0", alpha=0.25,
                  label="mean ± 2 stddev")
  ax.plot(grid, mean, color="C0", label="predictive mean")
  ax.scatter(x[:, 0], y[:, 0], s=6, color="k", label="data")
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.set_title("Vadam posterior predictive (tfp-ext quickstart)")
  ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(output_dir: str = ".", epochs: Optional[int] = None, serve: bool = True,
        num_examples: int = 256, seed: int = 0, verbose: bool = True) -> dict:
  """Runs the quickstart; returns what it produced.

  Args:
    output_dir: where `quickstart.png` and `serving/models/quickstart/` are written.
    epochs: training epochs (default 150).
    serve: start the local server and send one REST request.
    num_examples: size of the generated data set.
    seed: seeds the data, the initial weights and Vadam's noise.
    verbose: print progress.

  Returns:
    A dict with `plot` (path), `export_dir`, `check` (the `CheckResult`), `grid`, `mean`,
    `stddev`, `epistemic_stddev` (the served predictive on a grid over [-4, 4]) and, when
    serving, `url`, `request`, `response`.
  """
  epochs = check_int("epochs", epochs, allow_none=True)
  epochs = 150 if epochs is None else epochs
  start = time.monotonic()

  def say(msg):
    if verbose:
      print(f"[{time.monotonic() - start:5.1f}s] {msg}", flush=True)

  say("Importing TensorFlow ...")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  import tfp_ext.optimizers  # pylint: disable=g-import-not-at-top
  import tfp_ext.serving  # pylint: disable=g-import-not-at-top

  x, y = make_gap_data(num_examples, seed)
  say(f"[1/6] Data: {len(x)} points of y = sin(x) + noise, none in {_GAP}.")

  tf_keras.utils.set_random_seed(seed)
  model = build_model(seed=seed)
  batch_size = 32
  steps = epochs * -(-len(x) // batch_size)
  # A decaying step size lets μ settle: with a constant one it keeps jittering around the optimum.
  learning_rate = tf_keras.optimizers.schedules.PolynomialDecay(0.03, steps, 0.001)
  opt = tfp_ext.optimizers.Vadam(learning_rate=learning_rate, prior_precision=1.0,
                                 num_examples=len(x), seed=seed)
  model.compile(optimizer=opt, loss=_gaussian_nll, jit_compile=True, steps_per_execution=8)

  class _Progress(tf_keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      if (epoch + 1) % max(1, epochs // 5) == 0 or epoch + 1 == epochs:
        say(f"      epoch {epoch + 1:4d}/{epochs}  loss {logs['loss']:9.3f}")

  say(f"[2/6] Training a {model.count_params()}-weight MLP with Vadam for {epochs} epochs "
      "(XLA) ...")
  model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
            callbacks=[_Progress()])
  posterior = opt.posterior()

  base = os.path.join(output_dir, "serving", "models", MODEL_NAME)
  export_dir = tfp_ext.serving.export(model, posterior, base, num_samples=32,
                                      task="regression", noise_stddev=NOISE_STDDEV, seed=seed)
  say(f"[3/6] Exported to {export_dir}")

  # The plot shows exactly what is served: the exported signature on a grid.
  served = tf.saved_model.load(export_dir).signatures["serving_default"]
  grid = np.linspace(-4.0, 4.0, 161, dtype=np.float32)
  pred = served(x=tf.constant(grid[:, None]))
  mean, stddev = pred["mean"].numpy()[:, 0], pred["stddev"].numpy()[:, 0]
  plot = os.path.join(output_dir, "quickstart.png")
  os.makedirs(output_dir, exist_ok=True)
  _plot(plot, x, y, grid, mean, stddev)
  in_gap = np.abs(grid) < 0.5
  on_data = (np.abs(grid) > 1.5) & (np.abs(grid) < 2.5)
  say(f"[4/6] Wrote {plot}: predictive stddev {stddev[on_data].mean():.3f} on the data, "
      f"{stddev[in_gap].mean():.3f} in the gap.")

  say("[5/6] Checking the export as tensorflow_model_server loads it ...")
  result = tfp_ext.serving.check(export_dir)
  if verbose:
    print(result.summary(), flush=True)
  if not result.ok:
    raise RuntimeError(f"The export failed the serving check:\n{result.summary()}")
  out = {"plot": plot, "export_dir": export_dir, "check": result, "grid": grid, "mean": mean,
         "stddev": stddev, "epistemic_stddev": pred["epistemic_stddev"].numpy()[:, 0]}
  if not serve:
    say("Done.")
    return out

  request = {"instances": [[-2.0], [0.0], [2.0]]}
  with tfp_ext.serving.Server({MODEL_NAME: base}, port=0) as server:
    url = f"{server.url}/v1/models/{MODEL_NAME}:predict"
    say(f"[6/6] Serving on {server.url}; POST {url}")
    if verbose:
      print(f"      curl -d '{json.dumps(request)}' {url}", flush=True)
    response = tfp_ext.serving.Client(server.url, MODEL_NAME).predict_json(request)
  if verbose:
    print(json.dumps(response, indent=1), flush=True)
    print(f"Serve it yourself: tfp-ext serve --model_name={MODEL_NAME} "
          f"--model_base_path={os.path.abspath(base)} --rest_api_port=8501", flush=True)
  say("Done.")
  out.update(url=url, request=request, response=response)
  return out


if __name__ == "__main__":
  run(*sys.argv[1:2])
