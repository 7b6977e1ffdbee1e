"""Posterior predictive summaries, vectorized over weight samples."""

from typing import Optional

import tensorflow as tf

from tfp_ext.internal.runtime import in_xla_context
from tfp_ext.internal.runtime import onednn_enabled
from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["predictive", "predictive_samples", "summarize", "TASKS"]

TASKS = ("regression", "classification")


# In a graph (not XLA, not eager), a batch of enough rows runs each sample as a plain call of the
# model, its own copy of the graph, instead of vectorized: plain matmuls that run side by side on
# the inter-op pool. TF's CPU batched matmul with its default (Eigen) kernels runs the per-sample
# products in parallel over the samples only while each has one row or at most 128·128
# multiply-adds (`LaunchBatchMatMul` in TF's batch_matmul_op_impl.h); larger ones run one after
# another, each split over the threads. So per-sample calls take over from 2 rows once the rows
# times the largest weight's size (a Dense kernel's multiply-adds per row) exceed that, and from 16
# rows with oneDNN's kernels. More samples than `_OWN_GRAPH_MAX_GROUPS` run in that many vectorized
# groups, which bounds the graph. Exports through TF's C API (as TF Serving runs them; 2 cores,
# S = 32), ratio to the deterministic model on 32·B rows, per-sample calls vs vectorized groups,
# Eigen: 16-128-128-1 at B = 2 / 8 / 32: 2.6-2.8× vs 3.3-4.1×, 1.6× vs 1.7×, 0.94-1.09× vs
# 1.31-1.37×, but 2.2-2.3× vs 1.7-2.0× at B = 1; 784-128-128-10 at B = 8 / 16: 1.7-2.0× vs
# 2.3-2.5×, 1.3× vs 2.5-2.6×; 8-64-64-1 (plain calls from 5 rows) at B = 2 would take 2.8-3.1×
# vs 1.8-1.9×. oneDNN: 784-128-128-10 at B = 8 / 16: 2.3× vs 2.2×, 1.5-1.6× vs 2.4-2.5×. More in
# benchmarks/RESULTS.md.
_BATCH_MATMUL_SMALL_COST = 128 * 128
_OWN_GRAPH_MIN_ROWS = 2
_OWN_GRAPH_MIN_ROWS_ONEDNN = 16
_OWN_GRAPH_MAX_GROUPS = 32

# Below those rows, where TF's Eigen kernels run the graph, the samples run in this many groups,
# each vectorized: the groups' ops run concurrently on the inter-op pool. Measured on an S = 32,
# 16-128-128-1 MLP through TF's C API at B = 8, before per-sample calls took over there: four
# groups 1.50-1.71× the deterministic model on 32·B rows, one 2.04-2.13×. With oneDNN kernels four
# groups were slower (B = 8: 1.8-2.1× → 2.5-2.7×); XLA compiles the single vectorized graph well,
# and in eager mode every group would be traced anew on each call. Those keep one group.
_SAMPLE_GROUPS = 4

# A batch of at most this many input elements (rows × features) is copied once per sample before
# vectorizing, so the first layer's matmul is batched over samples too. With the batch shared, TF
# vectorizes that matmul as one product against all S kernels laid side by side, re-laying the
# kernels out and transposing the product on every call (XLA too); for small batches that costs
# more than the copy. Measured on 2 CPU cores, S = 32, against the deterministic model on 32·B
# rows, with MLPs 8-64-64-1, 16-128-128-1, 64-256-256-1, 128-128-128-1 and 784-128-128-10 at
# B = 1 to 256:
# - exports run through TF's C API (as TF Serving runs them), Eigen kernels, 4 groups: copying was
#   as fast or faster in all 22 cases with B · features ≤ 8192 (the 784-input MLP at B = 1:
#   4.7× → 2.4×) and slower in all 5 above it (at B = 64: 1.5× → 2.0×);
# - the XLA signature (16- and 784-input MLPs): as fast or faster in all 6 cases up to 8192
#   (784 inputs at B = 1: 4.2× → 1.9×), the same or slower above it;
# - oneDNN kernels, one group: faster at every size measured (B = 1 / 256 with 784 inputs:
#   5.2× → 3.0× / 1.3× → 0.9×); the threshold still applies there.
_COPY_MAX_INPUT_ELEMENTS = 8192


def _copy_per_sample(x, n):
  """`x` (a tensor or a structure of tensors) stacked `n` times along a new first axis."""
  return tf.nest.map_structure(
      lambda t: tf.broadcast_to(t[tf.newaxis], tf.concat([[n], tf.shape(t)], axis=0)), x)


