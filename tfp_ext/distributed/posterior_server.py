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
  ends with a single scatter-add of its row's change. The coordinator reschedules a closure whose
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

import collections
import logging
import os
import tempfile
import threading
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.distributed import snep
from tfp_ext.distributed.gaussian_family import DIAGONAL
from tfp_ext.distributed.gaussian_family import GaussianFamily
from tfp_ext.distributed.gaussian_family import Natural
from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int
from tfp_ext.mcmc.keras_model import keras_log_likelihood_fn
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian
from tfp_ext.posterior.sample_ensemble import SampleEnsemble

__all__ = ["PosteriorServer"]

_LOG = logging.getLogger(__name__)


def _weight_space(model, loss, initial_state):
  """(weight shapes, flat log-likelihood `(θ [d], batch) -> [n]` or None, initial θ or None)."""
  if isinstance(model, tf_keras.Model):
    if loss is None:
      raise ValueError("A Keras model needs its per-example `loss` (the negative "
                       "log-likelihood), as in tfp_ext.mcmc.keras_log_likelihood_fn.")
    if not model.built or not model.trainable_variables:
      raise ValueError("Build the model (call it once or give it an input shape) before SNEP "
                       "approximates the posterior of its weights.")
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    weights_ll = keras_log_likelihood_fn(model, loss)
    if initial_state is None:
      try:
        initial_state = [v.numpy() for v in model.trainable_variables]
      except tf.errors.InvalidArgumentError as e:
        raise ValueError(
            "The model's variables cannot be read: they were created before the "
            "ParameterServerStrategy connected to the cluster, which replaces this process's "
            "devices. Create the strategy first, then build the model.") from e
  elif callable(model):
    if loss is not None:
      raise ValueError("`loss` is for a Keras model; a log-likelihood function is its own loss.")
    if initial_state is None:
      raise ValueError("With a log-likelihood function, pass `initial_state`: the list of "
                       "initial weights, which gives their shapes.")
    shapes = [tuple(np.shape(w)) for w in initial_state]
    weights_ll = model
  else:
    d = check_int("model (the dimension d)", model)
    if loss is not None:
      raise ValueError("`loss` is for a Keras model.")
    flat = None if initial_state is None else np.asarray(initial_state, np.float64).reshape(-1)
    return [(d,)], None, flat
  sizes = [int(np.prod(s)) for s in shapes]
  if initial_state is not None and len(initial_state) != len(shapes):
    raise ValueError(f"`initial_state` has {len(initial_state)} parts for {len(shapes)} weights.")

  def log_likelihood_fn(theta, batch):
    parts = tf.split(theta, sizes)
    return weights_ll([tf.reshape(p, s) for p, s in zip(parts, shapes)], batch)

  flat = np.concatenate([np.asarray(w, np.float64).reshape(-1) for w in initial_state])
  return shapes, log_likelihood_fn, flat


def _gaussian_prior(family: GaussianFamily, prior) -> Natural:
  """η₀ of a precision λ (N(0, λ⁻¹I)) or of a TFP Normal / MultivariateNormal over the d weights."""
  d = family.dim
  message = ("SNEP's sites multiply a Gaussian prior: `prior` must be a positive finite precision "
             f"λ (the prior N(0, 1/λ)) or a tfd.Normal / tfd.MultivariateNormal* over the {d} "
             f"weights, got {prior!r}.")
  tfd = tfp.distributions
  if isinstance(prior, (int, float, np.floating, np.integer)) and not isinstance(prior, bool):
    if not 0 < prior < float("inf"):
      raise ValueError(message)
    return family.isotropic(float(prior))
  if isinstance(prior, tfd.Normal):
    mean = np.broadcast_to(np.asarray(prior.mean(), np.float64).reshape(-1), [d])
    precision = np.broadcast_to(1. / np.asarray(prior.variance(), np.float64).reshape(-1), [d])
    if family.full:
      precision = np.diag(precision)
  elif isinstance(prior, tfd.MultivariateNormalLinearOperator):
    if prior.event_shape != [d] or prior.batch_shape.rank != 0:
      raise ValueError(message + f" (its event shape is {prior.event_shape}, batch shape "
                       f"{prior.batch_shape})")
    mean = np.asarray(prior.mean(), np.float64)
    covariance = np.asarray(prior.covariance(), np.float64)
    if not family.full:
      if np.any(covariance != np.diag(np.diag(covariance))):
        raise ValueError("A prior with correlations needs covariance='full'.")
      precision = 1. / np.diag(covariance)
    else:
      precision = np.linalg.inv(covariance)
  else:
    raise ValueError(message)
  eta = family.from_mean_precision(mean, precision)
  if not bool(family.is_valid(eta)):
    raise ValueError(message + " (its precision is not positive definite and finite)")
  return eta


