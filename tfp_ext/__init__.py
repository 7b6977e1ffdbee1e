"""tfp-ext: Bayesian deep learning on TensorFlow Probability, from training to TF Serving.

Subpackages are imported on first use, so `import tfp_ext` stays cheap:

* `tfp_ext.optimizers`: natural-gradient variational inference as tf_keras optimizers.
* `tfp_ext.posterior`: weight posteriors and vectorized predictive distributions.
* `tfp_ext.serving`: SavedModel export for TF Serving, a compatible local server, a client.
* `tfp_ext.bijectors`: Sylvester and tempered Hamiltonian flows.
* `tfp_ext.distributed`: SNEP and the posterior server on TF's parameter-server engine.
* `tfp_ext.distributions`: the generalized inverse Gaussian distribution (exact sampler).
* `tfp_ext.mcmc`: relativistic and stochastic-gradient MCMC kernels.
* `tfp_ext.keras`: Keras models that feed the natural-gradient optimizers.
* `tfp_ext.vi`: variational objectives.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("bijectors", "distributed", "distributions", "keras", "mcmc", "optimizers",
                "posterior", "serving", "vi")

__all__ = list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name):
  if name in _SUBPACKAGES:
    module = importlib.import_module(f"{__name__}.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBPACKAGES))
