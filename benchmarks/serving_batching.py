"""Server-side request batching: `tfp-ext serve` with and without `--enable_batching`, over REST
and gRPC, 1-row requests at concurrency 1, 8 and 32; throughput and p50 / p99 latency.

Two S = 32 classification MLPs with MNIST-sized inputs, exported with the default export (the
weight samples stored in it): 784-128-128-10 (118k weights, 15 MB of samples) and 784-512-512-10
(670k weights, 86 MB of samples). Every 1-row request reads all S samples; a batch of requests
reads them once. Batching uses `serving/batching.config` (every batch padded to 16 rows, a
batch timeout of 4 ms, 1 batch thread).

"floor" is the same server, unbatched, serving a SavedModel that does almost nothing (returns
2·x[:, :1]): what HTTP/JSON or gRPC and the server cost per request, which batching cannot
remove. The batched throughput is bounded by it; the table gives the ratio to it.

Each server runs in its own process on 127.0.0.1; client threads share the 2 cores with it (the
same for every row). The cells of one concurrency alternate between configurations.
"""

import concurrent.futures
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests

from benchmarks.serving import S
from benchmarks.serving import _free_port
from benchmarks.serving import _posterior
from benchmarks.serving import _save
from benchmarks.serving import _wait_ready

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELS = {"mlp128": 128, "mlp512": 512}


def _mlp(hidden):
  import tf_keras  # pylint: disable=g-import-not-at-top
  glorot = tf_keras.initializers.GlorotUniform
  return tf_keras.Sequential([
      tf_keras.Input((784,)),
      tf_keras.layers.Dense(hidden, activation="relu", kernel_initializer=glorot(0)),
      tf_keras.layers.Dense(hidden, activation="relu", kernel_initializer=glorot(1)),
      tf_keras.layers.Dense(10, kernel_initializer=glorot(2)),
  ])


def _start(config, batching):
  port, grpc_port = _free_port(), _free_port()
  args = [sys.executable, "-m", "tfp_ext.cli", "serve", f"--model_config_file={config}",
          f"--rest_api_port={port}", f"--port={grpc_port}", "--file_system_poll_wait_seconds=0"]
  if batching:
    monitoring = os.path.join(os.path.dirname(config), "monitoring.config")
    with open(monitoring, "w", encoding="utf-8") as f:
      f.write("prometheus_config { enable: true }")
    args += ["--enable_batching",
             f"--batching_parameters_file={os.path.join(_REPO, 'serving', 'batching.config')}",
             f"--monitoring_config_file={monitoring}"]
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_ready(f"http://127.0.0.1:{port}/v1/models/floor", proc)
  return proc, port, grpc_port


def _batch_stats(port):
  from prometheus_client.parser import text_string_to_metric_families  # pylint: disable=g-import-not-at-top
  page = requests.get(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics", timeout=30).text
  stats = {}
  for family in text_string_to_metric_families(page):
    for s in family.samples:
      if s.name.startswith(":tensorflow:serving:batching_session:input_batch_size_"):
        key = s.name.rsplit("_", 1)[1]
        stats[key] = stats.get(key, 0) + s.value
  return stats.get("count", 0), stats.get("sum", 0)


def _caller(transport, port, grpc_port, model, x):
  """A function sending one 1-row request and returning its seconds (one connection a thread)."""
  local = threading.local()
  if transport == "REST":
    url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
    body = {"instances": x.tolist()}

    def call(_):
      session = getattr(local, "session", None)
      if session is None:
        session = local.session = requests.Session()
      t = time.perf_counter()
      r = session.post(url, json=body, timeout=120)
      r.raise_for_status()
      return time.perf_counter() - t
    return call

  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))

  def call(_):
    stub = getattr(local, "stub", None)
    if stub is None:
      stub = local.stub = prediction_service_pb2_grpc.PredictionServiceStub(
          grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
    t = time.perf_counter()
    stub.Predict(request, timeout=120)
    return time.perf_counter() - t
  return call


def _measure(call, conc, n_requests):
  with concurrent.futures.ThreadPoolExecutor(conc) as pool:
    list(pool.map(call, range(2 * conc)))  # Warm-up: connections, first calls.
    start = time.perf_counter()
    lat = np.array(list(pool.map(call, range(n_requests))))
    wall = time.perf_counter() - start
  return n_requests / wall, np.percentile(lat, 50), np.percentile(lat, 99)


def main(quick: bool = False) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_ext.serving import export  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  n_requests = 60 if quick else 300
  with tempfile.TemporaryDirectory() as tmp:
    lines = []
    for name, hidden in _MODELS.items():
      model = _mlp(hidden)
      export(model, _posterior(model), os.path.join(tmp, name), num_samples=S,
             task="classification")
      lines.append(f'config {{ name: "{name}" base_path: "{name}" }}')
    _save(lambda x: {"y": x[:, :1] * 2.}, [tf.Variable(0.)], os.path.join(tmp, "floor", "1"), 784)
    lines.append('config { name: "floor" base_path: "floor" }')
    config = os.path.join(tmp, "models.config")
    with open(config, "w", encoding="utf-8") as f:
      f.write("model_config_list {\n  " + "\n  ".join(lines) + "\n}\n")
    servers = {False: _start(config, False), True: _start(config, True)}
    try:
      x = np.random.default_rng(0).uniform(0, 1, (1, 784)).astype(np.float32)
      print(f"1-row requests, {n_requests} per cell; S = {S}; batching: serving/batching.config")
      print(f"{'model':>7} {'API':>4} {'conc':>4} | {'unbatched req/s':>15} {'p50':>6} {'p99':>6} | "
            f"{'batched req/s':>13} {'p50':>6} {'p99':>6} {'rows/batch':>10} | {'floor req/s':>11} "
            f"{'p99':>6} | {'thr. ×':>6} {'p99 ×':>6} {'of floor':>8}")
      for transport in ("REST", "GRPC"):
        for conc in (1, 8, 32):
          floor = _measure(_caller(transport, *servers[False][1:], "floor", x), conc, n_requests)
          for name in _MODELS:
            off = _measure(_caller(transport, *servers[False][1:], name, x), conc, n_requests)
            before = _batch_stats(servers[True][1])
            on = _measure(_caller(transport, *servers[True][1:], name, x), conc, n_requests)
            after = _batch_stats(servers[True][1])
            rows_per_batch = (after[1] - before[1]) / max(after[0] - before[0], 1)
            print(f"{name:>7} {transport:>4} {conc:>4} | {off[0]:>15.1f} {off[1] * 1e3:>6.2f} "
                  f"{off[2] * 1e3:>6.2f} | {on[0]:>13.1f} {on[1] * 1e3:>6.2f} {on[2] * 1e3:>6.2f} "
                  f"{rows_per_batch:>10.1f} | {floor[0]:>11.1f} {floor[2] * 1e3:>6.2f} | "
                  f"{on[0] / off[0]:>6.2f} {on[2] / off[2]:>6.2f} {on[0] / floor[0]:>8.2f}",
                  flush=True)
      print("times in ms; thr. × and p99 × are batched over unbatched; 'of floor' is batched "
            "throughput over the floor's")
    finally:
      for proc, _, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
  main()
