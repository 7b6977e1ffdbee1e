"""VariationalModel: per-example curvature against explicit loops, XLA, and other optimizers."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext


def test_per_example_gradients_match_a_loop_over_examples():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=6)
  w = rng.uniform(0.5, 2., size=6).astype(np.float32)
  model = tf_keras.Sequential([tf_keras.layers.Dense(5, activation="tanh", input_shape=(4,)),
                               tf_keras.layers.Dense(3)])
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  vm = tfp_ext.keras.VariationalModel(model)
  vm.compile(optimizer=tf_keras.optimizers.SGD(), loss=loss)
  _, _, grads, sq = vm.gradients_and_curvature(x, y, w, "per_example_squared_gradients")
  _, _, _, ggn = vm.gradients_and_curvature(x, y, w, "ggn")
  ref_g = [np.zeros(v.shape) for v in model.trainable_variables]
  ref_sq = [np.zeros(v.shape) for v in model.trainable_variables]
  ref_ggn = [np.zeros(v.shape) for v in model.trainable_variables]
  for i in range(len(x)):  # The reference: one example at a time, explicit JᵀHJ.
    with tf.GradientTape(persistent=True) as tape:
      logits = model(x[i:i + 1])
      out = logits[0]
      li = loss.call(y[i:i + 1], logits)[0]
    gi = tape.gradient(li, model.trainable_variables)
    jac = tape.jacobian(out, model.trainable_variables)  # [3, *shape]
    p = tf.nn.softmax(logits[0]).numpy()
    hess = np.diag(p) - np.outer(p, p)
    for k in range(len(ref_g)):
      j = jac[k].numpy().reshape(3, -1)
      ref_g[k] += w[i] * gi[k].numpy() / len(x)
      ref_sq[k] += w[i] * np.square(gi[k].numpy()) / len(x)
      ref_ggn[k] += (w[i] * np.einsum("ap,ab,bp->p", j, hess, j).reshape(ref_ggn[k].shape)
                     / len(x))
  for k in range(len(ref_g)):  # float32 round-off only.
    np.testing.assert_allclose(grads[k], ref_g[k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sq[k], ref_sq[k], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ggn[k], ref_ggn[k], rtol=1e-4, atol=1e-7)


def test_per_example_curvature_compiles_with_xla():
  x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
  y = x.sum(-1, keepdims=True)
  vm = tfp_ext.keras.VariationalModel(tf_keras.Sequential(
      [tf_keras.layers.Dense(4, activation="relu", input_shape=(3,)), tf_keras.layers.Dense(1)]))
  vm.compile(optimizer=tf_keras.optimizers.SGD(), loss="mse")
  eager = vm.gradients_and_curvature(x, y, None, "per_example_squared_gradients")
  jitted = tf.function(lambda a, b: vm.gradients_and_curvature(
      a, b, None, "per_example_squared_gradients"), jit_compile=True)(x, y)
  for a, b in zip(eager[3], jitted[3]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)




def _data():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(32, 3)).astype(np.float32)
  return x, np.tanh(x @ np.array([[1.], [-1.], [0.5]], np.float32))


def _mlp():
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(4, activation="tanh", input_shape=(3,), kernel_initializer=init(1)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2))])


@pytest.mark.parametrize("make", [
    lambda: tfp_ext.optimizers.Vadam(learning_rate=0.05, num_examples=32, seed=1),
    lambda: tfp_ext.optimizers.IVON(learning_rate=0.05, ess=32, hess_init=0.5, seed=1),
], ids=["Vadam", "IVON"])
def test_gradient_only_optimizers_train_identically_through_the_wrapper(make):
  x, y = _data()
  results = []
  for wrap in (False, True):
    model = _mlp()
    target = tfp_ext.keras.VariationalModel(model) if wrap else model
    opt = make()
    target.compile(optimizer=opt, loss="mse")
    target.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    q = opt.posterior(model.trainable_variables)
    results.append([t.numpy() for t in q.loc + q.scale])
  # Same gradient (mean of the per-example loss), same noise: equal up to float32 rounding of
  # the two graphs (a few ulps, amplified over 8 adaptive steps).
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_posterior_and_serialization():
  x, y = _data()
  vm = tfp_ext.keras.VariationalModel(_mlp())
  vm.compile(optimizer=tfp_ext.optimizers.VOGN(learning_rate=0.01, num_examples=32, seed=0),
             loss="mse", metrics=["mae"])
  history = vm.fit(x, y, batch_size=8, epochs=1, verbose=0)
  assert {"loss", "mae"} <= set(history.history)
  q = vm.posterior()
  q.check_compatible(vm.model.trainable_variables)
  for loc, v in zip(q.loc, vm.model.trainable_variables):
    np.testing.assert_array_equal(loc, v)  # fit leaves μ in the model
  clone = tfp_ext.keras.VariationalModel.from_config(vm.get_config())
  assert isinstance(clone.model, tf_keras.Sequential)
  assert [l.get_config()["units"] for l in clone.model.layers] == [4, 1]


def test_variational_model_errors():
  with pytest.raises(TypeError, match="tf_keras.Model"):
    tfp_ext.keras.VariationalModel(lambda x: x)
  vm = tfp_ext.keras.VariationalModel(_mlp())
  with pytest.raises(ValueError, match="loss"):
    vm.compile(optimizer="sgd")


def _shared_dense_model():
  inputs = tf_keras.Input((4,))
  shared = tf_keras.layers.Dense(4, activation="tanh")  # Called twice: general path.
  h = shared(shared(inputs))
  return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(h))


def _conv_model():
  return tf_keras.Sequential([
      tf_keras.layers.Reshape((4, 1), input_shape=(4,)),
      tf_keras.layers.Conv1D(2, 2, activation="relu"),
      tf_keras.layers.Dense(3, activation="tanh"),  # Rank-3 input: general path.
      tf_keras.layers.Flatten(),
      tf_keras.layers.Dense(3)])  # Rank 2: closed form.


def _mlp_with_regularizer():
  return tf_keras.Sequential([
      tf_keras.layers.Dense(5, activation="relu", input_shape=(4,),
                            kernel_regularizer=tf_keras.regularizers.L2(0.1)),
      tf_keras.layers.Dense(3)])


@pytest.mark.parametrize("make_model", [_shared_dense_model, _conv_model, _mlp_with_regularizer],
                         ids=["shared_layer", "conv_and_rank3_dense", "regularized"])
def test_squared_gradients_match_a_loop_on_mixed_models(make_model):
  """Closed-form Dense layers and the vectorized general path agree with one-example passes."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(7, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=7)
  w = np.array([1., 0., 2., 0.5, 1., 3., 0.25], np.float32)  # Includes a zero weight.
  tf_keras.utils.set_random_seed(0)
  model = make_model()
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  vm = tfp_ext.keras.VariationalModel(model)
  vm.compile(optimizer=tf_keras.optimizers.SGD(), loss=loss)
  _, _, _, sq = vm.gradients_and_curvature(x, y, w, "per_example_squared_gradients")
  ref = [np.zeros(v.shape) for v in model.trainable_variables]
  for i in range(len(x)):
    with tf.GradientTape() as tape:
      li = loss.call(y[i:i + 1], model(x[i:i + 1], training=True))[0]
    for k, g in enumerate(tape.gradient(li, model.trainable_variables)):
      ref[k] += w[i] * np.square(g.numpy()) / len(x)
  for k in range(len(ref)):
    np.testing.assert_allclose(sq[k], ref[k], rtol=1e-4, atol=1e-7)


