"""Refusing tf_keras save paths that would drop training state silently.

tf_keras's TF SavedModel format (`model.save(dir)`, a path without `.keras` or `.h5`) writes the
optimizer's variables, but its loader (`tf_keras.models.load_model(dir)`) recompiles a fresh
optimizer from the config and never restores them (for every optimizer: its own TODO). For the
optimizers of tfp-ext the optimizer state is the result (a variational posterior, relativistic
momenta), so that save is refused when it happens, with the formats that do carry it.
"""

import tensorflow as tf

__all__ = ["check_saved_model_save", "check_model_saved_model_save", "record_input_spec",
           "SAVE_FORMATS_HINT"]

SAVE_FORMATS_HINT = (
    "Save as `model.save('model.keras')` (or '.h5' for Sequential and functional models), or "
    "checkpoint with `tf.train.Checkpoint(model=model, optimizer=model.optimizer)`, "
    "`model.save_weights(...)` or `ModelCheckpoint(..., save_weights_only=True)`: those restore "
    "it. `model.save(path, include_optimizer=False)` writes the SavedModel without the optimizer, "
    "and `tfp_ext.serving.export` writes a trained posterior's predictive for TF Serving.")


def _in_keras_saved_model_save() -> bool:
  """Whether tf_keras is writing its TF SavedModel format right now (`model.save(dir)`)."""
  try:
    from tf_keras.src.saving.legacy.saved_model import utils  # pylint: disable=g-import-not-at-top
    return bool(utils.in_tf_saved_model_scope())
  except (ImportError, AttributeError):
    return False


def check_saved_model_save(what: str, save_type) -> None:
  """Raises a ValueError when `what` is being written by tf_keras's TF SavedModel format.

  Call it from `_trackable_children(save_type, ...)`: SavedModel writers list the object graph
  before they write any file, so the refusal leaves nothing half-written. `tf.saved_model.save`
  itself (e.g. `tfp_ext.serving.export`) and checkpoints are not affected.
  """
  # SaveType is a str enum: "checkpoint" or "savedmodel".
  if save_type == "savedmodel" and _in_keras_saved_model_save():
    raise ValueError(
        f"{what} cannot be saved in tf_keras's TF SavedModel format (`model.save(dir)` or a "
        "`ModelCheckpoint` path without `.keras`/`.h5`): `tf_keras.models.load_model(dir)` "
        "rebuilds the optimizer from its config and never restores its variables, so the "
        f"training state would be lost silently. {SAVE_FORMATS_HINT}")


def check_model_saved_model_save(model, save_type) -> None:
  """`check_saved_model_save` for a model of tfp-ext compiled with any optimizer that has state.

  A model's training state includes its optimizer's (Adam's moments for a VAE): resuming from a
  TF SavedModel would not continue the run it was saved from, so the save is refused unless the
  optimizer is left out (`include_optimizer=False`) or has no variables yet.
  """
  optimizer = getattr(model, "optimizer", None)
  if optimizer is not None and len(getattr(optimizer, "variables", ())) > 1:  # Beyond iterations.
    check_saved_model_save(f"{type(model).__name__} compiled with {type(optimizer).__name__} "
                           "(its optimizer state)", save_type)


def record_input_spec(model, inputs) -> None:
  """Records the input signature and shape of a model trained by a custom `train_step`.

  Keras records both when the model itself is called or built; a train step that runs
  sub-models (the wrapped model, an encoder and a decoder) does neither. Without the signature
  `model.save(dir)` fails ("the input shape is not available", even with
  `include_optimizer=False`); without the shape a `.keras` file loads an unbuilt model, whose
  optimizer Keras then cannot build, so the saved optimizer variables were skipped (a warning).
  """
  # pylint: disable=protected-access
  if model._saved_model_inputs_spec is None:
    model._set_save_spec(inputs)
  if model._build_input_shape is None:  # Batch-free shapes, for one input or a structure.
    model._build_input_shape = tf.nest.map_structure(
        lambda t: tf.TensorShape([None]).concatenate(t.shape[1:]), inputs)
