"""tfp_ext.distributions: distributions TensorFlow Probability lacks."""

from tfp_ext.distributions.generalized_inverse_gaussian import GeneralizedInverseGaussian

__all__ = ["GeneralizedInverseGaussian"]