def test_closed_form_covers_plain_dense_layers_only():
  from tfp_ext.keras import variational_model  # pylint: disable=g-import-not-at-top
  model = _conv_model()
  taps = variational_model._DenseTaps(model, model.trainable_variables)  # pylint: disable=protected-access
  with taps.installed():
    model(np.zeros((2, 4), np.float32))
  # Both Dense layers qualify by type; only the one on rank-2 inputs is recorded as tapped.
  assert [layer.name for layer, _, _ in taps.tapped()] == [model.layers[-1].name]
  assert "call" not in vars(model.layers[-1])  # The layer is restored afterwards.


def test_weight_samples_are_evaluated_without_assignment():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(6, 3)).astype(np.float32)
  y = rng.normal(size=(6, 1)).astype(np.float32)
  vm = tfp_ext.keras.VariationalModel(_mlp())
  vm.compile(optimizer=tf_keras.optimizers.SGD(), loss="mse")
  variables = vm.model.trainable_variables
  before = [v.numpy() for v in variables]
  sample = [b + rng.normal(size=b.shape).astype(np.float32) for b in before]
  for curvature in (None, "per_example_squared_gradients", "ggn"):
    got = vm.gradients_and_curvature(x, y, None, curvature, weights=sample)
    for v, b in zip(variables, before):
      np.testing.assert_array_equal(v, b)  # Nothing was assigned.
    for v, s in zip(variables, sample):
      v.assign(s)
    want = vm.gradients_and_curvature(x, y, None, curvature)
    for v, b in zip(variables, before):
      v.assign(b)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for a, b in zip(got[2] + (got[3] or []), want[2] + (want[3] or [])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_vogn_with_several_samples_averages_their_gradients_and_curvature():
  """One VOGN step with S = 3 samples against the update written out from the three samples."""
  x, y = _data()
  x, y = x[:8], y[:8]
  vm = tfp_ext.keras.VariationalModel(_mlp())
  opt = tfp_ext.optimizers.VOGN(learning_rate=0.1, beta_2=0.9, prior_precision=2.0,
                                num_examples=32, num_samples=3, init_precision=40.0, seed=5)
  vm.compile(optimizer=opt, loss="mse")
  variables = vm.model.trainable_variables
  opt.build(variables)
  opt.assign_sample(variables)
  mu0 = [t.numpy() for t in opt.posterior().loc]
  s0 = (40.0 - 2.0) / 32
  samples = [None] + [[t.numpy() for t in opt.mc_sample(variables, j)] for j in (1, 2)]
  assert not np.allclose(samples[1][0], samples[2][0])  # Distinct noise per sample.
  per_sample = [vm.gradients_and_curvature(x, y, None, "per_example_squared_gradients", s)
                for s in samples]
  vm.train_on_batch(x, y)
  q = opt.posterior()
  delta = 2.0 / 32
  for k in range(len(variables)):
    g = np.mean([r[2][k] for r in per_sample], axis=0)
    h = np.mean([r[3][k] for r in per_sample], axis=0)
    s1 = 0.9 * s0 + 0.1 * h
    mu1 = mu0[k] - 0.1 * (g + delta * mu0[k]) / (s1 + delta)
    np.testing.assert_allclose(q.loc[k], mu1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.scale[k], 1 / np.sqrt(32 * (s1 + delta)), rtol=1e-5)


def test_several_samples_need_the_wrapper():
  x, y = _data()
  model = _mlp()
  model.compile(optimizer=tfp_ext.optimizers.IVON(learning_rate=0.05, ess=32, mc_samples=2,
                                                  seed=0), loss="mse")
  with pytest.raises(ValueError, match="VariationalModel"):
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
