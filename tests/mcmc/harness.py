"""Reusable checks for `tfp.mcmc.TransitionKernel`s: seeds, XLA, state parts, batches of chains.

Every check takes a ready kernel and an initial state (a tensor or a list of tensors whose leading
dims are the batch of chains) and raises `AssertionError` with a message when the kernel fails it.
They return what they computed so a test can check more.

API:

* `run_chain(kernel, init_state, num_results=3, seed=(1, 2), num_burnin_steps=0,
  jit_compile=False, trace_fn=None)` -> `(samples, trace)` from `tfp.mcmc.sample_chain` inside
  `tf.function` (optionally `jit_compile=True`). `trace_fn` defaults to tracing
  `target_log_prob` from the innermost results that have one. The traced function is cached per
  (kernel, init_state, sizes, jit_compile, trace_fn), so several checks of one kernel with the
  same `num_results` trace it once; `chain_fn(...)` returns that function of the seed.
* `assert_reproducible(kernel, init_state, ...)`: the same seed gives bit-identical samples twice,
  a different seed gives different samples.
* `assert_jit_compiles(kernel, init_state, num_results=3, seed=(1, 2), num_burnin_steps=0)`:
  the chain runs under `tf.function(jit_compile=True)`, is finite, is reproducible from its seed
  under XLA, and keeps the state's shapes; returns the XLA samples. (TF's stateless Philox kernels
  draw different numbers under XLA than in graph mode on CPU, so XLA and graph chains can only be
  compared in law, not elementwise: run moment or KS checks on the returned samples.)
* `assert_state_structure(kernel, init_state, ...)`: the samples keep the list structure, dtype and
  per-part shapes of `init_state` (with a leading `num_results` axis) and are finite.
* `assert_batch_of_chains(kernel, init_state, ...)`: with a batch of identical starting points the
  chains get independent randomness (no two chains are equal after one step) and the traced
  `target_log_prob` has shape `[num_results, *batch_shape]`.
* `assert_preserves_target(kernel, exact_draws, fresh_draws, seed, alpha=1e-3)`: one kernel step
  from exact draws of the target must again be distributed as the target (TFP's invariance test):
  a two-sample Kolmogorov-Smirnov test per coordinate of every part against independent exact
  `fresh_draws`, Bonferroni-corrected over coordinates. Returns the smallest p-value; a test
  shows the check has power by expecting its `AssertionError` for a deliberately wrong target.
"""

import numpy as np
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "chain_fn", "run_chain", "assert_reproducible", "assert_jit_compiles", "assert_state_structure",
    "assert_batch_of_chains", "assert_preserves_target", "innermost_results",
]


def innermost_results(results):
  """Follows `inner_results` / `accepted_results` to the results that hold `target_log_prob`."""
  while not hasattr(results, "target_log_prob"):
    if hasattr(results, "accepted_results"):
      results = results.accepted_results
    elif hasattr(results, "inner_results"):
      results = results.inner_results
    else:
      raise AssertionError(f"kernel results {type(results).__name__} have no target_log_prob")
  return results


def _default_trace_fn(_, results):
  return innermost_results(results).target_log_prob


# Traced chains, keyed by everything but the seed, so repeated checks of one kernel trace (and
# XLA-compile) once. Values keep the kernel and state alive, so their ids stay unique.
_CHAIN_FNS = {}


def chain_fn(kernel, init_state, num_results=3, num_burnin_steps=0, jit_compile=False,
             trace_fn=None):
  """A `tf.function` of a [2] int32 seed running `tfp.mcmc.sample_chain`; cached per arguments."""
  key = (id(kernel), id(init_state), num_results, num_burnin_steps, jit_compile, id(trace_fn))
  if key not in _CHAIN_FNS:
    fn = trace_fn or _default_trace_fn

    @tf.function(jit_compile=jit_compile, autograph=False)
    def run(seed):
      return tfp.mcmc.sample_chain(num_results, init_state, kernel=kernel,
                                   num_burnin_steps=num_burnin_steps, trace_fn=fn, seed=seed)

    _CHAIN_FNS[key] = (kernel, init_state, trace_fn, run)
  return _CHAIN_FNS[key][-1]


def run_chain(kernel, init_state, num_results=3, seed=(1, 2), num_burnin_steps=0,
              jit_compile=False, trace_fn=None):
  """`tfp.mcmc.sample_chain` inside `tf.function`; returns `(samples, trace)` as numpy."""
  run = chain_fn(kernel, init_state, num_results, num_burnin_steps, jit_compile, trace_fn)
  samples, trace = run(tf.constant(seed, tf.int32))
  return tf.nest.map_structure(np.asarray, samples), tf.nest.map_structure(np.asarray, trace)


def _parts(x):
  return list(x) if isinstance(x, (list, tuple)) else [x]


