"""Every tf_keras save path keeps a trained posterior: save, load, resume.

One training run per (optimizer, model wrapper): 2 epochs, then the state is saved through every
path at once and the same run goes on for 1 more epoch (the uninterrupted reference). Each path
then loads into a fresh process state (a new model with another initialization, so everything
compared comes from the file), must hold the saved optimizer state right after loading (the
posterior, for the variational optimizers), and must end one more epoch exactly where the
uninterrupted run ended: same ops on the same values, so equal to the bit.

tf_keras's TF SavedModel format cannot carry an optimizer's state (its loader never restores
optimizer variables), so that save must fail, naming the formats that can, and write nothing.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext

N, BATCH = 32, 8


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, 3)).astype(np.float32)
  y = (np.sin(x @ np.array([[1.0], [-0.5], [0.3]])) + 0.1 * rng.normal(size=(N, 1)))
  return x, y.astype(np.float32)


def _model(init_seed):
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=init_seed * 10 + k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(4, activation="tanh", kernel_initializer=init(1), input_shape=(3,)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2))])


OPTIMIZERS = {
    "Vadam": lambda: tfp_ext.optimizers.Vadam(learning_rate=0.05, prior_precision=1.0,
                                              num_examples=N, seed=1),
    "Vprop": lambda: tfp_ext.optimizers.Vprop(learning_rate=0.05, prior_precision=1.0,
                                              num_examples=N, seed=1),
    "VOGN": lambda: tfp_ext.optimizers.VOGN(learning_rate=0.05, prior_precision=1.0,
                                            num_examples=N, seed=1),
    "IVON": lambda: tfp_ext.optimizers.IVON(learning_rate=0.05, ess=N, hess_init=0.5,
                                            beta_2=0.999, seed=1),
    "RelativisticSGD": lambda: tfp_ext.optimizers.RelativisticSGD(learning_rate=0.05),
}
# (optimizer, wrapper): VOGN needs VariationalModel; IVON runs both ways.
CASES = [("Vadam", "plain"), ("Vprop", "plain"), ("IVON", "plain"), ("RelativisticSGD", "plain"),
         ("VOGN", "VariationalModel"), ("IVON", "VariationalModel")]
PATHS = ["keras", "h5", "checkpoint", "save_weights", "model_checkpoint_keras",
         "model_checkpoint_weights", "backup_and_restore"]


def _variational(opt):
  return isinstance(opt, tfp_ext.optimizers.VariationalOptimizer)


def _compile(model, wrapper, opt):
  wrapped = tfp_ext.keras.VariationalModel(model) if wrapper == "VariationalModel" else model
  # A named loss (not a lambda) so `.keras` and `.h5` can restore the compile arguments.
  wrapped.compile(optimizer=opt, loss="mse")
  return wrapped


def _fit(wrapped, epochs, callbacks=(), initial_epoch=0):
  x, y = _data()
  callbacks = list(callbacks)
  if _variational(wrapped.optimizer):
    # Puts μ in the variables for epoch-end callbacks and the sample back at the start of
    # training, so a resumed run continues exactly like an uninterrupted one.
    callbacks.insert(0, tfp_ext.optimizers.PosteriorMeanSwap())
  wrapped.fit(x, y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
              verbose=0, callbacks=callbacks)


def _state(wrapped):
  """Everything a resumed run depends on: the optimizer's variables and the model's weights."""
  opt = wrapped.optimizer
  out = {"optimizer": [v.numpy() for v in opt.variables],
         "weights": [v.numpy() for v in wrapped.trainable_variables]}
  if _variational(opt):
    q = opt.posterior()
    out["posterior"] = [t.numpy() for t in q.loc + q.scale]
  return out


def _assert_states_equal(got, want):
  assert got.keys() == want.keys()
  for key in want:
    assert len(got[key]) == len(want[key]), key
    for a, b in zip(got[key], want[key]):
      np.testing.assert_array_equal(a, b, err_msg=key)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def trained(request, tmp_path_factory):
  """The run every path resumes: saved after 2 epochs through every path, then 1 epoch more."""
  name, wrapper = request.param
  root = tmp_path_factory.mktemp(f"{name}-{wrapper}")
  model = _model(init_seed=0)
  wrapped = _compile(model, wrapper, OPTIMIZERS[name]())
  files = {p: str(root / p) for p in PATHS + ["savedmodel"]}
  files["keras"] += ".keras"
  files["h5"] += ".h5"
  files["model_checkpoint_keras"] += ".keras"
  _fit(wrapped, 2, callbacks=[
      tf_keras.callbacks.ModelCheckpoint(files["model_checkpoint_keras"]),
      tf_keras.callbacks.ModelCheckpoint(files["model_checkpoint_weights"],
                                         save_weights_only=True)])
  saved = _state(wrapped)
  served = _served(model, wrapped.optimizer, str(root / "export"))
  wrapped.save(files["keras"])
  if wrapper == "plain":  # tf_keras writes `.h5` for Sequential and functional models only.
    wrapped.save(files["h5"])
  files["checkpoint"] = tf.train.Checkpoint(model=wrapped, optimizer=wrapped.optimizer).save(
      files["checkpoint"])
  wrapped.save_weights(files["save_weights"])
  with pytest.raises(ValueError, match=r"TF SavedModel format.*\.keras"):
    wrapped.save(files["savedmodel"])
  assert not os.path.exists(files["savedmodel"]), "a refused save must write nothing"
  _fit(wrapped, 3, initial_epoch=2)
  # The backup of an interrupted `fit`, from a second run of the same 2 epochs (same seeds, so
  # the same state): tf_keras's BackupAndRestore leaves a model that cannot `fit` again.
  _fit(_compile(_model(init_seed=0), wrapper, OPTIMIZERS[name]()), 2, callbacks=[
      tf_keras.callbacks.BackupAndRestore(files["backup_and_restore"], delete_checkpoint=False)])
  return {"name": name, "wrapper": wrapper, "files": files, "saved": saved, "served": served,
          "resumed": _state(wrapped), "root": root}


def _served(model, opt, base):
  """What TF Serving would answer for the posterior's export (None without a posterior)."""
  if not _variational(opt):
    return None
  path = tfp_ext.serving.export(model, opt.posterior(model.trainable_variables), base,
                                num_samples=4, seed=3)
  return tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(_data()[0][:5]))


