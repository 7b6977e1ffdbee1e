"""The Hamiltonian Variational Auto-Encoder (Caterini et al., 2018) as a tf_keras model."""

import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.bijectors.tempered_hamiltonian_flow import TemperedHamiltonianFlow
from tfp_ext.internal import seeds
from tfp_ext.internal.keras_saving import check_model_saved_model_save
from tfp_ext.internal.keras_saving import record_input_spec
from tfp_ext.internal.validation import check_int
from tfp_ext.vi.hamiltonian_elbo import hamiltonian_elbo

__all__ = ["HamiltonianVAE"]

tfd = tfp.distributions

_LIKELIHOODS = ("bernoulli", "gaussian")
_TEMPERINGS = ("fixed", "free", "none")
_MIN_SCALE = 1e-5


def _logit(p):
  return float(np.log(p) - np.log1p(-p))


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class HamiltonianVAE(tf_keras.Model):
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
    super().__init__(**kwargs)
    if tempering not in _TEMPERINGS:
      raise ValueError(f"`tempering` must be one of {_TEMPERINGS}, got {tempering!r}.")
    if likelihood not in _LIKELIHOODS:
      raise ValueError(f"`likelihood` must be one of {_LIKELIHOODS}, got {likelihood!r}.")
    latent_size = check_int("latent_size", latent_size)
    num_steps = check_int("num_steps", num_steps)
    if not 0 < initial_step_size < max_step_size:
      raise ValueError(f"`initial_step_size` must be in (0, max_step_size={max_step_size}), got "
                       f"{initial_step_size}.")
    if tempering != "none" and not 0 < initial_inverse_temperature < 1:
      raise ValueError("`initial_inverse_temperature` must be in (0, 1) to be learned through a "
                       f"sigmoid, got {initial_inverse_temperature}.")
    num_elbo_samples = check_int("num_elbo_samples", num_elbo_samples)
    self.encoder = encoder
    self.decoder = decoder
    self.latent_size = latent_size
    self.num_steps = num_steps
    self.tempering = tempering
    self.initial_step_size = float(initial_step_size)
    self.max_step_size = float(max_step_size)
    self.initial_inverse_temperature = float(initial_inverse_temperature)
    self.step_size_per_step = bool(step_size_per_step)
    self.likelihood = likelihood
    self.num_elbo_samples = num_elbo_samples
    self.seed = int(seed)
    step_shape = [num_steps, latent_size] if step_size_per_step else [latent_size]
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
      alpha = initial_inverse_temperature ** (0.5 / num_steps)
      self.raw_alphas = self.add_weight(
          name="raw_alphas", shape=[num_steps],
          initializer=tf_keras.initializers.Constant(_logit(alpha)))
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.elbo_tracker = tf_keras.metrics.Mean(name="elbo")

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

  def variational_prior(self, x, training=None) -> tfd.Distribution:
    """`q_0(z | x)`, a `MultivariateNormalDiag` with batch shape [B]."""
    out = self.encoder(x, training=training)
    if out.shape.rank != 2 or out.shape[-1] != 2 * self.latent_size:
      raise ValueError(f"The encoder must output [batch, 2 * latent_size] = [B, "
                       f"{2 * self.latent_size}]; got shape {out.shape}.")
    loc, raw_scale = tf.split(out, 2, axis=-1)
    return tfd.MultivariateNormalDiag(loc, tf.math.softplus(raw_scale) + _MIN_SCALE)

  def likelihood_distribution(self, z, training=None) -> tfd.Distribution:
    """`p(x | z)` for latents `z` of shape [..., l]: batch shape [...], event shape of x."""
    leading = tf.shape(z)[:-1]
    out = self.decoder(tf.reshape(z, [-1, self.latent_size]), training=training)
    event_shape = out.shape[1:]
    out = tf.reshape(out, tf.concat([leading, tf.shape(out)[1:]], 0))
    if self.likelihood == "bernoulli":
      base = tfd.Bernoulli(logits=out, dtype=out.dtype)
    else:
      base = tfd.Normal(out, tf.ones([], out.dtype))
    return tfd.Independent(base, reinterpreted_batch_ndims=len(event_shape))

  def log_joint_fn(self, x, training=None):
    """`z [..., B, l] -> log p(x, z) [..., B]`, closing over the batch `x` [B, ...]."""
    x = tf.convert_to_tensor(x)

    def log_joint(z):
      prior = tf.reduce_sum(-0.5 * tf.square(z), -1) - 0.5 * self.latent_size * math.log(
          2 * math.pi)
      return prior + self.likelihood_distribution(z, training).log_prob(tf.cast(x, z.dtype))
    return log_joint

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

  def elbo(self, x, num_samples: Optional[int] = None, seed=None, training=None):
    """`tfp_ext.vi.hamiltonian_elbo` on the batch `x`: per-example estimates of shape [B]."""
    if seed is None:
      seed = (self.seed, 0)
    x = self._check_inputs(x)
    target = self.log_joint_fn(x, training)
    return hamiltonian_elbo(target, self.variational_prior(x, training), self.flow(target),
                            num_samples or self.num_elbo_samples, seed)

  def importance_sampled_nll(self, x, num_samples: int = 100, seed=None,
                             batch_size: Optional[int] = None) -> tf.Tensor:
    """Per-example `-log p(x)` estimated with `num_samples` HVAE importance samples, [B].

    `-logmeanexp(log w)` with `log w = log p(x, z_K) N(rho_K) - log q_K(z_K, rho_K)`: an upper
    bound on `-log p(x)` in expectation that tightens as `num_samples` grows. `batch_size`
    splits `x` to bound memory ([num_samples, batch, event] decoder outputs).
    """
    x = self._check_inputs(x)
    seed = seeds.sanitize((self.seed, 1) if seed is None else seed)
    n = int(x.shape[0]) if x.shape[0] is not None else None
    if batch_size is None or n is None or n <= batch_size:
      return self._nll(x, num_samples, seed)
    parts = [self._nll(x[i:i + batch_size], num_samples,
                       tf.cast(seeds.fold_in(seed, i), tf.int32))
             for i in range(0, n, batch_size)]
    return tf.concat(parts, 0)

  def _nll(self, x, num_samples, seed):
    lw = self.elbo(x, num_samples=num_samples, seed=seed).log_weights
    return -(tf.reduce_logsumexp(lw, axis=0) - math.log(num_samples))

  def _check_inputs(self, x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
      x = tf.cast(x, self.compute_dtype)
    if x.shape.rank is not None and x.shape.rank < 2:
      raise ValueError(f"Inputs must be a batch [B, ...]; got shape {x.shape}.")
    return x

  # -- Keras plumbing ---------------------------------------------------------------------------

  def call(self, inputs, training=None):
    """Per-example ELBO estimates [B] (seeded by the model's base seed)."""
    return self.elbo(inputs, training=training).elbo

  @property
  def metrics(self):
    return [self.loss_tracker, self.elbo_tracker]

  @staticmethod
  def _unpack(data):
    x, _, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
    return x, sample_weight

  def _step_seed(self, stream):
    step = self.optimizer.iterations if self.optimizer is not None else 0
    # fold_in may return int64; stateless samplers take int32 seeds.
    return tf.cast(seeds.fold_in(seeds.sanitize((self.seed, stream)), step), tf.int32)

  def _loss(self, x, sample_weight, seed, training):
    per_example = self.elbo(x, seed=seed, training=training).elbo
    if sample_weight is None:
      elbo = tf.reduce_mean(per_example)
    else:
      w = tf.cast(tf.reshape(sample_weight, [-1]), per_example.dtype)
      elbo = tf.reduce_sum(w * per_example) / tf.reduce_sum(w)
    loss = -elbo
    if self.losses:
      loss += tf.add_n(self.losses)
    return loss, elbo

  def train_step(self, data):
    x, sample_weight = self._unpack(data)
    record_input_spec(self, x)
    with tf.GradientTape() as tape:
      loss, elbo = self._loss(x, sample_weight, self._step_seed(2), training=True)
    self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
    self.loss_tracker.update_state(loss)
    self.elbo_tracker.update_state(elbo)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    x, sample_weight = self._unpack(data)
    loss, elbo = self._loss(x, sample_weight, self._step_seed(3), training=False)
    self.loss_tracker.update_state(loss)
    self.elbo_tracker.update_state(elbo)
    return {m.name: m.result() for m in self.metrics}

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    check_model_saved_model_save(self, save_type)
    return super()._trackable_children(save_type, **kwargs)

  def get_config(self):
    return {
        "encoder": tf_keras.layers.serialize(self.encoder),
        "decoder": tf_keras.layers.serialize(self.decoder),
        "latent_size": self.latent_size,
        "num_steps": self.num_steps,
        "tempering": self.tempering,
        "initial_step_size": self.initial_step_size,
        "max_step_size": self.max_step_size,
        "initial_inverse_temperature": self.initial_inverse_temperature,
        "step_size_per_step": self.step_size_per_step,
        "likelihood": self.likelihood,
        "num_elbo_samples": self.num_elbo_samples,
        "seed": self.seed,
        "name": self.name,
    }

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    for key in ("encoder", "decoder"):
      config[key] = tf_keras.layers.deserialize(config[key], custom_objects=custom_objects)
    return cls(**config)
