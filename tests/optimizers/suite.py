"""The contract every variational optimizer of `tfp_ext.optimizers` meets, as reusable checks.

`test_suite.py` and `test_suite_multisample.py` run every `check_*` function below on every entry
of `REGISTRY`. An optimizer joins the suite by adding one `OptimizerCase` to `REGISTRY`:

```python
OptimizerCase(
    name="VOGN",
    make=lambda **kw: tfp_ext.optimizers.VOGN(**{"learning_rate": 0.01, **kw}),
    wrap_model=lambda model: tfp_ext.keras.VariationalModel(model),  # feeds per-example g²
    bad_kwargs=COMMON_BAD_KWARGS + [({"beta": 1.5}, "beta")],
)
```

`make(**kwargs)` must accept `num_examples`, `seed` and any key of `bad_kwargs`; `wrap_model`
turns the plain Keras model into what is compiled and fitted (identity for Vadam and Vprop), and
its `trainable_variables` must be the plain model's. The checks:

* `check_config_round_trip`: `get_config`/`from_config` and Keras (de)serialization round trip,
  JSON-able config, the resolved seed reproduces the noise.
* `check_checkpoint_resume`: a `tf.train.Checkpoint` restores the posterior bit for bit, and a
  run resumed from it ends where an uninterrupted run ends.
* `check_mirrored_strategy`: training under `MirroredStrategy` on the two logical CPUs of
  `conftest.py` matches single-device training, and the replicas agree.
* `check_jit_and_steps_per_execution`: `jit_compile=True` with `steps_per_execution=4` matches
  the plain graph run.
* `check_reproducible`: the same seed reproduces training bit for bit; another seed changes it.
* `check_bad_hyperparameters`: every entry of `bad_kwargs` raises a ValueError naming the
  argument, at construction.
* `check_posterior_alignment`: `posterior()` is aligned with `model.trainable_variables` (or a
  given `var_list`), holds μ after `fit`, and refuses foreign variables or an unbuilt optimizer.
* `check_posterior_mean_swap`: the callback and the context manager put μ in and the sample
  back exactly.
* `check_export`: the posterior exports with `tfp_ext.serving.export`, passes the TF Serving
  loader check (`tfp-ext check`), and the served mean and stddev are those of the posterior's
  samples for the export's seed.

All checks train a 3-4-1 tanh MLP on 64 generated examples for 2 epochs of 4 steps (cheap).
"""

import dataclasses
import json
import re
from typing import Callable, Sequence

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_ext

NUM_EXAMPLES = 64
BATCH_SIZE = 16
EPOCHS = 2

COMMON_BAD_KWARGS = [
    ({"num_examples": None}, "num_examples"),
    ({"num_examples": 0}, "num_examples"),
    ({"num_examples": -3}, "num_examples"),
    ({"num_examples": 10.5}, "num_examples"),
    ({"prior_precision": -1.0}, "prior_precision"),
    ({"prior_precision": 0.0}, "prior_precision"),
    ({"prior_precision": float("nan")}, "prior_precision"),
    ({"init_precision": -2.0}, "init_precision"),
    ({"init_precision": 0.5, "prior_precision": 1.0}, "init_precision"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"seed": -1}, "seed"),
    ({"use_ema": True}, "use_ema"),
    ({"weight_decay": 0.01}, "weight_decay"),
]


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
  """One optimizer under test: how to make it and what must be refused."""
  name: str
  make: Callable[..., tf_keras.optimizers.Optimizer]
  bad_kwargs: Sequence = tuple(COMMON_BAD_KWARGS)
  wrap_model: Callable = staticmethod(lambda model: model)

  def __str__(self):
    return self.name


