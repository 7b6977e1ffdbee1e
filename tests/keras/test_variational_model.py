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