def _check_shards(shards) -> list:
  """The shards as nested NumPy arrays, or a ValueError naming the bad one."""
  if isinstance(shards, tf.data.Dataset):
    raise ValueError("`shards` is one dataset: pass a list of K datasets (or arrays), one per site.")
  shards = list(shards)
  if not shards:
    raise ValueError("`shards` is empty: SNEP needs K >= 1 data shards, one per worker.")
  arrays = []
  for k, shard in enumerate(shards):
    if isinstance(shard, tf.data.Dataset):
      batches = list(shard.as_numpy_iterator())
      if not batches:
        raise ValueError(f"Shard {k} is an empty dataset.")
      shard = tf.nest.map_structure(lambda *b: np.concatenate(b, 0), *batches)
    arrays.append(shard)
  structure = tf.nest.map_structure(lambda _: None, arrays[0])
  checked = []
  for k, shard in enumerate(arrays):
    try:
      tf.nest.assert_same_structure(arrays[0], shard)
    except (ValueError, TypeError) as e:
      raise ValueError(f"Shard {k} does not have the structure of shard 0 ({structure}).") from e
    parts = [np.asarray(p) for p in tf.nest.flatten(shard)]
    sizes = {len(p) if p.ndim else 0 for p in parts}
    if len(sizes) != 1 or 0 in sizes:
      raise ValueError(f"Shard {k} is empty or its parts have different lengths ({sizes}).")
    if k and [p.shape[1:] for p in parts] != [np.shape(p)[1:] for p in tf.nest.flatten(checked[0])]:
      raise ValueError(f"Shard {k}'s examples have other shapes than shard 0's.")
    checked.append(tf.nest.pack_sequence_as(arrays[0], parts))
  return checked


