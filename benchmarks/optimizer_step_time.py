"""Time per training step in `model.fit`: Vadam vs Adam and Vprop vs RMSprop, with and without XLA.

The same MLP (64 → 256 → 256 → 10, ReLU, 85k weights) is trained on generated classification
data with each optimizer at several batch sizes. A step is timed between consecutive
`on_train_batch_end` callbacks, so it includes everything `fit` does per step; the reported number
is the median over interleaved repeats (the four optimizers alternate, so load from other
processes hits them alike).

Vadam/Vprop add one normal draw per weight per step to Adam/RMSprop; the "noise" column times that
draw alone (the same `tfp_ext.internal.seeds.normal` calls, compiled the same way), which is the
floor of the added cost, and the last columns say how far the measured difference is from it.
"""

import statistics
import time

import numpy as np
import tensorflow as tf
import tf_keras

import tfp_ext
from benchmarks._timing import StepTimer
from tfp_ext.internal import seeds

INPUT_DIM, HIDDEN, CLASSES = 64, 256, 10


def _model():
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(HIDDEN, activation="relu", kernel_initializer=init(1),
                            input_shape=(INPUT_DIM,)),
      tf_keras.layers.Dense(HIDDEN, activation="relu", kernel_initializer=init(2)),
      tf_keras.layers.Dense(CLASSES, kernel_initializer=init(3)),
  ])


def _optimizers(num_examples):
  return {
      "Adam": lambda: tf_keras.optimizers.Adam(1e-3),
      "Vadam": lambda: tfp_ext.optimizers.Vadam(1e-3, num_examples=num_examples, seed=0),
      "RMSprop": lambda: tf_keras.optimizers.RMSprop(1e-3, rho=0.99),
      "Vprop": lambda: tfp_ext.optimizers.Vprop(1e-3, num_examples=num_examples, seed=0),
  }


def _noise_floor(variables, jit, repeats):
  """Seconds to draw one normal per weight, as the optimizers do (one stream per variable)."""
  base = seeds.sanitize(0, salt="benchmark")

  @tf.function(jit_compile=jit)
  def draw(step):
    return [seeds.normal(v.shape, seeds.fold_in(base, i, step), v.dtype)
            for i, v in enumerate(variables)]

  tf.nest.map_structure(lambda t: t.numpy(), draw(tf.constant(0, tf.int64)))  # compile
  times = []
  for r in range(repeats):
    start = time.perf_counter()
    out = draw(tf.constant(r + 1, tf.int64))
    out[-1].numpy()  # wait for the result
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(quick: bool = False) -> None:
  """Prints the step-time table (see the module docstring)."""
  batch_sizes = [32, 2048] if quick else [32, 256, 2048]
  repeats = 2 if quick else 5
  rng = np.random.default_rng(0)
  print(f"MLP {INPUT_DIM}-{HIDDEN}-{HIDDEN}-{CLASSES}, float32, median step time over "
        f"{repeats} interleaved repeats; ms per step")
  header = ("| jit | batch | Adam | Vadam | Vadam/Adam | RMSprop | Vprop | Vprop/RMSprop | "
            "noise (P normals) | (Vadam−Adam)/noise | (Vprop−RMSprop)/noise |")
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for jit in (False, True):
    for batch in batch_sizes:
      steps = max(8, min(60, 40_000 // batch)) if not quick else 8
      n = batch * steps
      x = rng.normal(size=(n, INPUT_DIM)).astype(np.float32)
      y = rng.integers(0, CLASSES, size=(n,)).astype(np.int32)
      models = {}
      for name, make in _optimizers(n).items():
        model = _model()
        model.compile(optimizer=make(), jit_compile=jit,
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0)  # trace
        models[name] = model
      samples = {name: [] for name in models}
      for _ in range(repeats):
        for name, model in models.items():
          timer = StepTimer()
          model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                    callbacks=[timer])
          samples[name].append(timer.per_step())
      t = {name: 1e3 * statistics.median(v) for name, v in samples.items()}
      noise = 1e3 * _noise_floor(models["Vadam"].trainable_variables, jit, repeats=20)
      print(f"| {'yes' if jit else 'no'} | {batch} | {t['Adam']:.2f} | {t['Vadam']:.2f} | "
            f"{t['Vadam'] / t['Adam']:.2f} | {t['RMSprop']:.2f} | {t['Vprop']:.2f} | "
            f"{t['Vprop'] / t['RMSprop']:.2f} | {noise:.2f} | "
            f"{(t['Vadam'] - t['Adam']) / noise:.2f} | {(t['Vprop'] - t['RMSprop']) / noise:.2f} |",
            flush=True)
  num_weights = sum(int(np.prod(v.shape)) for v in _model().trainable_variables)
  print(f"P = {num_weights} weights. Ratios < 1.2 at batch 2048 meet the aim; the last two columns "
        "are the added cost in units of the noise draw alone (1 = at the floor).")
