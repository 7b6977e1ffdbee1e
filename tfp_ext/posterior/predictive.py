"""Posterior predictive summaries, vectorized over weight samples."""

from typing import Optional

import tensorflow as tf

from tfp_ext.posterior.functional import functional_call
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["predictive", "predictive_samples", "summarize", "TASKS"]

TASKS = ("regression", "classification")


def predictive_samples(model, posterior: WeightPosterior, x, num_samples: Optional[int], seed):
  """Model outputs under `S` posterior weight samples: a tensor `[S, *model_output_shape]`.

  Vectorized over samples with `tf.vectorized_map` (no Python loop, no variable assignment), so it
  is XLA-compilable and safe to call from many threads at once. Dense, normalization and
  elementwise layers vectorize into batched matmuls; ops that TF cannot vectorize over a stacked
  weight (`Conv2D` filters) run as a `tf.while_loop` over the samples instead, which is slower
  but still a single graph.
  """
  weights = posterior.predictive_weights(num_samples, seed)
  return tf.vectorized_map(lambda w: functional_call(model, w, x), weights,
                           fallback_to_while_loop=True, warn=False)


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
               task: str = "regression", noise_stddev: float = 0.0) -> dict:
  """Posterior predictive of `model` at inputs `x`, averaged over `num_samples` weight samples.

  Args:
    model: the tf_keras model whose `trainable_variables` the posterior is aligned with.
    posterior: a `WeightPosterior` (`MeanFieldGaussian`, `SampleEnsemble`, …).
    x: a batch of inputs, batch dimension first.
    num_samples: Monte Carlo samples; `None` lets an ensemble use all of its members.
    seed: stateless seed; a fixed seed makes the predictive deterministic.
    task: "regression" or "classification" (model outputs logits).
    noise_stddev: regression only: the observation noise, adding an aleatoric part.

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
  return summarize(predictive_samples(model, posterior, x, num_samples, seed), task, noise_stddev)
