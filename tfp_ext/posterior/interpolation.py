"""The 2-Wasserstein geodesic between two weight posteriors (Rossi et al., 2023)."""

from typing import Union

import numpy as np
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian
from tfp_ext.posterior.sample_ensemble import SampleEnsemble

__all__ = ["interpolate", "optimal_coupling"]

Posterior = Union[MeanFieldGaussian, SampleEnsemble]


def _check_t(t) -> float:
  if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not (
      0. <= float(t) <= 1.):
    raise ValueError(f"`t` must be a number in [0, 1], got {t!r}.")
  return float(t)


def _check_pair(q_a, q_b):
  if type(q_a) is not type(q_b) or not isinstance(q_a, (MeanFieldGaussian, SampleEnsemble)):
    raise ValueError("`q_a` and `q_b` must both be MeanFieldGaussian or both SampleEnsemble, got "
                     f"{type(q_a).__name__} and {type(q_b).__name__}.")
  specs_a, specs_b = q_a.variable_specs, q_b.variable_specs
  if [(s.shape, s.dtype) for s in specs_a] != [(s.shape, s.dtype) for s in specs_b]:
    raise ValueError("`q_a` and `q_b` have different weight parts (different architectures?): "
                     f"{[s.shape.as_list() for s in specs_a]} vs "
                     f"{[s.shape.as_list() for s in specs_b]}.")
  if isinstance(q_a, SampleEnsemble) and q_a.num_members != q_b.num_members:
    raise ValueError("Interpolating two SampleEnsembles needs the same number of members, got "
                     f"{q_a.num_members} and {q_b.num_members}.")


def optimal_coupling(q_a: SampleEnsemble, q_b: SampleEnsemble) -> np.ndarray:
  """The optimal transport map between two ensembles of S equally weighted members.

  For uniform measures on S points each, the 2-Wasserstein optimal plan is a permutation
  (Birkhoff's theorem): `coupling[s]` is the member of `q_b` that member `s` of `q_a` moves to,
  minimizing Σ_s ‖θ_a,s − θ_b,coupling[s]‖² (a linear assignment).
  """
  _check_pair(q_a, q_b)
  flat = lambda q: np.concatenate(
      [np.reshape(np.asarray(p, np.float64), (q.num_members, -1)) for p in q.samples], axis=1)
  a, b = flat(q_a), flat(q_b)
  _, coupling = linear_sum_assignment(a @ b.T, maximize=True)  # ‖a‖², ‖b‖² are constant.
  return coupling


def interpolate(q_a: Posterior, q_b: Posterior, t: float, coupling=None) -> Posterior:
  r"""The point at fraction `t` of the 2-Wasserstein geodesic from `q_a` to `q_b`.

  For mean-field Gaussians the geodesic stays mean-field Gaussian (Rossi et al., 2023;
  McCann's displacement interpolation of Gaussians with commuting covariances):

  ```none
  q_t = N(μ_t, diag(σ_t²)),   μ_t = (1 − t) μ_a + t μ_b,   σ_t = (1 − t) σ_a + t σ_b
  ```

  so W₂(q_a, q_t) = t·W₂(q_a, q_b). For two ensembles of S members each, member s of `q_a` moves
  in a straight line to its partner under the optimal coupling (`optimal_coupling`, computed
  unless given): θ_t,s = (1 − t) θ_a,s + t θ_b,coupling[s].

  Interpolating two independent runs is meaningful only once their hidden units correspond:
  align them first (`align`).

  Args:
    q_a: the posterior at t = 0.
    q_b: the posterior at t = 1, of the same kind and weight shapes.
    t: in [0, 1].
    coupling: for ensembles, a precomputed `optimal_coupling(q_a, q_b)`.

  Returns:
    A posterior of the same kind as `q_a`.

  Raises:
    ValueError: `t` outside [0, 1], posteriors of different kinds or shapes.

  #### Examples

  ```python
  q_mid = tfp_ext.posterior.interpolate(q_a, perm.apply(q_b), 0.5)
  ```

  #### References

  [1]: Simone Rossi, Ankit Singh, Thomas Hannagan. On permutation symmetries in Bayesian neural
       network posteriors: a variational perspective. NeurIPS 2023.
       https://arxiv.org/abs/2310.10171
  [2]: Robert J. McCann. A convexity principle for interacting gases. Advances in Mathematics,
       128(1), 1997.
  """
  t = _check_t(t)
  _check_pair(q_a, q_b)
  mix = lambda a, b: (1. - t) * a + t * b
  if isinstance(q_a, MeanFieldGaussian):
    return MeanFieldGaussian([mix(a, b) for a, b in zip(q_a.loc, q_b.loc)],
                             [mix(a, b) for a, b in zip(q_a.scale, q_b.scale)],
                             name="interpolated")
  if coupling is None:
    coupling = optimal_coupling(q_a, q_b)
  coupling = tf.constant(np.asarray(coupling), tf.int32)
  return SampleEnsemble([mix(a, tf.gather(b, coupling)) for a, b in zip(q_a.samples, q_b.samples)],
                        name="interpolated")
