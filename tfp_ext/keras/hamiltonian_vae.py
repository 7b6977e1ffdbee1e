"""The Hamiltonian Variational Auto-Encoder (Caterini et al., 2018) as a tf_keras model."""

import tensorflow as tf
import tf_keras

from tfp_ext.bijectors.tempered_hamiltonian_flow import TemperedHamiltonianFlow
from tfp_ext.keras.target_informed_vae import TargetInformedVAE
from tfp_ext.keras.target_informed_vae import logit as _logit
from tfp_ext.vi.hamiltonian_elbo import hamiltonian_elbo

__all__ = ["HamiltonianVAE"]

_TEMPERINGS = ("fixed", "free", "none")


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class HamiltonianVAE(TargetInformedVAE):
  """A VAE whose variational posterior is refined by a tempered Hamiltonian flow.

  The encoder gives the variational prior `q_0(z | x) = N(mu(x), diag sigma(x)^2)`; the flow
  (`tfp_ext.bijectors.TemperedHamiltonianFlow`) then runs `num_steps` leapfrog steps on the
  model's own posterior `log p(x, z) = log N(z | 0, I) + log p(x | z)` with tempering. Being
  target-informed, the flow adds only its step sizes `eps` (in `(0, max_step_size)`) and `beta_0`
  (`"fixed"` tempering) or the `alphas` (`"free"`) as parameters, all learned through sigmoids.
  Training maximizes the unbiased Hamiltonian ELBO (`tfp_ext.vi.hamiltonian_elbo`, eq. 12)
  with `model.fit`; `jit_compile=True` works. `importance_sampled_nll` evaluates
  `-log p(x)` by importance sampling with the HVAE as proposal.

  Randomness is stateless: training step `t` uses `fold_in(seed, t)`, so the same seed, weights
  and data give the same run.

  #### Examples

  ```python
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(200, "softplus"),
                                 tf_keras.layers.Dense(2 * 16)])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(200, "softplus"),
                                 tf_keras.layers.Dense(784)])
  model = HamiltonianVAE(encoder, decoder, latent_size=16, num_steps=5)
  model.compile(tf_keras.optimizers.Adam(1e-3), jit_compile=True)
  model.fit(x_train, epochs=10, batch_size=100)
  nll = model.importance_sampled_nll(x_test, num_samples=1000, seed=1)
  ```

  #### References

  [1]: Anthony L. Caterini, Arnaud Doucet, and Dino Sejdinovic. Hamiltonian Variational
       Auto-Encoder. In _Neural Information Processing Systems_, 2018.
       https://arxiv.org/abs/1805.11328
  """

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               decoder: tf_keras.layers.Layer,
               latent_size: int,
               num_steps: int = 5,
               tempering: str = "fixed",
               initial_step_size: float = 0.01,
               max_step_size: float = 0.5,
               initial_inverse_temperature: float = 0.5,
               step_size_per_step: bool = False,
               likelihood: str = "bernoulli",
               num_elbo_samples: int = 1,
               seed: int = 0,
               **kwargs):
    """Builds the model.

    Args:
      encoder: layer mapping a batch `x` [B, ...] to `[B, 2 * latent_size]`: the mean and the
        pre-softplus scale of `q_0(z | x)`.
      decoder: layer mapping latents `[N, latent_size]` to `[N, *event_shape]`: Bernoulli logits
        (`likelihood="bernoulli"`) or the mean of a unit-variance Gaussian (`"gaussian"`).
      latent_size: l, the latent dimension.
      num_steps: K >= 1, leapfrog + tempering steps.
      tempering: `"fixed"`, `"free"` or `"none"` (see `TemperedHamiltonianFlow`).
      initial_step_size: initial eps, in `(0, max_step_size)`.
      max_step_size: upper bound of eps.
      initial_inverse_temperature: initial beta_0 in `(0, 1)` (`"fixed"`; for `"free"` each
        alpha starts at `beta_0 ** (1 / (2 K))`); ignored for `"none"`.
      step_size_per_step: learn a `[K, l]` eps (one per step) instead of `[l]`.
      likelihood: `"bernoulli"` or `"gaussian"` (unit variance).
      num_elbo_samples: Monte Carlo samples per example in the training ELBO.
      seed: Python int, the base of every stateless seed the model draws.
      **kwargs: passed to `tf_keras.Model`.
    """
    super().__init__(encoder, decoder, latent_size, num_steps=num_steps, likelihood=likelihood,
                     num_elbo_samples=num_elbo_samples, seed=seed, **kwargs)
    if tempering not in _TEMPERINGS:
      raise ValueError(f"`tempering` must be one of {_TEMPERINGS}, got {tempering!r}.")
    if not 0 < initial_step_size < max_step_size:
      raise ValueError(f"`initial_step_size` must be in (0, max_step_size={max_step_size}), got "
                       f"{initial_step_size}.")
    if tempering != "none" and not 0 < initial_inverse_temperature < 1:
      raise ValueError("`initial_inverse_temperature` must be in (0, 1) to be learned through a "
                       f"sigmoid, got {initial_inverse_temperature}.")
    self.tempering = tempering
    self.initial_step_size = float(initial_step_size)
    self.max_step_size = float(max_step_size)
    self.initial_inverse_temperature = float(initial_inverse_temperature)
    self.step_size_per_step = bool(step_size_per_step)
    step_shape = ([self.num_steps, self.latent_size] if step_size_per_step
                  else [self.latent_size])
    self.raw_step_size = self.add_weight(
        name="raw_step_size", shape=step_shape,
        initializer=tf_keras.initializers.Constant(
            _logit(initial_step_size / max_step_size)))
    self.raw_inverse_temperature = None
    self.raw_alphas = None
    if tempering == "fixed":
      self.raw_inverse_temperature = self.add_weight(
          name="raw_inverse_temperature", shape=[],
          initializer=tf_keras.initializers.Constant(_logit(initial_inverse_temperature)))
    elif tempering == "free":
      alpha = initial_inverse_temperature ** (0.5 / self.num_steps)
      self.raw_alphas = self.add_weight(
          name="raw_alphas", shape=[self.num_steps],
          initializer=tf_keras.initializers.Constant(_logit(alpha)))
    self._make_trackers()

  # -- The probabilistic model ------------------------------------------------------------------

  def step_size(self) -> tf.Tensor:
    """The current leapfrog step sizes eps, `[l]` or `[K, l]`."""
    return self.max_step_size * tf.sigmoid(self.raw_step_size)

  def inverse_temperature(self) -> tf.Tensor:
    """The current beta_0 (1 without tempering)."""
    if self.tempering == "fixed":
      return tf.sigmoid(self.raw_inverse_temperature)
    if self.tempering == "free":
      return tf.reduce_prod(tf.square(tf.sigmoid(self.raw_alphas)))
    return tf.ones([], self.raw_step_size.dtype)

  def flow(self, target_log_prob_fn) -> TemperedHamiltonianFlow:
    """The tempered Hamiltonian flow with the current parameters on `target_log_prob_fn`."""
    kwargs = {}
    if self.tempering == "fixed":
      kwargs["initial_inverse_temperature"] = tf.sigmoid(self.raw_inverse_temperature)
    elif self.tempering == "free":
      kwargs["alphas"] = tf.sigmoid(self.raw_alphas)
    return TemperedHamiltonianFlow(
        target_log_prob_fn, num_steps=self.num_steps, step_size=self.step_size(),
        tempering=self.tempering, max_step_size=self.max_step_size, **kwargs)

  def _estimate(self, target_log_prob_fn, initial_distribution, num_samples, seed):
    """`tfp_ext.vi.hamiltonian_elbo` of the current flow (eq. 12 of the paper)."""
    return hamiltonian_elbo(target_log_prob_fn, initial_distribution,
                            self.flow(target_log_prob_fn), num_samples, seed)

  def get_config(self):
    return {
        **super().get_config(),
        "tempering": self.tempering,
        "initial_step_size": self.initial_step_size,
        "max_step_size": self.max_step_size,
        "initial_inverse_temperature": self.initial_inverse_temperature,
        "step_size_per_step": self.step_size_per_step,
    }