REGISTRY = [
    OptimizerCase(
        name="Vadam",
        make=lambda **kw: tfp_ext.optimizers.Vadam(**{"learning_rate": 0.05, **kw}),
        bad_kwargs=COMMON_BAD_KWARGS + [({"beta_1": 1.0}, "beta_1"),
                                        ({"beta_2": -0.5}, "beta_2")]),
    OptimizerCase(
        name="Vprop",
        make=lambda **kw: tfp_ext.optimizers.Vprop(**{"learning_rate": 0.05, **kw}),
        bad_kwargs=COMMON_BAD_KWARGS + [({"rho": 1.0}, "rho")]),
    OptimizerCase(
        name="VOGN",
        make=lambda **kw: tfp_ext.optimizers.VOGN(**{"learning_rate": 0.05, **kw}),
        wrap_model=lambda model: tfp_ext.keras.VariationalModel(model),
        bad_kwargs=COMMON_BAD_KWARGS + [({"beta_2": 1.0}, "beta_2"),
                                        ({"tempering": 0.0}, "tempering"),
                                        ({"hessian_approximation": "kfac"},
                                         "hessian_approximation")]),
    OptimizerCase(
        name="IVON",
        # IVON's own names: ess ↔ num_examples; the common keys map onto the base class's.
        make=lambda **kw: tfp_ext.optimizers.IVON(**_ivon_kwargs(kw)),
        bad_kwargs=[({"num_examples": None}, "ess"), ({"num_examples": 0}, "ess"),
                    ({"learning_rate": -0.1}, "learning_rate"), ({"seed": -1}, "seed"),
                    ({"use_ema": True}, "use_ema"), ({"hess_init": 0.0}, "hess_init"),
                    ({"weight_decay": -1.0}, "weight_decay"), ({"beta_2": 1.0}, "beta_2")]),
    # Several weight samples per step go through VariationalModel, which evaluates the extra
    # samples without assignment and stacks their gradients for the optimizer to combine.
    OptimizerCase(
        name="VOGN-2samples",
        make=lambda **kw: tfp_ext.optimizers.VOGN(**{"learning_rate": 0.05, "num_samples": 2,
                                                     **kw}),
        wrap_model=lambda model: tfp_ext.keras.VariationalModel(model),
        bad_kwargs=[({"num_samples": 0}, "num_samples"), ({"num_samples": 2.0}, "num_samples")]),
    OptimizerCase(
        name="IVON-3samples",
        make=lambda **kw: tfp_ext.optimizers.IVON(**_ivon_kwargs({"mc_samples": 3, **kw})),
        wrap_model=lambda model: tfp_ext.keras.VariationalModel(model),
        bad_kwargs=[({"mc_samples": 0}, "mc_samples"), ({"mc_samples": None}, "mc_samples")]),
]


ONE_SAMPLE = [case for case in REGISTRY if "samples" not in case.name]
MULTI_SAMPLE = [case for case in REGISTRY if "samples" in case.name]


def _ivon_kwargs(kw):
  """Suite keyword arguments in IVON's vocabulary (`num_examples` is its `ess`)."""
  kw = dict(kw)
  kw["ess"] = kw.pop("num_examples", None)
  return {"learning_rate": 0.05, "hess_init": 0.5, "beta_2": 0.999, **kw}


# -- A tiny problem -------------------------------------------------------------------------------


def data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NUM_EXAMPLES, 3)).astype(np.float32)
  y = (np.sin(x @ np.array([[1.0], [-0.5], [0.3]])) + 0.1 * rng.normal(size=(NUM_EXAMPLES, 1)))
  return x, y.astype(np.float32)


def make_model(init_seed=0):
  """A small MLP with seeded initializers (independent of Keras's global seed)."""
  init = lambda k: tf_keras.initializers.GlorotUniform(seed=init_seed * 10 + k)
  return tf_keras.Sequential([
      tf_keras.layers.Dense(4, activation="tanh", kernel_initializer=init(1), input_shape=(3,)),
      tf_keras.layers.Dense(1, kernel_initializer=init(2)),
  ])


def compile_model(case, model, opt, jit_compile=False, steps_per_execution=1):
  wrapped = case.wrap_model(model)
  # 0.5·(y − f)²: the per-example Gaussian NLL (unit noise, up to a constant), batch-averaged.
  wrapped.compile(optimizer=opt, loss=lambda y, f: 0.5 * tf.reduce_mean(tf.square(y - f), -1),
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
  return wrapped


def fit(wrapped, epochs=EPOCHS):
  x, y = data()
  return wrapped.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=[tfp_ext.optimizers.PosteriorMeanSwap()])


