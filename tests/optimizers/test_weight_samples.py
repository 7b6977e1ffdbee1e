"""Vadam and Vprop with several weight samples per step (`num_samples`), against the authors' code.

The reference is the authors' PyTorch `Vadam.step` and `Vprop.step` (emtiyaz/vadam,
`pytorch/vadam/optimizers.py`), transcribed to NumPy below: S samples θⱼ = μ + εⱼ/sqrt(N·s + λ),
the gradient gⱼ of the batch-mean loss at each, then `grad = mean(gⱼ)` for the first moment
(Vadam) or the step (Vprop) and `grad2 = mean(gⱼ²)` for the squared-gradient average.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext

# Dyadic values, exact in float32: Keras keeps the learning rate in a float32 variable, and
# `tf.cast(python_float, tf.float64)` rounds through float32, so with other values the float64
# comparison below would see float32 rounding of the hyperparameters (λ/N = 1/16 and
# s₀ = (INIT − λ)/N = 1.1875 are exact too).
LR, BETA_1, BETA_2, PRIOR, N, INIT, S = 0.125, 0.75, 0.875, 2.0, 32, 40.0, 3


def _data():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 2))
  return x, np.sin(x @ np.array([[1.0], [-0.7]])) + 0.1 * rng.normal(size=(8, 1))


def _mlp(dtype="float64"):
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(3, activation="tanh", kernel_initializer=init(1),
                            bias_initializer=tf_keras.initializers.RandomNormal(seed=3),
                            input_shape=(2,), dtype=dtype),
      tf_keras.layers.Dense(1, kernel_initializer=init(2), dtype=dtype)])


def _loss(y, f):
  return 0.5 * tf.reduce_mean(tf.square(y - f), axis=-1)  # per example; the model averages


def _numpy_gradient(theta, x, y):
  """∇ of (1/M)·Σᵢ ½(yᵢ − fᵢ)² for the tanh MLP [W₁, b₁, W₂, b₂], by hand."""
  w1, b1, w2, b2 = theta
  h = np.tanh(x @ w1 + b1)
  d = (h @ w2 + b2 - y) / len(x)  # ∂loss/∂f
  dz = (d @ w2.T) * (1 - h * h)
  return [x.T @ dz, dz.sum(0), h.T @ d, d.sum(0)]


def _authors_step(name, mu, state, grads, step):
  """One step of the authors' `Vadam.step` / `Vprop.step` after the S gradients, in NumPy.

  `grads` are the S per-sample gradients of one variable; returns the new μ (state in place).
  """
  grad = np.mean(grads, axis=0)
  grad2 = np.mean(np.square(grads), axis=0)
  tlambda = PRIOR / N
  if name == "Vadam":
    state["exp_avg"] = BETA_1 * state["exp_avg"] + (1 - BETA_1) * (grad + tlambda * mu)
    state["exp_avg_sq"] = BETA_2 * state["exp_avg_sq"] + (1 - BETA_2) * grad2
    numerator = state["exp_avg"] / (1 - BETA_1**step)
    denominator = np.sqrt(state["exp_avg_sq"] / (1 - BETA_2**step)) + tlambda
  else:  # Vprop: β is the decay of the squared-gradient average (our ρ); no bias correction.
    state["exp_avg_sq"] = BETA_2 * state["exp_avg_sq"] + (1 - BETA_2) * grad2
    numerator = grad + tlambda * mu
    denominator = np.sqrt(state["exp_avg_sq"]) + tlambda
  return mu - LR * numerator / denominator


def _make(name, **kwargs):
  if name == "Vadam":
    return tfp_ext.optimizers.Vadam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2,
                                    prior_precision=PRIOR, num_examples=N,
                                    init_precision=INIT, **kwargs)
  return tfp_ext.optimizers.Vprop(learning_rate=LR, rho=BETA_2, prior_precision=PRIOR,
                                  num_examples=N, init_precision=INIT, **kwargs)


@pytest.mark.parametrize("name", ["Vadam", "Vprop"])
def test_steps_with_three_samples_match_the_authors_update(name):
  """Two steps, S = 3, through VariationalModel, against the authors' update in float64 NumPy.

  The S noises are read back from the optimizer's seeded draws (`noise(index, t, v, j)`, j = 0
  in the variables, 1..S−1 from `mc_sample`); gradients are computed by hand in NumPy.
  """
  x, y = _data()
  model = _mlp()
  opt = _make(name, num_samples=S, seed=7)
  batch = (tf.constant(x), tf.constant(y))  # float64 tensors (Keras casts NumPy to float32)
  vm = tfp_ext.keras.VariationalModel(model)
  vm.compile(optimizer=opt, loss=_loss, run_eagerly=True)  # tiny: faster than tracing
  variables = model.trainable_variables
  mu = [v.numpy() for v in variables]
  opt.build(variables)
  opt.assign_sample(variables)  # As PosteriorMeanSwap does at the start of fit.
  steps = 2
  for _ in range(steps):
    vm.train_on_batch(*batch)

  states = [{"exp_avg": np.zeros_like(m), "exp_avg_sq": np.full_like(m, (INIT - PRIOR) / N)}
            for m in mu]
  for t in range(steps):
    sigma = [1 / np.sqrt(N * st["exp_avg_sq"] + PRIOR) for st in states]
    noise = [[opt.noise(i, t, v, j).numpy() for i, v in enumerate(variables)] for j in range(S)]
    assert not np.allclose(noise[1][0], noise[2][0])  # distinct draws per sample
    grads = [_numpy_gradient([m + s * e for m, s, e in zip(mu, sigma, noise[j])], x, y)
             for j in range(S)]
    mu = [_authors_step(name, mu[i], states[i], [g[i] for g in grads], t + 1)
          for i in range(len(mu))]

  q = opt.posterior()
  # float64 on both sides, the same operations up to their order: a few ulps (1e-16 relative
  # seen). The bound leaves room for that; a change of the update (the square of the mean
  # gradient for grad2, for one) fails it.
  for i, v in enumerate(variables):
    scale = 1 / np.sqrt(N * states[i]["exp_avg_sq"] + PRIOR)
    np.testing.assert_allclose(q.loc[i], mu[i], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(q.scale[i], scale, rtol=1e-12, atol=1e-14)
    # The variables hold sample 0 of the next step.
    np.testing.assert_allclose(v.numpy(), mu[i] + scale * opt.noise(i, steps, v).numpy(),
                               rtol=1e-12, atol=1e-14)


def _main_vadam_update(self, gradient, index, variable):
  """Vadam's `_update_statistics` before `num_samples` existed, verbatim."""
  dtype = variable.dtype
  mu, m, s = self._means[index], self._momentums[index], self._velocities[index]  # pylint: disable=protected-access
  lr = tf.cast(self.learning_rate, dtype)
  step = tf.cast(self.iterations + 1, dtype)
  beta_1 = tf.cast(self.beta_1, dtype)
  beta_2 = tf.cast(self.beta_2, dtype)
  prior = tf.cast(self.prior_precision / self.num_examples, dtype)
  m.assign_add((gradient + prior * mu - m) * (1 - beta_1))
  s.assign_add((tf.square(gradient) - s) * (1 - beta_2))
  m_hat = m / (1 - tf.pow(beta_1, step))
  s_hat = s / (1 - tf.pow(beta_2, step))
  mu.assign_sub(lr * m_hat / (tf.sqrt(s_hat) + prior))


