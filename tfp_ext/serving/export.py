"""Export a Keras model and its weight posterior as a TF Serving SavedModel.

The serving signature computes the Monte Carlo posterior predictive in-graph: it draws `S` weight
samples from the posterior with a fixed stateless seed stored in the export, runs the model under
all of them in one graph (`tfp_ext.posterior.predictive_samples`), and summarizes them
(`tfp_ext.posterior.summarize`). The same input therefore always gives the same answer, and every
row's answer depends only on that row, so TF Serving's request batching cannot change it.
"""

import os
import re
import shutil
import tempfile
from typing import Optional, Union

import tensorflow as tf

from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.predictive import TASKS
from tfp_ext.posterior.sample_ensemble import SampleEnsemble
from tfp_ext.posterior.predictive import predictive_samples
from tfp_ext.posterior.predictive import summarize
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["export", "DEFAULT_SIGNATURE", "XLA_SIGNATURE", "INPUT_NAME", "TEMP_PREFIX",
           "MATERIALIZE_LIMIT_BYTES"]

DEFAULT_SIGNATURE = "serving_default"
XLA_SIGNATURE = "serving_xla"
INPUT_NAME = "x"
# Temporary export directories start with a dot and are not numbers: TF Serving's file system
# poller (and `tfp_ext.serving.Server`) only consider all-digit directory names as versions.
TEMP_PREFIX = ".tmp-export-"
# `materialize_samples="auto"` stores the weight samples when they take at most this much.
MATERIALIZE_LIMIT_BYTES = 256 * 2**20
_VERSION_RE = re.compile(r"^[0-9]+$")


class _PredictiveModule(tf.Module):
  """Tracks the model and posterior variables and holds the predictive serving functions."""

  def __init__(self, model, posterior, num_samples, task, noise_stddev, seed, sample_groups):
    super().__init__(name="tfp_ext_predictive")
    self.model = model
    self.posterior = posterior
    # Stored as a variable so the seed is part of the export, visible and fixed. Unsalted: the
    # posterior salts it exactly as `predictive(..., seed=seed)` does, so both draw one set.
    self.seed = tf.Variable(seeds.sanitize(seed),
                            trainable=False, name="predictive_seed")
    self._num_samples = num_samples
    self._task = task
    self._noise_stddev = noise_stddev
    self._sample_groups = sample_groups

  def predict(self, x):
    outputs = predictive_samples(self.model, self.posterior, x, self._num_samples,
                                 tf.convert_to_tensor(self.seed), self._sample_groups)
    return summarize(outputs, self._task, self._noise_stddev)


def _input_spec(model) -> tf.TensorSpec:
  inputs = getattr(model, "inputs", None)
  if inputs:
    if len(inputs) != 1:
      raise ValueError(f"Export needs a model with exactly one input, this one has {len(inputs)}.")
    shape = inputs[0].shape
    dtype = inputs[0].dtype
  else:
    shape = getattr(model, "_build_input_shape", None)
    if shape is None:
      raise ValueError("The model is not built: call it on a batch (or give it an Input) so its "
                       "input shape is known before exporting.")
    shape = tf.TensorShape(shape)
    dtype = tf.float32
  dtype = tf.as_dtype(dtype)
  if not dtype.is_floating:
    raise ValueError(f"Export supports a float model input, got {dtype.name}.")
  if shape.rank is None or shape.rank < 1:
    raise ValueError(f"The model input needs a batch dimension first, got shape {shape}.")
  return tf.TensorSpec([None] + shape.as_list()[1:], dtype, name=INPUT_NAME)


def _next_version(export_base_dir: str) -> int:
  versions = [int(d) for d in os.listdir(export_base_dir) if _VERSION_RE.match(d)]
  return max(versions, default=0) + 1