def assert_reproducible(kernel, init_state, num_results=3, seed=(1, 2), other_seed=(3, 4)):
  """Same seed -> identical samples; another seed -> different samples. Returns the samples."""
  a, _ = run_chain(kernel, init_state, num_results, seed)
  b, _ = run_chain(kernel, init_state, num_results, seed)
  c, _ = run_chain(kernel, init_state, num_results, other_seed)
  for i, (pa, pb, pc) in enumerate(zip(_parts(a), _parts(b), _parts(c))):
    if not np.array_equal(pa, pb):
      raise AssertionError(f"state part {i}: the same seed gave different samples")
    if np.array_equal(pa, pc):
      raise AssertionError(f"state part {i}: different seeds gave identical samples")
  return a


def assert_jit_compiles(kernel, init_state, num_results=3, seed=(1, 2), num_burnin_steps=0):
  """The chain XLA-compiles, is finite and seed-reproducible under XLA. Returns the XLA samples."""
  xla, xla_trace = run_chain(kernel, init_state, num_results, seed, num_burnin_steps,
                             jit_compile=True)
  again, _ = run_chain(kernel, init_state, num_results, seed, num_burnin_steps, jit_compile=True)
  for i, (px, pa, x) in enumerate(zip(_parts(xla), _parts(again), _parts(init_state))):
    if not np.all(np.isfinite(px)):
      raise AssertionError(f"state part {i}: XLA chain is not finite")
    if not np.array_equal(px, pa):
      raise AssertionError(f"state part {i}: the same seed gave different XLA chains")
    if px.shape != (num_results,) + tuple(x.shape):
      raise AssertionError(f"state part {i}: XLA samples have shape {px.shape}")
  if not np.all(np.isfinite(xla_trace)):
    raise AssertionError("XLA chain traced a non-finite target_log_prob")
  return xla


def assert_state_structure(kernel, init_state, num_results=3, seed=(1, 2)):
  """Samples keep structure, dtype and shapes of `init_state`, and are finite."""
  samples, _ = run_chain(kernel, init_state, num_results, seed)
  if isinstance(init_state, (list, tuple)) != isinstance(samples, (list, tuple)):
    raise AssertionError("samples do not keep the list structure of the initial state")
  for i, (s, x) in enumerate(zip(_parts(samples), _parts(init_state))):
    x = tf.convert_to_tensor(x)
    if s.dtype != x.dtype.as_numpy_dtype:
      raise AssertionError(f"state part {i}: dtype {s.dtype} != initial {x.dtype.name}")
    if s.shape != (num_results,) + tuple(x.shape):
      raise AssertionError(f"state part {i}: shape {s.shape} != {(num_results,) + tuple(x.shape)}")
    if not np.all(np.isfinite(s)):
      raise AssertionError(f"state part {i}: non-finite samples")
  return samples


def assert_batch_of_chains(kernel, init_state, batch_shape, num_results=3, seed=(1, 2)):
  """Chains from identical starts diverge (own randomness); trace has the batch shape."""
  samples, trace = run_chain(kernel, init_state, num_results, seed)
  expected = (num_results,) + tuple(batch_shape)
  if tuple(trace.shape) != expected:
    raise AssertionError(f"traced target_log_prob has shape {trace.shape}, expected {expected}")
  n = int(np.prod(batch_shape))
  flat = np.concatenate([np.reshape(p[0], (n, -1)) for p in _parts(samples)], axis=1)
  for i in range(n):
    for j in range(i + 1, n):
      if np.array_equal(flat[i], flat[j]):
        raise AssertionError(f"chains {i} and {j} of the batch are identical after one step")
  return samples, trace


def assert_preserves_target(kernel, exact_draws, fresh_draws, seed=(5, 6), alpha=1e-3):
  """One step from exact target draws stays distributed as the target (two-sample KS test).

  `exact_draws` and `fresh_draws` are independent exact samples of the target, each a tensor or
  list of tensors with the draws along the batch-of-chains axes. Each coordinate of each part is
  tested; the smallest p-value must exceed `alpha / number_of_coordinates` (Bonferroni), so the
  family-wise false-alarm rate is at most `alpha`. Returns that smallest p-value; a deliberately
  wrong kernel or target must make this raise (test that too, to show the check has power).
  """

  @tf.function(autograph=False)
  def step(state, seed):
    results = kernel.bootstrap_results(state)
    return kernel.one_step(state, results, seed=seed)[0]

  stepped = step(exact_draws, tf.constant(seed, tf.int32))
  pvalues = []
  for s, f in zip(_parts(stepped), _parts(fresh_draws)):
    s = np.reshape(np.asarray(s), (s.shape[0], -1))
    f = np.reshape(np.asarray(f), (f.shape[0], -1))
    for k in range(s.shape[1]):
      pvalues.append(scipy.stats.ks_2samp(s[:, k], f[:, k]).pvalue)
  pmin = float(np.min(pvalues))
  if pmin < alpha / len(pvalues):
    raise AssertionError(f"one kernel step moved the target: min KS p-value {pmin:.2e} over "
                         f"{len(pvalues)} coordinates (threshold {alpha / len(pvalues):.2e})")
  return pmin
