"""Vadam: Adam with weight perturbation, a natural-gradient mean-field variational optimizer."""

from typing import Optional

import tensorflow as tf
import tf_keras

from tfp_ext.optimizers.variational_optimizer import VariationalOptimizer
from tfp_ext.optimizers.variational_optimizer import _check_unit_interval

__all__ = ["Vadam"]


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class Vadam(VariationalOptimizer):
  r"""Variational Adam: learns q(θ) = N(μ, diag(σ²)) over the weights with Adam's update.

  Each step (Khan et al., 2018, Fig. 1), with λ the prior precision, N the number of training
  examples and λ̃ = λ/N:

  ```none
  θ = μ + σ∘ε,  σ = 1/sqrt(N·s + λ),  ε ~ N(0, I)     (θ is what the model variables hold)
  g = ∇ mean per-example NLL of the minibatch, at θ
  m ← β₁·m + (1 − β₁)·(g + λ̃·μ)
  s ← β₂·s + (1 − β₂)·g∘g
  μ ← μ − α·m̂ / (sqrt(ŝ) + λ̃),  m̂ = m/(1 − β₁ᵗ), ŝ = s/(1 − β₂ᵗ)
  ```

  Compared with Adam the only added cost is one normal draw per weight per step. The model needs
  no L2 regularizer (the prior is here) and its loss must be the per-example negative
  log-likelihood averaged over the batch (Keras's default reduction), e.g.
  `SparseCategoricalCrossentropy(from_logits=True)` or `0.5·(y − f)²/σ_noise²`.

  The model variables hold a weight sample while training; `model.fit` puts the mean back when
  it ends. See `VariationalOptimizer` for the caveats and `PosteriorMeanSwap` for validation and
  early stopping on the mean.

  #### Examples

  ```python
  opt = tfp_ext.optimizers.Vadam(learning_rate=1e-3, num_examples=len(x), prior_precision=1.0,
                                 seed=0)
  model.compile(optimizer=opt, loss=tf_keras.losses.MeanSquaredError(), jit_compile=True)
  model.fit(x, y, batch_size=32, epochs=10)
  q = opt.posterior()        # MeanFieldGaussian aligned with model.trainable_variables
  q.loc, q.scale
  ```

  #### References

  [1]: Mohammad Emtiyaz Khan, Didrik Nielsen, Voot Tangkaratt, Wu Lin, Yarin Gal, Akash
       Srivastava. Fast and Scalable Bayesian Deep Learning by Weight-Perturbation in Adam.
       In _International Conference on Machine Learning_, 2018. https://arxiv.org/abs/1806.04854
  """

  def __init__(self,
               learning_rate=1e-3,
               beta_1: float = 0.9,
               beta_2: float = 0.999,
               prior_precision: float = 1.0,
               num_examples: Optional[int] = None,
               init_precision: Optional[float] = None,
               seed: Optional[int] = None,
               name: str = "Vadam",
               **kwargs):
    """Creates a Vadam optimizer.

    Args:
      learning_rate: α, a float or a `tf_keras.optimizers.schedules.LearningRateSchedule`.
      beta_1: decay of the gradient moving average m, in [0, 1).
      beta_2: decay of the squared-gradient moving average s, in [0, 1).
      prior_precision: λ > 0, precision of the zero-mean Gaussian prior on every weight.
      num_examples: N > 0, the number of training examples (required).
      init_precision: the initial posterior precision N·s₀ + λ (>= `prior_precision`); `None`
        starts at s₀ = 0, i.e. at the prior's standard deviation, as in the paper.
      seed: a non-negative int for the weight noise; `None` draws one (kept in `get_config`).
      name: the optimizer's name.
      **kwargs: `clipnorm`, `clipvalue`, `global_clipnorm`, `jit_compile` as for Keras
        optimizers. `use_ema` and `weight_decay` are refused.

    Raises:
      ValueError: a missing or non-positive `num_examples`, a non-positive precision, an
        `init_precision` below `prior_precision`, a decay outside [0, 1), `use_ema=True`.
    """
    _check_unit_interval("beta_1", beta_1)
    _check_unit_interval("beta_2", beta_2)
    super().__init__(learning_rate=learning_rate, prior_precision=prior_precision,
                     num_examples=num_examples, init_precision=init_precision, seed=seed,
                     name=name, **kwargs)
    self.beta_1 = float(beta_1)
    self.beta_2 = float(beta_2)

  def _build_statistics(self, var_list):
    self._momentums = []
    self._velocities = []
    for var in var_list:
      self._momentums.append(self.add_variable_from_reference(var, "m"))
      self._velocities.append(
          self.add_variable_from_reference(var, "s", initial_value=self._initial_statistic(var)))

  def _stddev(self, index, variable):
    s = self._velocities[index]
    return tf.math.rsqrt(self.num_examples * s + tf.cast(self.prior_precision, s.dtype))

  def _update_statistics(self, gradient, index, variable):
    dtype = variable.dtype
    mu, m, s = self._means[index], self._momentums[index], self._velocities[index]
    lr = tf.cast(self.learning_rate, dtype)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    prior = tf.cast(self.prior_precision / self.num_examples, dtype)  # λ̃ = λ/N
    m.assign_add((gradient + prior * mu - m) * (1 - beta_1))
    s.assign_add((tf.square(gradient) - s) * (1 - beta_2))
    m_hat = m / (1 - tf.pow(beta_1, step))
    s_hat = s / (1 - tf.pow(beta_2, step))
    mu.assign_sub(lr * m_hat / (tf.sqrt(s_hat) + prior))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({"beta_1": self.beta_1, "beta_2": self.beta_2})
    return config
