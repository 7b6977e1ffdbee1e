"""The Gaussian exponential family in natural and mean parameters, as SNEP's sites use it.

With sufficient statistics s(θ) = (θ, ½θθᵀ), a Gaussian N(m, C) has

```none
natural parameters  η = (h, N) = (P m, −P)            P = C⁻¹ (precision)
mean parameters     μ = (a, B) = (m, ½(m mᵀ + C))     = E[s(θ)]
```

so that log q(θ) = hᵀθ + tr(N ½θθᵀ) − A(η), and products and quotients of Gaussians (prior,
sites, cavities) are sums and differences of η. The diagonal family keeps only diag(N) and
diag(B). Parameters are float64 tensors (the sums over sites cancel large terms).

This is the parameterization of the posterior server's reference implementation (Hasenclever
et al., 2017; `FullCovGaussian.jl`, `DiagGaussian.jl` of BigBayes/PosteriorServer).
"""

from typing import NamedTuple

import tensorflow as tf

__all__ = ["GaussianFamily", "FULL", "DIAGONAL", "Natural", "Mean"]

FULL = "full"
DIAGONAL = "diagonal"


class Natural(NamedTuple):
  """η = (h, N): h = P m, N = −P (a [d, d] matrix, or its diagonal [d])."""
  shift: tf.Tensor
  neg_precision: tf.Tensor


class Mean(NamedTuple):
  """μ = (E θ, ½ E θθᵀ) (the second a [d, d] matrix, or its diagonal [d])."""
  first: tf.Tensor
  half_second: tf.Tensor


def _sym(a):
  return 0.5 * (a + tf.linalg.matrix_transpose(a))


def _finite(*tensors):
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _eigh(a):
  """eigh of a symmetric matrix that may hold NaN or inf (a diverged update): NaNs out, no error.

  TF's eigendecomposition raises on non-finite input, which would abort a worker's whole round
  instead of letting the posterior server reject the one bad update.
  """
  ok = _finite(a)
  values, vectors = tf.linalg.eigh(tf.where(ok, _sym(a), tf.eye(tf.shape(a)[0], dtype=a.dtype)))
  nan = tf.constant(float("nan"), a.dtype)
  return tf.where(ok, values, nan), tf.where(ok, vectors, nan)


def _sym_inverse(a):
  """The inverse of a symmetric matrix (NaN when it is not finite).

  Not by eigendecomposition: XLA's CPU eigensolver stops at a relative tolerance near 1e-5, which
  would leave every compiled SNEP iteration that far from float64 rounding.
  """
  ok = _finite(a)
  inverse = tf.linalg.inv(tf.where(ok, _sym(a), tf.eye(tf.shape(a)[0], dtype=a.dtype)))
  return tf.where(ok, _sym(inverse), tf.constant(float("nan"), a.dtype))


