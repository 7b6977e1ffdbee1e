"""The marginalized loss barrier between two weight posteriors (Rossi et al., 2023)."""

from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.interpolation import interpolate
from tfp_ext.posterior.interpolation import optimal_coupling
from tfp_ext.posterior.sample_ensemble import SampleEnsemble

__all__ = ["LossBarrier", "marginalized_loss_barrier"]


class LossBarrier(NamedTuple):
  """The barrier, the loss curve along the interpolation, and their Monte Carlo standard errors.

  Attributes:
    barrier: max_t B(t), the marginalized loss barrier.
    stderr: the Monte Carlo standard error of B at the maximizing t.
    t: the interpolation points, `[num_points]`.
    curve: B(t) = L(q_t) − [(1 − t) L(q_a) + t L(q_b)] at each point.
    curve_stderr: its standard error at each point (0 at the endpoints, where B = 0 exactly).
    losses: L(q_t) at each point.
    losses_stderr: its standard error.
    num_samples: weight samples per point (the same draws at every t).
  """
  barrier: float
  stderr: float
  t: np.ndarray
  curve: np.ndarray
  curve_stderr: np.ndarray
  losses: np.ndarray
  losses_stderr: np.ndarray
  num_samples: int


def _batches(data, batch_size):
  if not isinstance(data, (tuple, list)) or len(data) != 2:
    raise ValueError("`data` must be a pair (x, y) of arrays with one row per example.")
  x, y = (tf.nest.map_structure(tf.convert_to_tensor, d) for d in data)
  n = int(tf.nest.flatten(x)[0].shape[0])
  if n < 1 or int(y.shape[0]) != n:
    raise ValueError(f"`data`: x and y need the same number (>= 1) of rows, got {n} and "
                     f"{int(y.shape[0])}.")
  size = n if batch_size is None else batch_size
  for start in range(0, n, size):
    yield tf.nest.map_structure(lambda a: a[start:start + size], x), y[start:start + size]


def _per_sample_terms(nll: np.ndarray, marginalize: bool):
  """(L̂, z): the loss estimate from `nll[S, N]` and each sample's linearized contribution.

  L̂ − L ≈ mean_s z_s − E z to first order (the delta method), so its standard error is
  std(z)/√S. Expected loss: z_s = mean_i nll_si, exact. Predictive loss
  −mean_i log((1/S) Σ_s p_si) with p_si = exp(−nll_si): z_s = −mean_i p_si / p̂_i, where p̂_i is
  the Monte Carlo predictive; its bias is O(1/S).
  """
  num = nll.shape[0]
  if not marginalize:
    return float(nll.mean()), nll.mean(axis=1)
  log_p = logsumexp(-nll, axis=0) - np.log(num)  # [N]: log of the Monte Carlo predictive
  return float(-log_p.mean()), -np.exp(-nll - log_p).mean(axis=1)


