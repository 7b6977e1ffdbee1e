"""Puts a variational optimizer's posterior mean into the model wherever the weights are read."""

import contextlib
from typing import Optional

import tf_keras

from tfp_ext.optimizers.variational_optimizer import VariationalOptimizer

__all__ = ["PosteriorMeanSwap", "use_posterior_mean"]


def _variational_optimizer(model, optimizer):
  optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
  if not isinstance(optimizer, VariationalOptimizer):
    raise ValueError(
        "Expected a tfp_ext variational optimizer (Vadam, Vprop, ...), got "
        f"{type(optimizer).__name__}; compile the model with one or pass `optimizer=`.")
  return optimizer


class PosteriorMeanSwap(tf_keras.callbacks.Callback):
  """Keras callback: the model holds μ outside training steps, a weight sample during them.

  While a variational optimizer trains, the model variables hold the weight sample of the current
  step. With this callback in `fit(callbacks=[...])`:

  * `on_train_begin` writes the sample of the current iteration (building the optimizer if
    needed), so the first step's gradient is taken at a sample and a run resumed from a checkpoint
    continues exactly like an uninterrupted one;
  * validation (`on_test_begin`/`on_test_end`) runs on μ, then the sample is put back;
  * `on_epoch_end` writes μ, so callbacks listed *after* this one (`EarlyStopping` with
    `restore_best_weights=True`, `ModelCheckpoint`) see and save the posterior mean;
    `on_epoch_begin` writes the sample back.

  Samples are a pure function of (seed, iteration, posterior), so swapping never perturbs
  training. `EarlyStopping` still restores only the best epoch's μ: `optimizer.posterior()` keeps
  describing the last epoch.

  #### Examples

  ```python
  model.fit(x, y, validation_data=(xv, yv), epochs=50,
            callbacks=[tfp_ext.optimizers.PosteriorMeanSwap(),
                       tf_keras.callbacks.EarlyStopping(restore_best_weights=True)])
  ```
  """

  def __init__(self, optimizer: Optional[VariationalOptimizer] = None):
    """Args: optimizer: the variational optimizer; by default `model.optimizer`."""
    super().__init__()
    self._optimizer = optimizer
    self._training = False

  def _opt(self):
    return _variational_optimizer(self.model, self._optimizer)

  def _mean(self):
    self._opt().assign_mean(self.model.trainable_variables)

  def _sample(self):
    opt = self._opt()
    opt.build(self.model.trainable_variables)  # no-op once built
    opt.assign_sample(self.model.trainable_variables)

  def on_train_begin(self, logs=None):
    self._training = True
    self._sample()

  def on_train_end(self, logs=None):
    self._training = False
    self._mean()

  def on_epoch_begin(self, epoch, logs=None):
    self._sample()

  def on_epoch_end(self, epoch, logs=None):
    self._mean()

  def on_test_begin(self, logs=None):
    if getattr(self._opt(), "_built", False):
      self._mean()

  def on_test_end(self, logs=None):
    if self._training:
      self._sample()


@contextlib.contextmanager
def use_posterior_mean(model, optimizer: Optional[VariationalOptimizer] = None):
  """Context manager: the model's trainable variables hold μ inside, their old values after.

  For custom training loops, where the variables hold a weight sample between steps:

  ```python
  with tfp_ext.optimizers.use_posterior_mean(model, opt):
    y_mean_weights = model(x_test)
  ```
  """
  opt = _variational_optimizer(model, optimizer)
  variables = model.trainable_variables
  saved = [v.read_value() for v in variables]
  opt.assign_mean(variables)
  try:
    yield model
  finally:
    for v, value in zip(variables, saved):
      v.assign(value)
