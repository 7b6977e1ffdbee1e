"""Shared correctness checks for vector bijectors (`forward_min_event_ndims=1`).

Every bijector of `tfp_ext.bijectors` runs through the same checks. A test module describes its
bijector once as a `BijectorCase` and parametrizes over `CHECKS`:

```python
from tests.bijectors import harness

CASES = [harness.BijectorCase(name="planar", make=make_planar)]

@pytest.mark.parametrize("check", harness.CHECKS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bijector(case, check):
  harness.run_check(check, case)
```

Stable API
----------
`BijectorCase(name, make, event_size=3, batch_size=3, num_points=8, input_scale=1.0,
              extreme_scale=1e3, rtol=None, td_event_size=2, skip=())`
  `make(dtype, batch_shape, event_size, seed, param_scale)` returns a bijector with parameter
  batch shape `batch_shape` (a tuple) acting on vectors of size `event_size`. Its parameters are
  drawn from the stateless `seed` (a `[2]` int32 tensor) and multiplied by `param_scale`; the same
  seed must give the same parameter values (up to rounding) for float32 and float64. `make` must
  also work inside `tf.function(jit_compile=True)` (the amortized use: parameters computed by a
  network). `rtol` maps dtype to the relative tolerance of round trips and of float32-vs-float64
  agreement (default `DEFAULT_RTOL`). `td_event_size=None` skips the distribution check; `skip`
  names checks that do not apply.
`CHECKS`: the names of the checks, in order; `run_check(name, case)` runs one. Each check is also
  a public function `check_<name>(case)`.

The checks
----------
* `round_trip`: `inverse(forward(x)) == x` and `forward(inverse(y)) == y` for fresh `y` (points
  never produced by `forward`, so no cache can answer), float32 and float64.
* `log_det_jacobian`: `forward_log_det_jacobian` equals `log|det J|` of the autodiff Jacobian
  (`GradientTape.batch_jacobian`) in float64, and `inverse_log_det_jacobian(y) == -fldj(x)`;
  float32 log-dets agree with the float64 Jacobian.
* `amortized`: parameters with batch shape `[B]` applied to `x` of shape `[N, B, D]`: output
  shapes, each batch member equals the sliced bijector `bijector[b]`, per-member Jacobian check.
* `dtypes`: outputs keep the input dtype; float32 results agree with float64 ones.
* `extreme_parameters`: parameters scaled by `extreme_scale` (float32), `-extreme_scale`
  (float64) and 0 (float32), inputs up to `1e3` and exact zeros: forward, inverse, log-dets and
  gradients (w.r.t. inputs and parameters) are finite.
* `jit_compile`: bijector built and applied inside `tf.function(jit_compile=True)` matches eager
  (float32).
* `transformed_distribution`: for a 2-D flow of a standard normal, `log_prob` of cached samples
  equals `log_prob` of fresh copies; `exp(log_prob)` integrates to 1 on a grid; the sample
  frequency of a box matches the grid integral of the density over it (binomial tolerance).

All tolerances other than the binomial one are floating-point tolerances: the checks compare
deterministic computations, not Monte Carlo estimates.
"""

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["BijectorCase", "CHECKS", "DEFAULT_RTOL", "run_check"] + [
    "check_" + n for n in (
        "round_trip", "log_det_jacobian", "amortized", "dtypes", "extreme_parameters",
        "jit_compile", "transformed_distribution")]

# float64 maps are computed to ~1e-15 relative; 1e-9 leaves room for the conditioning of the
# inverse (up to 1e5 for the parameter draws used). float32 eps is 1.2e-7; the same conditioning
# argument gives ~1e-2 worst case, and 2e-3 is what a D <= 4 map with O(1) parameters needs.
DEFAULT_RTOL = {tf.float32: 2e-3, tf.float64: 1e-9}

CHECKS = ("round_trip", "log_det_jacobian", "amortized", "dtypes", "extreme_parameters",
          "jit_compile", "transformed_distribution")