def marginalized_loss_barrier(model, q_a, q_b, data, loss: Callable,
                              num_points: int = 11, num_samples: Optional[int] = 32, seed=0,
                              marginalize: bool = True,
                              batch_size: Optional[int] = None) -> LossBarrier:
  r"""The marginalized loss barrier along the Wasserstein interpolation from `q_a` to `q_b`.

  Following Rossi et al. (2023), the loss of a posterior q is that of its Bayesian model
  average, the predictive p(y | x, q) = E_q[p(y | x, θ)], on the data:

  ```none
  L(q)  = −(1/N) Σ_i log E_{θ~q} p(y_i | x_i, θ)
  B(t)  = L(q_t) − [(1 − t) L(q_a) + t L(q_b)],     q_t = interpolate(q_a, q_b, t)
  barrier = max_{t ∈ [0, 1]} B(t)
  ```

  evaluated at `num_points` equally spaced t. `marginalize=False` uses the expected loss
  E_q[−(1/N) Σ_i log p(y_i | x_i, θ)] instead (the posterior-averaged loss of the deterministic
  barrier of Frankle et al., 2020).

  Each L(q_t) is a Monte Carlo estimate over `num_samples` weight draws; every t uses the same
  standard normal draws (common random numbers: θ_t,s = μ_t + σ_t ε_s), so the curve is smooth
  and B(t) has a small error. The standard errors come from the delta method applied to the
  per-draw terms of B(t) jointly (the three losses share their draws), std_s(b_s)/√S. An ensemble
  using all of its members has no Monte Carlo error (stderr 0).

  The model runs in inference mode with its own non-trainable state at every t: the moving
  statistics of BatchNormalization layers are not interpolated (nor re-estimated for q_t).

  Args:
    model: the tf_keras model the posteriors' weight parts belong to.
    q_a, q_b: the endpoints (both MeanFieldGaussian or both SampleEnsemble; align `q_b` first).
    data: `(x, y)`, e.g. a test set.
    loss: `loss(y, outputs)` → the negative log-likelihood of each example, shape `[rows]`
      (e.g. `tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True,
      reduction="none")`).
    num_points: points of t in [0, 1] (>= 2).
    num_samples: weight draws per point; for ensembles, None uses every member.
    seed: the stateless seed of the draws.
    marginalize: the predictive's loss (the paper's) or the expected loss.
    batch_size: rows per model call (None: all at once).

  Returns:
    A `LossBarrier`.

  Raises:
    ValueError: mismatched posteriors, bad `data`, `num_points`, or a `loss` that does not
      return one value per example.

  #### Examples

  ```python
  nll = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  before = tfp_ext.posterior.marginalized_loss_barrier(model, q_a, q_b, (x_te, y_te), nll)
  after = tfp_ext.posterior.marginalized_loss_barrier(
      model, q_a, tfp_ext.posterior.align(model, q_a, q_b).apply(q_b), (x_te, y_te), nll)
  print(f"{before.barrier:.3f} ± {before.stderr:.3f} -> {after.barrier:.3f} ± {after.stderr:.3f}")
  ```

  #### References

  [1]: Simone Rossi, Ankit Singh, Thomas Hannagan. On permutation symmetries in Bayesian neural
       network posteriors: a variational perspective. NeurIPS 2023.
       https://arxiv.org/abs/2310.10171
  [2]: Jonathan Frankle, Gintare Karolina Dziugaite, Daniel M. Roy, Michael Carbin. Linear Mode
       Connectivity and the Lottery Ticket Hypothesis. ICML 2020.
  """
  num_points = check_int("num_points", num_points, minimum=2)
  batch_size = check_int("batch_size", batch_size, allow_none=True)
  for label, q in (("q_a", q_a), ("q_b", q_b)):
    try:
      q.check_compatible(model.trainable_variables)
    except (ValueError, AttributeError) as e:
      raise ValueError(f"`{label}` does not match model {model.name!r}: {e}") from None
  ensemble = isinstance(q_a, SampleEnsemble)
  coupling = optimal_coupling(q_a, q_b) if ensemble and isinstance(q_b, SampleEnsemble) else None
  ts = np.linspace(0., 1., num_points)

  @tf.function(autograph=False, reduce_retracing=True)
  def batch_nll(weights, x, y):
    outputs = tf.vectorized_map(lambda w: functional_call(model, w, x), weights,
                                fallback_to_while_loop=True, warn=False)
    num, rows = tf.shape(outputs)[0], tf.shape(outputs)[1]
    flat = tf.reshape(outputs, tf.concat([[num * rows], tf.shape(outputs)[2:]], 0))
    labels = tf.reshape(tf.broadcast_to(y[tf.newaxis], tf.concat([[num], tf.shape(y)], 0)),
                        tf.concat([[num * rows], tf.shape(y)[1:]], 0))
    values = loss(labels, flat)
    return tf.reshape(values, [-1]), num * rows

  totals, z_terms, draws = [], [], None
  for t in ts:
    q_t = interpolate(q_a, q_b, float(t), coupling=coupling)
    weights = q_t.predictive_weights(num_samples, seed)
    draws = int(weights[0].shape[0])
    parts = []
    for x, y in _batches(data, batch_size):
      values, expected = batch_nll(weights, x, y)
      if int(values.shape[0]) != int(expected):
        raise ValueError(
            f"`loss` must return one value per example ({int(expected)} here), got shape "
            f"{values.shape.as_list()}; use a per-example loss (reduction='none').")
      parts.append(values.numpy().astype(np.float64).reshape(draws, -1))
    total, z = _per_sample_terms(np.concatenate(parts, axis=1), marginalize)
    totals.append(total)
    z_terms.append(z)
  losses, z_terms = np.array(totals), np.stack(z_terms)  # [P], [P, S]
  exact = ensemble and (num_samples is None or num_samples == q_a.num_members)
  sd = (lambda v: np.zeros(v.shape[0])) if exact or draws < 2 else (
      lambda v: v.std(axis=-1, ddof=1) / np.sqrt(draws))
  line = (1. - ts)[:, None] * z_terms[0] + ts[:, None] * z_terms[-1]
  curve = losses - ((1. - ts) * losses[0] + ts * losses[-1])
  curve_stderr = sd(z_terms - line)
  curve_stderr[[0, -1]] = 0.
  best = int(np.argmax(curve))
  return LossBarrier(barrier=float(curve[best]), stderr=float(curve_stderr[best]), t=ts,
                     curve=curve, curve_stderr=curve_stderr, losses=losses,
                     losses_stderr=sd(z_terms), num_samples=draws)