def export(model, posterior: WeightPosterior, export_base_dir: str, num_samples: Optional[int] = 32,
           task: str = "regression", noise_stddev: float = 0.0, version: Optional[int] = None,
           seed: int = 0, xla_signature: bool = False,
           materialize_samples: Union[bool, str] = "auto",
           sample_groups: Optional[int] = None) -> str:
  """Writes `export_base_dir/<version>/`, a SavedModel serving the posterior predictive.

  Signature `serving_default` takes one float input `x` (batch first) and returns batch-first
  tensors: regression `mean`, `stddev` (plus `epistemic_stddev`, `aleatoric_stddev` when
  `noise_stddev > 0`); classification (the model outputs logits) `mean` (probabilities), `stddev`,
  `predictive_entropy`, `mutual_information`. It is not XLA-compiled, because stock
  `tensorflow_model_server` disables XLA JIT unless started with `--xla_cpu_compilation_enabled`
  and a compiled signature would then fail on its first request.

  The version directory appears atomically: the SavedModel is written into a temporary directory
  inside `export_base_dir` (same file system, name ignored by version pollers) and renamed into
  place, so a crash mid-export never leaves a half-written version for a server to load.

  Args:
    model: a built `tf_keras` model with one float input.
    posterior: a `tfp_ext.posterior.WeightPosterior` aligned with `model.trainable_variables`.
    export_base_dir: TF Serving's model base path; created if missing.
    num_samples: Monte Carlo weight samples per request (`None`: all members of an ensemble).
    task: "regression" or "classification".
    noise_stddev: regression observation noise (adds the aleatoric part).
    version: the version number; default one more than the largest existing version.
    seed: the fixed stateless seed of the weight samples. They are the samples of
      `tfp_ext.posterior.predictive(model, posterior, x, num_samples, seed=seed)`, so the served
      answers equal that local predictive up to float rounding.
    xla_signature: also add an XLA-compiled signature `serving_xla` (same outputs), for servers
      started with `--xla_cpu_compilation_enabled`; a stock server fails on it.
    materialize_samples: True: draw the `num_samples` weight samples once, now, and store them
      in the export (as a `SampleEnsemble`) instead of the posterior's parameters. The answers
      are the same (same seed, same samples); each request then skips drawing S×P normals, which
      is most of the cost of a small request, and the SavedModel holds S copies of the weights
      instead of two. False: store the posterior's parameters and draw the samples in-graph on
      every request. "auto" (default): True when the samples take at most
      `MATERIALIZE_LIMIT_BYTES` (256 MiB, e.g. S = 32 samples of a 2M-weight float32 model).
    sample_groups: the signatures run the S samples in this many groups, each vectorized (with
      one group per sample, each is a plain call of the model); the answers do not depend on it
      beyond float rounding. `None` (default), the faster on CPU: in `serving_default`, one plain
      call per sample (at most 32 groups) for requests of 2 rows or more (more for models whose
      largest weight is under 128·128 elements; 16 or more if the exporting process runs TF's
      oneDNN kernels: x86 CPUs with AVX-512 VNNI, BF16 or AMX, or `TF_ENABLE_ONEDNN_OPTS=1`),
      decided per request; below that 4 vectorized groups with TF's default (Eigen) CPU kernels,
      1 with oneDNN's; 1 group in `serving_xla` (see `tfp_ext.posterior.predictive_samples`).
      An explicit count applies to every request. Set it when the serving machine's kernels
      differ from the exporting one's.

  Returns:
    The path of the written version directory.

  Raises:
    ValueError: an unknown task, a bad `num_samples`/`version`/`noise_stddev`/`sample_groups`, a
      posterior that does not match the model, or an existing version directory.

  #### Examples

  ```python
  q = opt.posterior()
  path = tfp_ext.serving.export(model, q, "serving/models/my_model", num_samples=32)
  # tensorflow_model_server --model_name=my_model --model_base_path=$PWD/serving/models/my_model
  ```
  """
  if not isinstance(posterior, WeightPosterior):
    raise TypeError("posterior must be a tfp_ext.posterior.WeightPosterior, got "
                    f"{type(posterior)}.")
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
  num_samples = check_int("num_samples", num_samples, allow_none=True)
  sample_groups = check_int("sample_groups", sample_groups, allow_none=True)
  if not noise_stddev >= 0:  # Also rejects NaN.
    raise ValueError(f"noise_stddev must be >= 0, got {noise_stddev}.")
  if task == "classification" and noise_stddev:
    raise ValueError("noise_stddev only applies to task='regression'.")
  version = check_int("version", version, allow_none=True)
  posterior.check_compatible(model.trainable_variables)
  spec = _input_spec(model)
  if materialize_samples == "auto":
    sample_bytes = sum(s.shape.num_elements() * s.dtype.size for s in posterior.variable_specs)
    materialize_samples = (num_samples is not None and
                           num_samples * sample_bytes <= MATERIALIZE_LIMIT_BYTES)
  elif not isinstance(materialize_samples, bool):
    raise ValueError(f"materialize_samples must be True, False or 'auto', got "
                     f"{materialize_samples!r}.")
  if materialize_samples:
    posterior = SampleEnsemble(posterior.predictive_weights(
        num_samples, seeds.sanitize(seed)))
    num_samples = None

  os.makedirs(export_base_dir, exist_ok=True)
  if version is None:
    version = _next_version(export_base_dir)
  target = os.path.join(export_base_dir, str(version))
  if os.path.exists(target):
    raise ValueError(f"Version directory {target} already exists; versions are immutable.")

  module = _PredictiveModule(model, posterior, num_samples, task, float(noise_stddev), seed,
                             sample_groups)
  signatures = {DEFAULT_SIGNATURE: tf.function(module.predict, input_signature=[spec],
                                               jit_compile=False)}
  if xla_signature:
    signatures[XLA_SIGNATURE] = tf.function(module.predict, input_signature=[spec],
                                            jit_compile=True)
  signatures = {k: f.get_concrete_function() for k, f in signatures.items()}

  tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=export_base_dir)
  try:
    tf.saved_model.save(module, tmp, signatures=signatures)
    # Same file system, so the rename is atomic; it fails if the target appeared meanwhile and is
    # not empty, which keeps two concurrent exports from mixing files.
    os.rename(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return target