class PosteriorServer:
  """SNEP over K data shards with the global approximation on parameter servers.

  The model is a tf_keras model with a per-example loss (its trainable weights θ are what SNEP
  approximates), a log-likelihood function over a weight list, or a dimension d with a
  tilted-moment estimator of your own (`tilted=`, e.g. the exact `ConjugateGaussianTilted`).
  With a model, each worker samples its tilted distribution with the SG-MCMC kernel that
  `kernel` builds: any `tfp_ext.mcmc` kernel whose constructor starts `(log_prior_fn,
  log_likelihood_fn, data, ...)`, e.g.
  `functools.partial(tfp_ext.mcmc.StochasticGradientLangevinDynamics, batch_size=32,
  step_size=1e-4)`; SNEP never knows which.

  #### Examples

  ```python
  cluster = tfp_ext.distributed.LocalCluster(num_workers=4)     # or a TF_CONFIG cluster
  learner = tfp_ext.distributed.PosteriorServer(
      model, loss=tf_keras.losses.BinaryCrossentropy(from_logits=True), prior=1.0,
      shards=[(x_k, y_k) for x_k, y_k in shards],
      kernel=functools.partial(tfp_ext.mcmc.StochasticGradientLangevinDynamics,
                               batch_size=32, step_size=1e-4),
      strategy=cluster.strategy())
  learner.fit(num_rounds=50, backup_dir="/tmp/snep")   # resumes from the backup if interrupted
  q = learner.posterior()                              # a tfp_ext.posterior weight posterior
  tfp_ext.serving.export(model, q, "serving/models/distributed")
  ```

  #### References

  [1]: Leonard Hasenclever, Stefan Webb, Thibaut Lienart, Sebastian Vollmer, Balaji
       Lakshminarayanan, Charles Blundell, Yee Whye Teh. Distributed Bayesian Learning with
       Stochastic Natural Gradient Expectation Propagation and the Posterior Server. JMLR 18(106),
       2017. https://arxiv.org/abs/1512.09327
  """

  def __init__(self,
               model,
               loss=None,
               prior: Any = 1.0,
               shards: Sequence[Any] = (),
               kernel: Optional[Callable] = None,
               strategy=None,
               *,
               tilted: Optional[Callable] = None,
               num_results: int = 20,
               num_burnin_steps: int = 0,
               covariance: str = DIAGONAL,
               beta: float = 1.0,
               learning_rate: float = 1e-2,
               iters_per_sync: int = 10,
               iters_per_damp: int = 10,
               mean_limits=(-1e3, 1e3),
               variance_limits=(1e-8, 1e8),
               initial_site_precision: Optional[float] = None,
               initial_state=None,
               seed: int = 0,
               dtype=tf.float32,
               jit_compile: bool = True):
    """Builds the server state (on the parameter servers when `strategy` is given).

    Args:
      model: a built tf_keras model (with `loss`), a log-likelihood function
        `(weights: list, batch) -> [n]` over a weight list (with `initial_state`, a list of
        arrays that gives the weights' shapes), or an int d (with `tilted`).
      loss: the model's per-example negative log-likelihood (as in
        `tfp_ext.mcmc.keras_log_likelihood_fn`); only with a Keras model.
      prior: the Gaussian prior that SNEP's sites multiply: a precision λ > 0 (the prior
        N(0, λ⁻¹ I), like the optimizers' `prior_precision`), or a `tfd.Normal` /
        `tfd.MultivariateNormal*` over the d weights (flattened in `model.trainable_variables`
        order).
      shards: K ≥ 1 shards, each a tuple of arrays with the same structure and a leading example
        axis (e.g. `(x_k, y_k)`), or a finite `tf.data.Dataset` of such batches (read here once,
        when the server is built); worker k reads only shard k.
      kernel: builds site k's SG-MCMC kernel, `kernel(log_prior_fn, log_likelihood_fn, data)`.
      strategy: a `ParameterServerStrategy` with K workers, or None (run here, site after site).
      tilted: instead of `kernel`, a tilted-moment estimator
        `(family, cavity, data, chain_state, seed) -> (Mean, chain_state)`.
      num_results, num_burnin_steps: the kernel's samples per SNEP iteration (moments are the
        mean over `num_results` states after `num_burnin_steps`; the chain continues from one
        iteration to the next).
      covariance: "diagonal" (mean-field) or "full" (for small models).
      beta: the power β > 0 of the damped, convergent objective.
      learning_rate: ε, the step of a site's mean parameters.
      iters_per_sync: local SNEP iterations per round (between two synchronizations).
      iters_per_damp: how often the damping copy is refreshed from the site's posterior.
      mean_limits, variance_limits: the projection's bounds for a site's means and variances.
      initial_site_precision: each site's initial precision (default λ/K, mean 0).
      initial_state: the samplers' initial weights: a list like the model's weights (default:
        the Keras model's current weights) or a flat [d] array (default zeros for an int d).
      seed: int seed of the samplers.
      dtype: the dtype the kernel runs in (the server state is float64).
      jit_compile: compile a site's local iterations with XLA (on the worker that runs them).

    Raises:
      ValueError: no shards, an empty shard, shards of different structures, a non-Gaussian
        prior, neither or both of `kernel` and `tilted`, a bad hyperparameter, or a strategy whose
        worker count is not K.
    """
    self.model = model if isinstance(model, tf_keras.Model) else None
    self.shapes, log_likelihood_fn, chain0 = _weight_space(model, loss, initial_state)
    self.family = GaussianFamily(sum(int(np.prod(s)) for s in self.shapes), covariance)
    self.prior = _gaussian_prior(self.family, prior)
    self._shards = _check_shards(shards)
    for name, value in (("beta", beta), ("learning_rate", learning_rate)):
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")
    self.beta = float(beta)
    if (kernel is None) == (tilted is None):
      raise ValueError("Pass exactly one of `kernel` (an SG-MCMC kernel builder, run on the "
                       "model's tilted distributions) and `tilted` (a tilted-moment estimator).")
    if kernel is not None:
      if log_likelihood_fn is None:
        raise ValueError("A `kernel` samples a likelihood: give a Keras model with its `loss`, "
                         "or a log-likelihood function, not a dimension.")
      tilted = snep.KernelTilted(kernel, log_likelihood_fn, num_results, num_burnin_steps,
                                 self.beta, dtype)
    self.num_sites = len(self._shards)
    self.tilted = tilted
    self.strategy = strategy
    self.learning_rate = float(learning_rate)
    self.iters_per_sync = check_int("iters_per_sync", iters_per_sync)
    self.iters_per_damp = check_int("iters_per_damp", iters_per_damp)
    self.mean_limits = tuple(float(v) for v in mean_limits)
    self.variance_limits = tuple(float(v) for v in variance_limits)
    self.seed = check_int("seed", seed, minimum=0)
    self.rejected = 0
    d = self.family.dim
    site0 = (tf.nest.map_structure(lambda p: p / self.num_sites, self.prior)
             if initial_site_precision is None else
             self.family.isotropic(float(initial_site_precision)))
    if chain0 is None:
      chain0 = np.zeros(d)
    if chain0.shape != (d,):
      raise ValueError(f"`initial_state` has {chain0.size} numbers for {d} weights.")
    row = np.concatenate([self.family.flatten(site0).numpy(), self.family.flatten(
        tf.nest.map_structure(lambda a, b: a + self.num_sites * b, self.prior, site0)).numpy(),
                          chain0, [0.]])
    initial = np.tile(row[None], [self.num_sites, 1])
    self._rounds_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="rounds_done")
    self._compiled_update = tf.function(self._update, jit_compile=bool(jit_compile))
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

  def _update(self, state, k, data):
    """The change of site k's row from the state `[K, row]` (zero if the new site is not a proper
    Gaussian), and whether it is one (a pure function: XLA-compiled when `jit_compile`).

    The sampler's seed comes from (seed, k, the site's iteration count), which the state holds,
    so a run restored from a checkpoint of the state draws what the uninterrupted run drew.
    """
    seed = seeds.fold_in(seeds.sanitize(self.seed, salt="PosteriorServer"), k,
                         tf.cast(state[k, -1], tf.int64))
    cond_prior = self.family.unflatten(self._global_flat(state) - state[k, :self.family.size])
    new = snep.snep_iterations(self.family, self._row_parts(state[k]), cond_prior, data,
                               self.tilted, self.iters_per_sync, self.learning_rate, self.beta,
                               self.iters_per_damp, self.mean_limits, self.variance_limits, seed)
    new_row = tf.concat([self.family.flatten(new.site), self.family.flatten(new.damper),
                         new.chain, [new.iteration]], 0)
    valid = self.family.is_valid(new.site) & tf.reduce_all(tf.math.is_finite(new_row))
    return tf.where(valid, new_row - state[k], tf.zeros_like(new_row)), valid

  def _round(self, k, data):
    """Site k's round: SNEP iterations from the state read now, then one additive write of its
    row (a scatter-add on the parameter server: only the row's change travels)."""
    delta, valid = self._compiled_update(tf.convert_to_tensor(self._state), k, data)
    self._state.scatter_nd_add([[tf.cast(k, tf.int32)]], delta[None])
    return valid

  def _worker_round(self, iterator):
    k = tf.distribute.coordinator.experimental_get_current_worker_index()
    return self._round(k, next(iterator))

  # -- Running --------------------------------------------------------------------------------------

  def fit(self,
          num_rounds: int,
          callbacks: Sequence[tf_keras.callbacks.Callback] = (),
          backup_dir: Optional[str] = None,
          verbose: int = 1,
          timeout: Optional[float] = None) -> "PosteriorServer":
    """Runs `num_rounds` rounds: K site updates each (asynchronously on the cluster, if any).

    On a cluster the coordinator keeps every worker busy (2K rounds in flight), so sites run
    asynchronously against whatever global state they read; a "round" ends when K more site
    updates have landed. Without a strategy, a round runs sites 0..K-1 in turn (deterministic).

    Args:
      num_rounds: rounds of this call; each is K site updates of `iters_per_sync` SNEP
        iterations.
      callbacks: `tf_keras.callbacks.Callback`s; a round is an epoch (`on_epoch_end(round,
        logs)`, with logs `rejected` and `max_mean_change`: the largest change of a global mean
        in the round, in global standard deviations). The Keras model, if any, is their model.
      backup_dir: as `tf_keras.callbacks.BackupAndRestore`: the server state and the rounds done
        are saved there after every round; a `fit` that finds a backup (a chief restarted after a
        failure) restores it and runs only the remaining rounds; the backup is deleted when
        `fit` completes.
      verbose: 1 shows a progress bar, 0 nothing.
      timeout: seconds to wait for the whole call (None: no limit); a TimeoutError after it.
    """
    num_rounds = check_int("num_rounds", num_rounds)
    manager = None
    if backup_dir is not None:
      checkpoint = tf.train.Checkpoint(sites=self._state, rounds_done=self._rounds_done)
      manager = tf.train.CheckpointManager(checkpoint, backup_dir, max_to_keep=1)
      if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        _LOG.info("Resumed from %s after round %d.", manager.latest_checkpoint,
                  int(self._rounds_done.numpy()))
      else:
        self._rounds_done.assign(0)
    else:
      self._rounds_done.assign(0)
    callbacks = list(callbacks)
    for callback in callbacks:
      callback.set_params({"epochs": num_rounds, "verbose": verbose, "steps": self.num_sites})
      if self.model is not None:
        callback.set_model(self.model)
    progress = tf_keras.utils.Progbar(num_rounds, unit_name="round") if verbose else None
    first = int(self._rounds_done.numpy())
    done, errors = threading.Event(), []

    def run():
      try:
        for callback in callbacks:
          callback.on_train_begin()
        previous = self._mean_and_std()
        for r, valid in enumerate(self._rounds(num_rounds - first), start=first):
          self._rounds_done.assign(r + 1)
          if manager is not None:
            manager.save()
          current = self._mean_and_std()
          logs = {"rejected": float(sum(not v for v in valid)),
                  "max_mean_change": float(np.max(np.abs(current[0] - previous[0]) / current[1]))}
          previous = current
          if progress is not None:
            progress.update(r + 1, list(logs.items()))
          for callback in callbacks:
            callback.on_epoch_end(r, logs)
        for callback in callbacks:
          callback.on_train_end()
        if manager is not None:
          for path in tf.io.gfile.glob(os.path.join(backup_dir, "*")):
            tf.io.gfile.remove(path)
      except BaseException as e:  # pylint: disable=broad-except
        errors.append(e)  # Raised in the caller's thread below.
      done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(timeout):
      raise TimeoutError(f"{num_rounds - first} rounds of {self.num_sites} sites did not finish in "
                         f"{timeout} s.")
    if errors:
      raise errors[0]
    return self

  def _rounds(self, num_rounds):
    """Yields, for each completed round, whether each of its K site updates was applied."""
    if self._coordinator is None:
      for _ in range(num_rounds):
        yield [self._count(bool(self._local_round(tf.constant(k), self._shards[k])))
               for k in range(self.num_sites)]
      return
    total, in_flight, landed = num_rounds * self.num_sites, collections.deque(), []
    scheduled = 0
    while scheduled < min(total, 2 * self.num_sites):
      in_flight.append(self._coordinator.schedule(self._remote_round, args=(self._iterator,)))
      scheduled += 1
    while in_flight:
      landed.append(self._count(bool(in_flight.popleft().fetch())))
      if scheduled < total:
        in_flight.append(self._coordinator.schedule(self._remote_round, args=(self._iterator,)))
        scheduled += 1
      if len(landed) == self.num_sites:
        yield landed
        landed = []

  def _count(self, valid: bool) -> bool:
    if not valid:
      self.rejected += 1
      _LOG.warning("A site update was rejected: its natural parameters were not a proper "
                   "Gaussian (non-finite, or a precision that is not positive definite); the "
                   "global state keeps the site's previous value.")
    return valid

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

  def _mean_and_std(self):
    m, c = self.family.mean_and_covariance(self.global_natural())
    return m.numpy(), np.sqrt(np.diag(c) if self.family.full else c.numpy())

  def _unflatten_weights(self, flat, dtype):
    """[..., d] -> weight parts shaped like the model's variables, `[..., *shape]`."""
    parts = tf.split(tf.cast(flat, dtype), [int(np.prod(s)) for s in self.shapes], axis=-1)
    batch = flat.shape[:-1].as_list()
    return [tf.reshape(p, batch + list(s)) for p, s in zip(parts, self.shapes)]

  def posterior(self, num_samples: int = 32, seed=None, dtype=tf.float32):
    """The global approximation as a `tfp_ext.posterior` weight posterior, ready to export.

    Its parts are shaped like the model's trainable variables (one `[d]` part for a dimension or
    a flat log-likelihood). The diagonal family gives a `MeanFieldGaussian`; the full one gives a
    `SampleEnsemble` of `num_samples` seeded draws from N(m, C), so the served predictive keeps
    the correlations.
    """
    m, c = self.family.mean_and_covariance(self.global_natural())
    if self.family.full:
      draws = self.global_distribution().sample(
          check_int("num_samples", num_samples), seed=seeds.sanitize(seed, salt="posterior"))
      return SampleEnsemble(self._unflatten_weights(draws, dtype), name="posterior_server")
    return MeanFieldGaussian(self._unflatten_weights(m, dtype),
                             self._unflatten_weights(tf.sqrt(c), dtype), name="posterior_server")

  @property
  def state_variable(self) -> tf.Variable:
    """The server state `[K, row]`: site k's natural parameters, damping copy, chain, count."""
    return self._state
