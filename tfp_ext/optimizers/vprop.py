"""Vprop: RMSprop with weight perturbation, a natural-gradient mean-field variational optimizer."""

from typing import Optional

import tensorflow as tf
import tf_keras

from tfp_ext.internal.validation import check_int
from tfp_ext.optimizers.variational_optimizer import VariationalOptimizer
from tfp_ext.optimizers.variational_optimizer import _check_unit_interval
from tfp_ext.optimizers.variational_optimizer import _mean_gradient_and_square

__all__ = ["Vprop"]


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class Vprop(VariationalOptimizer):
  r"""Variational RMSprop: learns q(θ) = N(μ, diag(σ²)) over the weights with RMSprop's update.

  Each step (Khan et al., 2018, Section 3), with λ the prior precision, N the number of training
  examples and λ̃ = λ/N:

  ```none
  θⱼ = μ + σ∘εⱼ,  σ = 1/sqrt(N·(s + λ̃)) = 1/sqrt(N·s + λ),  εⱼ ~ N(0, I),  j = 1..S
  gⱼ = ∇ mean per-example NLL of the minibatch, at θⱼ
  ḡ = (1/S)·Σⱼ gⱼ,   ĥ = (1/S)·Σⱼ gⱼ∘gⱼ
  s ← ρ·s + (1 − ρ)·ĥ
  μ ← μ − α·(ḡ + λ̃·μ) / (sqrt(s) + λ̃)
  ```

  With S = `num_samples` weight samples per step the step of μ takes the **mean gradient** ḡ and
  the precision statistic s the **mean of the per-sample squared gradients** ĥ, as the authors'
  Vprop does (emtiyaz/vadam, `pytorch/vadam/optimizers.py`). S = 1 (the default) is the
  one-sample update and works in a plain `model.fit`; S > 1 needs
  `tfp_ext.keras.VariationalModel` (a plain `fit` raises a ValueError saying so).

  The paper writes the decay as β = 1 − ρ; `rho` follows `tf_keras.optimizers.RMSprop`. As in
  RMSprop there is no bias correction, so with s₀ = 0 the first steps are larger than α; `Vadam`
  corrects that bias. Loss, prior and caveats are as for `Vadam`.

  #### Examples

  ```python
  opt = tfp_ext.optimizers.Vprop(learning_rate=1e-3, num_examples=len(x), seed=0)
  model.compile(optimizer=opt, loss=tf_keras.losses.MeanSquaredError(), jit_compile=True)
  model.fit(x, y, batch_size=32, epochs=10)
  q = opt.posterior()
  ```

  #### References

  [1]: Mohammad Emtiyaz Khan, Didrik Nielsen, Voot Tangkaratt, Wu Lin, Yarin Gal, Akash
       Srivastava. Fast and Scalable Bayesian Deep Learning by Weight-Perturbation in Adam.
       In _International Conference on Machine Learning_, 2018. https://arxiv.org/abs/1806.04854
  """

  def __init__(self,
               learning_rate=1e-3,
               rho: float = 0.99,
               prior_precision: float = 1.0,
               num_examples: Optional[int] = None,
               init_precision: Optional[float] = None,
               seed: Optional[int] = None,
               num_samples: int = 1,
               name: str = "Vprop",
               **kwargs):
    """Creates a Vprop optimizer.

    Args:
      learning_rate: α, a float or a `tf_keras.optimizers.schedules.LearningRateSchedule`.
      rho: decay of the squared-gradient moving average s, in [0, 1). It also sets how many
        minibatches the posterior variance averages over (about 2/(1 − ρ)), hence a default
        closer to 1 than RMSprop's 0.9.
      prior_precision: λ > 0, precision of the zero-mean Gaussian prior on every weight.
      num_examples: N > 0, the number of training examples (required).
      init_precision: the initial posterior precision N·s₀ + λ (>= `prior_precision`); `None`
        starts at s₀ = 0.
      seed: a non-negative int for the weight noise; `None` draws one (kept in `get_config`).
      num_samples: S ≥ 1, weight samples per step (see above). More than 1 needs
        `tfp_ext.keras.VariationalModel`.
      name: the optimizer's name.
      **kwargs: `clipnorm`, `clipvalue`, `global_clipnorm`, `jit_compile` as for Keras
        optimizers. `use_ema` and `weight_decay` are refused.

    Raises:
      ValueError: a missing or non-positive `num_examples`, a non-positive precision, an
        `init_precision` below `prior_precision`, `rho` outside [0, 1), `use_ema=True`, a
        `num_samples` that is not a positive int.
    """
    _check_unit_interval("rho", rho)
    num_samples = check_int("num_samples", num_samples)
    super().__init__(learning_rate=learning_rate, prior_precision=prior_precision,
                     num_examples=num_examples, init_precision=init_precision, seed=seed,
                     name=name, **kwargs)
    self.rho = float(rho)
    self.num_samples = int(num_samples)

  @property
  def num_mc_samples(self) -> int:
    return self.num_samples

  def _build_statistics(self, var_list):
    self._velocities = []
    for var in var_list:
      self._velocities.append(
          self.add_variable_from_reference(var, "s", initial_value=self._initial_statistic(var)))

  def _stddev(self, index, variable):
    s = self._velocities[index]
    return tf.math.rsqrt(self.num_examples * s + tf.cast(self.prior_precision, s.dtype))

  def _update_statistics(self, gradient, index, variable):
    dtype = variable.dtype
    mu, s = self._means[index], self._velocities[index]
    lr = tf.cast(self.learning_rate, dtype)
    rho = tf.cast(self.rho, dtype)
    prior = tf.cast(self.prior_precision / self.num_examples, dtype)  # λ̃ = λ/N
    gradient, squared = _mean_gradient_and_square(gradient, self.num_samples)
    s.assign_add((squared - s) * (1 - rho))
    mu.assign_sub(lr * (gradient + prior * mu) / (tf.sqrt(s) + prior))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({"rho": self.rho, "num_samples": self.num_samples})
    return config
