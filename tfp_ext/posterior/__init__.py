"""Weight posteriors of Keras models and their predictive distributions."""

from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian
from tfp_ext.posterior.predictive import predictive
from tfp_ext.posterior.predictive import predictive_samples
from tfp_ext.posterior.predictive import summarize
from tfp_ext.posterior.sample_ensemble import SampleEnsemble
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = [
    "MeanFieldGaussian",
    "SampleEnsemble",
    "WeightPosterior",
    "functional_call",
    "predictive",
    "predictive_samples",
    "summarize",
]