def _load(trained, path):
  """The model as a user brings it back through `path`, before any further training."""
  name, wrapper, files = trained["name"], trained["wrapper"], trained["files"]
  if path in ("keras", "h5", "model_checkpoint_keras"):
    return tf_keras.models.load_model(files[path])
  wrapped = _compile(_model(init_seed=7), wrapper, OPTIMIZERS[name]())
  if path == "backup_and_restore":
    return wrapped  # Restores inside `fit`.
  # A checkpoint restores into existing variables: build the optimizer on the model's.
  wrapped.optimizer.build(wrapped.trainable_variables)
  if path == "checkpoint":
    tf.train.Checkpoint(model=wrapped, optimizer=wrapped.optimizer).restore(
        files[path]).assert_existing_objects_matched()
  else:
    wrapped.load_weights(files[path])
  return wrapped


@pytest.mark.parametrize("path", PATHS)
def test_save_load_resume(trained, path):
  if path == "h5" and trained["wrapper"] != "plain":
    pytest.skip("tf_keras saves subclassed models (VariationalModel) as .keras or SavedModel only")
  wrapped = _load(trained, path)
  if path == "backup_and_restore":
    _fit(wrapped, 3, callbacks=[tf_keras.callbacks.BackupAndRestore(trained["files"][path])])
  else:
    # Compiled, with the saved optimizer type and state, right after loading.
    assert type(wrapped.optimizer).__name__ == trained["name"]
    _assert_states_equal(_state(wrapped), trained["saved"])
    if path in ("keras", "h5") and trained["served"] is not None:
      # The loaded model exports and serves exactly what the saved one did.
      model = wrapped.model if trained["wrapper"] == "VariationalModel" else wrapped
      served = _served(model, wrapped.optimizer, str(trained["root"] / f"export_{path}"))
      for key, value in trained["served"].items():
        np.testing.assert_array_equal(served[key], value, err_msg=key)
    _fit(wrapped, 3, initial_epoch=2)
  _assert_states_equal(_state(wrapped), trained["resumed"])