def _input_elements(x):
  """The number of elements of the input batch: an int if the shapes are static, a scalar tensor
  if not, or None if an input is sparse or ragged (those are not copied)."""
  inputs = tf.nest.flatten(x)
  if not inputs or any(isinstance(t, (tf.SparseTensor, tf.RaggedTensor)) for t in inputs):
    return None
  # Summed in Python: TF does not fold an AddN of several static sizes into a constant.
  sizes = [tf.TensorShape(t.shape).num_elements() for t in inputs]
  if None not in sizes:
    return sum(sizes)
  return tf.add_n([tf.size(t, out_type=tf.int64) for t in inputs])


def _batch_rows(x):
  """The batch size of the (first) input: an int if static, a scalar tensor if not, or None if
  the input has no batch dimension."""
  inputs = tf.nest.flatten(x)
  if not inputs:
    return None
  t = inputs[0]
  shape = tf.TensorShape(getattr(t, "shape", None))
  if shape.rank == 0:
    return None
  if shape.rank and shape[0] is not None:
    return shape[0]
  if isinstance(t, tf.SparseTensor):
    return t.dense_shape[0]
  if isinstance(t, tf.RaggedTensor):
    return t.nrows()
  return tf.shape(t)[0]


def _own_graph_min_rows(weights) -> int:
  """The batch rows from which a graph runs each sample as a plain call of the model."""
  largest = max(tf.TensorShape(w.shape[1:]).num_elements() or 1 for w in weights)
  floor = _OWN_GRAPH_MIN_ROWS_ONEDNN if onednn_enabled() else _OWN_GRAPH_MIN_ROWS
  return max(floor, _BATCH_MATMUL_SMALL_COST // largest + 1)


def _choose(pred, if_true, if_false):
  """`if_true()` or `if_false()`: decided now if `pred` is static, else by `tf.cond` at run time."""
  static = pred if isinstance(pred, bool) else tf.get_static_value(pred)
  if static is not None:
    return if_true() if static else if_false()
  return tf.cond(pred, if_true, if_false)


def predictive_samples(model, posterior: WeightPosterior, x, num_samples: Optional[int], seed,
                       sample_groups: Optional[int] = None):
  """Model outputs under `S` posterior weight samples: a tensor `[S, *model_output_shape]`.

  All S samples run in one call of one graph, with no variable assignment, so it is
  XLA-compilable and safe to call from many threads at once. The samples are vectorized with
  `tf.vectorized_map`: Dense, normalization and elementwise layers become batched matmuls; ops
  that TF cannot vectorize over a stacked weight (`Conv2D` filters) run as a `tf.while_loop` over
  the samples instead, which is slower but still a single graph. For batches of more than one
  row a graph (not XLA, not eager) by default holds a plain copy of the model's ops per sample
  instead, which TF runs side by side; that is faster on CPU (see `sample_groups`).

  `sample_groups` splits the samples into that many groups, each vectorized (with one group per
  sample, each is a plain call of the model); the outputs are the same, in the same order.
  `None` picks the faster on CPU for what will run the ops: in a graph, one group per sample (at
  most 32 groups) from 2 rows on where TF's default (Eigen) kernels run it and the rows times the
  largest weight's size exceed 128·128 (a Dense kernel's multiply-adds; so from 2 rows for a
  128×128 kernel, from 5 for 64×64), from 16 rows (or that) where TF's oneDNN kernels do (as this
  process has them); below that 4 vectorized groups with Eigen kernels, 1 with oneDNN's; 1 group
  under XLA and in eager mode. A small input batch (at most 8192 elements) is copied per sample
  before vectorizing, which is faster; the outputs are the same up to float rounding. Where the
  batch size is known only when the graph runs (a serving signature), the graph holds each
  variant and the batch picks one.
  """
  sample_groups = check_int("sample_groups", sample_groups, allow_none=True)
  weights = posterior.predictive_weights(num_samples, seed)
  graph_default = sample_groups is None and not (tf.executing_eagerly() or in_xla_context())
  if sample_groups is None:
    sample_groups = _SAMPLE_GROUPS if graph_default and not onednn_enabled() else 1
  n = tf.compat.dimension_value(weights[0].shape[0]) if weights else None

  def run(group, copy_x):
    if copy_x:
      inputs = (group, _copy_per_sample(x, tf.shape(group[0])[0]))
      fn = lambda args: functional_call(model, args[0], args[1])
    else:
      inputs, fn = group, lambda w: functional_call(model, w, x)
    return tf.vectorized_map(fn, inputs, fallback_to_while_loop=True, warn=False)

  def run_all(groups, copy_x):
    groups = 1 if n is None else min(groups, n)
    if groups == 1:
      return run(weights, copy_x)
    if groups == n:  # One plain call per sample; unstacking takes one op per weight.
      outputs = [functional_call(model, list(w), x) for w in zip(*[tf.unstack(w) for w in weights])]
      return tf.nest.map_structure(lambda *parts: tf.stack(parts), *outputs)
    sizes = [n // groups + (i < n % groups) for i in range(groups)]
    outputs = [run(list(g), copy_x) for g in zip(*[tf.split(w, sizes) for w in weights])]
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)

  if not weights:
    return run_all(1, False)
  elements = _input_elements(x)
  copy_x = False if elements is None else elements <= _COPY_MAX_INPUT_ELEMENTS
  vectorized = lambda: _choose(copy_x, lambda: run_all(sample_groups, True),
                               lambda: run_all(sample_groups, False))
  rows = _batch_rows(x)
  if not graph_default or rows is None:
    return vectorized()
  return _choose(rows >= _own_graph_min_rows(weights),
                 lambda: run_all(_OWN_GRAPH_MAX_GROUPS, False), vectorized)


def _entropy(p, axis=-1):
  return -tf.reduce_sum(tf.math.xlogy(p, p), axis=axis)


def summarize(outputs, task: str = "regression", noise_stddev: float = 0.0) -> dict:
  """Summarizes `[S, B, ...]` sampled outputs into batch-first predictive statistics.

  Regression: `mean`, `stddev`; with `noise_stddev > 0` (a homoscedastic Gaussian noise model)
  `stddev` is the total and `epistemic_stddev` / `aleatoric_stddev` split it
  (var = epistemic var + noise_stddev²).

  Classification (outputs are logits; a last dimension of 1 means Bernoulli logits): `mean` (the
  predictive probabilities), `stddev` (of the probabilities across samples),
  `predictive_entropy` H[E p] and `mutual_information` H[E p] − E H[p] (in nats, shape `[B]`).
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
  outputs = tf.convert_to_tensor(outputs)
  if task == "regression":
    mean, var = tf.nn.moments(outputs, axes=[0])
    result = {"mean": mean}
    if noise_stddev:
      if noise_stddev < 0:
        raise ValueError(f"noise_stddev must be >= 0, got {noise_stddev}.")
      alea = tf.fill(tf.shape(mean), tf.cast(noise_stddev, mean.dtype))
      result["epistemic_stddev"] = tf.sqrt(var)
      result["aleatoric_stddev"] = alea
      result["stddev"] = tf.sqrt(var + tf.square(alea))
    else:
      result["stddev"] = tf.sqrt(var)
    return result
  if outputs.shape[-1] == 1:  # Bernoulli logits: report P(y = 1), entropies over both classes.
    p1 = tf.sigmoid(outputs)
    probs2 = tf.concat([1. - p1, p1], axis=-1)
  else:
    p1 = probs2 = tf.nn.softmax(outputs, axis=-1)
  mean_p = tf.reduce_mean(p1, axis=0)
  mean_probs2 = tf.reduce_mean(probs2, axis=0)
  pred_entropy = _entropy(mean_probs2)
  expected_entropy = tf.reduce_mean(_entropy(probs2), axis=0)
  return {
      "mean": mean_p,
      "stddev": tf.math.reduce_std(p1, axis=0),
      "predictive_entropy": pred_entropy,
      # Clip tiny negative values from rounding: mutual information is non-negative.
      "mutual_information": tf.maximum(pred_entropy - expected_entropy, 0.),
  }


def predictive(model, posterior: WeightPosterior, x, num_samples: Optional[int] = 32, seed=0,
               task: str = "regression", noise_stddev: float = 0.0,
               sample_groups: Optional[int] = None) -> dict:
  """Posterior predictive of `model` at inputs `x`, averaged over `num_samples` weight samples.

  Args:
    model: the tf_keras model whose `trainable_variables` the posterior is aligned with.
    posterior: a `WeightPosterior` (`MeanFieldGaussian`, `SampleEnsemble`, …).
    x: a batch of inputs, batch dimension first.
    num_samples: Monte Carlo samples; `None` lets an ensemble use all of its members.
    seed: stateless seed; a fixed seed makes the predictive deterministic.
    task: "regression" or "classification" (model outputs logits).
    noise_stddev: regression only: the observation noise, adding an aleatoric part.
    sample_groups: run the samples in this many vectorized groups; `None` picks the faster for
      what runs the ops (see `predictive_samples`). The answers do not depend on it.

  Returns:
    A dict of batch-first tensors, see `summarize`.

  #### Examples

  ```python
  q = opt.posterior()
  out = tfp_ext.posterior.predictive(model, q, x_test, num_samples=32, seed=0)
  out["mean"], out["stddev"]
  ```
  """
  posterior.check_compatible(model.trainable_variables)
  return summarize(predictive_samples(model, posterior, x, num_samples, seed, sample_groups), task,
                   noise_stddev)
