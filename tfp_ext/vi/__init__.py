"""tfp_ext.vi."""

from tfp_ext.vi.flow_vae import FlowVAE
from tfp_ext.vi.hamiltonian_elbo import HamiltonianELBOResult, hamiltonian_elbo

__all__ = ["FlowVAE", "HamiltonianELBOResult", "hamiltonian_elbo"]
