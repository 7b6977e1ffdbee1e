"""Distributed Bayesian learning: SNEP and the posterior server on TF's parameter-server engine."""

from tfp_ext.distributed.gaussian_family import GaussianFamily
from tfp_ext.distributed.launcher import strategy_from_tf_config
from tfp_ext.distributed.local_cluster import LocalCluster
from tfp_ext.distributed.posterior_server import PosteriorServer
from tfp_ext.distributed.snep import ConjugateGaussianTilted
from tfp_ext.distributed.snep import KernelTilted
from tfp_ext.distributed.snep import snep_iterations

__all__ = [
    "ConjugateGaussianTilted",
    "GaussianFamily",
    "KernelTilted",
    "LocalCluster",
    "PosteriorServer",
    "snep_iterations",
    "strategy_from_tf_config",
]
