"""Improved variational online Newton (IVON), a tf_keras optimizer."""

import math
from typing import Optional

import tensorflow as tf
import tf_keras

from tfp_ext.internal.validation import check_int
from tfp_ext.optimizers import variational_optimizer as vo

__all__ = ["IVON"]


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class IVON(vo.VariationalOptimizer):
  r"""IVON: variational online Newton with a reparameterization Hessian estimate.

  IVON (Shen et al., 2024, Algorithm 1) learns q(θ) = N(m, diag(σ²)), σ² = 1/(λ(h + δ)), with
  effective sample size λ = `ess` and weight decay δ (the prior N(0, 1/(λδ))). The loss Keras
  differentiates is the mean per-example loss; with ĝ its gradient at the sample θ ~ q in the
  model variables (the paper's `sampled_params`, done here by the optimizer itself),

  ```none
  ĥ = ĝ · (θ − m) / σ² = ĝ · (θ − m) · λ(h + δ)     (Stein / Price: E[ĥ] = E[diag ∇²ℓ])
  g ← β₁ g + (1 − β₁) ĝ
  h ← β₂ h + (1 − β₂) ĥ + ½ (1 − β₂)² (h − ĥ)² / (h + δ)
  ḡ = g / (1 − β₁ᵗ)
  m ← m − α · clip((ḡ + δ m) / (h + δ), ξ)
  ```

  The correction term keeps h positive whatever the sign of ĥ (it is the Riemannian-gradient
  retraction of the paper's Eq. 9), and clipping each coordinate of the step to [−ξ, ξ] guards
  the first steps while h is still at `hess_init`. The loss may be any differentiable
  per-example average; no per-example gradients are needed, so IVON costs about one Adam step
  plus a Gaussian draw and works in plain `model.fit` (and through `VariationalModel`, which
  `mc_samples > 1` needs).

  Mapping to the shared base: `num_examples` = round(ess), `prior_precision` = ess·δ, and the
  initial precision is ess·(hess_init + δ).

  #### Choosing the hyperparameters

  * `ess`: the training-set size N (the Bayesian posterior); larger values shrink σ (≈ a
    colder posterior), smaller ones widen it.
  * `weight_decay` δ: the prior precision per example; λ·δ is the prior precision on weights.
  * `hess_init`: the first steps are SGD-like with step α/(hess_init + δ), and the initial
    posterior width is 1/√(ess·(hess_init + δ)). Too large → σ tiny, ĥ is pure noise relative
    to h and h stays near `hess_init` for ~1/(1 − β₂) steps; too small → huge weight noise and
    diverging first steps. A value of the order of the typical diagonal Hessian of the mean
    loss (0.1-1 for standardized inputs and unit-scale outputs) works.
  * `beta_2`: h averages over ~1/(1 − β₂) steps. The paper's 0.99999 suits 10⁵+ steps; **if the
    Hessian estimate stays at its initial value, training is shorter than 1/(1 − β₂)**: lower
    `beta_2` to 1 − 10/(total steps) (e.g. 0.999 for 10⁴ steps) or start `hess_init` closer to
    the true curvature.
  * `learning_rate`: the step is preconditioned by 1/(h + δ), so α is typically 0.05-0.5 (much
    larger than Adam's). **Let it decay to zero** over the run (e.g.
    `tf_keras.optimizers.schedules.CosineDecay(α, decay_steps=total_steps)`), as the paper's
    experiments do. For weights the data barely constrain, h + δ is close to δ, so with a
    constant α the mean keeps taking noisy steps of about α·ĝ/δ up to the last one: the final
    weights then depend on the last steps' gradient noise, and a run's accuracy on the seed or
    even on the CPU's float rounding (notebook 02's digits classifier, 190 steps, 5 seeds: test
    accuracy 0.79-0.94 with a constant α = 0.1, where one seed fell from 0.93 to 0.79 when XLA
    summed in another order; 0.94-0.96 with cosine decay; `benchmarks/ngvi_seed_stability.py`).

  #### Examples

  ```python
  steps = 10 * math.ceil(len(x) / 128)
  rate = tf_keras.optimizers.schedules.CosineDecay(0.1, decay_steps=steps)
  model.compile(optimizer=tfp_ext.optimizers.IVON(learning_rate=rate, ess=len(x), seed=0),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, batch_size=128, epochs=10)
  q = model.optimizer.posterior()
  ```

  #### References

  [1]: Yuesong Shen, Nico Daheim, Bai Cong, Peter Nickl, Gian Maria Marconi, Clement Bazan, Rio
       Yokota, Iryna Gurevych, Daniel Cremers, Mohammad Emtiyaz Khan, Thomas Möllenhoff.
       Variational Learning is Effective for Large Deep Networks. ICML 2024.
       https://arxiv.org/abs/2402.17641
  """

  def __init__(self,
               learning_rate=0.1,
               ess: Optional[float] = None,
               hess_init: float = 1.0,
               beta_1: float = 0.9,
               beta_2: float = 0.99999,
               weight_decay: float = 1e-4,
               mc_samples: int = 1,
               clip_radius: float = float("inf"),
               seed: Optional[int] = None,
               name: str = "IVON",
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: α > 0 (a float or a schedule).
      ess: λ, the effective sample size (usually the number of training examples; required).
      hess_init: h₀ > 0, the initial Hessian estimate.
      beta_1: gradient momentum decay in [0, 1).
      beta_2: Hessian decay in [0, 1).
      weight_decay: δ > 0; the prior precision on every weight is ess·δ.
      mc_samples: weight samples per step, whose ĝ and ĥ are averaged (Algorithm 1's inner
        loop). More than 1 needs `VariationalModel`, which evaluates the extra samples.
      clip_radius: ξ > 0, elementwise bound of the preconditioned step (inf: no clipping).
      seed: int seed of the weight noise (None draws one, recorded in `get_config`).
      name, **kwargs: as for every tf_keras optimizer.

    Raises:
      ValueError: a hyperparameter out of range or `ess` missing.
    """
    if ess is None:
      raise ValueError("IVON needs `ess`, the effective sample size (usually the number of "
                       "training examples).")
    if isinstance(ess, bool) or not isinstance(ess, (int, float)) or not ess >= 1 or (
        not math.isfinite(ess)):
      raise ValueError(f"`ess` must be a finite number >= 1, got {ess!r}.")
    vo._check_positive("hess_init", hess_init)  # pylint: disable=protected-access
    vo._check_positive("weight_decay", weight_decay)  # pylint: disable=protected-access
    vo._check_unit_interval("beta_1", beta_1)  # pylint: disable=protected-access
    vo._check_unit_interval("beta_2", beta_2)  # pylint: disable=protected-access
    if isinstance(clip_radius, bool) or not isinstance(clip_radius, (int, float)) or not (
        clip_radius > 0):
      raise ValueError(f"`clip_radius` must be > 0 (inf for no clipping), got {clip_radius!r}.")
    mc_samples = check_int("mc_samples", mc_samples)
    ess_int = int(round(ess))
    self.ess = float(ess)
    self.hess_init = float(hess_init)
    self.delta = float(weight_decay)
    super().__init__(learning_rate=learning_rate, prior_precision=ess_int * self.delta,
                     num_examples=ess_int, init_precision=ess_int * (self.hess_init + self.delta),
                     seed=seed, name=name, **kwargs)
    self.beta_1 = float(beta_1)
    self.beta_2 = float(beta_2)
    self.mc_samples = int(mc_samples)
    self.clip_radius = float(clip_radius)

  curvature = None  # The batch gradient suffices: VariationalModel passes it through.

  @property
  def num_mc_samples(self) -> int:
    return self.mc_samples

  def _build_statistics(self, var_list):
    self._hessians = [
        self.add_variable_from_reference(
            v, "h", initial_value=tf.fill(v.shape, tf.constant(self.hess_init, v.dtype)))
        for v in var_list]
    self._momenta = [self.add_variable_from_reference(v, "g") for v in var_list]

  def _update_statistics(self, gradient, index, variable):
    dtype = variable.dtype
    lr = tf.cast(self.learning_rate, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    delta = tf.cast(self.delta, dtype)
    ess = tf.cast(self.ess, dtype)
    m, h, g = self._means[index], self._hessians[index], self._momenta[index]
    # θ − m from the weights the gradient was actually taken at, so the estimator stays right
    # for the first step of a fit and after restores, wherever the variables were.
    offset = tf.convert_to_tensor(variable) - m
    if self.mc_samples > 1:
      # Samples 1..S−1 were drawn by `mc_sample` from the posterior before this update.
      stddev = self._stddev(index, variable)
      offsets = [offset] + [stddev * self.noise(index, self.iterations, variable, j)
                            for j in range(1, self.mc_samples)]
      h_hat = tf.reduce_mean(gradient * tf.stack(offsets), axis=0) * ess * (h + delta)
      gradient = tf.reduce_mean(gradient, axis=0)
    else:
      h_hat = gradient * offset * ess * (h + delta)
    g.assign(beta_1 * g + (1. - beta_1) * gradient)
    h_old = tf.convert_to_tensor(h)
    h.assign(beta_2 * h_old + (1. - beta_2) * h_hat +
             0.5 * tf.square(1. - beta_2) * tf.square(h_old - h_hat) / (h_old + delta))
    step = tf.cast(self.iterations + 1, dtype)
    g_bar = g / (1. - tf.pow(beta_1, step)) if self.beta_1 > 0 else tf.convert_to_tensor(g)
    update = (g_bar + delta * m) / (h + delta)
    if math.isfinite(self.clip_radius):
      radius = tf.cast(self.clip_radius, dtype)
      update = tf.clip_by_value(update, -radius, radius)
    m.assign_sub(lr * update)

  def _stddev(self, index, variable):
    dtype = variable.dtype
    return tf.math.rsqrt(tf.cast(self.ess, dtype) *
                         (self._hessians[index] + tf.cast(self.delta, dtype)))

  def get_config(self) -> dict:
    config = super().get_config()
    for key in ("prior_precision", "num_examples", "init_precision"):
      config.pop(key, None)
    config.update({
        "ess": self.ess,
        "hess_init": self.hess_init,
        "beta_1": self.beta_1,
        "beta_2": self.beta_2,
        "weight_decay": self.delta,
        "mc_samples": self.mc_samples,
        "clip_radius": self.clip_radius,
    })
    return config