def test_posteriors_are_checkpointable(tmp_path):
  rng = np.random.default_rng(0)
  parts = [rng.normal(size=s).astype(np.float32) for s in ((3, 4), (4,))]
  q = tfp_ext.posterior.MeanFieldGaussian(parts, [np.abs(p) + 0.1 for p in parts])
  ensemble = tfp_ext.posterior.SampleEnsemble([np.stack([p, 2 * p]) for p in parts])
  path = tf.train.Checkpoint(posterior=q, ensemble=ensemble).save(str(tmp_path / "q"))
  q2 = tfp_ext.posterior.MeanFieldGaussian([np.zeros_like(p) for p in parts],
                                           [np.ones_like(p) for p in parts])
  ensemble2 = tfp_ext.posterior.SampleEnsemble([np.zeros((2,) + p.shape, np.float32)
                                                for p in parts])
  tf.train.Checkpoint(posterior=q2, ensemble=ensemble2).restore(path).assert_consumed()
  for a, b in zip(q.loc + q.scale + ensemble.samples, q2.loc + q2.scale + ensemble2.samples):
    np.testing.assert_array_equal(a, b)


def _hamiltonian_vae():
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(2 * 2, kernel_initializer=_seeded(1))])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(6, kernel_initializer=_seeded(2))])
  return tfp_ext.keras.HamiltonianVAE(encoder, decoder, latent_size=2, num_steps=2,
                                      initial_step_size=0.05, seed=5)


def _flow_vae():
  encoder = tf_keras.Sequential([tf_keras.layers.Dense(8, "relu", kernel_initializer=_seeded(1))])
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(6, kernel_initializer=_seeded(2))])
  return tfp_ext.vi.FlowVAE(encoder, decoder, latent_size=2, posterior="householder",
                            num_flows=2, num_columns=1, seed=5)


def _seeded(k):
  return tf_keras.initializers.GlorotUniform(seed=k)


@pytest.mark.parametrize("make", [_hamiltonian_vae, _flow_vae], ids=["HamiltonianVAE", "FlowVAE"])
def test_vae_save_load_resume(make, tmp_path):
  """The VAEs of tfp-ext come back compiled from `.keras` and resume; Adam's state included."""
  x = (np.random.default_rng(0).random((32, 6)) < 0.4).astype(np.float32)
  fit = lambda m: m.fit(x, epochs=1, batch_size=8, shuffle=False, verbose=0)
  model = make()
  model.compile(tf_keras.optimizers.Adam(0.01))
  fit(model)
  saved = [v.numpy() for v in model.optimizer.variables + model.trainable_variables]
  model.save(str(tmp_path / "vae.keras"))
  with pytest.raises(ValueError, match=r"TF SavedModel format.*\.keras"):
    model.save(str(tmp_path / "vae_savedmodel"))
  assert not os.path.exists(tmp_path / "vae_savedmodel")
  fit(model)
  loaded = tf_keras.models.load_model(str(tmp_path / "vae.keras"))
  assert isinstance(loaded.optimizer, tf_keras.optimizers.Adam)
  got = [v.numpy() for v in loaded.optimizer.variables + loaded.trainable_variables]
  for a, b in zip(got, saved, strict=True):
    np.testing.assert_array_equal(a, b)
  fit(loaded)
  for a, b in zip(loaded.trainable_variables, model.trainable_variables, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
