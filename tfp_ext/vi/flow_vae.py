"""A VAE whose amortized posterior is refined by a normalizing flow (planar, IAF, Sylvester)."""

import math
from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.internal import seeds
from tfp_ext.internal.keras_saving import check_model_saved_model_save
from tfp_ext.internal.keras_saving import record_input_spec
from tfp_ext.internal.validation import check_int
from tfp_ext.keras.amortized_sylvester_flow import AmortizedSylvesterFlow

__all__ = ["FlowVAE", "POSTERIORS"]

tfb = tfp.bijectors
tfd = tfp.distributions

POSTERIORS = ("gaussian", "planar", "iaf", "orthogonal", "householder", "triangular")
_MIN_SCALE = 1e-4


def _as_seed(seed):
  """A [2] int32 seed; `seeds.fold_in` returns int64, which `sanitize_seed` rejects."""
  if tf.is_tensor(seed) and seed.dtype == tf.int64:
    seed = tf.cast(seed, tf.int32)  # two's-complement wrap: deterministic, keeps all the bits
  return seeds.sanitize(seed)


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class FlowVAE(tf_keras.Model):
  """Bernoulli VAE with posterior `q(z|x)` = `K`-layer flow of a diagonal Gaussian.

  The encoder features `h(x)` give `q_0(z_0|x) = N(mu(h), diag sigma(h)^2)`; `K` flow layers map
  `z_0` to `z_K`, and `log q(z_K|x) = log q_0(z_0|x) - sum_k log|det dz_k/dz_{k-1}|`
  ([Rezende and Mohamed (2015)][1]). The flow is one of:

  * `"gaussian"`: none (the plain VAE);
  * `"planar"`, `"orthogonal"`, `"householder"`, `"triangular"`: amortized planar / Sylvester
    layers ([van den Berg et al. (2018)][2]) whose parameters a dense layer computes from `h`
    (`tfp_ext.keras.AmortizedSylvesterFlow`);
  * `"iaf"`: inverse autoregressive flow ([Kingma et al. (2016)][3]): `K` inverted
    `tfb.MaskedAutoregressiveFlow`s whose MADE networks are conditioned on `h`, the order of the
    latent coordinates reversed between layers.

  Training maximizes the single-sample ELBO `log p(x|z_K) + beta (log p(z_K) - log q(z_K|x))`
  with `model.fit` (`jit_compile=True` works); `beta` rises linearly from 0 to 1 over
  `kl_warmup_steps` (the paper's warm-up; 0 disables it). `negative_elbo` and
  `importance_sampled_nll` evaluate with `beta = 1`. Randomness is stateless: training step `t`
  uses `fold_in(seed, t)`.

  #### Examples

  ```python
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(256, "relu")])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(256, "relu"),
                                 tf_keras.layers.Dense(784)])
  vae = FlowVAE(encoder, decoder, latent_size=16, posterior="orthogonal", num_flows=4)
  vae.compile(tf_keras.optimizers.Adam(1e-3), jit_compile=True)
  vae.fit(x_train, epochs=10, batch_size=100)
  nll = vae.importance_sampled_nll(x_test, num_samples=500, seed=1)
  ```

  #### References

  [1]: Danilo Jimenez Rezende and Shakir Mohamed. Variational Inference with Normalizing Flows.
       In _International Conference on Machine Learning_, 2015. https://arxiv.org/abs/1505.05770

  [2]: Rianne van den Berg, Leonard Hasenclever, Jakub M. Tomczak and Max Welling. Sylvester
       Normalizing Flows for Variational Inference. In _Uncertainty in Artificial
       Intelligence_, 2018. https://arxiv.org/abs/1803.05649

  [3]: Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya Sutskever and Max
       Welling. Improving Variational Inference with Inverse Autoregressive Flow. In _Neural
       Information Processing Systems_, 2016. https://arxiv.org/abs/1606.04934
  """

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               decoder: tf_keras.layers.Layer,
               latent_size: int,
               posterior: str = "gaussian",
               num_flows: int = 4,
               num_columns: Optional[int] = None,
               num_householder: int = 1,
               iaf_hidden_units: Sequence[int] = (64,),
               iaf_context_size: int = 16,
               kl_warmup_steps: int = 0,
               seed: int = 0,
               **kwargs):
    """Builds the model.

    Args:
      encoder: layer mapping inputs `[B, ...]` to features `[B, F]`.
      decoder: layer mapping latents `[..., B, latent_size]` to Bernoulli logits of `x`
        (`[..., B] + x.shape[1:]`).
      latent_size: `D`.
      posterior: one of `POSTERIORS`.
      num_flows: `K`, layers of the flow (ignored for `"gaussian"`).
      num_columns: `M` for `"orthogonal"` (default `D`).
      num_householder: reflections per layer for `"householder"`.
      iaf_hidden_units: hidden layer sizes of each IAF MADE network.
      iaf_context_size: size of the context vector (a dense projection of the encoder features)
        the IAF networks are conditioned on.
      kl_warmup_steps: training steps over which `beta` goes from 0 to 1.
      seed: Python int, the base of every stateless seed the model draws.
      **kwargs: passed to `tf_keras.Model`.

    Raises:
      ValueError: for an unknown `posterior` or non-positive sizes.
    """
    super().__init__(**kwargs)
    if posterior not in POSTERIORS:
      raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}.")
    latent_size = check_int("latent_size", latent_size)
    num_flows = check_int("num_flows", num_flows)
    self.encoder = encoder
    self.decoder = decoder
    self.latent_size = latent_size
    self.posterior = posterior
    self.num_flows = num_flows
    self.num_columns = num_columns
    self.num_householder = num_householder
    self.iaf_hidden_units = tuple(iaf_hidden_units)
    self.iaf_context_size = int(iaf_context_size)
    self.kl_warmup_steps = int(kl_warmup_steps)
    self.seed = int(seed)
    self.loc_head = tf_keras.layers.Dense(latent_size, name="loc")
    self.scale_head = tf_keras.layers.Dense(latent_size, name="scale")
    self.flow = None
    self.made = []
    self.context_head = None
    if posterior in ("planar", "orthogonal", "householder", "triangular"):
      self.flow = AmortizedSylvesterFlow(posterior, latent_size, num_flows,
                                         num_columns=num_columns,
                                         num_householder=num_householder, name="flow")
    elif posterior == "iaf":
      # Small initial weights start the IAF near the identity; one seeded initializer per layer
      # (a shared unseeded instance would give every layer the same initial weights).
      self.made = [tfb.AutoregressiveNetwork(
          params=2, event_shape=[latent_size], hidden_units=list(self.iaf_hidden_units),
          conditional=True, conditional_event_shape=[self.iaf_context_size], activation="elu",
          kernel_initializer=tf_keras.initializers.VarianceScaling(
              0.01, mode="fan_avg", distribution="uniform", seed=self.seed * 1000 + k),
          name=f"made_{k}") for k in range(num_flows)]
      self.context_head = tf_keras.layers.Dense(self.iaf_context_size, activation="elu",
                                                name="context")
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.elbo_tracker = tf_keras.metrics.Mean(name="elbo")

  # -- the model ------------------------------------------------------------------------------

  def _check_inputs(self, x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
      x = tf.cast(x, self.compute_dtype)
    if x.shape.rank is not None and x.shape.rank < 2:
      raise ValueError(f"Inputs must be a batch [B, ...]; got shape {x.shape}.")
    return x

  def _iaf(self, h, z):
    """K inverse autoregressive layers: z_k = (z - shift(z)) exp(-log_scale(z)), parallel in z."""
    log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
    h = self.context_head(h)
    h = tf.broadcast_to(h, tf.concat([tf.shape(z)[:-1], tf.shape(h)[-1:]], 0))
    for k, made in enumerate(self.made):
      if k > 0:
        z = tf.reverse(z, axis=[-1])  # alternate the autoregressive order
      iaf = tfb.Invert(tfb.MaskedAutoregressiveFlow(made))
      kwargs = dict(conditional_input=h)
      log_det += iaf.forward_log_det_jacobian(z, event_ndims=1, **kwargs)
      z = iaf.forward(z, **kwargs)
    return z, log_det

  def log_weights(self, x, num_samples: int = 1, seed=None, training=None):
    """`log p(x, z) - log q(z|x)` for `num_samples` posterior draws per example: `[S, B]`.

    Also returns the log-likelihood and the log prior-minus-posterior terms separately,
    `(log_weights, log_lik, log_ratio)`, all `[S, B]`.
    """
    x = self._check_inputs(x)
    seed = _as_seed((self.seed, 0) if seed is None else seed)
    h = self.encoder(x, training=training)
    loc = self.loc_head(h)
    scale = tf.math.softplus(self.scale_head(h)) + _MIN_SCALE
    eps = tf.random.stateless_normal(tf.concat([[num_samples], tf.shape(loc)], 0), seed=seed,
                                     dtype=loc.dtype, alg=seeds.RNG_ALG)
    z = loc + scale * eps
    log_q = tfd.MultivariateNormalDiag(loc, scale).log_prob(z)
    if self.flow is not None:
      z, log_det = self.flow((h, z))
      log_q -= log_det
    elif self.made:
      z, log_det = self._iaf(h, z)
      log_q -= log_det
    logits = self.decoder(z, training=training)
    event_ndims = x.shape.rank - 1
    log_lik = tfd.Independent(tfd.Bernoulli(logits=logits),
                              reinterpreted_batch_ndims=event_ndims).log_prob(x)
    log_prior = tfd.MultivariateNormalDiag(tf.zeros_like(loc)).log_prob(z)
    log_ratio = log_prior - log_q
    return log_lik + log_ratio, log_lik, log_ratio

  def negative_elbo(self, x, num_samples: int = 1, seed=None) -> tf.Tensor:
    """Per-example `-ELBO` estimated with `num_samples` posterior draws, `[B]`."""
    lw, _, _ = self.log_weights(x, num_samples, seed)
    return -tf.reduce_mean(lw, axis=0)

  def importance_sampled_nll(self, x, num_samples: int = 500, seed=None,
                             batch_size: Optional[int] = None) -> tf.Tensor:
    """Per-example `-log p(x)` by importance sampling with the flow posterior, `[B]`.

    `-(logsumexp_s log w_s - log S)`: an upper bound on `-log p(x)` in expectation that tightens
    as `S = num_samples` grows. `batch_size` splits `x` to bound memory (`[S, B, ...]` decoder
    outputs).
    """
    x = self._check_inputs(x)
    seed = _as_seed((self.seed, 1) if seed is None else seed)
    n = int(x.shape[0]) if x.shape[0] is not None else None
    if batch_size is None or n is None or n <= batch_size:
      return self._nll(x, num_samples, seed)
    parts = [self._nll(x[i:i + batch_size], num_samples, seeds.fold_in(seed, i))
             for i in range(0, n, batch_size)]
    return tf.concat(parts, 0)

  def _nll(self, x, num_samples, seed):
    lw, _, _ = self.log_weights(x, num_samples, seed)
    return -(tf.reduce_logsumexp(lw, axis=0) - math.log(num_samples))

  # -- Keras plumbing ---------------------------------------------------------------------------

  def call(self, inputs, training=None):
    """Per-example single-sample ELBO estimates `[B]` (seeded by the model's base seed)."""
    return tf.reduce_mean(self.log_weights(inputs, 1, training=training)[0], axis=0)

  @property
  def metrics(self):
    return [self.loss_tracker, self.elbo_tracker]

  def _step_seed(self, stream):
    step = self.optimizer.iterations if self.optimizer is not None else 0
    return seeds.fold_in(seeds.sanitize((self.seed, stream)), step)

  def _beta(self):
    if self.kl_warmup_steps <= 0 or self.optimizer is None:
      return tf.constant(1.)
    step = tf.cast(self.optimizer.iterations, tf.float32)
    return tf.minimum(1., step / float(self.kl_warmup_steps))

  def _loss(self, data, seed, training):
    x, _, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
    _, log_lik, log_ratio = self.log_weights(x, 1, seed, training=training)
    elbo_per = log_lik[0] + log_ratio[0]
    beta = tf.cast(self._beta() if training else 1., elbo_per.dtype)
    objective_per = log_lik[0] + beta * log_ratio[0]
    if sample_weight is None:
      w = tf.ones_like(elbo_per)
    else:
      w = tf.cast(tf.reshape(sample_weight, [-1]), elbo_per.dtype)
    elbo = tf.reduce_sum(w * elbo_per) / tf.reduce_sum(w)
    loss = -tf.reduce_sum(w * objective_per) / tf.reduce_sum(w)
    if self.losses:
      loss += tf.add_n(self.losses)
    return loss, elbo

  def train_step(self, data):
    record_input_spec(self, tf_keras.utils.unpack_x_y_sample_weight(data)[0])
    with tf.GradientTape() as tape:
      loss, elbo = self._loss(data, self._step_seed(2), training=True)
    self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
    self.loss_tracker.update_state(loss)
    self.elbo_tracker.update_state(elbo)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    loss, elbo = self._loss(data, self._step_seed(3), training=False)
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
        "posterior": self.posterior,
        "num_flows": self.num_flows,
        "num_columns": self.num_columns,
        "num_householder": self.num_householder,
        "iaf_hidden_units": list(self.iaf_hidden_units),
        "iaf_context_size": self.iaf_context_size,
        "kl_warmup_steps": self.kl_warmup_steps,
        "seed": self.seed,
        "name": self.name,
    }

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    for key in ("encoder", "decoder"):
      config[key] = tf_keras.layers.deserialize(config[key], custom_objects=custom_objects)
    return cls(**config)
