"""Export weight posteriors for TF Serving, check exports as TF Serving loads them, serve locally.

* `export`: a SavedModel whose `serving_default` signature returns the posterior predictive.
* `check` / `check_many`: load exports with TF's C++ loader with XLA disabled (as
  `tensorflow_model_server`) and run every signature.
* `Server`: a local server speaking TF Serving's REST and gRPC APIs, with request batching
  (`BatchingParameters`) and Prometheus metrics (`MonitoringConfig`); `Client`: a REST or gRPC
  client for both servers.
"""

from tfp_ext.serving.batching import BatchingParameters
from tfp_ext.serving.check import CheckError
from tfp_ext.serving.check import CheckResult
from tfp_ext.serving.check import check
from tfp_ext.serving.check import check_many
from tfp_ext.serving.client import Client
from tfp_ext.serving.client import ServingError
from tfp_ext.serving.export import export
from tfp_ext.serving.metrics import MonitoringConfig
from tfp_ext.serving.model_config import ModelConfig
from tfp_ext.serving.model_config import read_model_config_file
from tfp_ext.serving.server import Server

__all__ = [
    "BatchingParameters",
    "CheckError",
    "CheckResult",
    "Client",
    "ModelConfig",
    "MonitoringConfig",
    "Server",
    "ServingError",
    "check",
    "check_many",
    "export",
    "read_model_config_file",
]
