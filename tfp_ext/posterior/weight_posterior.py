"""The interface every weight posterior implements, so predictive and export work for all of them."""

import abc
from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["WeightPosterior"]


class WeightPosterior(tf.Module, metaclass=abc.ABCMeta):
  """A distribution over a Keras model's trainable weights.

  Its parts are aligned with `model.trainable_variables`: part `i` has the shape and dtype of the
  model's `i`-th trainable variable. Subclasses store their parameters as non-trainable
  `tf.Variable`s so that the posterior is tracked by checkpoints and SavedModels.

  Subclasses implement `sample`; `predictive_weights` is what the predictive and the serving
  export call, and defaults to `sample`.
  """

  @property
  @abc.abstractmethod
  def variable_specs(self) -> Sequence[tf.TensorSpec]:
    """The shapes and dtypes of the weight parts, aligned with `model.trainable_variables`."""

  @abc.abstractmethod
  def sample(self, n: int, seed=None) -> list:
    """Draws `n` weight samples: a list of tensors shaped `[n, *spec.shape]`, one per part."""

  def predictive_weights(self, num_samples: Optional[int], seed) -> list:
    """The weight samples a predictive averages over (`[S, *spec.shape]` per part).

    Args:
      num_samples: how many; `None` lets the posterior choose (an ensemble uses all its samples).
      seed: a stateless seed; the same seed gives the same weights, which makes a served model
        deterministic.
    """
    if num_samples is None:
      raise ValueError(f"{type(self).__name__} needs an explicit `num_samples`.")
    return self.sample(num_samples, seed=seed)

  def check_compatible(self, variables: Sequence[tf.Variable]) -> None:
    """Raises a ValueError naming the first part whose shape or dtype differs from `variables`."""
    specs = list(self.variable_specs)
    variables = list(variables)
    if len(specs) != len(variables):
      raise ValueError(
          f"Posterior has {len(specs)} weight parts but the model has {len(variables)} trainable "
          "variables; build the posterior from this model's `trainable_variables`.")
    for i, (spec, v) in enumerate(zip(specs, variables)):
      if not spec.shape.is_compatible_with(v.shape) or spec.dtype != v.dtype:
        raise ValueError(
            f"Posterior part {i} is {spec.dtype.name}{spec.shape.as_list()} but trainable variable "
            f"{v.name!r} is {v.dtype.name}{v.shape.as_list()}.")
