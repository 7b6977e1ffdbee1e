"""tfp_ext.vi."""

from tfp_ext.vi.flow_vae import FlowVAE
from tfp_ext.vi.hamiltonian_elbo import HamiltonianELBOResult, hamiltonian_elbo
from tfp_ext.vi.langevin_elbo import LangevinELBOResult, langevin_elbo

__all__ = ["FlowVAE", "HamiltonianELBOResult", "LangevinELBOResult", "hamiltonian_elbo",
           "langevin_elbo"]
