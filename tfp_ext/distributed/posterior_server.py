"""The posterior server: SNEP sites on TF's parameter-server engine.

Hasenclever et al. (JMLR 2017) run SNEP asynchronously: worker k owns data shard k and site k,
the server holds the global natural parameters η₀ + Σ_k η_k, and a worker, every few local
iterations, sends the change of its site and receives the current global state, from which its
conditional prior is η_global − η_k. Updates are additive changes of one site, so they commute:
a worker whose conditional prior was stale still sends a valid change of its own site.

Here the engine is `tf.distribute.experimental.ParameterServerStrategy` with a
`tf.distribute.coordinator.ClusterCoordinator`:

* the parameter servers hold one float64 variable `[K, row]`: row k is site k's state (its
  natural parameters, the damping copy, the tilted sampler's state, the iteration count), so the
  global posterior is η₀ plus the sum of the site rows;
* one round of site k is one scheduled closure: it reads the variable (the conditional prior of
  that moment), runs `iters_per_sync` SNEP iterations on shard k (`snep.snep_iterations`), and
  ends with a single `assign_add` of its row's change. The coordinator reschedules a closure whose
  worker died; as its only write is that last one, no acknowledged update is lost or half-applied;
* a closure knows its site and shard from `experimental_get_current_worker_index()`: worker k
  reads only shard k (its per-worker dataset is built from shard k alone), and a closure
  rescheduled onto worker j updates site j from shard j;
* a site update whose result is not a proper Gaussian (non-finite, or a precision that is not
  positive definite, as a diverging chain gives) is not applied: the closure adds zero and
  reports it, and `fit` logs the rejection.

Without a strategy the same round runs in this process, site after site (a synchronous
schedule, deterministic for a fixed seed).
"""

import logging
import os
import tempfile
import threading
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_ext.distributed import snep
from tfp_ext.distributed.gaussian_family import DIAGONAL
from tfp_ext.distributed.gaussian_family import GaussianFamily
from tfp_ext.distributed.gaussian_family import Natural
from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian

__all__ = ["PosteriorServer"]

_LOG = logging.getLogger(__name__)


