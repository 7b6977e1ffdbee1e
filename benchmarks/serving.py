"""Serving costs: (b) the S = 32 predictive vs the deterministic model on a 32·B batch, and
(c) REST latency (p50 / p99) and throughput of the local server on 127.0.0.1 at concurrency 1 and 8.

(b) The predictive runs the model under S weight samples at once (vectorized over samples), so
its floor is the deterministic model on S·B rows, which does the same arithmetic; the ratio shows
what the per-sample (batched) matmuls, sampling and the summary add. Aim: within 1.5×.

Two MLPs: 16-128-128-1 (regression) and 784-128-128-10 (classification, MNIST-sized inputs).
Both sides are measured as exported SavedModels, the way each server runs them:
- "C API": the `serving_default` signature loaded and run through TF's C API
  (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`), which is how `tensorflow_model_server` runs
  a SavedModel (TF's C++ loader and session, Grappler-optimized graph, no XLA);
- "eager": the signature of `tf.saved_model.load`, which is how `tfp-ext serve` runs it;
- "XLA": the `serving_xla` signature, for servers started with `--xla_cpu_compilation_enabled`.
The deterministic model is exported with the same signatures. "stored samples" is what `export`
serves by default for a model this size (`materialize_samples="auto"`: the samples drawn once, at
export); "drawn per call" is an export with `materialize_samples=False`; "read S samples" is a
SavedModel that only sums S stored weight samples, what reading them costs in a TF graph
(ratios to the deterministic model). Both exports use the default `sample_groups`: one plain
call per sample from 2 rows on with Eigen's kernels (16 with oneDNN's; both MLPs' largest kernel
has at least 128·128 elements), and a single row in vectorized groups that follow this process's
kernels (4 with Eigen's, 1 with oneDNN's); batches of at most 8192 input numbers are copied once
per sample.

Part (b) runs twice: with TF's CPU kernels as this process has them, and in a child process with
`TF_ENABLE_ONEDNN_OPTS=1`. TF turns the oneDNN kernels on by default only on x86 CPUs with
AVX-512 VNNI / BF16 / AMX; elsewhere the per-sample matmuls run on Eigen's batched matmul.

(c) The baseline is the same export's signature called in-process; the ratio is what HTTP, JSON
and the server add per request. Client threads and the server process share the machine's cores.
"""

import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

S = 32


def _timeit(fn, reps, warmup=3):
  return _timeit_interleaved({"fn": fn}, reps, warmup)["fn"]


def _timeit_interleaved(fns, reps, warmup=3):
  """Median seconds per call of each function, the functions alternating call by call.

  Alternating makes slow drifts of the machine (other processes, frequency changes) hit every
  function alike, so ratios of the medians are much steadier than those of separate timing loops.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: float(np.median(t)) for name, t in times.items()}


def _mlp(in_dim, hidden, out_dim):
  import tf_keras  # pylint: disable=g-import-not-at-top
  glorot = tf_keras.initializers.GlorotUniform
  return tf_keras.Sequential([
      tf_keras.Input((in_dim,)),
      tf_keras.layers.Dense(hidden, activation="relu", kernel_initializer=glorot(0)),
      tf_keras.layers.Dense(hidden, activation="relu", kernel_initializer=glorot(1)),
      tf_keras.layers.Dense(out_dim, kernel_initializer=glorot(2)),
  ])


def _posterior(model):
  from tfp_ext.posterior import MeanFieldGaussian  # pylint: disable=g-import-not-at-top
  w = [v.numpy() for v in model.trainable_variables]
  return MeanFieldGaussian(w, [np.full(v.shape, 0.05, v.dtype) for v in w])


def _save(fn, variables, path, in_dim):
  """Saves `fn` (x -> {"y": ...}) as a SavedModel with the export's signatures (plain and XLA);
  `variables` (a model or a list of variables) holds what `fn` reads, for the SavedModel to track."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.variables_read = variables
  spec = [tf.TensorSpec([None, in_dim], tf.float32, name="x")]
  signatures = {name: tf.function(fn, input_signature=spec, jit_compile=jit)
                for name, jit in (("serving_default", False), ("serving_xla", True))}
  tf.saved_model.save(module, path, signatures=signatures)


def _export_deterministic(model, path, in_dim):
  """The plain model as a SavedModel with the export's signatures."""
  _save(lambda x: {"y": model(x)}, model, path, in_dim)