class GaussianFamily:
  """Maps between natural and mean parameters of a full or diagonal Gaussian over R^d."""

  def __init__(self, dim: int, covariance: str = DIAGONAL):
    if covariance not in (FULL, DIAGONAL):
      raise ValueError(f"covariance must be {FULL!r} or {DIAGONAL!r}, got {covariance!r}.")
    self.dim = int(dim)
    self.covariance = covariance

  @property
  def full(self) -> bool:
    return self.covariance == FULL

  # -- Flat rows, as the parameter servers store them --------------------------------------------

  @property
  def size(self) -> int:
    """Numbers in one flattened parameter pair."""
    return self.dim + (self.dim * self.dim if self.full else self.dim)

  def flatten(self, pair) -> tf.Tensor:
    return tf.concat([pair[0], tf.reshape(pair[1], [-1])], 0)

  def unflatten(self, flat, kind=Natural):
    second = flat[self.dim:self.size]
    if self.full:
      second = tf.reshape(second, [self.dim, self.dim])
    return kind(flat[:self.dim], second)

  # -- Constructors and maps ----------------------------------------------------------------------

  def from_mean_precision(self, mean, precision) -> Natural:
    """η of N(mean, precision⁻¹); `precision` a matrix (full) or a vector (diagonal)."""
    mean = tf.convert_to_tensor(mean, tf.float64)
    precision = tf.convert_to_tensor(precision, tf.float64)
    if self.full:
      return Natural(tf.linalg.matvec(precision, mean), -precision)
    return Natural(precision * mean, -precision)

  def isotropic(self, precision: float) -> Natural:
    """η of N(0, precision⁻¹ I)."""
    d = self.dim
    return self.from_mean_precision(
        tf.zeros([d], tf.float64),
        precision * tf.eye(d, dtype=tf.float64) if self.full else
        tf.fill([d], tf.constant(precision, tf.float64)))

  def precision(self, eta: Natural) -> tf.Tensor:
    return -eta.neg_precision

  def mean_and_covariance(self, eta: Natural):
    """(m, C) of η (C a matrix, or the variances for the diagonal family)."""
    precision = self.precision(eta)
    if self.full:
      c = _sym_inverse(precision)
      return tf.linalg.matvec(c, eta.shift), c
    return eta.shift / precision, 1. / precision

  def to_mean(self, eta: Natural) -> Mean:
    m, c = self.mean_and_covariance(eta)
    if self.full:
      return Mean(m, 0.5 * (m[:, None] * m[None, :] + c))
    return Mean(m, 0.5 * (m * m + c))

  def covariance_of(self, mu: Mean) -> tf.Tensor:
    if self.full:
      return _sym(2. * mu.half_second - mu.first[:, None] * mu.first[None, :])
    return 2. * mu.half_second - mu.first * mu.first

  def to_natural(self, mu: Mean) -> Natural:
    c = self.covariance_of(mu)
    if self.full:
      precision = _sym_inverse(c)
      return Natural(tf.linalg.matvec(precision, mu.first), -precision)
    return Natural(mu.first / c, -1. / c)

  def statistics(self, samples) -> Mean:
    """The Monte Carlo mean of s(θ) = (θ, ½θθᵀ) over samples `[n, d]`."""
    samples = tf.cast(samples, tf.float64)
    n = tf.cast(tf.shape(samples)[0], tf.float64)
    first = tf.reduce_mean(samples, 0)
    if self.full:
      return Mean(first, 0.5 * tf.matmul(samples, samples, transpose_a=True) / n)
    return Mean(first, 0.5 * tf.reduce_mean(samples * samples, 0))

  def project(self, mu: Mean, mean_limits, variance_limits) -> Mean:
    """Clips the mean into `mean_limits` and the covariance's eigenvalues into `variance_limits`.

    The reference implementation's `project`: it keeps a site a proper Gaussian whatever a
    noisy step did to it (a collapsed or negative variance).
    """
    m = tf.clip_by_value(mu.first, mean_limits[0], mean_limits[1])
    c = self.covariance_of(mu)
    if self.full:
      # Rebuilt from the eigendecomposition only when an eigenvalue is outside the limits (the
      # rebuilt matrix carries the eigensolver's error, which XLA's CPU solver keeps near 1e-5).
      values, vectors = _eigh(c)
      clipped = tf.clip_by_value(values, variance_limits[0], variance_limits[1])
      rebuilt = _sym(tf.matmul(vectors * clipped[None, :], vectors, transpose_b=True))
      c = tf.where(tf.reduce_any(clipped != values), rebuilt, c)
      return Mean(m, 0.5 * (m[:, None] * m[None, :] + c))
    c = tf.clip_by_value(c, variance_limits[0], variance_limits[1])
    return Mean(m, 0.5 * (m * m + c))

  def is_valid(self, eta: Natural) -> tf.Tensor:
    """Whether η is finite with a positive-definite precision (a proper Gaussian)."""
    finite = tf.reduce_all(tf.math.is_finite(eta.shift)) & tf.reduce_all(
        tf.math.is_finite(eta.neg_precision))
    precision = self.precision(eta)
    if self.full:
      positive = tf.reduce_min(_eigh(precision)[0]) > 0.  # False for NaN.
    else:
      positive = tf.reduce_all(precision > 0.)
    return finite & positive