def train(case, seed=0, init_seed=0, epochs=EPOCHS, return_wrapped=False, **compile_kwargs):
  """(model, optimizer[, wrapped model]) after `epochs` of training from a fixed initialization."""
  model = make_model(init_seed)
  opt = case.make(num_examples=NUM_EXAMPLES, seed=seed)
  wrapped = compile_model(case, model, opt, **compile_kwargs)
  fit(wrapped, epochs)
  return (model, opt, wrapped) if return_wrapped else (model, opt)


def posterior_arrays(opt):
  q = opt.posterior()
  return [t.numpy() for t in q.loc], [t.numpy() for t in q.scale]


def assert_posteriors_equal(a, b):
  for part_a, part_b in zip(a[0] + a[1], b[0] + b[1]):
    np.testing.assert_array_equal(part_a, part_b)


def assert_posteriors_close(a, b, rtol, atol):
  for part_a, part_b in zip(a[0] + a[1], b[0] + b[1]):
    np.testing.assert_allclose(part_a, part_b, rtol=rtol, atol=atol)


def assert_posteriors_within_rounding(got, reference):
  """Two runs of the same steps whose float32 arithmetic differs only in its order.

  Reductions summed in another order (XLA fusion, a cross-replica all-reduce, other CPU kernels
  or vector widths) differ by a few ulps per step. The first steps, taken while the precision is
  still near the prior's (effective step size α·N/λ), amplify those ulps: one weight of VOGN with
  2 samples ended 5e-4 relative (6e-5 absolute) apart after 8 steps under XLA, and a mirrored
  VOGN run on an AVX-512 CPU 3e-5 absolute. A real difference (another noise draw, a sample or a
  replica's gradient left out) moves μ and σ by a sizeable fraction of σ, so the bound is 1e-3
  posterior standard deviations on top of 1e-4 relative, whatever the machine.
  """
  (loc, scale), (ref_loc, ref_scale) = got, reference
  for parts, ref_parts in ((loc, ref_loc), (scale, ref_scale)):
    for part, want, sigma in zip(parts, ref_parts, ref_scale):
      np.testing.assert_array_less(np.abs(part - want), 1e-4 * np.abs(want) + 1e-3 * sigma)


# -- Checks ---------------------------------------------------------------------------------------


def check_config_round_trip(case, reference):
  del reference
  opt = case.make(num_examples=NUM_EXAMPLES, seed=None)
  config = opt.get_config()
  json.dumps(config)  # plain values only
  assert isinstance(config["seed"], int), "a None seed must be resolved to an int in the config"
  clone = type(opt).from_config(config)
  assert clone.get_config() == config
  restored = tf_keras.optimizers.deserialize(tf_keras.optimizers.serialize(opt))
  assert type(restored) is type(opt) and restored.get_config() == config
  # The resolved seed reproduces the noise: the same sample lands in the variables.
  values = []
  for o in (opt, clone):
    variables = [tf.Variable(tf.zeros([5, 2])), tf.Variable(tf.ones([3]))]
    o.build(variables)
    o.assign_sample(variables)
    values.append([v.numpy() for v in variables])
  for a, b in zip(*values):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(values[0][0], np.zeros([5, 2]))
  # Learning-rate schedules serialize as well.
  schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
  opt = case.make(num_examples=NUM_EXAMPLES, seed=3, learning_rate=schedule)
  clone = type(opt).from_config(opt.get_config())
  assert clone.get_config() == opt.get_config()
  assert float(clone.learning_rate) == pytest.approx(0.1)


