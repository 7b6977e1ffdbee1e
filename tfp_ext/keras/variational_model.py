"""A Keras model wrapper whose train step feeds curvature to natural-gradient VI optimizers."""

import contextlib
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

from tfp_ext.internal.keras_saving import check_model_saved_model_save
from tfp_ext.internal.keras_saving import record_input_spec
from tfp_ext.posterior import functional

__all__ = ["VariationalModel", "PER_EXAMPLE_SQUARED_GRADIENTS", "GGN"]

PER_EXAMPLE_SQUARED_GRADIENTS = "per_example_squared_gradients"
GGN = "ggn"
_CURVATURES = (PER_EXAMPLE_SQUARED_GRADIENTS, GGN)


def _per_example_loss_fn(loss):
  """A callable `(y_true, y_pred) -> [B]` (unreduced) from whatever `compile(loss=...)` accepts."""
  if loss is None:
    raise ValueError("VariationalModel.compile needs a `loss` (a per-example negative "
                     "log-likelihood such as 'mse' or SparseCategoricalCrossentropy).")
  if isinstance(loss, (list, tuple, dict)):
    raise ValueError("VariationalModel supports a single loss for a single-output model, got "
                     f"{type(loss).__name__}.")
  if isinstance(loss, str):
    loss = tf_keras.losses.get(loss)
  if isinstance(loss, tf_keras.losses.Loss):
    return loss.call  # The unreduced per-example values; reduction happens here.
  if callable(loss):
    return loss
  raise TypeError(f"`loss` must be a string, a tf_keras Loss or a callable, got {loss!r}.")


def _align_targets(y, y_pred):
  """[B] targets against [B, 1] predictions become [B, 1] (as Keras' own loss container does)."""
  y = tf.convert_to_tensor(y)
  if (y.shape.rank is not None and y_pred.shape.rank is not None and
      y.shape.rank == y_pred.shape.rank - 1 and y_pred.shape[-1] == 1):
    y = tf.expand_dims(y, -1)
  return y


def _reduce_to_examples(losses):
  """Averages any per-example loss over its non-batch axes, giving shape [B]."""
  if losses.shape.rank is None or losses.shape.rank == 0:
    raise ValueError("The loss must return one value per example (shape [B, ...]), got a "
                     f"tensor of shape {losses.shape}.")
  if losses.shape.rank > 1:
    losses = tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))
  return losses


