"""Exports shared by the serving tests: built once per session (exports and servers are slow)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.posterior import MeanFieldGaussian
from tfp_ext.posterior import SampleEnsemble
from tfp_ext.serving import Server
from tfp_ext.serving.metrics import MonitoringConfig
from tfp_ext.serving import export

REG_NOISE = 0.1
REG_SAMPLES = 16


def mlp(in_dim, hidden, out_dim, seed):
  """A small tanh MLP with seeded initial weights."""
  init = lambda i: tf_keras.initializers.GlorotUniform(seed=seed + i)
  return tf_keras.Sequential([
      tf_keras.Input((in_dim,)),
      tf_keras.layers.Dense(hidden, activation="tanh", kernel_initializer=init(0),
                            bias_initializer=tf_keras.initializers.RandomNormal(seed=seed + 9)),
      tf_keras.layers.Dense(out_dim, kernel_initializer=init(1)),
  ])


def mean_field(model, scale):
  """A MeanFieldGaussian centred on the model's weights with one scale for every weight."""
  weights = [v.numpy() for v in model.trainable_variables]
  return MeanFieldGaussian(weights, [np.full(w.shape, scale, w.dtype) for w in weights])


class Exported:
  """A model, its posterior and where it was exported."""

  def __init__(self, model, posterior, base, path):
    self.model, self.posterior, self.base, self.path = model, posterior, base, path

  def signature(self, name="serving_default"):
    return tf.saved_model.load(self.path).signatures[name]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
  return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def regression(models_root):
  """1 → 16 → 1 regression, noise model σ = 0.1, with a second (XLA) signature, sampling in-graph."""
  model = mlp(1, 16, 1, seed=1)
  q = mean_field(model, 0.2)
  base = str(models_root / "reg")
  # In-graph sampling (not the default for a model this small): the tests see both kinds.
  path = export(model, q, base, num_samples=REG_SAMPLES, noise_stddev=REG_NOISE, seed=3,
                xla_signature=True, materialize_samples=False)
  return Exported(model, q, base, path)


@pytest.fixture(scope="session")
def classification(models_root):
  """2 → 8 → 3 logits."""
  model = mlp(2, 8, 3, seed=5)
  q = mean_field(model, 0.5)
  base = str(models_root / "cls")
  return Exported(model, q, base, export(model, q, base, num_samples=8, task="classification"))


@pytest.fixture(scope="session")
def ensemble(models_root):
  """The regression architecture with a 5-member SampleEnsemble, served with all members."""
  model = mlp(1, 16, 1, seed=11)
  rng = np.random.default_rng(0)
  members = [v.numpy()[None] + 0.3 * rng.standard_normal((5,) + tuple(v.shape)).astype(np.float32)
             for v in model.trainable_variables]
  q = SampleEnsemble(members)
  base = str(models_root / "ens")
  return Exported(model, q, base, export(model, q, base, num_samples=None))


@pytest.fixture(scope="session")
def server(regression, classification, ensemble):
  """The local server on free ports (REST and gRPC, Prometheus metrics), serving the three
  exports."""
  s = Server({"reg": regression.base, "cls": classification.base, "ens": ensemble.base}, port=0,
             file_system_poll_wait_seconds=0.25, grpc_port=0,
             monitoring=MonitoringConfig(enable=True))
  s.start()
  yield s
  s.stop()

