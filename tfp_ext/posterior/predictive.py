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


# Where TF's default (Eigen) CPU kernels run the graph, the samples run in this many groups, each
# vectorized. One op over all S samples has S-fold intermediates, and Eigen's batched matmul
# computes its per-sample products one after another; groups have a quarter of the working set
# and their ops run concurrently on the inter-op thread pool. Measured on an S = 32, 16-128-128-1
# MLP served from a TF1 session (2 CPU cores, `benchmarks/serving.py`): one group took 1.2-1.7× /
# 1.6-2.1× / 2.1-2.6× the deterministic model on 32·B rows at B = 8 / 64 / 256, four 1.1-1.45× /
# 1.1-1.25× / 1.2-2.0×, eight no better. With oneDNN kernels four groups were slower up to B = 128
# (B = 8: 1.8-2.1× → 2.5-2.7×); XLA compiles the single vectorized graph well, and in eager mode
# every group would be traced anew on each call. Those keep one group.
_SAMPLE_GROUPS = 4


def predictive_samples(model, posterior: WeightPosterior, x, num_samples: Optional[int], seed,
                       sample_groups: Optional[int] = None):
  """Model outputs under `S` posterior weight samples: a tensor `[S, *model_output_shape]`.

  Vectorized over samples with `tf.vectorized_map` (no Python loop, no variable assignment), so it
  is XLA-compilable and safe to call from many threads at once. Dense, normalization and
  elementwise layers vectorize into batched matmuls; ops that TF cannot vectorize over a stacked
  weight (`Conv2D` filters) run as a `tf.while_loop` over the samples instead, which is slower
  but still a single graph.

  `sample_groups` splits the samples into that many groups, each vectorized; the outputs are the
  same, in the same order. `None` picks the faster on CPU for what will run the ops: 4 in a graph
  run by TF's default (Eigen) kernels, 1 under XLA, with TF's oneDNN kernels (as this process has
  them) and in eager mode.
  """
  check_positive_int_or_none("sample_groups", sample_groups)
  weights = posterior.predictive_weights(num_samples, seed)

  def run(group):
    return tf.vectorized_map(lambda w: functional_call(model, w, x), group,
                             fallback_to_while_loop=True, warn=False)

  if sample_groups is None:
    one = tf.executing_eagerly() or in_xla_context() or onednn_enabled()
    sample_groups = 1 if one else _SAMPLE_GROUPS
  n = tf.compat.dimension_value(weights[0].shape[0]) if weights else None
  groups = 1 if n is None else min(sample_groups, n)
  if groups == 1:
    return run(weights)
  sizes = [n // groups + (i < n % groups) for i in range(groups)]
  outputs = [run(list(group)) for group in zip(*[tf.split(w, sizes) for w in weights])]
  return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)


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