@dataclasses.dataclass(frozen=True)
class BijectorCase:
  """How to build one bijector family for the shared checks (see the module docstring)."""
  name: str
  make: Callable[..., tfb.Bijector]
  event_size: int = 3
  batch_size: int = 3
  num_points: int = 8
  input_scale: float = 1.0
  extreme_scale: float = 1e3
  rtol: Optional[Dict[tf.DType, float]] = None
  td_event_size: Optional[int] = 2
  skip: Tuple[str, ...] = ()

  def tol(self, dtype: tf.DType) -> float:
    return (self.rtol or DEFAULT_RTOL)[dtype]


def _seed(*salt: int) -> tf.Tensor:
  return tf.constant([20181122 + sum(salt), 7 * len(salt) + 1], tf.int32)


def _points(case: BijectorCase, shape: Sequence[int], dtype: tf.DType, salt: int) -> tf.Tensor:
  x = tf.random.stateless_normal(list(shape) + [case.event_size], seed=_seed(salt, 11),
                                 dtype=tf.float64, alg="philox")
  return tf.cast(case.input_scale * x, dtype)


def _allclose(actual, expected, rtol, what):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
  # Relative to the overall magnitude: inverse errors scale with |x| + |y|, not per element.
  scale = max(1.0, float(np.max(np.abs(expected))))
  err = float(np.max(np.abs(actual - expected))) / scale
  assert err <= rtol, f"{what}: max scaled error {err:.3g} > {rtol:.3g}"


