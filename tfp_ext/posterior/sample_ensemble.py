"""An empirical weight posterior: the (thinned) samples of an MCMC chain over a model's weights."""

from typing import Optional, Sequence

import tensorflow as tf

from tfp_ext.internal import seeds
from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.weight_posterior import WeightPosterior

__all__ = ["SampleEnsemble"]


class SampleEnsemble(WeightPosterior):
  """q(θ) = (1/S) Σ_s δ(θ − θ_s): S weight samples, one `[S, *var.shape]` tensor per part.

  Part i is aligned with `model.trainable_variables[i]`. The predictive averages over every member
  (`num_samples=None`) or over a subset of members chosen without replacement from the seed,
  so a fixed seed serves a fixed subset.

  #### Examples

  ```python
  samples = tfp_ext.mcmc.sample_keras_weights(model, kernel, num_results=500, seed=(1, 2))
  q = tfp_ext.posterior.SampleEnsemble.from_chain(samples, thin=10, num_burnin=100)
  out = tfp_ext.posterior.predictive(model, q, x, num_samples=None, task="classification")
  ```
  """

  def __init__(self, samples: Sequence, name: str = "SampleEnsemble"):
    """Builds the ensemble from a list of `[S, *var.shape]` tensors (the same S for every part).

    Raises:
      ValueError: no parts, a part without a leading sample axis, different S across parts, a
        non-floating dtype, or non-finite samples.
    """
    super().__init__(name=name)
    samples = [tf.convert_to_tensor(s) for s in samples]
    if not samples:
      raise ValueError("A SampleEnsemble needs at least one weight part.")
    sizes = set()
    for i, s in enumerate(samples):
      if not s.dtype.is_floating:
        raise ValueError(f"Part {i}: samples must be floating, got {s.dtype.name}.")
      if s.shape.rank is None or s.shape.rank < 1 or s.shape[0] is None:
        raise ValueError(f"Part {i}: samples need a static leading sample axis [S, ...], got "
                         f"shape {s.shape}.")
      sizes.add(int(s.shape[0]))
      if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(s))):
        raise ValueError(f"Part {i}: samples have non-finite values (did the chain diverge?).")
    if len(sizes) != 1:
      raise ValueError(f"Every part needs the same number of samples S, got {sorted(sizes)}.")
    self._num_members = sizes.pop()
    if self._num_members < 1:
      raise ValueError("A SampleEnsemble needs at least one sample.")
    with self.name_scope:
      self._samples = [tf.Variable(s, trainable=False, name=f"samples_{i}")
                       for i, s in enumerate(samples)]

  @classmethod
  def from_chain(cls, chain_samples, thin: int = 1, num_burnin: int = 0,
                 name: str = "SampleEnsemble") -> "SampleEnsemble":
    """Keeps every `thin`-th sample of a chain after dropping the first `num_burnin`.

    Args:
      chain_samples: the states of `tfp.mcmc.sample_chain` (or `sample_keras_weights`) over a list
        of weights aligned with `model.trainable_variables`: a list of `[T, *var.shape]` tensors
        (a single tensor is taken as a one-part state).
      thin: keep samples num_burnin, num_burnin + thin, ...
      num_burnin: samples dropped first.
      name: the module's name.
    """
    thin = check_int("thin", thin)
    num_burnin = check_int("num_burnin", num_burnin, minimum=0)
    parts = list(chain_samples) if isinstance(chain_samples, (list, tuple)) else [chain_samples]
    parts = [tf.convert_to_tensor(p) for p in parts]
    length = parts[0].shape[0]
    if length is not None and num_burnin >= length:
      raise ValueError(f"`num_burnin`={num_burnin} leaves no samples of a chain of {length}.")
    return cls([p[num_burnin::thin] for p in parts], name=name)

  @property
  def num_members(self) -> int:
    """S, the number of weight samples."""
    return self._num_members

  @property
  def samples(self) -> list:
    """The members, one `[S, *var.shape]` tensor per trainable variable."""
    return [tf.convert_to_tensor(v) for v in self._samples]

  @property
  def variable_specs(self):
    return [tf.TensorSpec(v.shape[1:], v.dtype) for v in self._samples]

  def mean(self) -> list:
    """The posterior mean of every part (the average of the members)."""
    return [tf.reduce_mean(v, axis=0) for v in self._samples]

  def stddev(self) -> list:
    """The posterior standard deviation of every part across members."""
    return [tf.math.reduce_std(v, axis=0) for v in self._samples]

  def sample(self, n: int, seed=None) -> list:
    """Draws `n` members uniformly with replacement (the empirical distribution)."""
    seed = seeds.sanitize(seed, salt="SampleEnsemble")
    idx = tf.random.stateless_uniform([n], seed=seed, maxval=self._num_members, dtype=tf.int32,
                                      alg=seeds.RNG_ALG)
    return [tf.gather(v, idx) for v in self._samples]

  def predictive_weights(self, num_samples: Optional[int], seed) -> list:
    """Every member (`None` or S), or `num_samples` distinct members chosen from the seed."""
    if num_samples is None or num_samples == self._num_members:
      return self.samples
    if not isinstance(num_samples, int) or not 1 <= num_samples <= self._num_members:
      raise ValueError(f"num_samples must be None or an int in [1, {self._num_members}] (the "
                       f"ensemble's size), got {num_samples!r}.")
    seed = seeds.sanitize(seed, salt="SampleEnsemble")
    # Rank raw Philox bits, not floats: the bits are the same with and without XLA (the
    # bits-to-float conversion is not), so a compiled and a plain signature pick the same members.
    bits = tf.random.stateless_uniform([self._num_members], seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg=seeds.RNG_ALG)
    idx = tf.math.top_k(tf.cast(bits, tf.float64), k=num_samples).indices
    return [tf.gather(v, idx) for v in self._samples]
