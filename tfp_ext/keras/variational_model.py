"""A Keras model wrapper whose train step feeds curvature to natural-gradient VI optimizers."""

from typing import Optional

import tensorflow as tf
import tf_keras

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


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class VariationalModel(tf_keras.Model):
  r"""Wraps a `tf_keras` model so `fit` computes the curvature a VI optimizer asks for.

  A Keras optimizer only receives the minibatch gradient ĝ = (1/M) Σᵢ gᵢ. Natural-gradient VI
  with a Gauss-Newton curvature (VOGN) needs, per step, the **mean of per-example squared
  gradients** (1/M) Σᵢ gᵢ², or the diagonal of the generalized Gauss-Newton matrix
  (1/M) Σᵢ diag(Jᵢᵀ Hᵢ Jᵢ) (Jᵢ the Jacobian of example i's output f(xᵢ; θ) and Hᵢ the Hessian of
  its loss with respect to that output), neither of which can be recovered from ĝ.

  This model's `train_step` computes them, vectorized over the batch (one
  `GradientTape.jacobian` with `pfor`, no Python loop over examples; everything XLA-compiles),
  and hands them over through a small protocol that any optimizer can implement:

  * `optimizer.curvature` — `None` (the optimizer needs the batch gradient only, e.g. Vadam,
    Vprop, IVON, Adam), `"per_example_squared_gradients"` or `"ggn"`;
  * when `curvature` is not `None`, the gradient handed to `optimizer.apply_gradients` for a
    variable of shape `S` is the stack `[ĝ, ĥ]` of shape `[2, *S]` (mean gradient, mean
    curvature), which the optimizer unpacks (`VariationalOptimizer._unpack_gradient`).

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
  so no loss needs special-casing.

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

  def posterior(self, var_list=None):
    """The optimizer's weight posterior, aligned with the wrapped model's trainable variables."""
    if not hasattr(self.optimizer, "posterior"):
      raise TypeError(f"{type(self.optimizer).__name__} has no weight posterior; compile with a "
                      "tfp_ext.optimizers VI optimizer.")
    return self.optimizer.posterior(var_list if var_list is not None
                                    else self.model.trainable_variables)

  def gradients_and_curvature(self, x, y, sample_weight=None, curvature: Optional[str] = None):
    """The batch loss, predictions, mean gradient and mean curvature at the current weights.

    Args:
      x, y, sample_weight: a batch (`sample_weight` scales each example's loss).
      curvature: None, "per_example_squared_gradients" ((1/M) Σᵢ wᵢ gᵢ²) or "ggn"
        ((1/M) Σᵢ wᵢ diag(JᵢᵀHᵢJᵢ)).

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
    weights = None if sample_weight is None else tf.reshape(sample_weight, [-1])
    with tf.GradientTape() as tape:
      y_pred = self.model(x, training=True)
      y = _align_targets(y, y_pred)
      raw_losses = _reduce_to_examples(tf.convert_to_tensor(self._example_loss(y, y_pred)))
      losses = raw_losses if weights is None else raw_losses * tf.cast(weights, raw_losses.dtype)
      batch = tf.cast(tf.shape(losses)[0], losses.dtype)
      loss = tf.reduce_sum(losses) / batch
      if self.model.losses:
        loss += tf.add_n(self.model.losses)
    grads = tape.gradient(loss, variables)
    curvatures = None
    if curvature == PER_EXAMPLE_SQUARED_GRADIENTS:
      curvatures = self._squared_gradients(x, y, weights, variables)
    elif curvature == GGN:
      curvatures = self._ggn_diagonal(x, y, y_pred, weights, variables)
    if curvatures is not None:
      curvatures = [c / batch for c in curvatures]
    del tape
    grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
             for g, v in zip(grads, variables)]
    return loss, y_pred, grads, curvatures

  def train_step(self, data):
    x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
      raise ValueError("VariationalModel.fit needs targets `y` for its negative log-likelihood.")
    variables = self.model.trainable_variables
    curvature = getattr(self.optimizer, "curvature", None)
    loss, y_pred, grads, curvatures = self.gradients_and_curvature(x, y, sample_weight, curvature)
    # The optimizer sums gradients across replicas, so each replica contributes 1/replicas.
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if num_replicas > 1:
      grads = [g / num_replicas for g in grads]
      if curvatures is not None:
        curvatures = [c / num_replicas for c in curvatures]
    if curvatures is None:
      self.optimizer.apply_gradients(zip(grads, variables))
    else:
      packed = [tf.stack([g, c]) for g, c in zip(grads, curvatures)]
      self.optimizer.apply_gradients(zip(packed, variables))
    self.compiled_metrics.update_state(_align_targets(y, y_pred), y_pred, sample_weight)
    results = {m.name: m.result() for m in self.metrics}
    results["loss"] = loss
    return results

  def _per_example_map(self, fn, x, elems, variables):
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

  def _squared_gradients(self, x, y, weights, variables):
    """Σᵢ wᵢ gᵢ², one tensor per variable."""
    y = tf.convert_to_tensor(y)
    if weights is None:
      weights = tf.ones(tf.shape(y)[:1])

    def fn(xi, e):
      yi, wi = e
      with tf.GradientTape() as tape:
        pred = self.model(xi, training=True)
        li = tf.reduce_sum(_reduce_to_examples(tf.convert_to_tensor(
            self._example_loss(_align_targets(yi[tf.newaxis], pred), pred))))
      grads = tape.gradient(li, variables)
      return [tf.cast(wi, v.dtype) * tf.square(g) if g is not None else tf.zeros_like(v)
              for g, v in zip(grads, variables)]

    return self._per_example_map(fn, x, (y, weights), variables)

  def _ggn_diagonal(self, x, y, y_pred, weights, variables):
    """Σᵢ wᵢ diag(Jᵢᵀ Hᵢ Jᵢ) over the batch, one tensor per variable."""
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
    if weights is not None:
      hess *= tf.cast(tf.reshape(weights, [-1, 1, 1]), hess.dtype)
    # Hᵢ = Uᵢ Uᵢᵀ with Uᵢ = Vᵢ √max(Λᵢ, 0); then diag(JᵀHJ) = Σ_c (Jᵀ u_c)², and Jᵀ u_c is the
    # gradient of the scalar u_c · f (u_c held constant): one backward pass per output.
    evals, evecs = tf.linalg.eigh(0.5 * (hess + tf.linalg.matrix_transpose(hess)))
    factors = tf.stop_gradient(evecs * tf.sqrt(tf.maximum(evals, 0.))[:, tf.newaxis, :])

    def fn(xi, u):  # u: [K, K], column c is u_c.
      with tf.GradientTape(persistent=True) as tape:
        out = tf.reshape(self.model(xi, training=True), [num_outputs])
        projections = [tf.reduce_sum(out * u[:, c]) for c in range(num_outputs)]
      sums = [tf.zeros_like(v) for v in variables]
      for p in projections:
        grads = tape.gradient(p, variables)
        sums = [s + tf.square(g) if g is not None else s for s, g in zip(sums, grads)]
      return sums

    return self._per_example_map(fn, x, factors, variables)
