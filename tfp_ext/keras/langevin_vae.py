"""The quasi-symplectic Langevin VAE (Wang & Delingette, 2021) as a tf_keras model."""

import tensorflow as tf
import tf_keras

from tfp_ext.bijectors.langevin_flow import LangevinFlow
from tfp_ext.keras.target_informed_vae import TargetInformedVAE
from tfp_ext.keras.target_informed_vae import inverse_softplus
from tfp_ext.vi.langevin_elbo import langevin_elbo

__all__ = ["LangevinVAE"]


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class LangevinVAE(TargetInformedVAE):
  """A VAE whose variational posterior is refined by a quasi-symplectic Langevin flow.

  The encoder gives the variational prior `q_0(z | x) = N(mu(x), diag sigma(x)^2)`; the flow
  (`tfp_ext.bijectors.LangevinFlow`) then runs `num_steps` quasi-symplectic steps of damped
  (and, by default, noisy) Langevin dynamics on the model's own posterior
  `log p(x, z) = log N(z | 0, I) + log p(x | z)`, one target gradient per step. The flow adds
  only its step sizes `h` (`[l]`) and friction `gamma` (a scalar) as parameters, both learned
  through a softplus, so they stay positive. Training maximizes the unbiased Langevin ELBO
  (`tfp_ext.vi.langevin_elbo`) with `model.fit`; `jit_compile=True` works.
  `importance_sampled_nll` evaluates `-log p(x)` by importance sampling with the flow as
  proposal.

  The model is a drop-in replacement for `tfp_ext.keras.HamiltonianVAE`: the same encoder,
  decoder, `latent_size`, `num_steps`, `likelihood`, `num_elbo_samples` and `seed` arguments, the
  same methods (`elbo`, `importance_sampled_nll`, `variational_prior`, `log_joint_fn`, `flow`)
  and the same results' fields; each step costs one decoder gradient instead of the leapfrog's
  two (K + 1 in all for K leapfrog steps).

  Randomness is stateless: training step `t` uses `fold_in(seed, t)`, so the same seed, weights
  and data give the same run.

  #### Examples

  ```python
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(200, "softplus"),
                                 tf_keras.layers.Dense(2 * 16)])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(200, "softplus"),
                                 tf_keras.layers.Dense(784)])
  model = LangevinVAE(encoder, decoder, latent_size=16, num_steps=5)
  model.compile(tf_keras.optimizers.Adam(1e-3), jit_compile=True)
  model.fit(x_train, epochs=10, batch_size=100)
  nll = model.importance_sampled_nll(x_test, num_samples=1000, seed=1)
  ```

  #### References

  [1]: Zihao Wang and Herve Delingette. Quasi-symplectic Langevin Variational Autoencoder.
       _arXiv preprint_, 2020 (revised 2021). https://arxiv.org/abs/2009.01675
  """

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               decoder: tf_keras.layers.Layer,
               latent_size: int,
               num_steps: int = 5,
               initial_step_size: float = 0.01,
               initial_friction: float = 0.1,
               mass: float = 1.0,
               stochastic: bool = True,
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
      num_steps: K >= 1, quasi-symplectic steps.
      initial_step_size: initial h > 0 (every dimension).
      initial_friction: initial gamma > 0.
      mass: the (fixed) mass M > 0 of the momentum.
      stochastic: inject the Langevin noise (the paper's flow) or run the deterministic flow.
      likelihood: `"bernoulli"` or `"gaussian"` (unit variance).
      num_elbo_samples: Monte Carlo samples per example in the training ELBO.
      seed: Python int, the base of every stateless seed the model draws.
      **kwargs: passed to `tf_keras.Model`.
    """
    super().__init__(encoder, decoder, latent_size, num_steps=num_steps, likelihood=likelihood,
                     num_elbo_samples=num_elbo_samples, seed=seed, **kwargs)
    for arg, value in (("initial_step_size", initial_step_size),
                       ("initial_friction", initial_friction), ("mass", mass)):
      if not value > 0:
        raise ValueError(f"`{arg}` must be positive, got {value}.")
    self.initial_step_size = float(initial_step_size)
    self.initial_friction = float(initial_friction)
    self.mass = float(mass)
    self.stochastic = bool(stochastic)
    self.raw_step_size = self.add_weight(
        name="raw_step_size", shape=[self.latent_size],
        initializer=tf_keras.initializers.Constant(inverse_softplus(initial_step_size)))
    self.raw_friction = self.add_weight(
        name="raw_friction", shape=[],
        initializer=tf_keras.initializers.Constant(inverse_softplus(initial_friction)))
    self._make_trackers()

  def step_size(self) -> tf.Tensor:
    """The current step sizes h, `[l]`."""
    return tf.math.softplus(self.raw_step_size)

  def friction(self) -> tf.Tensor:
    """The current friction gamma (a scalar)."""
    return tf.math.softplus(self.raw_friction)

  def flow(self, target_log_prob_fn) -> LangevinFlow:
    """The Langevin flow with the current parameters on `target_log_prob_fn`."""
    return LangevinFlow(target_log_prob_fn, num_steps=self.num_steps,
                        step_size=self.step_size(), friction=self.friction(),
                        mass=tf.constant(self.mass, self.raw_step_size.dtype))

  def _estimate(self, target_log_prob_fn, initial_distribution, num_samples, seed):
    """`tfp_ext.vi.langevin_elbo` of the current flow."""
    return langevin_elbo(target_log_prob_fn, initial_distribution,
                         self.flow(target_log_prob_fn), num_samples, seed,
                         stochastic=self.stochastic)

  def get_config(self):
    return {
        **super().get_config(),
        "initial_step_size": self.initial_step_size,
        "initial_friction": self.initial_friction,
        "mass": self.mass,
        "stochastic": self.stochastic,
    }
