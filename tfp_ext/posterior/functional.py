"""Call a Keras model with weight tensors in place of its trainable variables.

The substitution happens while the call is traced: every layer attribute that holds one of the
model's trainable variables is pointed at the matching tensor for the duration of the call, then
restored. The resulting computation reads no variable, so it can be vectorized over weight samples
with `tf.vectorized_map`, compiled with XLA, and run from many threads at once.
"""

import threading
from typing import Sequence

import tensorflow as tf

__all__ = ["functional_call"]

# Attribute swapping mutates Python objects, so two traces must not overlap.
_TRACE_LOCK = threading.RLock()


# Plain Python over static attributes: autograph would only slow the trace down.
@tf.autograph.experimental.do_not_convert
def _variable_slots(model, targets):
  """(owner, attribute name, variable index) for every attribute that holds a target variable."""
  index = {id(v): i for i, v in enumerate(targets)}
  slots = []
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    for owner in [layer] + [getattr(layer, "cell", None)]:
      if owner is None:
        continue
      for name, value in list(vars(owner).items()):
        if isinstance(value, tf.Variable) and id(value) in index:
          slots.append((owner, name, index[id(value)]))
  return slots


def functional_call(model, weights: Sequence[tf.Tensor], inputs, training: bool = False):
  """Runs `model(inputs)` with `weights[i]` standing in for `model.trainable_variables[i]`.

  Args:
    model: a built `tf_keras` model (Sequential, functional or subclassed) whose layers keep their
      weights as attributes (`Dense.kernel`, `Conv2D.bias`, …), as all built-in layers do.
    weights: tensors aligned with `model.trainable_variables` (same shapes and dtypes).
    inputs: the model's inputs.
    training: passed to the model.

  Returns:
    The model's outputs.

  Raises:
    ValueError: `weights` does not match the trainable variables, or a layer read one of its
      trainable variables some other way (so the substitution would silently be incomplete).
  """
  targets = model.trainable_variables
  weights = list(weights)
  if len(weights) != len(targets):
    raise ValueError(f"Got {len(weights)} weight tensors for {len(targets)} trainable variables.")
  with _TRACE_LOCK:
    slots = _variable_slots(model, targets)
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in slots]
    try:
      for owner, name, i in slots:
        w = tf.convert_to_tensor(weights[i], dtype=targets[i].dtype)
        # object.__setattr__ skips Keras attribute tracking, which would reorder the layer's
        # weight lists when the variable is put back.
        object.__setattr__(owner, name, w)
      with tf.GradientTape(watch_accessed_variables=True) as tape:
        outputs = model(inputs, training=training)
    finally:
      for owner, name, value in saved:
        object.__setattr__(owner, name, value)
  read = {id(v) for v in tape.watched_variables()}
  leaked = [v.name for v in targets if id(v) in read]
  if leaked:
    raise ValueError(
        "These trainable variables were read directly instead of through a layer attribute, so "
        f"weight samples cannot be substituted for them: {leaked}.")
  return outputs