def _main_vprop_update(self, gradient, index, variable):
  """Vprop's `_update_statistics` before `num_samples` existed, verbatim."""
  dtype = variable.dtype
  mu, s = self._means[index], self._velocities[index]  # pylint: disable=protected-access
  lr = tf.cast(self.learning_rate, dtype)
  rho = tf.cast(self.rho, dtype)
  prior = tf.cast(self.prior_precision / self.num_examples, dtype)
  s.assign_add((tf.square(gradient) - s) * (1 - rho))
  mu.assign_sub(lr * (gradient + prior * mu) / (tf.sqrt(s) + prior))


@pytest.mark.parametrize("name", ["Vadam", "Vprop"])
def test_one_sample_is_bit_identical_to_the_one_sample_update(name):
  """`num_samples=1` runs exactly the arithmetic of the update before `num_samples` existed."""
  cls = getattr(tfp_ext.optimizers, name)
  # Same class name, so the same noise stream (the seed is salted with it).
  frozen = type(name, (cls,), {"_update_statistics": {"Vadam": _main_vadam_update,
                                                      "Vprop": _main_vprop_update}[name]})
  # Default decays and non-dyadic values, so that any reordering of the arithmetic shows.
  config = cls(learning_rate=0.05, prior_precision=1.3, num_examples=10, init_precision=5.0,
               seed=5).get_config()
  results = []
  for opt in (cls(**{**config, "num_samples": 1}), frozen(**config)):
    variables = [tf.Variable(tf.reshape(tf.range(6, dtype=tf.float32) / 5.0 - 0.4, [3, 2])),
                 tf.Variable([0.7, -1.1])]
    opt.build(variables)
    opt.assign_sample(variables)
    for _ in range(6):  # An arbitrary nonlinear gradient field at the sample in the variables.
      opt.apply_gradients([(v - 0.3 + 0.5 * tf.sin(3.0 * v), v) for v in variables])
    # Every optimizer variable (μ and the moment averages) and the sample in the variables.
    results.append([t.numpy() for t in list(opt.variables) + variables])
  assert type(opt) is frozen  # pylint: disable=undefined-loop-variable
  for a, b in zip(*results):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["Vadam", "Vprop"])
def test_several_samples_in_plain_fit_say_to_use_the_wrapper(name):
  model = _mlp("float32")
  model.compile(optimizer=_make(name, num_samples=3, seed=0), loss=_loss)
  x, y = (a.astype(np.float32) for a in _data())
  with pytest.raises(ValueError, match=r"3 weight samples per step.*VariationalModel"):
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize("name", ["Vadam", "Vprop"])
def test_num_samples_config_round_trip_and_validation(name):
  opt = _make(name, num_samples=4, seed=1)
  config = opt.get_config()
  assert config["num_samples"] == 4 and opt.num_mc_samples == 4
  clone = tf_keras.optimizers.deserialize(tf_keras.optimizers.serialize(opt))
  assert type(clone) is type(opt) and clone.get_config() == config
  assert clone.num_mc_samples == 4
  assert _make(name, seed=1).get_config()["num_samples"] == 1
  for bad in (0, 2.0, None, True):
    with pytest.raises(ValueError, match="num_samples"):
      _make(name, num_samples=bad, seed=1)