def _export_sample_read(posterior, path, in_dim):
  """A SavedModel that only reads S stored weight samples (sums them): what streaming all S
  samples costs in a TF graph, which the predictive pays at small batches and the deterministic
  model (one copy of the weights) does not."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  samples = [tf.Variable(w) for w in posterior.predictive_weights(S, seed=0)]
  _save(lambda x: {"y": x[:, :1] * 0. + tf.add_n([tf.reduce_sum(w) for w in samples])}, samples,
        path, in_dim)


def _c_api_call(path):
  """`serving_default` as `tensorflow_model_server` runs it: TF's C++ loader and session.

  `TF_LoadSessionFromSavedModel` (tag `serve`) and `TF_SessionRun` through TF's C API, the
  loader `tfp-ext check` uses: a Grappler-optimized graph in a C++ session, no XLA, and no Python
  between the call and the kernels (a TF1 `Session.run` from Python adds about 0.4-0.5 ms per
  call, which hides the small-batch ratios).
  """
  import ctypes  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import meta_graph_pb2  # pylint: disable=g-import-not-at-top
  # The module, not the `check` function the package exports under the same name.
  c = importlib.import_module("tfp_ext.serving.check")
  # pylint: disable=protected-access
  lib = c._load_c_api(disable_xla=False)
  status = lib.TF_NewStatus()
  session, graph, _, meta_graph = c._load_session(lib, path, meta_graph_pb2, status)
  signature = meta_graph.signature_def["serving_default"]
  (feed_name,) = [t.name for t in signature.inputs.values()]
  fetch_names = [t.name for t in signature.outputs.values()]
  feed = (c._TFOutput * 1)(c._graph_output(lib, graph, feed_name))
  fetch = (c._TFOutput * len(fetch_names))(*[c._graph_output(lib, graph, n) for n in fetch_names])

  def call(x):
    tensor = c._new_tensor(lib, 1, np.ascontiguousarray(x, np.float32))  # 1: TF_FLOAT.
    results = (ctypes.c_void_p * len(fetch))()
    lib.TF_SessionRun(session, None, feed, (ctypes.c_void_p * 1)(tensor), 1, fetch, results,
                      len(fetch), None, 0, None, status)
    lib.TF_DeleteTensor(tensor)
    if lib.TF_GetCode(status):
      raise RuntimeError(lib.TF_Message(status).decode())
    for t in results:
      lib.TF_DeleteTensor(t)
  return call


def _eager_call(path, signature):
  """A signature of `tf.saved_model.load`, as `tfp-ext serve` calls it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fn = tf.saved_model.load(path).signatures[signature]
  return lambda x: [t.numpy() for t in fn(x=tf.constant(x)).values()]


