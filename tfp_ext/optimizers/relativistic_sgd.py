"""Relativistic stochastic gradient descent (Lu et al., 2017), a tf_keras optimizer."""

from typing import Optional

import tensorflow as tf
import tf_keras

from tfp_ext.internal import relativistic
from tfp_ext.internal.keras_saving import check_saved_model_save

__all__ = ["RelativisticSGD"]


@tf_keras.utils.register_keras_serializable(package="tfp_ext")
class RelativisticSGD(tf_keras.optimizers.Optimizer):
  r"""Relativistic SGD: the zero-temperature limit of relativistic SGHMC.

  Dropping the injected noise from relativistic SGHMC leaves a deterministic dissipative
  relativistic dynamics on the loss U (Lu et al., 2017, Section 5). With learning rate h,
  friction D, mass m and speed of light c, and the relativistic velocity of each variable's
  momentum p (slot `momentum`, started at 0),

  ```none
  v(p) = p / (m √(p² / (m² c²) + 1)) = p / √(p² / c² + m²),
  p  ← p − h (∇̂U(θ) + D v(p)),
  θ  ← θ + h v(p).
  ```

  Comparison with Adam and RMSprop (the paper's Section 5): Adam steps by
  lr · m̂ / (√v̂ + ε), the first-moment estimate divided by the square root of the second-moment
  estimate; RMSprop by lr · g / √(EMA[g²] + ε). Relativistic SGD steps by
  h · p / √(p²/c² + m²): the momentum p plays the role of Adam's first moment, and its own square
  (scaled by 1/c²) that of the second moment, with m² in place of ε. When |p| ≪ mc the
  step is h p / m, i.e. SGD with heavy-ball momentum (decay 1 − hD/m); when |p| ≫ mc it is
  ≈ h c · sign(p), a normalized, Adam-like step whose size is capped by h c no matter how large
  the gradients are. Unlike Adam there is no bias correction and no separate second-moment
  accumulator: the cap comes from the kinetic energy, and the dynamics has a well-defined
  posterior-sampling counterpart (`RelativisticStochasticGradientHamiltonianMonteCarlo`) at
  non-zero temperature.

  `kinetic_energy_mode="independent"` (default) caps each coordinate's speed, as the Adam-like
  per-coordinate normalization; `"joint"` caps the speed of each variable as a whole vector.

  #### Examples

  ```python
  model.compile(optimizer=tfp_ext.optimizers.RelativisticSGD(learning_rate=0.05, max_speed=1.),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ```

  #### References

  [1]: Xiaoyu Lu, Valerio Perrone, Leonard Hasenclever, Yee Whye Teh, Sebastian J. Vollmer.
       Relativistic Monte Carlo. AISTATS 2017.
  """

  def __init__(self,
               learning_rate=0.01,
               friction: float = 1.,
               mass: float = 1.,
               max_speed: float = 1.,
               kinetic_energy_mode: str = relativistic.INDEPENDENT,
               weight_decay: Optional[float] = None,
               clipnorm: Optional[float] = None,
               clipvalue: Optional[float] = None,
               global_clipnorm: Optional[float] = None,
               jit_compile: bool = True,
               name: str = "RelativisticSGD",
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: h > 0 (a float, a schedule, or a callable).
      friction: D ≥ 0; D = 0 is frictionless (it then never settles).
      mass: m > 0.
      max_speed: c > 0; every coordinate moves by less than h·c per step.
      kinetic_energy_mode: "independent" (per coordinate) or "joint" (per variable).
      weight_decay, clipnorm, clipvalue, global_clipnorm, jit_compile, name, **kwargs: as for
        every tf_keras optimizer.

    Raises:
      ValueError: a non-positive mass or speed, a negative friction, or an unknown mode.
    """
    super().__init__(
        name=name, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
        global_clipnorm=global_clipnorm, jit_compile=jit_compile, **kwargs)
    for arg, value, allow_zero in (("friction", friction, True), ("mass", mass, False),
                                   ("max_speed", max_speed, False)):
      if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        cond = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{arg}` must be a number {cond}, got {value!r}.")
    if kinetic_energy_mode not in (relativistic.JOINT, relativistic.INDEPENDENT):
      raise ValueError(f"`kinetic_energy_mode` must be {relativistic.JOINT!r} or "
                       f"{relativistic.INDEPENDENT!r}, got {kinetic_energy_mode!r}.")
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.friction = float(friction)
    self.mass = float(mass)
    self.max_speed = float(max_speed)
    self.kinetic_energy_mode = kinetic_energy_mode

  def build(self, var_list):
    """Creates one momentum slot per variable (zeros)."""
    super().build(var_list)
    if hasattr(self, "_built") and self._built:
      return
    self._built = True
    self._momenta = [self.add_variable_from_reference(model_variable=v, variable_name="momentum")
                     for v in var_list]

  def _velocity(self, p):
    mass = tf.cast(self.mass, p.dtype)
    speed = tf.cast(self.max_speed, p.dtype)
    event_ndims = [p.shape.rank] if self.kinetic_energy_mode == relativistic.JOINT else [0]
    return relativistic.velocity([p], mass, speed, event_ndims, mode=self.kinetic_energy_mode)[0]

  def update_step(self, gradient, variable):
    """p ← p − h (g + D v(p)); θ ← θ + h v(p)."""
    if isinstance(gradient, tf.IndexedSlices):
      gradient = tf.convert_to_tensor(gradient)  # The friction touches every coordinate anyway.
    lr = tf.cast(self.learning_rate, variable.dtype)
    friction = tf.cast(self.friction, variable.dtype)
    p = self._momenta[self._index_dict[self._var_key(variable)]]
    p.assign(p - lr * (gradient + friction * self._velocity(p)))
    variable.assign_add(lr * self._velocity(p))

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    check_saved_model_save(f"{self.name} (whose momenta are the sampler's state)", save_type)
    return super()._trackable_children(save_type, **kwargs)

  def get_config(self):
    config = super().get_config()
    config.update({
        "learning_rate": self._serialize_hyperparameter(self._learning_rate),
        "friction": self.friction,
        "mass": self.mass,
        "max_speed": self.max_speed,
        "kinetic_energy_mode": self.kinetic_energy_mode,
    })
    return config
