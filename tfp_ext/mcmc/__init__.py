"""tfp_ext.mcmc."""

from tfp_ext.mcmc.find_control_variate_state import find_control_variate_state
from tfp_ext.mcmc.keras_model import keras_log_likelihood_fn
from tfp_ext.mcmc.keras_model import keras_log_prior_fn
from tfp_ext.mcmc.keras_model import sample_keras_weights
from tfp_ext.mcmc.relativistic_hmc import RelativisticHamiltonianMonteCarlo
from tfp_ext.mcmc.relativistic_hmc import UncalibratedRelativisticHamiltonianMonteCarlo
from tfp_ext.mcmc.relativistic_stochastic_gradient_hamiltonian_monte_carlo import RelativisticStochasticGradientHamiltonianMonteCarlo
from tfp_ext.mcmc.stochastic_gradient_hamiltonian_monte_carlo import StochasticGradientHamiltonianMonteCarlo
from tfp_ext.mcmc.stochastic_gradient_langevin_dynamics import StochasticGradientLangevinDynamics

__all__ = [
    "RelativisticHamiltonianMonteCarlo",
    "RelativisticStochasticGradientHamiltonianMonteCarlo",
    "StochasticGradientHamiltonianMonteCarlo",
    "StochasticGradientLangevinDynamics",
    "UncalibratedRelativisticHamiltonianMonteCarlo",
    "find_control_variate_state",
    "keras_log_likelihood_fn",
    "keras_log_prior_fn",
    "sample_keras_weights",
]