class PosteriorServer:
  """SNEP over K data shards with the global approximation on parameter servers.

  #### Examples

  ```python
  strategy = tf.distribute.experimental.ParameterServerStrategy(cluster_resolver)
  learner = tfp_ext.distributed.PosteriorServer(
      dim=d, prior_precision=1.0, shards=[(x0, y0), (x1, y1)],
      tilted=tfp_ext.distributed.KernelTilted(make_sgld, log_likelihood_fn),
      strategy=strategy)
  learner.fit(num_rounds=50)
  q = learner.posterior()       # a MeanFieldGaussian (covariance="diagonal")
  ```

  #### References

  [1]: Leonard Hasenclever, Stefan Webb, Thibaut Lienart, Sebastian Vollmer, Balaji
       Lakshminarayanan, Charles Blundell, Yee Whye Teh. Distributed Bayesian Learning with
       Stochastic Natural Gradient Expectation Propagation and the Posterior Server. JMLR 18(106),
       2017. https://arxiv.org/abs/1512.09327
  """

  def __init__(self,
               dim: int,
               prior_precision: float,
               shards: Sequence[Any],
               tilted,
               strategy=None,
               covariance: str = DIAGONAL,
               beta: float = 1.0,
               learning_rate: float = 1e-2,
               iters_per_sync: int = 10,
               iters_per_damp: int = 10,
               mean_limits=(-1e3, 1e3),
               variance_limits=(1e-8, 1e8),
               initial_site_precision: Optional[float] = None,
               initial_state=None,
               seed: int = 0):
    """Builds the server state (on the parameter servers when `strategy` is given).

    Args:
      dim: d, the number of parameters.
      prior_precision: λ > 0, the prior N(0, λ⁻¹ I) (a Gaussian prior is what SNEP's sites
        multiply).
      shards: K ≥ 1 shards, each a tuple of arrays with the same structure and a leading example
        axis (e.g. `(x_k, y_k)`); worker k reads only shard k.
      tilted: the tilted-moment estimator (`snep.KernelTilted`, `snep.ConjugateGaussianTilted`).
      strategy: a `ParameterServerStrategy` with K workers, or None (run here, site after site).
      covariance: "diagonal" (mean-field) or "full".
      beta: the power β > 0.
      learning_rate: ε, the step of a site's mean parameters.
      iters_per_sync: local SNEP iterations per round (between two synchronizations).
      iters_per_damp: how often the damping copy is refreshed from the site's posterior.
      mean_limits, variance_limits: the projection's bounds for a site's means and variances.
      initial_site_precision: each site's initial precision (default λ/K, mean 0).
      initial_state: the samplers' initial θ, [d] (default zeros).
      seed: int seed of the samplers.

    Raises:
      ValueError: no shards, an empty shard, shards of different structures, a bad
        hyperparameter, or a strategy whose worker count is not K.
    """
    self.family = GaussianFamily(check_int("dim", dim), covariance)
    if isinstance(prior_precision, bool) or not isinstance(prior_precision, (int, float)) or (
        not 0 < prior_precision < float("inf")):
      raise ValueError("SNEP's sites multiply a Gaussian prior: `prior_precision` must be a "
                       f"positive finite number (the prior N(0, 1/λ)), got {prior_precision!r}.")
    shards = list(shards)
    if not shards:
      raise ValueError("`shards` is empty: SNEP needs K >= 1 data shards, one per worker.")
    structure = tf.nest.map_structure(lambda _: None, shards[0])
    self._shards = []
    for k, shard in enumerate(shards):
      try:
        tf.nest.assert_same_structure(shards[0], shard)
      except (ValueError, TypeError) as e:
        raise ValueError(f"Shard {k} does not have the structure of shard 0 ({structure}).") from e
      parts = [np.asarray(p) for p in tf.nest.flatten(shard)]
      sizes = {len(p) for p in parts}
      if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"Shard {k} is empty or its parts have different lengths ({sizes}).")
      self._shards.append(tf.nest.pack_sequence_as(shards[0], parts))
    for name, value in (("beta", beta), ("learning_rate", learning_rate)):
      if not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")
    self.num_sites = len(self._shards)
    self.tilted = tilted
    self.strategy = strategy
    self.beta = float(beta)
    self.learning_rate = float(learning_rate)
    self.iters_per_sync = check_int("iters_per_sync", iters_per_sync)
    self.iters_per_damp = check_int("iters_per_damp", iters_per_damp)
    self.mean_limits = tuple(float(v) for v in mean_limits)
    self.variance_limits = tuple(float(v) for v in variance_limits)
    self.seed = check_int("seed", seed, minimum=0)
    self.rejected = 0
    d = self.family.dim
    self.prior = self.family.isotropic(prior_precision)
    site0 = self.family.isotropic(prior_precision / self.num_sites if initial_site_precision is None
                                  else float(initial_site_precision))
    chain0 = np.zeros(d) if initial_state is None else np.asarray(initial_state, np.float64)
    row = np.concatenate([self.family.flatten(site0).numpy(), self.family.flatten(
        tf.nest.map_structure(lambda a, b: a + self.num_sites * b, self.prior, site0)).numpy(),
                          chain0, [0.]])
    initial = np.tile(row[None], [self.num_sites, 1])
    if strategy is None:
      self._state = tf.Variable(initial, name="snep_sites")
      self._coordinator = None
      self._local_round = tf.function(self._round)
    else:
      workers = strategy.extended._num_workers  # pylint: disable=protected-access
      if workers != self.num_sites:
        raise ValueError(f"The strategy has {workers} workers for {self.num_sites} shards: the "
                         "posterior server runs one site per worker.")
      with strategy.scope():
        self._state = tf.Variable(initial, name="snep_sites")
      self._coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
      self._write_shards()
      self._iterator = iter(self._coordinator.create_per_worker_dataset(self._dataset_fn))
      self._remote_round = tf.function(self._worker_round)

  # -- One round of one site ------------------------------------------------------------------------

  def _write_shards(self):
    """Each shard's parts as serialized tensors in files: a worker's dataset reads only its own.

    The dataset function is traced once for all workers with the worker index as a tensor, so
    shards held as constants would travel to every worker; file names travel instead.
    """
    self._shard_dir = tempfile.mkdtemp(prefix="tfp_ext_snep_shards_")
    paths = []
    for k, shard in enumerate(self._shards):
      row = []
      for i, part in enumerate(tf.nest.flatten(shard)):
        path = os.path.join(self._shard_dir, f"shard-{k}-part-{i}.tensor")
        tf.io.write_file(path, tf.io.serialize_tensor(tf.convert_to_tensor(part)))
        row.append(path)
      paths.append(row)
    self._shard_paths = paths
    self._part_specs = [tf.TensorSpec([None] + list(np.shape(p)[1:]), tf.as_dtype(p.dtype))
                        for p in tf.nest.flatten(self._shards[0])]

  def _dataset_fn(self):
    index = tf.distribute.coordinator.experimental_get_current_worker_index()
    files = tf.gather(tf.constant(self._shard_paths), index)
    parts = []
    for i, spec in enumerate(self._part_specs):
      part = tf.io.parse_tensor(tf.io.read_file(files[i]), spec.dtype)
      part.set_shape(spec.shape)
      parts.append(part)
    shard = tf.nest.pack_sequence_as(self._shards[0], parts)
    return tf.data.Dataset.from_tensors(shard).repeat()

  def _row_parts(self, row):
    size, d = self.family.size, self.family.dim
    site = self.family.unflatten(row[:size])
    damper = self.family.unflatten(row[size:2 * size])
    return snep.SiteState(site, damper, row[2 * size:2 * size + d], row[2 * size + d])

  def _round(self, k, data):
    """Site k's round: SNEP iterations from the current state, then one additive write.

    The sampler's seed comes from (seed, k, the site's iteration count), which the state holds,
    so a run restored from a checkpoint of the state draws what the uninterrupted run drew.
    """
    state = tf.convert_to_tensor(self._state)
    seed = seeds.fold_in(seeds.sanitize(self.seed, salt="PosteriorServer"), k,
                         tf.cast(state[k, -1], tf.int64))
    cond_prior = self.family.unflatten(self._global_flat(state) - state[k, :self.family.size])
    new = snep.snep_iterations(self.family, self._row_parts(state[k]), cond_prior, data,
                               self.tilted, self.iters_per_sync, self.learning_rate, self.beta,
                               self.iters_per_damp, self.mean_limits, self.variance_limits, seed)
    new_row = tf.concat([self.family.flatten(new.site), self.family.flatten(new.damper),
                         new.chain, [new.iteration]], 0)
    valid = self.family.is_valid(new.site) & tf.reduce_all(tf.math.is_finite(new_row))
    delta = tf.where(valid, new_row - state[k], tf.zeros_like(new_row))
    k = tf.cast(k, tf.int32)
    self._state.assign_add(tf.scatter_nd([[k]], delta[None], tf.shape(state)))
    return valid

  def _worker_round(self, iterator):
    k = tf.distribute.coordinator.experimental_get_current_worker_index()
    return self._round(k, next(iterator))

  # -- Running --------------------------------------------------------------------------------------

  def fit(self, num_rounds: int, timeout: Optional[float] = None) -> "PosteriorServer":
    """Runs `num_rounds` rounds of every site (asynchronously on the cluster, if any).

    Args:
      num_rounds: rounds per site; each is `iters_per_sync` SNEP iterations and one sync.
      timeout: seconds to wait for the cluster (None: no limit); a TimeoutError after it.
    """
    num_rounds = check_int("num_rounds", num_rounds)
    if self._coordinator is None:
      for _ in range(num_rounds):
        for k in range(self.num_sites):
          self._count(bool(self._local_round(tf.constant(k), self._shards[k])))
      return self
    results = [self._coordinator.schedule(self._remote_round, args=(self._iterator,))
               for _ in range(num_rounds * self.num_sites)]
    done = threading.Event()
    errors = []

    def join():
      try:
        self._coordinator.join()
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)
      done.set()

    threading.Thread(target=join, daemon=True).start()
    if not done.wait(timeout):
      raise TimeoutError(f"The cluster did not finish {len(results)} site rounds in {timeout} s.")
    if errors:
      raise errors[0]
    for result in results:
      self._count(bool(result.fetch()))
    return self

  def _count(self, valid):
    if not valid:
      self.rejected += 1
      _LOG.warning("A site update was rejected: its natural parameters were not a proper "
                   "Gaussian (non-finite, or a precision that is not positive definite); the "
                   "global state keeps the site's previous value.")

  # -- Results --------------------------------------------------------------------------------------

  def _global_flat(self, state):
    """η₀ + Σ_k η_k from the state, flattened."""
    return self.family.flatten(self.prior) + tf.reduce_sum(state[:, :self.family.size], 0)

  def global_natural(self) -> Natural:
    """η₀ + Σ_k η_k, the global approximation's natural parameters."""
    return self.family.unflatten(self._global_flat(tf.convert_to_tensor(self._state)))

  def site(self, k: int) -> Natural:
    return self.family.unflatten(tf.convert_to_tensor(self._state)[k, :self.family.size])

  def global_distribution(self):
    """The global approximation as a TFP distribution over θ ∈ R^d (float64)."""
    m, c = self.family.mean_and_covariance(self.global_natural())
    if self.family.full:
      return tfp.distributions.MultivariateNormalTriL(m, tf.linalg.cholesky(c))
    return tfp.distributions.MultivariateNormalDiag(m, tf.sqrt(c))

  def posterior(self, dtype=tf.float32) -> MeanFieldGaussian:
    """The global approximation as a weight posterior over one [d] part (diagonal family)."""
    if self.family.full:
      raise ValueError("posterior() returns a mean-field weight posterior, which would drop the "
                       "correlations of covariance='full'; use global_distribution().")
    m, v = self.family.mean_and_covariance(self.global_natural())
    return MeanFieldGaussian([tf.cast(m, dtype)], [tf.cast(tf.sqrt(v), dtype)],
                             name="posterior_server")

  @property
  def state_variable(self) -> tf.Variable:
    """The server state (checkpoint it with `tf.train.Checkpoint(sites=...)` to resume)."""
    return self._state
