"""tfp_ext.keras."""

from tfp_ext.keras.amortized_sylvester_flow import AmortizedSylvesterFlow
from tfp_ext.keras.hamiltonian_vae import HamiltonianVAE
from tfp_ext.keras.langevin_vae import LangevinVAE
from tfp_ext.keras.variational_model import VariationalModel

__all__ = [
    "AmortizedSylvesterFlow",
    "HamiltonianVAE",
    "LangevinVAE",
    "VariationalModel",
]