def check_checkpoint_resume(case, reference, tmp_path):
  model, opt = train(case, epochs=1)
  path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))
  saved = posterior_arrays(opt)

  # A different initialization, so everything checked below comes from the checkpoint.
  model2 = make_model(init_seed=7)
  opt2 = type(opt).from_config(opt.get_config())
  wrapped2 = compile_model(case, model2, opt2)
  opt2.build(model2.trainable_variables)
  tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_existing_objects_matched()
  assert int(opt2.iterations) == int(opt.iterations) == NUM_EXAMPLES // BATCH_SIZE
  assert_posteriors_equal(posterior_arrays(opt2), saved)

  # Resuming reproduces the uninterrupted run. Same ops on the same values in the same order:
  # equal up to float32 rounding (1e-6 relative, 1e-7 absolute covers a few ulps).
  fit(wrapped2, epochs=1)
  assert int(opt2.iterations) == reference["iterations"]
  assert_posteriors_close(posterior_arrays(opt2), reference["posterior"], rtol=1e-6, atol=1e-7)


_STRATEGY = []


def mirrored_strategy():
  """One MirroredStrategy per process over the two logical CPUs of conftest.py.

  Separate strategy instances reuse collective instance keys, so a later one whose all-reduce has
  another shape (a VOGN model packs [2, *shape] gradients) aborts with a shape mismatch.
  """
  if not _STRATEGY:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py configures two logical CPUs"
    _STRATEGY.append(tf.distribute.MirroredStrategy(devices))
  return _STRATEGY[0]


def check_mirrored_strategy(case, reference):
  strategy = mirrored_strategy()
  with strategy.scope():
    model = make_model()
    opt = case.make(num_examples=NUM_EXAMPLES, seed=0)
    wrapped = compile_model(case, model, opt)
  fit(wrapped)
  # Every replica holds the same μ, statistics and weights (same noise from the same seed).
  for v in list(opt.variables) + list(model.trainable_variables):
    parts = [p.numpy() for p in getattr(v, "values", [v])]
    assert len(parts) == 2 or not hasattr(v, "values")
    for p in parts[1:]:
      np.testing.assert_array_equal(p, parts[0])
  # The all-reduced gradient is the global batch mean, summed in another order than on one
  # device, so only rounding differs (see `assert_posteriors_within_rounding`).
  assert_posteriors_within_rounding(posterior_arrays(opt), reference["posterior"])


def check_jit_and_steps_per_execution(case, reference):
  _, opt = train(case, jit_compile=True, steps_per_execution=4)
  assert int(opt.iterations) == reference["iterations"]
  # XLA fuses and reorders float32 arithmetic; the noise itself is identical with and without
  # XLA (tfp_ext.internal.seeds.normal), so only rounding differs.
  assert_posteriors_within_rounding(posterior_arrays(opt), reference["posterior"])


def check_reproducible(case, reference):
  _, opt = train(case)
  assert_posteriors_equal(posterior_arrays(opt), reference["posterior"])
  # Another seed draws other noise (so it trains elsewhere); the same seed, the same noise.
  samples = []
  for seed in (0, 0, 1):
    variables = [tf.Variable(tf.zeros([3, 4])), tf.Variable(tf.zeros([4]))]
    other = case.make(num_examples=NUM_EXAMPLES, seed=seed)
    other.build(variables)
    other.assign_sample(variables)
    samples.append([v.numpy() for v in variables])
  for a, b, c in zip(*samples):
    np.testing.assert_array_equal(a, b)
    assert not np.any(a == c)


def check_bad_hyperparameters(case, reference):
  del reference
  for kwargs, name in case.bad_kwargs:
    full = {"num_examples": NUM_EXAMPLES, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(name)):
      case.make(**full)


def check_posterior_alignment(case, reference):
  model, opt = reference["model"], reference["opt"]
  variables = model.trainable_variables
  q = opt.posterior()
  assert isinstance(q, tfp_ext.posterior.MeanFieldGaussian)
  q.check_compatible(variables)
  for loc, scale, v in zip(q.loc, q.scale, variables):
    np.testing.assert_array_equal(loc.numpy(), v.numpy())  # fit left μ in the model
    assert scale.shape == v.shape and np.all(scale.numpy() > 0)
  reordered = opt.posterior(variables[::-1])
  for a, b in zip(reordered.loc, q.loc[::-1]):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  with pytest.raises(ValueError, match="not built on variable"):
    opt.posterior([tf.Variable(tf.zeros([4]), name="stranger")])
  with pytest.raises(ValueError, match="not been built"):
    case.make(num_examples=NUM_EXAMPLES, seed=0).posterior()


