"""The VAE plumbing shared by the target-informed flows (HamiltonianVAE, LangevinVAE)."""

import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.internal import seeds
from tfp_ext.internal.keras_saving import check_model_saved_model_save
from tfp_ext.internal.keras_saving import record_input_spec
from tfp_ext.internal.validation import check_int

__all__ = ["TargetInformedVAE"]

tfd = tfp.distributions

_LIKELIHOODS = ("bernoulli", "gaussian")
_MIN_SCALE = 1e-5


def logit(p):
  return float(np.log(p) - np.log1p(-p))


def inverse_softplus(y):
  return float(y + np.log(-np.expm1(-y)))


class TargetInformedVAE(tf_keras.Model):
  """A VAE whose `q_0(z | x)` is refined by a flow on the model's own posterior `p(z | x)`.

  The encoder gives `q_0(z | x) = N(mu(x), diag sigma(x)^2)`; a subclass's flow (`flow`) then
  moves `z` with gradients of `log p(x, z) = log N(z | 0, I) + log p(x | z)`, and its ELBO
  estimator (`_estimate`, e.g. `tfp_ext.vi.hamiltonian_elbo`) gives the training loss. This base
  holds what does not depend on the flow: the encoder/decoder distributions, `model.fit` with
  stateless seeds (step `t` uses `fold_in(seed, t)`), the importance-sampled NLL and saving.
  Subclasses must call `_make_trackers()` at the end of their `__init__`.
  """

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               decoder: tf_keras.layers.Layer,
               latent_size: int,
               num_steps: int = 5,
               likelihood: str = "bernoulli",
               num_elbo_samples: int = 1,
               seed: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    if likelihood not in _LIKELIHOODS:
      raise ValueError(f"`likelihood` must be one of {_LIKELIHOODS}, got {likelihood!r}.")
    self.encoder = encoder
    self.decoder = decoder
    self.latent_size = check_int("latent_size", latent_size)
    self.num_steps = check_int("num_steps", num_steps)
    self.likelihood = likelihood
    self.num_elbo_samples = check_int("num_elbo_samples", num_elbo_samples)
    self.seed = int(seed)

  def _make_trackers(self):
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.elbo_tracker = tf_keras.metrics.Mean(name="elbo")

  # -- The probabilistic model ------------------------------------------------------------------

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

  def flow(self, target_log_prob_fn):
    """The flow with the current parameters on `target_log_prob_fn` (subclass)."""
    raise NotImplementedError

  def _estimate(self, target_log_prob_fn, initial_distribution, num_samples, seed):
    """The ELBO estimator's result for `flow(target_log_prob_fn)` (subclass)."""
    raise NotImplementedError

  def elbo(self, x, num_samples: Optional[int] = None, seed=None, training=None):
    """The flow's ELBO estimate on the batch `x`: per-example estimates of shape [B]."""
    if seed is None:
      seed = (self.seed, 0)
    x = self._check_inputs(x)
    target = self.log_joint_fn(x, training)
    return self._estimate(target, self.variational_prior(x, training),
                          num_samples or self.num_elbo_samples, seed)

  def importance_sampled_nll(self, x, num_samples: int = 100, seed=None,
                             batch_size: Optional[int] = None) -> tf.Tensor:
    """Per-example `-log p(x)` estimated with `num_samples` importance samples, [B].

    `-logmeanexp(log w)` with the estimator's log-weights of the flowed state: an upper bound
    on `-log p(x)` in expectation that tightens as `num_samples` grows. `batch_size` splits `x`
    to bound memory ([num_samples, batch, event] decoder outputs).
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
