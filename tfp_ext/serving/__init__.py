"""Export weight posteriors for TF Serving, check exports as TF Serving loads them, serve locally.

* `export`: a SavedModel whose `serving_default` signature returns the posterior predictive.
* `check` / `check_many`: load exports with TF's C++ loader with XLA disabled (as
  `tensorflow_model_server`) and run every signature.
* `Server`: a local server speaking TF Serving's REST API; `Client`: a client for both servers.

Names are imported on first use, so `tfp-ext check` and the client do not start TF's Python
runtime.
"""

import importlib

_EXPORTS = {
    "CheckError": "check",
    "CheckResult": "check",
    "check": "check",
    "check_many": "check",
    "Client": "client",
    "ServingError": "client",
    "export": "export",
    "ModelConfig": "model_config",
    "read_model_config_file": "model_config",
    "Server": "server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_EXPORTS))