def _log_abs_det_jacobian(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
  """log|det d fn(x)/dx| for x [N, D], per row, from the autodiff Jacobian."""
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = fn(x)
  # pfor cannot vectorize the inverse's while loops; the loop over rows is exact too.
  jac = tape.batch_jacobian(y, x, experimental_use_pfor=False)
  return tf.linalg.slogdet(jac)[1]


def check_round_trip(case: BijectorCase) -> None:
  """inverse(forward(x)) == x and forward(inverse(y)) == y on fresh points, both dtypes."""
  for dtype in (tf.float32, tf.float64):
    bij = case.make(dtype, (), case.event_size, _seed(1), 1.0)
    x = _points(case, [case.num_points], dtype, 1)
    y = bij.forward(x)
    assert y.dtype == dtype and y.shape == x.shape, (y.dtype, y.shape)
    # tf.identity gives a new tensor object, so the bijector cache cannot return x.
    _allclose(bij.inverse(tf.identity(y)), x, case.tol(dtype), f"{dtype.name} inverse(forward(x))")
    y_fresh = _points(case, [case.num_points], dtype, 2)
    x_fresh = bij.inverse(y_fresh)
    _allclose(bij.forward(tf.identity(x_fresh)), y_fresh, case.tol(dtype),
              f"{dtype.name} forward(inverse(y))")


def check_log_det_jacobian(case: BijectorCase) -> None:
  """fldj / ildj against log|det| of the autodiff Jacobian (float64), float32 against it too."""
  bij64 = case.make(tf.float64, (), case.event_size, _seed(3), 1.0)
  x64 = _points(case, [case.num_points], tf.float64, 3)
  expected = _log_abs_det_jacobian(bij64.forward, x64)
  _allclose(bij64.forward_log_det_jacobian(x64, event_ndims=1), expected, 1e-9,
            "float64 fldj vs autodiff")
  y64 = tf.identity(bij64.forward(x64))
  _allclose(bij64.inverse_log_det_jacobian(y64, event_ndims=1), -expected, 1e-7,
            "float64 ildj(fresh y) vs -autodiff")
  # Two event dims: the log-det sums over the extra dimension.
  x2 = tf.reshape(x64, [2, -1, case.event_size])
  _allclose(bij64.forward_log_det_jacobian(x2, event_ndims=2),
            tf.reduce_sum(tf.reshape(expected, [2, -1]), -1), 1e-9, "fldj with event_ndims=2")
  bij32 = case.make(tf.float32, (), case.event_size, _seed(3), 1.0)
  _allclose(bij32.forward_log_det_jacobian(tf.cast(x64, tf.float32), event_ndims=1), expected,
            case.tol(tf.float32), "float32 fldj vs float64 autodiff")


def check_amortized(case: BijectorCase) -> None:
  """Parameters with a batch dimension, as an encoder produces them."""
  n, b, d = case.num_points, case.batch_size, case.event_size
  bij = case.make(tf.float64, (b,), d, _seed(4), 1.0)
  batch_shape = tuple(bij.experimental_batch_shape())
  assert batch_shape == (b,), f"batch shape {batch_shape} != {(b,)}"
  x = _points(case, [n, b], tf.float64, 4)
  y = bij.forward(x)
  fldj = bij.forward_log_det_jacobian(x, event_ndims=1)
  assert y.shape == (n, b, d), y.shape
  assert fldj.shape == (n, b), fldj.shape
  _allclose(bij.inverse(tf.identity(y)), x, case.tol(tf.float64), "batched round trip")
  for i in range(b):
    member = bij[i]
    _allclose(member.forward(x[:, i]), y[:, i], 1e-12, f"member {i} forward vs sliced bijector")
    _allclose(fldj[:, i], _log_abs_det_jacobian(member.forward, x[:, i]), 1e-9,
              f"member {i} fldj vs autodiff")
  # Broadcasting a single point against the parameter batch.
  y0 = bij.forward(x[0, 0])
  assert y0.shape == (b, d), y0.shape
  _allclose(y0[0], y[0, 0], 1e-12, "broadcast point vs batched")


def check_dtypes(case: BijectorCase) -> None:
  """Outputs keep the input dtype; float32 agrees with float64 for the same parameters."""
  out = {}
  for dtype in (tf.float32, tf.float64):
    bij = case.make(dtype, (), case.event_size, _seed(5), 1.0)
    x = _points(case, [case.num_points], dtype, 5)
    y = bij.forward(x)
    values = (y, bij.inverse(tf.identity(y)), bij.forward_log_det_jacobian(x, event_ndims=1),
              bij.inverse_log_det_jacobian(tf.identity(y), event_ndims=1))
    for v in values:
      assert v.dtype == dtype, f"{dtype.name} input gave {v.dtype.name} output"
    out[dtype] = values
  for name, v32, v64 in zip(("forward", "inverse", "fldj", "ildj"), out[tf.float32],
                            out[tf.float64]):
    _allclose(v32, v64, case.tol(tf.float32), f"float32 vs float64 {name}")


def _float_parameters(bij: tfb.Bijector):
  return [v for v in tf.nest.flatten(bij.parameters)
          if tf.is_tensor(v) and v.dtype.is_floating]


def check_extreme_parameters(case: BijectorCase) -> None:
  """Huge parameters and inputs, and exact zeros: every output and gradient stays finite."""
  settings = [(tf.float32, case.extreme_scale), (tf.float32, 0.0),
              (tf.float64, -case.extreme_scale)]
  for dtype, scale in settings:
    bij = case.make(dtype, (), case.event_size, _seed(6), scale)
    x = tf.concat([_points(case, [4], dtype, 6) * tf.constant(1e3, dtype),
                   _points(case, [4], dtype, 7),
                   tf.zeros([1, case.event_size], dtype)], 0)
    params = _float_parameters(bij)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      tape.watch(params)
      y = bij.forward(x)
      fldj = bij.forward_log_det_jacobian(x, event_ndims=1)
      loss = tf.reduce_sum(y) + tf.reduce_sum(fldj)
    inv = bij.inverse(tf.identity(y))
    ildj = bij.inverse_log_det_jacobian(tf.identity(y), event_ndims=1)
    grads = [tape.gradient(loss, x)] + tape.gradient(loss, params)
    named = [("forward", y), ("fldj", fldj), ("inverse", inv), ("ildj", ildj)] + [
        (f"gradient {i}", g) for i, g in enumerate(grads) if g is not None]
    for what, v in named:
      assert np.all(np.isfinite(v.numpy())), (
          f"{dtype.name} param_scale={scale}: non-finite {what}: {v.numpy()}")


def check_jit_compile(case: BijectorCase) -> None:
  """Build and apply the bijector under XLA (parameters made inside, as when amortized).

  float32 only: XLA compilation dominates the cost of this check, and the dtype paths are the
  same ops (`dtypes` checks float32 against float64 eagerly).
  """
  d, b, dtype = case.event_size, case.batch_size, tf.float32
  x = _points(case, [case.num_points, b], dtype, 8)

  def run(x):
    bij = case.make(dtype, (b,), d, _seed(8), 1.0)
    y = bij.forward(x)
    y_fresh = y + 0.1  # one tensor for inverse and ildj, so the ildj reuses the cached inverse
    return (y, bij.forward_log_det_jacobian(x, event_ndims=1), bij.inverse(y_fresh),
            bij.inverse_log_det_jacobian(y_fresh, event_ndims=1))

  compiled = tf.function(run, jit_compile=True)(x)
  eager = run(x)
  for name, c, e in zip(("forward", "fldj", "inverse", "ildj"), compiled, eager):
    _allclose(c, e, case.tol(dtype), f"{dtype.name} jit {name} vs eager")


def check_transformed_distribution(case: BijectorCase) -> None:
  """sample / log_prob consistency of a 2-D TransformedDistribution(standard normal)."""
  d = case.td_event_size
  assert d == 2, "the grid integration is two-dimensional"
  bij = case.make(tf.float64, (), d, _seed(9), 1.0)
  dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros([d], tf.float64)), bij)
  n = 20000
  x = dist.sample(n, seed=_seed(9, 1))
  lp_cached = dist.log_prob(x)
  lp_fresh = dist.log_prob(tf.identity(x))
  _allclose(lp_fresh, lp_cached, 1e-7, "log_prob of fresh points vs cached samples")
  xs = x.numpy()

  def grid(lo, hi, m):
    a = np.linspace(lo[0], hi[0], m + 1)
    c = np.linspace(lo[1], hi[1], m + 1)
    ma, mc = 0.5 * (a[1:] + a[:-1]), 0.5 * (c[1:] + c[:-1])
    pts = np.stack(np.meshgrid(ma, mc, indexing="ij"), -1).reshape(-1, 2)
    cell = (a[1] - a[0]) * (c[1] - c[0])
    return np.exp(dist.log_prob(tf.constant(pts)).numpy()) * cell

  # Total mass over the sample range plus a margin: the mass outside is below ~1e-4 (it is
  # beyond all 20000 samples), the midpoint rule on a 200^2 grid of a smooth density errs ~1e-4.
  lo, hi = xs.min(0) - 1.0, xs.max(0) + 1.0
  mass = grid(lo, hi, 200).sum()
  assert abs(mass - 1.0) < 3e-3, f"density integrates to {mass}"
  # A box from an independent pilot sample's quartiles: P(box) by sample frequency vs by grid.
  pilot = dist.sample(2000, seed=_seed(9, 2)).numpy()
  blo, bhi = np.quantile(pilot, 0.2, axis=0), np.quantile(pilot, 0.8, axis=0)
  p_grid = grid(blo, bhi, 100).sum()
  inside = np.all((xs >= blo) & (xs <= bhi), axis=1).mean()
  # Binomial standard error of the frequency: sqrt(p(1-p)/n) <= 0.0035 for n = 20000; 5 standard
  # errors (two-sided false-alarm rate 6e-7) plus 1e-3 for the grid's discretization error.
  se = np.sqrt(max(p_grid * (1 - p_grid), 1e-4) / n)
  assert abs(inside - p_grid) < 5 * se + 1e-3, (
      f"P(box): sample frequency {inside:.4f} vs integrated density {p_grid:.4f} (se {se:.4f})")


_CHECK_FNS = {name: globals()["check_" + name] for name in CHECKS}


def run_check(name: str, case: BijectorCase) -> None:
  """Runs check `name` (one of `CHECKS`) on `case`; checks named in `case.skip` are skipped."""
  import pytest  # pylint: disable=g-import-not-at-top
  if name not in _CHECK_FNS:
    raise ValueError(f"unknown check {name!r}; expected one of {CHECKS}")
  if name in case.skip or (name == "transformed_distribution" and case.td_event_size is None):
    pytest.skip(f"{name} does not apply to {case.name}")
  _CHECK_FNS[name](case)