def check_posterior_mean_swap(case, reference):
  model, opt = reference["model"], reference["opt"]
  variables = model.trainable_variables
  mean = [v.numpy() for v in opt.posterior().loc]
  opt.assign_sample(variables)
  sample = [v.numpy() for v in variables]
  assert not any(np.array_equal(a, b) for a, b in zip(sample, mean))
  with tfp_ext.optimizers.use_posterior_mean(model, opt):
    for v, m in zip(variables, mean):
      np.testing.assert_array_equal(v.numpy(), m)
  for v, s in zip(variables, sample):
    np.testing.assert_array_equal(v.numpy(), s)
  # The callback: validation and epoch ends see μ; training steps see samples.
  seen = []
  probe = tf_keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: seen.append([v.numpy() for v in variables]))
  x, y = data()
  opt.assign_mean(variables)
  wrapped = reference["wrapped"]
  history = wrapped.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0,
                        validation_data=(x, y),
                        callbacks=[tfp_ext.optimizers.PosteriorMeanSwap(), probe])
  final_mean = [t.numpy() for t in opt.posterior().loc]
  for a, b in zip(seen[0], final_mean):
    np.testing.assert_array_equal(a, b)
  # Validation ran on μ: it equals evaluating the final μ (fit leaves μ in the model). Same
  # graph ops on the same weights; float32 rounding only.
  assert history.history["val_loss"][0] == pytest.approx(
      wrapped.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0), rel=1e-6)
  with pytest.raises(ValueError, match="variational optimizer"):
    with tfp_ext.optimizers.use_posterior_mean(model, tf_keras.optimizers.Adam()):
      pass


def check_export(case, reference, tmp_path):
  """The trained posterior exports for TF Serving, loads through the C API, serves its predictive."""
  del case
  model = reference["model"]
  q = reference["opt"].posterior(model.trainable_variables)
  path = tfp_ext.serving.export(model, q, str(tmp_path / "models"), num_samples=8, seed=5)
  result = tfp_ext.serving.check(path)
  assert result.ok, result.summary()
  x = data()[0][:5]
  served = tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(x))
  # The export's in-graph samples are the posterior's samples for its documented fixed seed.
  weights = q.predictive_weights(8, 5)
  outs = np.stack([tfp_ext.posterior.functional_call(model, [w[s] for w in weights], x).numpy()
                   for s in range(8)])
  np.testing.assert_allclose(served["mean"], outs.mean(0), atol=1e-5)
  np.testing.assert_allclose(served["stddev"], outs.std(0), atol=1e-5)


CHECKS = [
    check_config_round_trip,
    check_checkpoint_resume,
    check_mirrored_strategy,
    check_jit_and_steps_per_execution,
    check_reproducible,
    check_bad_hyperparameters,
    check_posterior_alignment,
    check_posterior_mean_swap,
    check_export,
]


def contract_tests(cases):
  """The fixture and the test a test module assigns to run every check on `cases`."""

  @pytest.fixture(scope="module", params=cases, ids=str)
  def case_and_reference(request):
    """Each optimizer's reference run, trained once per module and shared by its checks."""
    return request.param, reference_run(request.param)

  @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[len("check_"):])
  def test_optimizer_contract(case_and_reference, check, tmp_path):  # pylint: disable=redefined-outer-name
    case, reference = case_and_reference
    if check in (check_checkpoint_resume, check_export):  # The checks that write files.
      check(case, reference, tmp_path)
    else:
      check(case, reference)

  return case_and_reference, test_optimizer_contract


def reference_run(case):
  """The run the other checks compare against: seed 0, no XLA, one step per execution."""
  model, opt, wrapped = train(case, return_wrapped=True)
  return {"model": model, "wrapped": wrapped, "opt": opt, "posterior": posterior_arrays(opt),
          "iterations": int(opt.iterations)}
