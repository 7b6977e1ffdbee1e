"""functional_call: substitutes weights exactly, leaves the model untouched, refuses what it cannot do."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_ext.posterior import functional_call


def _assign_and_call(model, weights, x):
  saved = [v.numpy() for v in model.trainable_variables]
  for v, w in zip(model.trainable_variables, weights):
    v.assign(w)
  out = model(x).numpy()
  for v, s in zip(model.trainable_variables, saved):
    v.assign(s)
  return out


def _models():
  seq = tf_keras.Sequential([tf_keras.layers.Dense(5, activation="tanh", input_shape=(3,)),
                             tf_keras.layers.LayerNormalization(),
                             tf_keras.layers.Dense(2)])
  inp = tf_keras.Input((3,))
  h = tf_keras.layers.Dense(4, activation="relu")(inp)
  func = tf_keras.Model(inp, tf_keras.layers.Dense(1)(tf_keras.layers.Concatenate()([h, inp])))

  class Sub(tf_keras.Model):

    def __init__(self):
      super().__init__()
      self.a = tf_keras.layers.Dense(4)
      self.b = tf_keras.layers.Dense(2)

    def call(self, x):
      return self.b(tf.nn.relu(self.a(x)))

  sub = Sub()
  sub(tf.zeros([1, 3]))
  return {"sequential": seq, "functional": func, "subclassed": sub}


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_matches_assigning_the_weights(kind):
  model = _models()[kind]
  x = tf.random.stateless_normal([6, 3], seed=[1, 1])
  weights = [tf.random.stateless_normal(v.shape, seed=[i, 2]) for i, v in
             enumerate(model.trainable_variables)]
  before = [v.numpy() for v in model.trainable_variables]
  names = [v.name for v in model.trainable_variables]
  np.testing.assert_allclose(functional_call(model, weights, x), _assign_and_call(model, weights, x),
                             rtol=1e-5, atol=1e-6)
  # The model is untouched: same variables, same order, same values.
  assert [v.name for v in model.trainable_variables] == names
  for v, b in zip(model.trainable_variables, before):
    np.testing.assert_array_equal(v, b)


def test_traced_function_reads_no_trainable_variable():
  model = _models()["sequential"]
  weights = [tf.zeros_like(v) for v in model.trainable_variables]
  f = tf.function(lambda x: functional_call(model, weights, x))
  concrete = f.get_concrete_function(tf.TensorSpec([None, 3]))
  captured = {id(v) for v in concrete.graph.variables}
  assert not captured & {id(v) for v in model.trainable_variables}


def test_layer_reading_weights_indirectly_is_refused():

  class Hidden(tf_keras.layers.Layer):

    def build(self, shape):
      self.ws = [self.add_weight("w", shape=(shape[-1], 2))]

    def call(self, x):
      return x @ self.ws[0]

  model = tf_keras.Sequential([Hidden()])
  model.build((None, 3))
  with pytest.raises(ValueError, match="read directly"):
    functional_call(model, [tf.zeros([3, 2])], tf.zeros([1, 3]))


def test_wrong_number_of_weights():
  model = _models()["sequential"]
  with pytest.raises(ValueError, match="weight tensors"):
    functional_call(model, [tf.zeros([3, 5])], tf.zeros([1, 3]))
