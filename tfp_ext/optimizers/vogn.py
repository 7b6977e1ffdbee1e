"""Variational online Gauss-Newton (VOGN), a tf_keras optimizer fed by `VariationalModel`."""

from typing import Optional

import tensorflow as tf
import tf_keras

from tfp_ext.internal.validation import check_int
from tfp_ext.optimizers import variational_optimizer as vo

__all__ = ["VOGN"]

_APPROXIMATIONS = ("per_example_squared_gradients", "ggn")


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class VOGN(vo.VariationalOptimizer):
  r"""Variational online Gauss-Newton: mean-field Gaussian VI with a Gauss-Newton curvature.

  VOGN learns q(θ) = N(μ, diag(σ²)) for a model with N training examples, prior N(0, 1/λ) and a
  per-example negative log-likelihood ℓᵢ. At each step the model is evaluated at a weight sample
  θ ~ q and, for a minibatch of M examples with per-example gradients gᵢ = ∇ℓᵢ(θ),

  ```none
  δ̃ = τλ / N,
  ĝ = (1/M) Σᵢ gᵢ,            ĥ = (1/M) Σᵢ gᵢ²   (or the diagonal GGN (1/M) Σᵢ diag(JᵢᵀHᵢJᵢ)),
  s ← (1 − τβ) s + β ĥ,        β = 1 − beta_2,
  μ ← μ − α (ĝ + δ̃μ) / (s + δ̃),
  σ² = 1 / (N (s + δ̃)),
  ```

  with tempering τ (1 is the Bayesian posterior). With `num_samples` = S > 1, ĝ and ĥ are the
  averages over S weight samples θ₁..θ_S ~ q drawn for the step. The curvature is the **mean of per-example
  squared gradients**, the Gauss-Newton approximation of the Hessian (Khan et al., 2018, Eq. 10;
  Osawa et al., 2019, Eqs. 4-5), not the square of the minibatch gradient that Vadam uses
  (ĝ² ≈ (1/M²)(Σᵢ gᵢ)², which underestimates it by up to a factor M). A Keras optimizer only sees
  ĝ, so VOGN must be trained through `tfp_ext.keras.VariationalModel`, whose `train_step`
  computes ĥ vectorized over the batch and packs `[ĝ, ĥ]` into the gradient it hands to
  `apply_gradients` (see `VariationalOptimizer`'s extension points); plain `model.fit` raises.

  With `beta_1 > 0` the step uses Adam-style momentum on ĝ + δ̃μ with bias correction
  m̂ = m / (1 − beta_1ᵗ); without the correction the first steps would be taken with a momentum
  that is a small fraction of the gradient, which Osawa et al. compensate by other tricks.

  `hessian_approximation="ggn"` uses the exact diagonal of the generalized Gauss-Newton matrix
  instead (for squared-error and cross-entropy-on-logits losses it equals the Fisher); for a
  linear-Gaussian model it is the exact Hessian, so VOGN then converges to the exact mean-field
  posterior: mean (XᵀX/σₙ² + λ)⁻¹Xᵀy/σₙ² and precision diag(XᵀX/σₙ² + λ).

  The precision statistic s starts at 0 (q starts at the prior's width), or at
  (init_precision − λ)/N. Then the first steps have a preconditioner s + δ̃ ≈ δ̃ and behave like
  SGD with learning rate α/δ̃ = αN/(τλ) until s has accumulated; for large N pass
  `init_precision` (a guess of the posterior precision N·E[gᵢ²] + λ, e.g. 10·N) or lower `α`.

  #### Examples

  ```python
  vm = tfp_ext.keras.VariationalModel(model)
  vm.compile(optimizer=tfp_ext.optimizers.VOGN(learning_rate=1e-3, prior_precision=1.0,
                                               num_examples=len(x), seed=0),
             loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
             jit_compile=True)
  vm.fit(x, y, batch_size=32, epochs=10)
  q = vm.posterior()
  ```

  #### References

  [1]: Mohammad Emtiyaz Khan, Didrik Nielsen, Voot Tangkaratt, Wu Lin, Yarin Gal, Akash
       Srivastava. Fast and Scalable Bayesian Deep Learning by Weight-Perturbation in Adam.
       ICML 2018. https://arxiv.org/abs/1806.04854
  [2]: Kazuki Osawa, Siddharth Swaroop, Anirudh Jain, Runa Eschenhagen, Richard E. Turner, Rio
       Yokota, Mohammad Emtiyaz Khan. Practical Deep Learning with Bayesian Principles.
       NeurIPS 2019. https://arxiv.org/abs/1906.02506
  """

  def __init__(self,
               learning_rate=1e-3,
               beta_1: float = 0.0,
               beta_2: float = 0.999,
               prior_precision: float = 1.0,
               num_examples: Optional[int] = None,
               num_samples: int = 1,
               tempering: float = 1.0,
               hessian_approximation: str = "per_example_squared_gradients",
               init_precision: Optional[float] = None,
               seed: Optional[int] = None,
               name: str = "VOGN",
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: α > 0 (a float or a schedule).
      beta_1: momentum decay in [0, 1); 0 (the default) is no momentum.
      beta_2: decay of the precision statistic s, in [0, 1); β = 1 − beta_2.
      prior_precision: λ > 0, the precision of the N(0, 1/λ) prior on every weight.
      num_examples: N, the number of training examples (required).
      num_samples: weight samples per step; the gradient and the curvature are averaged over
        them (Osawa et al., 2019). More than 1 needs `VariationalModel`, which evaluates them.
      tempering: τ > 0 (1 is Bayes; < 1 sharpens the posterior).
      hessian_approximation: "per_example_squared_gradients" (mean of gᵢ²) or "ggn" (exact
        diagonal generalized Gauss-Newton).
      init_precision: optional initial posterior precision ≥ λ (default: λ, s = 0).
      seed: int seed of the weight noise (None draws one, recorded in `get_config`).
      name, **kwargs: as for every tf_keras optimizer (`clipnorm`, `jit_compile`, ...).

    Raises:
      ValueError: a hyperparameter out of range, `num_examples` missing, or an unknown
        `hessian_approximation`.
    """
    vo._check_unit_interval("beta_1", beta_1)  # pylint: disable=protected-access
    vo._check_unit_interval("beta_2", beta_2)  # pylint: disable=protected-access
    vo._check_positive("tempering", tempering)  # pylint: disable=protected-access
    if hessian_approximation not in _APPROXIMATIONS:
      raise ValueError(f"`hessian_approximation` must be one of {_APPROXIMATIONS}, got "
                       f"{hessian_approximation!r}.")
    num_samples = check_int("num_samples", num_samples)
    if tempering * (1. - beta_2) > 1.:
      raise ValueError(f"tempering·(1 − beta_2) must be ≤ 1 so s stays non-negative, got "
                       f"{tempering * (1. - beta_2)}.")
    super().__init__(learning_rate=learning_rate, prior_precision=prior_precision,
                     num_examples=num_examples, init_precision=init_precision, seed=seed,
                     name=name, **kwargs)
    self.beta_1 = float(beta_1)
    self.beta_2 = float(beta_2)
    self.num_samples = int(num_samples)
    self.tempering = float(tempering)
    self.hessian_approximation = hessian_approximation

  @property
  def curvature(self) -> str:
    """What `VariationalModel.train_step` must pack next to the gradient."""
    return self.hessian_approximation

  @property
  def num_mc_samples(self) -> int:
    return self.num_samples

  @property
  def _delta(self) -> float:
    """δ̃ = τλ/N."""
    return self.tempering * self.prior_precision / self.num_examples

  def _build_statistics(self, var_list):
    self._precisions = [
        self.add_variable_from_reference(v, "s", initial_value=self._initial_statistic(v))
        for v in var_list]
    self._momenta = ([self.add_variable_from_reference(v, "m") for v in var_list]
                     if self.beta_1 > 0 else None)

  def _unpack_gradient(self, gradient, variable):
    gradient = self._unpack_samples(gradient, variable, [2] + variable.shape.as_list())
    # [S, 2, ...] → the Monte Carlo means of the gradient and of the curvature.
    return tf.reduce_mean(gradient, axis=0) if self.num_samples > 1 else gradient

  def _update_statistics(self, gradient, index, variable):
    dtype = variable.dtype
    grad, curvature = gradient[0], gradient[1]
    lr = tf.cast(self.learning_rate, dtype)
    beta = tf.cast(1. - self.beta_2, dtype)
    delta = tf.cast(self._delta, dtype)
    tau = tf.cast(self.tempering, dtype)
    mean, s = self._means[index], self._precisions[index]
    s.assign((1. - tau * beta) * s + beta * curvature)
    direction = grad + delta * mean
    if self._momenta is not None:
      m = self._momenta[index]
      beta_1 = tf.cast(self.beta_1, dtype)
      m.assign(beta_1 * m + (1. - beta_1) * direction)
      step = tf.cast(self.iterations + 1, dtype)
      direction = m / (1. - tf.pow(beta_1, step))
    mean.assign_sub(lr * direction / (s + delta))

  def _stddev(self, index, variable):
    n = tf.cast(self.num_examples, variable.dtype)
    return tf.math.rsqrt(n * (self._precisions[index] + tf.cast(self._delta, variable.dtype)))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({
        "beta_1": self.beta_1,
        "beta_2": self.beta_2,
        "num_samples": self.num_samples,
        "tempering": self.tempering,
        "hessian_approximation": self.hessian_approximation,
    })
    return config
