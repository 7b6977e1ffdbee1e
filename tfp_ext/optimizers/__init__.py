"""tfp_ext.optimizers: tf_keras optimizers for Bayesian deep learning (variational and MCMC)."""

from tfp_ext.optimizers.ivon import IVON
from tfp_ext.optimizers.posterior_mean_swap import PosteriorMeanSwap
from tfp_ext.optimizers.posterior_mean_swap import use_posterior_mean
from tfp_ext.optimizers.relativistic_sgd import RelativisticSGD
from tfp_ext.optimizers.vadam import Vadam
from tfp_ext.optimizers.variational_optimizer import VariationalOptimizer
from tfp_ext.optimizers.vogn import VOGN
from tfp_ext.optimizers.vprop import Vprop

__all__ = [
    "IVON",
    "PosteriorMeanSwap",
    "RelativisticSGD",
    "VOGN",
    "Vadam",
    "VariationalOptimizer",
    "Vprop",
    "use_posterior_mean",
]
