"""Weight posteriors of Keras models and their predictive distributions."""

from tfp_ext.posterior.alignment import AlignmentReport
from tfp_ext.posterior.alignment import align
from tfp_ext.posterior.alignment import Permutation
from tfp_ext.posterior.alignment import squared_wasserstein_distance
from tfp_ext.posterior.barrier import LossBarrier
from tfp_ext.posterior.barrier import marginalized_loss_barrier
from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.interpolation import interpolate
from tfp_ext.posterior.interpolation import optimal_coupling
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian
from tfp_ext.posterior.predictive import predictive
from tfp_ext.posterior.predictive import predictive_samples
from tfp_ext.posterior.predictive import summarize
from tfp_ext.posterior.sample_ensemble import SampleEnsemble
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = [
    "AlignmentReport",
    "LossBarrier",
    "MeanFieldGaussian",
    "Permutation",
    "SampleEnsemble",
    "WeightPosterior",
    "align",
    "functional_call",
    "interpolate",
    "marginalized_loss_barrier",
    "optimal_coupling",
    "predictive",
    "predictive_samples",
    "squared_wasserstein_distance",
    "summarize",
]
