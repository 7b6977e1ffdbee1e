"""Posterior predictive summaries, vectorized over weight samples."""

from typing import Optional

import tensorflow as tf

from tfp_ext.internal.runtime import in_xla_context
from tfp_ext.internal.runtime import onednn_enabled
from tfp_ext.internal.validation import check_positive_int_or_none
from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["predictive", "predictive_samples", "summarize", "TASKS"]

TASKS = ("regression", "classification")


# Where TF's default (Eigen) CPU kernels run the graph, batches of fewer than
# `_OWN_GRAPH_MIN_ROWS` rows run the samples in this many groups, each vectorized. One op over all
# S samples has S-fold intermediates, and Eigen's batched matmul computes its per-sample products
# one after another; groups have a quarter of the working set and their ops run concurrently on
# the inter-op thread pool. Measured on an S = 32, 16-128-128-1 MLP served from a TF1 session
# (2 CPU cores, `benchmarks/serving.py`): one group took 1.2-1.7× / 1.6-2.1× / 2.1-2.6× the
# deterministic model on 32·B rows at B = 8 / 64 / 256, four 1.1-1.45× / 1.1-1.25× / 1.2-2.0×,
# eight no better. Run through TF's C API (as TF Serving runs an export, without the ~0.4 ms a
# Python session adds to both sides), four groups against one at B = 8 / 256: 1.50-1.71× vs
# 2.04-2.13×, 1.37-1.44× vs 2.20-2.47×. With oneDNN kernels four groups were slower up to B = 128
# (B = 8: 1.8-2.1× → 2.5-2.7×); XLA compiles the single vectorized graph well, and in eager mode
# every group would be traced anew on each call. Those keep one group.
_SAMPLE_GROUPS = 4

# From this many rows on, a graph runs each sample faster as a plain call of the model (its own
# copy of the graph, plain matmuls), with Eigen's kernels and with oneDNN's: Eigen's batched
# matmul parallelizes inside each per-sample product, one product after another, while separate
# matmuls run side by side on the inter-op pool. Below it the extra ops cost more than they save.
# More samples than `_OWN_GRAPH_MAX_GROUPS` run in that many vectorized groups, which bounds the
# graph. Exports run through TF's C API (2 CPU cores, S = 32, same-process A/B, 150 interleaved
# rounds), ratio to the deterministic model on 32·B rows at B = 64 / 128 / 256:
# - Eigen, per-sample calls vs 4 groups, two runs: 16-128-128-1 0.72-0.93× vs 0.88-0.95×,
#   1.01-1.04× vs 1.20-1.43×, 0.78-0.85× vs 1.05-1.12×; 784-128-128-10 1.22-1.23× vs 1.42-1.45×,
#   1.11-1.14× vs 1.35-1.40×, 0.96-1.00× vs 1.14-1.19×. At B = 32 one sample per group was slower
#   (16 inputs: 1.48× vs 1.32×), and below 64 rows the graph that also holds the per-sample branch
#   took 0-15% longer than one without it (16 inputs at B = 1: 1.92-2.09× vs 1.67-1.98×).
# - oneDNN, per-sample calls vs 1 group, one run: 16-128-128-1 1.16× vs 1.23×, 0.99× vs 1.19×,
#   0.94× vs 1.19×; 784-128-128-10 1.30× vs 1.80×, 1.04× vs 1.52×, 0.84× vs 1.39×.
_OWN_GRAPH_MIN_ROWS = 64
_OWN_GRAPH_MAX_GROUPS = 32

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
  the samples instead, which is slower but still a single graph. For batches of 64 rows or more a
  graph (not XLA, not eager) by default holds a plain copy of the model's ops per sample instead,
  which TF runs side by side; that is faster on CPU (see `sample_groups`).

  `sample_groups` splits the samples into that many groups, each vectorized (with one group per
  sample, each is a plain call of the model); the outputs are the same, in the same order.
  `None` picks the faster on CPU for what will run the ops: in a graph, one group per sample (at
  most 32 groups) for batches of 64 rows or more, and below that 4 groups where TF's default
  (Eigen) kernels run it, 1 where TF's oneDNN kernels do (as this process has them); 1 group
  under XLA and in eager mode. A small input batch (at most 8192 elements) is copied per sample
  before vectorizing, which is faster; the outputs are the same up to float rounding. Where the
  batch size is known only when the graph runs (a serving signature), the graph holds each
  variant and the batch picks one.
  """
  check_positive_int_or_none("sample_groups", sample_groups)
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
  return _choose(rows >= _OWN_GRAPH_MIN_ROWS, lambda: run_all(_OWN_GRAPH_MAX_GROUPS, False),
                 vectorized)


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
