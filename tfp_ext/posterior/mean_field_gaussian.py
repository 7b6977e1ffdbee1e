"""A fully factorized Gaussian over a model's weights, as produced by Vadam, Vprop, VOGN and IVON."""

from typing import Sequence

import tensorflow as tf

from tfp_ext.internal import seeds
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["MeanFieldGaussian"]


class MeanFieldGaussian(WeightPosterior):
  """q(θ) = Π_i N(θ_i | loc_i, scale_i²), one part per trainable variable.

  #### Examples

  ```python
  q = opt.posterior()                 # from a tfp_ext optimizer after model.fit
  w = q.sample(8, seed=(1, 2))        # list of [8, *var.shape] tensors
  q.loc[0], q.scale[0]                # aligned with model.trainable_variables[0]
  ```
  """

  def __init__(self, loc: Sequence, scale: Sequence, name: str = "MeanFieldGaussian"):
    """Builds the posterior from aligned lists of means and standard deviations.

    Raises:
      ValueError: lists of different lengths, mismatched shapes or dtypes, a non-finite mean, or a
        scale that is not positive and finite.
    """
    super().__init__(name=name)
    loc = [tf.convert_to_tensor(l) for l in loc]
    scale = [tf.convert_to_tensor(s, dtype_hint=l.dtype) for s, l in zip(scale, loc)] if len(
        scale) == len(loc) else scale
    if len(loc) != len(scale):
      raise ValueError(f"loc has {len(loc)} parts but scale has {len(scale)}.")
    if not loc:
      raise ValueError("A MeanFieldGaussian needs at least one weight part.")
    for i, (l, s) in enumerate(zip(loc, scale)):
      if l.dtype != s.dtype or not l.dtype.is_floating:
        raise ValueError(f"Part {i}: loc and scale must share a floating dtype, got "
                         f"{l.dtype.name} and {s.dtype.name}.")
      if l.shape != s.shape:
        raise ValueError(f"Part {i}: loc shape {l.shape.as_list()} != scale shape "
                         f"{s.shape.as_list()}.")
      if tf.executing_eagerly():
        if not bool(tf.reduce_all(tf.math.is_finite(l))):
          raise ValueError(f"Part {i}: loc has non-finite values.")
        if not bool(tf.reduce_all((s > 0) & tf.math.is_finite(s))):
          raise ValueError(f"Part {i}: scale must be positive and finite.")
    with self.name_scope:
      self._loc = [tf.Variable(l, trainable=False, name=f"loc_{i}") for i, l in enumerate(loc)]
      self._scale = [tf.Variable(s, trainable=False, name=f"scale_{i}") for i, s in enumerate(scale)]

  @property
  def loc(self) -> list:
    """The means, one tensor per trainable variable."""
    return [tf.convert_to_tensor(v) for v in self._loc]

  @property
  def scale(self) -> list:
    """The standard deviations, one tensor per trainable variable."""
    return [tf.convert_to_tensor(v) for v in self._scale]

  @property
  def variable_specs(self):
    return [tf.TensorSpec(v.shape, v.dtype) for v in self._loc]

  def sample(self, n: int, seed=None) -> list:
    """Draws `n` samples per part, `[n, *shape]`, from a stateless seed (one stream per part)."""
    seed = seeds.sanitize(seed, salt="MeanFieldGaussian")
    out = []
    for i, (l, s) in enumerate(zip(self._loc, self._scale)):
      eps = seeds.normal(tf.concat([[n], tf.shape(l)], 0), seeds.fold_in(seed, i), l.dtype)
      out.append(l + s * eps)
    return out