def predictive_vs_deterministic(quick: bool) -> None:
  """Part (b)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_ext.internal.runtime import onednn_enabled  # pylint: disable=g-import-not-at-top
  from tfp_ext.serving import export  # pylint: disable=g-import-not-at-top

  tf.get_logger().setLevel("ERROR")
  reps = 5 if quick else 100
  hidden = 128
  for in_dim, out_dim, task in ((16, 1, "regression"), (784, 10, "classification")):
    model = _mlp(in_dim, hidden, out_dim)
    q = _posterior(model)
    print(f"(b) predictive, S={S} weight samples, vs the deterministic model on {S}·B rows; "
          f"MLP {in_dim}-{hidden}-{hidden}-{out_dim} (relu, {task}), exported SavedModels, "
          f"median of {reps} interleaved calls; oneDNN kernels "
          f"{'on' if onednn_enabled() else 'off'}")
    print(f"{'B':>5} {'runtime':>8} {'determ. 32·B (ms)':>18} {'stored samples (ms)':>20} "
          f"{'ratio':>6} {'drawn per call (ms)':>20} {'ratio':>6} {'read S samples':>15}")
    with tempfile.TemporaryDirectory() as tmp:
      paths = {"det": os.path.join(tmp, "det"), "read": os.path.join(tmp, "read")}
      _export_deterministic(model, paths["det"], in_dim)
      _export_sample_read(q, paths["read"], in_dim)
      for name, materialize in (("stored", True), ("drawn", False)):
        paths[name] = export(model, q, os.path.join(tmp, name), num_samples=S, task=task,
                             xla_signature=True, materialize_samples=materialize)
      runtimes = {
          "C API": {k: _c_api_call(p) for k, p in paths.items()},
          "eager": {k: _eager_call(p, "serving_default") for k, p in paths.items()},
          "XLA": {k: _eager_call(p, "serving_xla") for k, p in paths.items()},
      }
      rng = np.random.default_rng(0)
      for batch in ([1, 8] if quick else [1, 8, 16, 64, 256]):
        x = rng.standard_normal([batch, in_dim], dtype=np.float32)
        x_big = rng.standard_normal([S * batch, in_dim], dtype=np.float32)
        for runtime, calls in runtimes.items():
          t = _timeit_interleaved({
              "det": lambda: calls["det"](x_big),
              "stored": lambda: calls["stored"](x),
              "drawn": lambda: calls["drawn"](x),
              "read": lambda: calls["read"](x)}, reps)
          print(f"{batch:>5} {runtime:>8} {t['det'] * 1e3:>18.3f} {t['stored'] * 1e3:>20.3f} "
                f"{t['stored'] / t['det']:>6.2f} {t['drawn'] * 1e3:>20.3f} "
                f"{t['drawn'] / t['det']:>6.2f} {t['read'] / t['det']:>15.2f}", flush=True)
    print()


def rest_latency(quick: bool) -> None:
  """Part (c)."""
  import requests  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_ext.serving import export  # pylint: disable=g-import-not-at-top

  model = _mlp(1, 32, 1)
  q = _posterior(model)
  n_requests = 40 if quick else 400
  with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "bench")
    path = export(model, q, base, num_samples=S, noise_stddev=0.1)  # auto: samples stored
    sig = tf.saved_model.load(path).signatures["serving_default"]
    print(f"\n(c) REST :predict on 127.0.0.1 (`tfp-ext serve` in its own process), "
          f"1-input MLP 1-32-32-1, S={S}; {n_requests} requests per row")
    print(f"{'rows/req':>8} {'conc.':>5} {'in-process (ms)':>15} {'p50 (ms)':>9} {'p99 (ms)':>9} "
          f"{'req/s':>7} {'p50 ratio':>9}")
    # The server runs in its own process, as in deployment (a server thread inside the client's
    # process adds tens of milliseconds of thread hand-off per request).
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfp_ext.cli", "serve", "--model_name=bench",
         f"--model_base_path={base}", f"--rest_api_port={port}", "--rest_api_num_threads=8",
         "--file_system_poll_wait_seconds=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      url = f"http://127.0.0.1:{port}/v1/models/bench:predict"
      _wait_ready(f"http://127.0.0.1:{port}/v1/models/bench", proc)
      for rows in (1, 32):
        x = np.linspace(-2, 2, rows, dtype=np.float32)[:, None]
        body = {"instances": x.tolist()}
        t_direct = _timeit(lambda: sig(x=tf.constant(x))["mean"].numpy(), 5 if quick else 50)
        for conc in (1, 8):
          local = threading.local()

          def call(_):
            session = getattr(local, "session", None)
            if session is None:
              session = local.session = requests.Session()
            t = time.perf_counter()
            r = session.post(url, json=body, timeout=60)
            r.raise_for_status()
            return time.perf_counter() - t

          with concurrent.futures.ThreadPoolExecutor(conc) as pool:
            list(pool.map(call, range(2 * conc)))  # Warm-up: connections, first calls.
            start = time.perf_counter()
            lat = np.array(list(pool.map(call, range(n_requests))))
            wall = time.perf_counter() - start
          p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
          print(f"{rows:>8} {conc:>5} {t_direct * 1e3:>15.3f} {p50 * 1e3:>9.2f} {p99 * 1e3:>9.2f} "
                f"{n_requests / wall:>7.1f} {p50 / t_direct:>9.1f}")
    finally:
      proc.terminate()
      proc.wait(timeout=30)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_ready(status_url, proc, timeout=180):
  import requests  # pylint: disable=g-import-not-at-top
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError("tfp-ext serve exited early")
    try:
      if requests.get(status_url, timeout=5).status_code == 200:
        return
    except requests.ConnectionError:
      pass
    time.sleep(0.25)
  raise RuntimeError("tfp-ext serve did not come up")


def main(quick: bool = False) -> None:
  """Prints the (b) and (c) tables."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  predictive_vs_deterministic(quick)
  if "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
    # The flag is read when TF loads, so the oneDNN run needs its own process.
    subprocess.run([sys.executable, "-c", "from benchmarks import serving; "
                    f"serving.predictive_vs_deterministic({quick})"],
                   env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1"), check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  rest_latency(quick)


if __name__ == "__main__":
  main()