class _DenseTaps:
  """Records the input and pre-activation of every plain `Dense` layer during one forward pass.

  For y = a(x W + b) on a batch of rows xᵢ, example i's gradient of W is xᵢ ⊗ δᵢ with
  δᵢ = ∂ℓᵢ/∂zᵢ at the pre-activation zᵢ = xᵢ W + b, so Σᵢ wᵢ gᵢ² = (x²)ᵀ(w·δ²): one matmul from
  quantities the batch backward pass already produces (Goodfellow, 2015). A layer qualifies when it
  is exactly `tf_keras.layers.Dense` with trainable weights, no activity regularizer and no mixed
  precision, and it is called once per forward pass on a rank-2 dense tensor; every other layer's
  variables take the general per-example path.
  """

  def __init__(self, model: tf_keras.Model, variables: Sequence[tf.Variable]):
    trainable = {id(v) for v in variables}
    self.layers = []
    for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
      if type(layer) is not tf_keras.layers.Dense or not layer.built:  # pylint: disable=unidiomatic-typecheck
        continue
      if layer.activity_regularizer is not None or id(layer.kernel) not in trainable:
        continue
      if layer.use_bias and id(layer.bias) not in trainable:
        continue
      if layer.compute_dtype != layer.kernel.dtype.name:
        continue
      self.layers.append(layer)
    self.records = {}

  def _tapped_call(self, layer):
    def call(inputs, *args, **kwargs):
      if args or kwargs or not isinstance(inputs, tf.Tensor) or inputs.shape.rank != 2:
        self.records.setdefault(id(layer), []).append(None)  # Untapped: general path.
        return type(layer).call(layer, inputs, *args, **kwargs)
      x = tf.cast(inputs, layer.compute_dtype)
      z = tf.matmul(x, layer.kernel)  # `kernel` may be a weight sample (functional_call).
      if layer.use_bias:
        z = tf.nn.bias_add(z, layer.bias)
      self.records.setdefault(id(layer), []).append((x, z))
      return z if layer.activation is None else layer.activation(z)
    return call

  @contextlib.contextmanager
  def installed(self):
    """Routes the qualifying layers' calls through the recorder for the duration of the block."""
    self.records = {}
    with functional._TRACE_LOCK:  # pylint: disable=protected-access
      for layer in self.layers:
        # object.__setattr__: a plain instance attribute, invisible to Keras' tracking.
        object.__setattr__(layer, "call", self._tapped_call(layer))
      try:
        yield self
      finally:
        for layer in self.layers:
          object.__delattr__(layer, "call")

  def tapped(self):
    """[(layer, x, z)] for the layers recorded exactly once in the last pass."""
    out = []
    for layer in self.layers:
      calls = self.records.get(id(layer), [])
      if len(calls) == 1 and calls[0] is not None:
        out.append((layer,) + calls[0])
    return out


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class VariationalModel(tf_keras.Model):
  r"""Wraps a `tf_keras` model so `fit` computes the curvature a VI optimizer asks for.

  A Keras optimizer only receives the minibatch gradient ĝ = (1/M) Σᵢ gᵢ. Natural-gradient VI
  with a Gauss-Newton curvature (VOGN) needs, per step, the **mean of per-example squared
  gradients** (1/M) Σᵢ gᵢ², or the diagonal of the generalized Gauss-Newton matrix
  (1/M) Σᵢ diag(Jᵢᵀ Hᵢ Jᵢ) (Jᵢ the Jacobian of example i's output f(xᵢ; θ) and Hᵢ the Hessian of
  its loss with respect to that output), neither of which can be recovered from ĝ.

  This model's `train_step` computes them without a Python loop over examples, and everything
  XLA-compiles. For plain `Dense` layers on rank-2 inputs the per-example squared gradients come
  in closed form from the batch backward pass: example i's kernel gradient is xᵢ ⊗ δᵢ (δᵢ the
  loss gradient at the layer's pre-activation), so Σᵢ gᵢ² = (x²)ᵀ δ², one extra matmul per layer.
  Every other variable (convolutions, custom layers, a layer called twice) and the GGN take the
  general path: per-example backward passes vectorized with `tf.vectorized_map` (pfor). The
  results are handed over through a small protocol that any optimizer can implement:

  * `optimizer.curvature` — `None` (the optimizer needs the batch gradient only, e.g. Vadam,
    Vprop, IVON, Adam), `"per_example_squared_gradients"` or `"ggn"`;
  * when `curvature` is not `None`, the gradient handed to `optimizer.apply_gradients` for a
    variable of shape `S` is the stack `[ĝ, ĥ]` of shape `[2, *S]` (mean gradient, mean
    curvature), which the optimizer unpacks (`VariationalOptimizer._unpack_gradient`).

  * `optimizer.num_mc_samples` (default 1): weight samples per step. With S > 1 the train step
    also evaluates the samples `optimizer.mc_sample(variables, j)`, j = 1..S−1 (sample 0 is the
    one in the variables), through `tfp_ext.posterior.functional_call` (no assignment), and
    passes the per-sample results stacked on a leading axis of size S, which the optimizer
    combines (VOGN averages them; IVON also needs each sample's offset from the mean).

  Packing keeps the curvature on Keras's own gradient path: under a `tf.distribute` strategy
  each replica's gradient and curvature are pre-divided by the number of replicas, so the
  optimizer's sum all-reduce yields the global-batch means, and gradient clipping options are
  the optimizer's business.

  The loss given to `compile` must be a per-example negative log-likelihood (`"mse"`,
  `SparseCategoricalCrossentropy(from_logits=True)`, any `(y_true, y_pred) -> [B]` callable);
  the train step averages it over the batch (weighted by `sample_weight` if given). The prior
  is the optimizer's (its prior precision), so the wrapped model should not carry weight
  regularizers; any `model.losses` are still added to the batch gradient. `"ggn"` is the exact
  generalized Gauss-Newton when the loss is convex in the model's output (squared error, and
  cross-entropy on logits); the loss Hessian with respect to the output is obtained by autodiff,
  so no loss needs special-casing. Per-example quantities assume examples do not interact
  inside the model (no `BatchNormalization` in training mode).

  #### Examples

  ```python
  vm = tfp_ext.keras.VariationalModel(model)
  vm.compile(optimizer=tfp_ext.optimizers.VOGN(learning_rate=1e-3, prior_precision=1.0,
                                               num_examples=N, seed=0),
             loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
             jit_compile=True)
  vm.fit(x, y, batch_size=32, epochs=10)
  q = vm.posterior()   # MeanFieldGaussian aligned with model.trainable_variables
  ```

  #### References

  [1]: Mohammad Emtiyaz Khan, Didrik Nielsen, Voot Tangkaratt, Wu Lin, Yarin Gal, Akash
       Srivastava. Fast and Scalable Bayesian Deep Learning by Weight-Perturbation in Adam.
       ICML 2018.
  [2]: Kazuki Osawa, Siddharth Swaroop, Anirudh Jain, Runa Eschenhagen, Richard E. Turner, Rio
       Yokota, Mohammad Emtiyaz Khan. Practical Deep Learning with Bayesian Principles.
       NeurIPS 2019.
  """

  def __init__(self, model: tf_keras.Model, name: str = "variational_model", **kwargs):
    """Wraps `model` (any built or unbuilt single-output tf_keras model).

    Raises:
      TypeError: `model` is not a tf_keras model.
    """
    if not isinstance(model, tf_keras.Model):
      raise TypeError(f"VariationalModel wraps a tf_keras.Model, got {type(model).__name__}. "
                      "(Build it with `import tf_keras`, not `tf.keras`, which is Keras 3.)")
    super().__init__(name=name, **kwargs)
    self.model = model
    self._example_loss = None

  def call(self, inputs, training=None):
    return self.model(inputs, training=training)

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    check_model_saved_model_save(self, save_type)
    return super()._trackable_children(save_type, **kwargs)

  def get_config(self):
    return {"model": tf_keras.utils.serialize_keras_object(self.model), "name": self.name}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    model = tf_keras.layers.deserialize(config.pop("model"), custom_objects=custom_objects)
    return cls(model, **config)

  def compile(self, optimizer="rmsprop", loss=None, **kwargs):  # pylint: disable=arguments-differ
    """As `tf_keras.Model.compile`; `loss` must be a per-example negative log-likelihood."""
    self._example_loss = _per_example_loss_fn(loss)
    super().compile(optimizer=optimizer, loss=loss, **kwargs)
    curvature = getattr(self.optimizer, "curvature", None)
    if curvature is not None:
      if curvature not in _CURVATURES:
        raise ValueError(f"optimizer.curvature must be None or one of {_CURVATURES}, got "
                         f"{curvature!r}.")

  def compile_from_config(self, config):
    """Compiles from `get_compile_config()` when a `.keras` file loads, and builds the optimizer.

    Keras skips this for models that override `compile` unless they define it; without it a
    loaded `VariationalModel` came back uncompiled and its optimizer state (the posterior) was
    not restored. The optimizer is built on the wrapped model's variables, as `fit` builds it, so
    the saved optimizer variables load into it in order.
    """
    self.compile(**tf_keras.saving.deserialize_keras_object(config))
    if isinstance(self.optimizer, tf_keras.optimizers.Optimizer) and self.model.built:
      self.optimizer.build(self.model.trainable_variables)

  def posterior(self, var_list=None):
    """The optimizer's weight posterior, aligned with the wrapped model's trainable variables."""
    if not hasattr(self.optimizer, "posterior"):
      raise TypeError(f"{type(self.optimizer).__name__} has no weight posterior; compile with a "
                      "tfp_ext.optimizers VI optimizer.")
    return self.optimizer.posterior(var_list if var_list is not None
                                    else self.model.trainable_variables)

  def gradients_and_curvature(self, x, y, sample_weight=None, curvature: Optional[str] = None,
                              weights: Optional[Sequence[tf.Tensor]] = None):
    """The batch loss, predictions, mean gradient and mean curvature at the current weights.

    Args:
      x, y, sample_weight: a batch (`sample_weight` scales each example's loss).
      curvature: None, "per_example_squared_gradients" ((1/M) Σᵢ wᵢ gᵢ²) or "ggn"
        ((1/M) Σᵢ wᵢ diag(JᵢᵀHᵢJᵢ)).
      weights: optional tensors aligned with the wrapped model's trainable variables to evaluate
        at instead of the variables' values (a weight sample; see
        `tfp_ext.posterior.functional_call`).

    Returns:
      `(loss, y_pred, grads, curvatures)`: the weighted mean loss (plus `model.losses`), the
      predictions, the gradient of the loss per trainable variable, and the curvature per
      trainable variable (`None` when `curvature` is None). All means are over this batch.
    """
    if curvature is not None and curvature not in _CURVATURES:
      raise ValueError(f"curvature must be None or one of {_CURVATURES}, got {curvature!r}.")
    if self._example_loss is None:
      raise ValueError("Compile the VariationalModel (with a per-example loss) first.")
    variables = self.model.trainable_variables
    if weights is not None:
      weights = [tf.convert_to_tensor(w, v.dtype) for w, v in zip(weights, variables)]
    sources = variables if weights is None else weights
    sample_weight = None if sample_weight is None else tf.reshape(sample_weight, [-1])
    taps = _DenseTaps(self.model, variables) if curvature == PER_EXAMPLE_SQUARED_GRADIENTS else None
    with tf.GradientTape(persistent=bool(self.model.losses)) as tape:
      if weights is not None:
        tape.watch(weights)
      with taps.installed() if taps is not None else contextlib.nullcontext():
        y_pred = self._forward(x, weights)
      y = _align_targets(y, y_pred)
      raw_losses = _reduce_to_examples(tf.convert_to_tensor(self._example_loss(y, y_pred)))
      losses = (raw_losses if sample_weight is None
                else raw_losses * tf.cast(sample_weight, raw_losses.dtype))
      batch = tf.cast(tf.shape(losses)[0], losses.dtype)
      data_loss = tf.reduce_sum(losses) / batch
      loss = data_loss + tf.add_n(self.model.losses) if self.model.losses else data_loss
    tapped = taps.tapped() if taps is not None else []
    # One backward pass gives the parameter gradients and, for free, ∂loss/∂z at every tapped
    # pre-activation (z is an intermediate of that same pass).
    all_grads = tape.gradient(loss, list(sources) + [z for _, _, z in tapped])
    grads = all_grads[:len(sources)]
    grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
             for g, v in zip(grads, variables)]
    curvatures = None
    if curvature == PER_EXAMPLE_SQUARED_GRADIENTS:
      if self.model.losses and tapped:  # model.losses may depend on z: use the data loss only.
        dz = tape.gradient(data_loss, [z for _, _, z in tapped])
      else:
        dz = all_grads[len(sources):]
      curvatures = self._squared_gradients(x, y, sample_weight, weights, tapped, dz, batch)
    elif curvature == GGN:
      curvatures = self._ggn_diagonal(x, y, y_pred, sample_weight, weights)
    if curvatures is not None:
      curvatures = [c / batch for c in curvatures]
    del tape
    return loss, y_pred, grads, curvatures

  def train_step(self, data):
    x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
      raise ValueError("VariationalModel.fit needs targets `y` for its negative log-likelihood.")
    record_input_spec(self, x)
    variables = self.model.trainable_variables
    curvature = getattr(self.optimizer, "curvature", None)
    num_samples = int(getattr(self.optimizer, "num_mc_samples", 1))
    if num_samples > 1:
      # The samples come from the optimizer's posterior, which must exist before the first
      # `apply_gradients` builds it (Keras builds lazily, lifted to the init scope as here).
      with tf.init_scope():
        self.optimizer.build(variables)
    packed, losses = [], []
    y_pred = None
    # A short unrolled loop over the weight samples (1 by default): each sample is a full
    # forward and backward pass; the examples within one stay vectorized.
    for sample in range(num_samples):
      weights = None if sample == 0 else self.optimizer.mc_sample(variables, sample)
      loss, pred, grads, curvatures = self.gradients_and_curvature(x, y, sample_weight,
                                                                   curvature, weights)
      if y_pred is None:
        y_pred = pred
      losses.append(loss)
      packed.append(grads if curvatures is None
                    else [tf.stack([g, c]) for g, c in zip(grads, curvatures)])
    if num_samples > 1:  # [samples, ...] per variable: the optimizer combines them.
      packed = [tf.stack(per_variable) for per_variable in zip(*packed)]
    else:
      packed = packed[0]
    # The optimizer sums gradients across replicas, so each replica contributes 1/replicas.
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if num_replicas > 1:
      packed = [p / num_replicas for p in packed]
    self.optimizer.apply_gradients(zip(packed, variables))
    self.compiled_metrics.update_state(_align_targets(y, y_pred), y_pred, sample_weight)
    results = {m.name: m.result() for m in self.metrics}
    results["loss"] = tf.add_n(losses) / len(losses)
    return results

  def _forward(self, x, weights):
    """The wrapped model on `x`, at its variables or at the given weight tensors."""
    if weights is None:
      return self.model(x, training=True)
    return functional.functional_call(self.model, weights, x, training=True)

  def _per_example_map(self, fn, x, elems):
    """Σᵢ fn(model at example i, elems[i]) over the batch, vectorized with `tf.vectorized_map`.

    Each example runs the model on a batch of one, so pfor turns the per-example backward passes
    into batched ones: O(B) work. (A Jacobian of the [B] loss vector would instead backpropagate
    every row through the whole batch, O(B²).)
    """
    def one(args):
      xi, ei = args
      xi = tf.nest.map_structure(lambda t: t[tf.newaxis], xi)
      return fn(xi, ei)

    per_example = tf.vectorized_map(one, (x, elems), fallback_to_while_loop=True, warn=False)
    return [tf.reduce_sum(c, axis=0) for c in per_example]

  def _squared_gradients(self, x, y, sample_weight, weights, tapped, dz, batch):
    """Σᵢ wᵢ gᵢ², one tensor per variable: tapped Dense layers in closed form, the rest by pfor."""
    variables = self.model.trainable_variables
    position = {id(v): k for k, v in enumerate(variables)}
    out = [None] * len(variables)
    for (layer, inputs, z), d in zip(tapped, dz):
      if d is None:  # The layer does not reach the loss.
        d = tf.zeros_like(z)
      # d = ∂loss/∂z = wᵢ δᵢ / M, so wᵢ δᵢ² = (M dᵢ)² / wᵢ (0 where wᵢ = 0).
      sq = tf.square(batch * d)
      if sample_weight is not None:
        sq = tf.math.divide_no_nan(sq, tf.cast(sample_weight, d.dtype)[:, tf.newaxis])
      out[position[id(layer.kernel)]] = tf.matmul(tf.square(inputs), sq, transpose_a=True)
      if layer.use_bias:
        out[position[id(layer.bias)]] = tf.reduce_sum(sq, axis=0)
    rest = [k for k, c in enumerate(out) if c is None]
    if rest:
      y = tf.convert_to_tensor(y)
      if sample_weight is None:
        sample_weight = tf.ones(tf.shape(y)[:1])
      all_sources = variables if weights is None else weights

      def fn(xi, e):
        yi, wi = e
        sources = [all_sources[k] for k in rest]
        with tf.GradientTape() as tape:
          if weights is not None:
            tape.watch(sources)
          pred = self._forward(xi, weights)
          li = tf.reduce_sum(_reduce_to_examples(tf.convert_to_tensor(
              self._example_loss(_align_targets(yi[tf.newaxis], pred), pred))))
        grads = tape.gradient(li, sources)
        return [tf.cast(wi, variables[k].dtype) * tf.square(g) if g is not None
                else tf.zeros_like(variables[k]) for g, k in zip(grads, rest)]

      for k, c in zip(rest, self._per_example_map(fn, x, (y, sample_weight))):
        out[k] = c
    return out

  def _ggn_diagonal(self, x, y, y_pred, sample_weight, weights):
    """Σᵢ wᵢ diag(Jᵢᵀ Hᵢ Jᵢ) over the batch, one tensor per variable."""
    variables = self.model.trainable_variables
    sources = variables if weights is None else weights
    num_outputs = y_pred.shape[1:].num_elements()
    if num_outputs is None:
      raise ValueError(f"hessian_approximation='ggn' needs a static output shape, got "
                       f"{y_pred.shape}.")
    f = tf.stop_gradient(y_pred)
    with tf.GradientTape() as outer:
      outer.watch(f)
      with tf.GradientTape() as inner:
        inner.watch(f)
        total = tf.reduce_sum(_reduce_to_examples(
            tf.convert_to_tensor(self._example_loss(y, f))))
      d = tf.reshape(inner.gradient(total, f), [-1, num_outputs])
    # Hᵢ: the Hessian of example i's loss in its own output ([B, K, K]); a loss is per example,
    # so the batch Jacobian of the summed gradient is exactly the per-example Hessians.
    hess = tf.reshape(outer.batch_jacobian(d, f), [-1, num_outputs, num_outputs])
    if sample_weight is not None:
      hess *= tf.cast(tf.reshape(sample_weight, [-1, 1, 1]), hess.dtype)
    # Hᵢ = Uᵢ Uᵢᵀ with Uᵢ = Vᵢ √max(Λᵢ, 0); then diag(JᵀHJ) = Σ_c (Jᵀ u_c)², and Jᵀ u_c is the
    # gradient of the scalar u_c · f (u_c held constant): one backward pass per output.
    evals, evecs = tf.linalg.eigh(0.5 * (hess + tf.linalg.matrix_transpose(hess)))
    factors = tf.stop_gradient(evecs * tf.sqrt(tf.maximum(evals, 0.))[:, tf.newaxis, :])

    def fn(xi, u):  # u: [K, K], column c is u_c.
      with tf.GradientTape(persistent=True) as tape:
        if weights is not None:
          tape.watch(sources)
        out = tf.reshape(self._forward(xi, weights), [num_outputs])
        projections = [tf.reduce_sum(out * u[:, c]) for c in range(num_outputs)]
      sums = [tf.zeros_like(v) for v in variables]
      for p in projections:
        grads = tape.gradient(p, sources)
        sums = [s + tf.square(g) if g is not None else s for s, g in zip(sums, grads)]
      return sums

    return self._per_example_map(fn, x, factors)
