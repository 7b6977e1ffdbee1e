"""tfp_ext.bijectors."""

from tfp_ext.bijectors.householder_sylvester import HouseholderSylvester
from tfp_ext.bijectors.langevin_flow import LangevinFlow
from tfp_ext.bijectors.orthogonal_sylvester import OrthogonalSylvester
from tfp_ext.bijectors.planar import Planar
from tfp_ext.bijectors.tempered_hamiltonian_flow import TemperedHamiltonianFlow
from tfp_ext.bijectors.triangular_sylvester import TriangularSylvester

__all__ = [
    "HouseholderSylvester",
    "LangevinFlow",
    "OrthogonalSylvester",
    "Planar",
    "TemperedHamiltonianFlow",
    "TriangularSylvester",
]
