"""Offline datasets and the evaluation protocol shared by the UCI and Australian benchmarks.

Data live in `../shared/data` beside the checkout (see its README.md): the UCI regression sets
with the 20 train/test splits of Hernández-Lobato & Adams (2015), and LIBSVM's scaled Australian
credit set with one fixed split.

UCI protocol (Khan et al., 2018, following Gal & Ghahramani, 2016): standardize inputs and
targets on the training split; one hidden layer of 50 ReLU units; report test RMSE and test
log-likelihood in the original units as mean ± standard error over the splits.
"""

import dataclasses
import math
import pathlib

import numpy as np

DATA_ROOT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
UCI_DIR = DATA_ROOT / "uci"
AUSTRALIAN_DIR = DATA_ROOT / "classification" / "australian_presplit"

__all__ = ["DATA_ROOT", "UciSplit", "uci_names", "uci_num_splits", "load_uci", "load_australian",
           "load_digits_split", "gaussian_mixture_log_likelihood", "mean_and_stderr",
           "bernoulli_metrics", "one_hidden_layer_mlp"]


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: the benchmarks read the datasets from "
                            f"{DATA_ROOT} (see its README.md).")
  return path


@dataclasses.dataclass
class UciSplit:
  """One standardized train/test split; `y_mean`/`y_std` map predictions back to original units."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray  # original units
  y_mean: float
  y_std: float


def uci_names() -> list:
  """The UCI datasets present in `../shared/data/uci`."""
  return sorted(p.name for p in _require(UCI_DIR).iterdir() if (p / "data.txt").exists())


def _read_int(path):
  return int(np.loadtxt(path))


def uci_num_splits(name: str) -> int:
  return _read_int(_require(UCI_DIR / name / "n_splits.txt"))


def load_uci(name: str, split: int) -> UciSplit:
  """Split `split` of dataset `name`, standardized with the training split's statistics."""
  d = _require(UCI_DIR / name)
  data = np.loadtxt(d / "data.txt")
  features = np.loadtxt(d / "index_features.txt", dtype=int).reshape(-1)
  target = int(np.loadtxt(d / "index_target.txt", dtype=int))
  train = np.loadtxt(d / f"index_train_{split}.txt", dtype=int)
  test = np.loadtxt(d / f"index_test_{split}.txt", dtype=int)
  x, y = data[:, features], data[:, target]
  x_mean, x_std = x[train].mean(0), x[train].std(0)
  x_std[x_std == 0] = 1.  # Constant columns (e.g. in naval) stay constant.
  y_mean, y_std = float(y[train].mean()), float(y[train].std())
  f32 = lambda a: a.astype(np.float32)
  return UciSplit(x_train=f32((x[train] - x_mean) / x_std),
                  y_train=f32((y[train] - y_mean) / y_std),
                  x_test=f32((x[test] - x_mean) / x_std), y_test=y[test].astype(np.float64),
                  y_mean=y_mean, y_std=y_std)


def load_digits_split():
  """scikit-learn's 8×8 digits as notebook 02 splits them: (x_train, y_train, x_test, y_test).

  Pixels scaled to [0, 1] (float32), int32 labels; a fixed shuffle, the first two thirds
  (1,198 examples) for training and the rest (599) for testing.
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  x = (digits.data / 16.).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(x))
  cut = 2 * len(x) // 3
  return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def load_australian():
  """(x_train, y_train, x_test, y_test): float32 features in [-1, 1], labels in {0, 1}."""
  d = _require(AUSTRALIAN_DIR)
  read = lambda part: np.loadtxt(d / f"australian_scale_{part}.csv", delimiter=None)
  x_tr, y_tr, x_te, y_te = (read(p) for p in ("X_tr", "y_tr", "X_te", "y_te"))
  labels = lambda y: (y.reshape(-1) > 0).astype(np.float32)  # LIBSVM's ±1 or 0/1 labels.
  return x_tr.astype(np.float32), labels(y_tr), x_te.astype(np.float32), labels(y_te)


def gaussian_mixture_log_likelihood(pred_samples, y, noise_std):
  """Average over test points of log (1/S) Σ_s N(y | pred_s, noise_std²); pred_samples [S, B]."""
  pred_samples = np.asarray(pred_samples, np.float64)
  s = pred_samples.shape[0]
  log_norm = (-0.5 * np.square((y[None] - pred_samples) / noise_std)
              - np.log(noise_std) - 0.5 * math.log(2 * math.pi))
  m = log_norm.max(0)
  return float(np.mean(m + np.log(np.exp(log_norm - m).sum(0)) - math.log(s)))


def bernoulli_metrics(prob, y):
  """(accuracy, log-loss) of predicted probabilities P(y = 1) against labels in {0, 1}."""
  prob = np.clip(np.asarray(prob, np.float64).reshape(-1), 1e-12, 1 - 1e-12)
  y = np.asarray(y).reshape(-1)
  acc = float(np.mean((prob > 0.5) == (y > 0.5)))
  log_loss = float(-np.mean(y * np.log(prob) + (1 - y) * np.log1p(-prob)))
  return acc, log_loss


def mean_and_stderr(values):
  """(mean, standard error of the mean) of a list of per-split results."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def one_hidden_layer_mlp(d: int, hidden: int, seed: int):
  """The protocol's network: `d` inputs, one hidden layer of `hidden` ReLU units, one output.

  Initial weights are seeded, so every method of a split starts from the same network.
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=seed * 10 + k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(hidden, activation="relu", input_shape=(d,), kernel_initializer=init(1)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2))])
