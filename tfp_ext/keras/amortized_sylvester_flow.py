"""A K-layer planar / Sylvester flow whose parameters are computed from encoder features."""

from typing import List, Tuple

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_ext.bijectors.householder_sylvester import HouseholderSylvester
from tfp_ext.bijectors.orthogonal_sylvester import OrthogonalSylvester
from tfp_ext.bijectors.planar import Planar
from tfp_ext.bijectors.triangular_sylvester import TriangularSylvester
from tfp_ext.internal.validation import check_int

__all__ = ["AmortizedSylvesterFlow"]

tfb = tfp.bijectors

FLOW_TYPES = ("planar", "orthogonal", "householder", "triangular")


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class AmortizedSylvesterFlow(tf_keras.layers.Layer):
  """`K` flow layers with parameters predicted per data point from encoder features.

  As in the amortized posteriors of [van den Berg et al. (2018)][1]: one dense layer maps the
  encoder features `h` `[B, F]` to the raw parameters of all `K` layers of one flow type, and the
  layer applies the flow to base samples `z0` `[..., B, D]`:

  * `"planar"`: `Planar(u, w, b)`, `2D + 1` numbers per layer;
  * `"orthogonal"`: `OrthogonalSylvester(q, r1, r2, b)` with `M = num_columns`,
    `DM + 2M^2 + M` per layer;
  * `"householder"`: `HouseholderSylvester` with `H = num_householder` reflections,
    `HD + 2D^2 + D` per layer;
  * `"triangular"`: `TriangularSylvester`, `flip=True` on every other layer, `2D^2 + D` per layer.

  Any value the dense layer outputs gives an invertible flow (the bijectors constrain their
  parameters), so no output activation is needed. For `"orthogonal"`, `q` is the dense output
  plus the first `M` columns of the identity, so that a zero output gives `Q = I[:, :M]` rather
  than a rank-deficient `q` (whose orthogonalization has no gradient). The initial weights are scaled by
  `init_scale` so that the flow starts close to the identity.

  `call((h, z0))` returns `(z_K, log_det)` with `log_det = sum_k log|det dz_k/dz_{k-1}|`
  `[..., B]`; `bijector(h)` returns the whole flow as a `tfb.Chain` (e.g. for
  `TransformedDistribution.log_prob` at fresh points, which uses the exact inverses).

  #### Examples

  ```python
  flow = tfp_ext.keras.AmortizedSylvesterFlow("orthogonal", event_size=8, num_layers=4,
                                              num_columns=4)
  h = encoder(x)                                            # [B, F]
  z0 = mu + sigma * tf.random.stateless_normal(tf.shape(mu), seed)
  z_k, log_det = flow((h, z0))
  log_q = base_log_prob(z0) - log_det
  ```

  #### References

  [1]: Rianne van den Berg, Leonard Hasenclever, Jakub M. Tomczak and Max Welling. Sylvester
       Normalizing Flows for Variational Inference. In _Uncertainty in Artificial
       Intelligence_, 2018. https://arxiv.org/abs/1803.05649
  """

  def __init__(self,
               flow_type: str,
               event_size: int,
               num_layers: int,
               num_columns: int = None,
               num_householder: int = 1,
               init_scale: float = 0.1,
               **kwargs):
    """Creates the layer.

    Args:
      flow_type: one of `"planar"`, `"orthogonal"`, `"householder"`, `"triangular"`.
      event_size: `D`, the size of the latent vectors.
      num_layers: `K >= 1`, the number of flow layers.
      num_columns: `M <= D` for `"orthogonal"` (default `D`); ignored otherwise.
      num_householder: `H >= 1` reflections per layer for `"householder"`.
      init_scale: scale of the dense layer's initial weights (glorot-uniform times this).
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: for an unknown `flow_type` or non-positive / inconsistent sizes.
    """
    super().__init__(**kwargs)
    if flow_type not in FLOW_TYPES:
      raise ValueError(f"flow_type must be one of {FLOW_TYPES}, got {flow_type!r}.")
    event_size = check_int("event_size", event_size)
    num_layers = check_int("num_layers", num_layers)
    num_householder = check_int("num_householder", num_householder)
    num_columns = event_size if num_columns is None else num_columns
    if flow_type == "orthogonal" and not 1 <= num_columns <= event_size:
      raise ValueError(f"`num_columns` must be in [1, event_size={event_size}], got "
                       f"{num_columns}.")
    self.flow_type = flow_type
    self.event_size = event_size
    self.num_layers = num_layers
    self.num_columns = num_columns
    self.num_householder = num_householder
    self.init_scale = init_scale
    self._shapes = self._parameter_shapes()
    self.params_per_layer = sum(_prod(s) for s in self._shapes.values())
    self.dense = tf_keras.layers.Dense(
        num_layers * self.params_per_layer,
        kernel_initializer=tf_keras.initializers.VarianceScaling(
            scale=init_scale ** 2, mode="fan_avg", distribution="uniform"),
        dtype=self.dtype_policy,
        name="flow_parameters")

  def _parameter_shapes(self):
    d, m, h = self.event_size, self.num_columns, self.num_householder
    if self.flow_type == "planar":
      return dict(u=[d], w=[d], b=[])
    if self.flow_type == "orthogonal":
      return dict(q=[d, m], r1=[m, m], r2=[m, m], b=[m])
    if self.flow_type == "householder":
      return dict(householder_vectors=[h, d], r1=[d, d], r2=[d, d], b=[d])
    return dict(r1=[d, d], r2=[d, d], b=[d])

  def build(self, input_shape):
    h_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
        input_shape[0], (list, tuple, tf.TensorShape)) else input_shape
    self.dense.build(h_shape)
    super().build(input_shape)

  def bijectors(self, h: tf.Tensor) -> List[tfb.Bijector]:
    """The `K` bijectors for features `h` `[B, F]`, in the order they are applied."""
    h = tf.convert_to_tensor(h)
    if h.shape.rank is not None and h.shape.rank < 1:
      raise ValueError(f"encoder features must have rank >= 1, got shape {h.shape}.")
    raw = self.dense(h)
    # Static shapes where known (-1 for one unknown batch size): XLA cannot differentiate
    # through reshapes to shapes computed at run time.
    batch = [-1 if n is None else n for n in raw.shape[:-1]]
    if raw.shape.rank is None or batch.count(-1) > 1:
      batch = tf.shape(raw)[:-1]
    raw = tf.reshape(raw, tf.concat([batch, [self.num_layers, self.params_per_layer]], 0)
                     if tf.is_tensor(batch) else batch + [self.num_layers, self.params_per_layer])
    layers = []
    for k in range(self.num_layers):
      offset, params = 0, {}
      for name, shape in self._shapes.items():
        size = _prod(shape)
        piece = raw[..., k, offset:offset + size]
        params[name] = tf.reshape(piece, tf.concat([batch, shape], 0)
                                  if tf.is_tensor(batch) else batch + list(shape))
        offset += size
      if self.flow_type == "orthogonal":
        # q = I[:, :M] + output: a zero output (dead ReLU features, zero bias at init) would be
        # rank-deficient, where the QR factor has no gradient; the offset makes it the identity.
        params["q"] += tf.eye(self.event_size, self.num_columns, dtype=params["q"].dtype)
      layers.append(self._make(params, k))
    return layers

  def _make(self, params, k):
    if self.flow_type == "planar":
      return Planar(**params, name=f"planar_{k}")
    if self.flow_type == "orthogonal":
      return OrthogonalSylvester(**params, name=f"orthogonal_sylvester_{k}")
    if self.flow_type == "householder":
      return HouseholderSylvester(**params, name=f"householder_sylvester_{k}")
    return TriangularSylvester(**params, flip=k % 2 == 1, name=f"triangular_sylvester_{k}")

  def bijector(self, h: tf.Tensor) -> tfb.Bijector:
    """The whole flow for features `h` as one bijector (`tfb.Chain` applies the last first)."""
    return tfb.Chain(list(reversed(self.bijectors(h))))

  def call(self, inputs: Tuple[tf.Tensor, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
    """Applies the flow: `(h [B, F], z0 [..., B, D]) -> (z_K [..., B, D], log_det [..., B])`."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
      raise ValueError("AmortizedSylvesterFlow expects inputs (h, z0): encoder features and "
                       "base samples.")
    h, z = inputs
    z = tf.convert_to_tensor(z)
    if z.shape[-1] is not None and z.shape[-1] != self.event_size:
      raise ValueError(f"z0 must have last dimension event_size={self.event_size}, got shape "
                       f"{z.shape}.")
    log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
    for bij in self.bijectors(tf.cast(h, z.dtype)):
      log_det += bij.forward_log_det_jacobian(z, event_ndims=1)
      z = bij.forward(z)
    return z, log_det

  def get_config(self):
    config = super().get_config()
    config.update(flow_type=self.flow_type, event_size=self.event_size,
                  num_layers=self.num_layers, num_columns=self.num_columns,
                  num_householder=self.num_householder, init_scale=self.init_scale)
    return config


def _prod(shape):
  out = 1
  for s in shape:
    out *= s
  return out
