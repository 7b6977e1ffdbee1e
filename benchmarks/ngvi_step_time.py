"""Time per training step of IVON and VOGN relative to Adam, on an MLP and a small CNN, batch 128.

Adam and IVON run in plain `model.fit`; VOGN runs through `tfp_ext.keras.VariationalModel`,
whose train step adds the per-example squared gradients: in closed form for the Dense layers (one
extra matmul per layer), by pfor-vectorized per-example backward passes for the convolutions;
"VOGN-ggn" adds one per-example backward pass per output. Everything is compiled with XLA. A step is timed between consecutive
`on_train_batch_end` callbacks and the median is reported over interleaved repeats (the
optimizers alternate, so load from other processes hits them alike).

Aims: IVON ≤ 1.2× Adam, VOGN ≤ 3× Adam.
"""

import statistics

import numpy as np
import tf_keras

import tfp_ext
from benchmarks._timing import StepTimer

BATCH = 128


def _mlp():
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(256, activation="relu", kernel_initializer=init(1),
                            input_shape=(64,)),
      tf_keras.layers.Dense(256, activation="relu", kernel_initializer=init(2)),
      tf_keras.layers.Dense(10, kernel_initializer=init(3))])


def _cnn():
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=k)
  return tf_keras.Sequential([
      tf_keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=init(1),
                             input_shape=(16, 16, 1)),
      tf_keras.layers.MaxPooling2D(),
      tf_keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init(2)),
      tf_keras.layers.MaxPooling2D(),
      tf_keras.layers.Flatten(),
      tf_keras.layers.Dense(10, kernel_initializer=init(3))])


def _compiled(name, make_model, n):
  model = make_model()
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  if name == "Adam":
    target, opt = model, tf_keras.optimizers.Adam(1e-3)
  elif name == "IVON":
    target, opt = model, tfp_ext.optimizers.IVON(0.1, ess=n, seed=0)
  else:
    target = tfp_ext.keras.VariationalModel(model)
    opt = tfp_ext.optimizers.VOGN(1e-3, num_examples=n, seed=0,
                                  hessian_approximation=name.split("-")[1] if "-" in name
                                  else "per_example_squared_gradients")
  target.compile(optimizer=opt, loss=loss, jit_compile=True)
  return target


def main(quick: bool = False) -> None:
  """Prints ms per step and ratios to Adam."""
  repeats = 2 if quick else 9
  steps = 10 if quick else 60
  rng = np.random.default_rng(0)
  names = ["Adam", "IVON", "VOGN", "VOGN-ggn"]
  print(f"batch {BATCH}, XLA, median step time over {repeats} interleaved repeats of {steps} "
        "steps; ms per step (ratio to Adam)")
  print("| model | weights | " + " | ".join(names) + " | IVON/Adam | VOGN/Adam | VOGN-ggn/Adam |")
  print("|" + "---|" * (len(names) + 5))
  for label, make_model, shape in (("MLP 64-256-256-10", _mlp, (64,)),
                                   ("CNN 16x16 conv8-conv16-10", _cnn, (16, 16, 1))):
    n = BATCH * steps
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    y = rng.integers(0, 10, size=(n,)).astype(np.int32)
    models = {}
    for name in names:
      target = _compiled(name, make_model, n)
      target.fit(x[:2 * BATCH], y[:2 * BATCH], batch_size=BATCH, verbose=0)  # trace + compile
      models[name] = target
    samples = {name: [] for name in names}
    for _ in range(repeats):
      for name, target in models.items():
        timer = StepTimer()
        target.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        samples[name].append(timer.per_step())
    t = {name: 1e3 * statistics.median(v) for name, v in samples.items()}
    weights = sum(int(np.prod(v.shape)) for v in make_model().trainable_variables)
    print(f"| {label} | {weights} | " + " | ".join(f"{t[k]:.2f}" for k in names) +
          f" | {t['IVON'] / t['Adam']:.2f} | {t['VOGN'] / t['Adam']:.2f} | "
          f"{t['VOGN-ggn'] / t['Adam']:.2f} |", flush=True)
