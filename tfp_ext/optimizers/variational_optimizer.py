"""Shared machinery of the natural-gradient variational-inference optimizers (Vadam, Vprop, ...).

A variational optimizer learns a mean-field Gaussian q(θ) = N(μ, diag(σ²)) over a model's
trainable weights by weight perturbation: the model variables hold a sample θ = μ + σ∘ε, the
gradient Keras computes at θ drives the update of μ and of a per-weight curvature statistic, and
the optimizer then writes the next sample into the model variables. μ lives in an optimizer slot.
"""

import random
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

from tfp_ext.internal import seeds
from tfp_ext.internal.keras_saving import check_saved_model_save
from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian

__all__ = ["VariationalOptimizer"]


def _check_positive(name, value, allow_none=False):
  """Raises a ValueError unless `value` is a finite number > 0 (or None when allowed)."""
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
  if not (value > 0 and value < float("inf")):
    raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")


def _check_unit_interval(name, value):
  """Raises a ValueError unless 0 <= value < 1 (a moving-average decay)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
    raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")


def _mean_gradient_and_square(gradient, num_samples):
  """(ḡ, ĥ): the mean over the leading sample axis of the gradients and of their squares.

  As the authors' Vadam and Vprop combine S weight samples (emtiyaz/vadam,
  `pytorch/vadam/optimizers.py`): the mean of the squares, not the square of the mean. With one
  sample (no sample axis) it is (g, g∘g), the arithmetic of a one-sample step.
  """
  if num_samples == 1:
    return gradient, tf.square(gradient)
  return tf.reduce_mean(gradient, axis=0), tf.reduce_mean(tf.square(gradient), axis=0)


def _plain(value):
  """A NumPy scalar as a Python float, so configs are plain JSON."""
  return float(value) if hasattr(value, "dtype") and getattr(value, "shape", None) == () else value


class VariationalOptimizer(tf_keras.optimizers.Optimizer):
  """Base class of the weight-perturbation variational optimizers of `tfp_ext.optimizers`.

  It owns everything the algorithms share, so that a new one only writes its statistics and its
  update:

  * the posterior mean μ, one slot per trainable variable, initialized from the variable;
  * the stateless noise ε for (seed, variable index, iteration), drawn with Philox through
    `tfp_ext.internal.seeds.normal` so that it is identical with and without XLA, under
    `steps_per_execution > 1` and on every replica of a `tf.distribute` strategy;
  * after each update, writing the sample θ = μ + σ∘ε of the next iteration into the model
    variable, which is where Keras evaluates the next gradient;
  * `finalize_variable_values` (called by `model.fit` when it ends) putting μ back into the model
    variables; `assign_mean` / `assign_sample` to swap explicitly;
  * `posterior(var_list=None)`, a `tfp_ext.posterior.MeanFieldGaussian` aligned with the
    variables the optimizer was built on (in `model.fit`: `model.trainable_variables`);
  * validation of `num_examples`, `prior_precision`, `init_precision`, `seed`, and a refusal of
    `use_ema` (the average of weight samples is not the posterior mean) and `weight_decay` (the
    prior precision is the weight decay);
  * `get_config` entries for the shared hyperparameters.

  The prior is p(θ) = N(0, 1/λ) with λ = `prior_precision`, the likelihood has `num_examples` = N
  terms, and the loss Keras differentiates is the mean per-example negative log-likelihood, so
  the gradient of the negative ELBO per example is g + (λ/N)·μ.

  #### Extension points

  A subclass implements:

  * `_build_statistics(var_list)`: create its slots with `add_variable_from_reference` (one per
    variable, stored in lists indexed like `var_list`). Called once, after μ exists.
  * `_update_statistics(gradient, index, variable)`: update its slots and `self._means[index]`
    from the gradient at the current sample. `self.iterations` is the 0-based step; the noise of
    the sample the gradient was taken at is `self.noise(index, self.iterations, variable)`
    (regenerated, not stored: an IVON-style Hessian estimator g·ε/σ uses it).
  * `_stddev(index, variable)`: the current posterior standard deviation σ of that variable.
  * `get_config`: add its own hyperparameters to `super().get_config()`.

  Algorithms that need more than the mean gradient (VOGN's per-example squared gradients, fed by
  a `tfp_ext.keras.VariationalModel` whose `train_step` computes them) receive it packed in the
  gradient itself: the model passes a tensor of shape `[k, *variable.shape]` (for instance the
  mean gradient stacked with the mean squared per-example gradient) and the subclass overrides
  `_unpack_gradient(gradient, variable)` to split it. Packing keeps the extra statistics inside
  Keras's own gradient path, so `tf.distribute`'s all-reduce sums them like the gradient (both
  are means over the replica batch scaled by 1/replicas), and nothing bypasses `apply_gradients`.
  The default `_unpack_gradient` densifies `tf.IndexedSlices` and checks the shape
  (through `_unpack_samples`, with the sample axis when `num_mc_samples` > 1).

  Several weight samples per step (the `num_samples` of Vadam, Vprop and VOGN, IVON's
  `mc_samples`) also go through such a model wrapper: a subclass reports `num_mc_samples` = S,
  the wrapper evaluates sample 0 in the variables and `mc_sample(var_list, j)` for j = 1..S−1,
  and passes the per-sample gradients stacked on a leading axis of size S (`_unpack_samples`
  checks the shape); the subclass combines them, regenerating sample j's noise with
  `noise(index, iteration, v, j)` when it needs it.

  #### Caveats

  * The model variables hold a weight *sample* during `fit`. `fit` puts μ back when it returns,
    but a custom training loop must call `finalize_variable_values(model.trainable_variables)` (or
    `assign_mean`) itself, and an interrupted `fit` leaves a sample in the variables.
  * Validation inside `fit`, `EarlyStopping(restore_best_weights=True)` and `ModelCheckpoint`
    read the model variables, that is a sample, unless the `PosteriorMeanSwap` callback swaps μ in
    for them. Even then, restoring the best epoch's weights restores its μ only, while
    `posterior()` describes the last epoch.
  * The first step of every `fit` call evaluates its gradient wherever the variables are (μ after
    a previous `fit` or a restore). `PosteriorMeanSwap` writes the sample of the current iteration
    at the start of training, which makes a resumed run continue exactly like an uninterrupted
    one.
  """

  def __init__(self,
               learning_rate,
               prior_precision: float,
               num_examples: Optional[int],
               init_precision: Optional[float],
               seed: Optional[int],
               name: str,
               use_ema: bool = False,
               weight_decay=None,
               **kwargs):
    """Validates the shared hyperparameters; see the subclasses for their meaning."""
    if use_ema:
      raise ValueError(
          f"{name} does not support `use_ema=True`: the model variables hold weight samples, and "
          "their moving average is not the posterior mean. The posterior mean is put back by "
          "`finalize_variable_values` (at the end of `fit`) or `assign_mean`.")
    if weight_decay:
      raise ValueError(
          f"{name} does not support `weight_decay`: the Gaussian prior is the weight decay; set "
          "`prior_precision` instead.")
    if num_examples is None:
      raise ValueError(
          f"{name} needs `num_examples`, the number of training examples N: it scales the "
          "likelihood against the prior and sets the posterior variance 1/(N·s + λ).")
    num_examples = check_int("num_examples", num_examples)
    _check_positive("prior_precision", prior_precision)
    _check_positive("init_precision", init_precision, allow_none=True)
    if init_precision is not None and init_precision < prior_precision:
      raise ValueError(
          f"`init_precision` ({init_precision}) must be >= `prior_precision` ({prior_precision}): "
          "the posterior precision is N·s + prior_precision with s >= 0.")
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
      _check_positive("learning_rate", learning_rate)
    if seed is None:
      # Resolved once, so that get_config reproduces this optimizer's noise.
      seed = random.SystemRandom().randrange(2**31)
    seed = check_int("seed", seed, minimum=0)
    super().__init__(name=name, use_ema=False, weight_decay=None, **kwargs)
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.prior_precision = float(prior_precision)
    self.num_examples = int(num_examples)
    self.init_precision = None if init_precision is None else float(init_precision)
    self.seed = seed

  # -- Building -----------------------------------------------------------------------------------

  def build(self, var_list: Sequence[tf.Variable]) -> None:
    """Creates μ (initialized from the variables) and the subclass's statistics."""
    super().build(var_list)
    if getattr(self, "_built", False):
      return
    self._built = True
    for v in var_list:
      if not v.dtype.is_floating:
        raise ValueError(f"{self.name} trains floating-point variables only; {v.name!r} is "
                         f"{v.dtype.name}.")
    self._means = []
    for var in var_list:
      self._means.append(
          self.add_variable_from_reference(model_variable=var, variable_name="mu",
                                           initial_value=var))
    self._build_statistics(var_list)

  def _build_statistics(self, var_list):
    """Creates the subclass's slots (extension point)."""
    raise NotImplementedError

  def _initial_statistic(self, var):
    """s₀ such that the initial precision N·s₀ + λ equals `init_precision` (0 when it is None)."""
    dtype = getattr(var, "true_dtype", var.dtype)
    s0 = 0.0 if self.init_precision is None else (
        (self.init_precision - self.prior_precision) / self.num_examples)
    return tf.fill(var.shape, tf.constant(s0, dtype))

  # -- Noise and samples --------------------------------------------------------------------------

  def fold_noise_seed(self, index, iteration) -> tf.Tensor:
    """The [2] stateless seed of variable `index` at `iteration` (fold in more ints if needed)."""
    base = seeds.sanitize(self.seed, salt=type(self).__name__)
    return seeds.fold_in(base, index, iteration)

  def noise(self, index, iteration, variable, sample: int = 0) -> tf.Tensor:
    """ε ~ N(0, I) shaped like `variable`, a pure function of (seed, index, iteration, sample).

    Sample 0 is the one the optimizer writes into the model variables; samples 1, 2, ... are the
    extra weight samples of a step with `num_mc_samples > 1`.
    """
    shape = variable.shape if variable.shape.is_fully_defined() else tf.shape(variable)
    seed = self.fold_noise_seed(index, iteration)
    if sample:
      seed = seeds.fold_in(seed, sample)
    return seeds.normal(shape, seed, variable.dtype)

  @property
  def num_mc_samples(self) -> int:
    """Weight samples per step (1 unless the algorithm averages several; see `mc_sample`)."""
    return 1

  # Plain Python over tensors: nothing for AutoGraph to convert. Left to it, this call from a
  # converted `train_step` once resolved `self._stddev` to another method's converted code
  # (a TypeError in one run of the suite, not reproduced on rerun).
  @tf.autograph.experimental.do_not_convert
  def mc_sample(self, var_list: Sequence[tf.Variable], sample: int) -> list:
    """Weight sample number `sample` ≥ 1 of the current step, as tensors aligned with `var_list`.

    A model wrapper that evaluates several samples per step (`tfp_ext.keras.VariationalModel`)
    takes sample 0 from the variables and these from here; the optimizer regenerates the same
    noise when it applies the stacked gradients.
    """
    if sample < 1:
      raise ValueError(f"`sample` must be >= 1 (sample 0 is in the variables), got {sample}.")
    return [self._means[index] + self._stddev(index, v) * self.noise(index, self.iterations, v,
                                                                      sample)
            for index, v in zip(self._indices(var_list), var_list)]

  def _unpack_samples(self, gradient, variable, inner_shape):
    """Checks a gradient packed as [S, *inner_shape] (S = `num_mc_samples`, axis omitted if 1)."""
    if isinstance(gradient, tf.IndexedSlices):
      gradient = tf.convert_to_tensor(gradient)
    samples = self.num_mc_samples
    expected = tf.TensorShape(inner_shape)
    if samples > 1:
      expected = tf.TensorShape([samples]).concatenate(expected)
    if not gradient.shape.is_compatible_with(expected):
      if gradient.shape.is_compatible_with(variable.shape):
        needs = []
        if getattr(self, "curvature", None) is not None:
          needs.append("a per-example curvature")
        if samples > 1:
          needs.append(f"the gradients at {samples} weight samples per step")
        raise ValueError(
            f"{self.name} needs more than the batch gradient of {variable.name!r} "
            f"({' and '.join(needs) or 'extra statistics'}), which a plain `model.fit` or "
            "`apply_gradients` does not compute: wrap the model in "
            "`tfp_ext.keras.VariationalModel(model)` and compile that.")
      raise ValueError(f"{self.name}: gradient of shape {gradient.shape.as_list()} for variable "
                       f"{variable.name!r}; expected {expected.as_list()}.")
    return gradient

  def _stddev(self, index, variable) -> tf.Tensor:
    """σ of the variable `index` under the current posterior (extension point)."""
    raise NotImplementedError

  def _sample(self, index, iteration, variable):
    return self._means[index] + self._stddev(index, variable) * self.noise(index, iteration,
                                                                          variable)

  # -- The update ---------------------------------------------------------------------------------

  def _unpack_gradient(self, gradient, variable):
    """The gradient as a dense tensor shaped like `variable`, with a leading axis of size
    `num_mc_samples` when that is > 1 (extension point, see class doc)."""
    return self._unpack_samples(gradient, variable, variable.shape)

  def _update_statistics(self, gradient, index, variable):
    """Updates the statistics and μ from `gradient` (extension point)."""
    raise NotImplementedError

  def update_step(self, gradient, variable):
    """One step: update the posterior from the gradient at the current sample, write the next."""
    index = self._index_dict[self._var_key(variable)]
    self._update_statistics(self._unpack_gradient(gradient, variable), index, variable)
    variable.assign(self._sample(index, self.iterations + 1, variable))

  # -- Swapping μ and samples in and out of the model ----------------------------------------------

  def _indices(self, var_list):
    self._check_built()
    out = []
    for v in var_list:
      key = self._var_key(v)
      if key not in self._index_dict:
        raise ValueError(f"{self.name} was not built on variable {v.name!r}; pass the variables "
                         "it trains (`model.trainable_variables`).")
      out.append(self._index_dict[key])
    return out

  def _check_built(self):
    if not getattr(self, "_built", False):
      raise ValueError(
          f"{self.name} has not been built yet: train with it first, or call "
          "`optimizer.build(model.trainable_variables)`.")

  def assign_mean(self, var_list: Sequence[tf.Variable]) -> None:
    """Writes the posterior mean μ into `var_list` (for prediction with the mean weights)."""
    for index, v in zip(self._indices(var_list), var_list):
      v.assign(self._means[index])

  def assign_sample(self, var_list: Sequence[tf.Variable]) -> None:
    """Writes the sample of the current iteration into `var_list`, as a training step would.

    It is a pure function of (seed, iteration, posterior), so after a restore or a
    `finalize_variable_values` it puts back exactly the weights the next step expects.
    """
    for index, v in zip(self._indices(var_list), var_list):
      v.assign(self._sample(index, self.iterations, v))

  def finalize_variable_values(self, var_list: Sequence[tf.Variable]) -> None:
    """Called by `model.fit` when it ends: leaves the posterior mean in the model variables."""
    if getattr(self, "_built", False):
      self.assign_mean(var_list)

  def posterior(self, var_list: Optional[Sequence[tf.Variable]] = None) -> MeanFieldGaussian:
    """The current q(θ) as a `MeanFieldGaussian` (a snapshot: later steps do not change it).

    Args:
      var_list: the variables to align the parts with; by default the variables the optimizer
        was built on, in their order (`model.trainable_variables` in `model.fit`).
    """
    self._check_built()
    indices = range(len(self._means)) if var_list is None else self._indices(var_list)
    loc, scale = [], []
    for index in indices:
      mean = self._means[index]
      loc.append(tf.identity(mean))
      scale.append(tf.identity(self._stddev(index, mean)))
    return MeanFieldGaussian(loc, scale, name=f"{self.name}_posterior")

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    check_saved_model_save(f"{self.name} (whose variables hold the posterior)", save_type)
    return super()._trackable_children(save_type, **kwargs)

  # -- Config --------------------------------------------------------------------------------------

  def get_config(self) -> dict:
    """The constructor arguments (the seed is the resolved one, so noise is reproduced)."""
    config = super().get_config()
    for key in ("use_ema", "ema_momentum", "ema_overwrite_frequency", "weight_decay"):
      config.pop(key, None)
    config.update({
        "learning_rate": _plain(self._serialize_hyperparameter(self._learning_rate)),
        "prior_precision": self.prior_precision,
        "num_examples": self.num_examples,
        "init_precision": self.init_precision,
        "seed": self.seed,
    })
    return config
