"""Serving under bad input: a fuzzer against `tfp-ext serve --enable_batching` on REST and gRPC.

Requests of each kind (random JSON trees, deep nesting, wrong keys/shapes/dtypes, NaN/inf/huge
numbers, garbage bytes, paths, methods, over-limit bodies and rows; gRPC TensorProtos of wrong
dtype/shape/content, missing/extra inputs, unknown model/version/label/signature) are sent one
at a time; the table counts the answers by status. After each kind a valid request must still get
the reference numbers. Then a mixed-load run: valid and malformed requests at once on both
transports (16 client threads), each valid answer compared with the same request answered alone.

The server is a subprocess on 127.0.0.1 serving a 1-16-1 regression MLP (S = 16 in-graph
samples), with `serving/batching.config`. Nothing should be a 5xx / INTERNAL / UNKNOWN.
"""

import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

from benchmarks.serving import _free_port
from benchmarks.serving import _wait_ready

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export(base):
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tfp_ext.posterior import MeanFieldGaussian  # pylint: disable=g-import-not-at-top
  from tfp_ext.serving import export  # pylint: disable=g-import-not-at-top
  model = tf_keras.Sequential([
      tf_keras.Input((1,)),
      tf_keras.layers.Dense(16, activation="tanh",
                            kernel_initializer=tf_keras.initializers.GlorotUniform(1)),
      tf_keras.layers.Dense(1, kernel_initializer=tf_keras.initializers.GlorotUniform(2))])
  w = [v.numpy() for v in model.trainable_variables]
  q = MeanFieldGaussian(w, [np.full(v.shape, 0.2, v.dtype) for v in w])
  export(model, q, base, num_samples=16, noise_stddev=0.1, seed=3, materialize_samples=False)


def _tree(rng, depth=0):
  r = rng.random()
  if depth > 4 or r < 0.4:
    return rng.choice(np.array([None, True, 1, -7, 1.5, 1e308, "s", "", 10**30], dtype=object))
  if r < 0.7:
    return [_tree(rng, depth + 1) for _ in range(rng.integers(0, 4))]
  return {str(rng.integers(0, 3)) if rng.random() < .5 else "x": _tree(rng, depth + 1)
          for _ in range(rng.integers(0, 3))}


def _rest_kinds(rng):
  """kind -> function making (method, path, body) tuples."""
  shape = lambda: tuple(int(d) for d in rng.integers(0, 4, rng.integers(0, 4)))
  fill = lambda: rng.choice(np.array([0.5, np.nan, np.inf, -1e300, "a", None, True], object))
  return {
      "garbage bytes": lambda: ("POST", "reg:predict", rng.bytes(int(rng.integers(0, 64)))),
      "random JSON tree": lambda: ("POST", "reg:predict", json.dumps(_tree(rng))),
      "wrong keys": lambda: ("POST", "reg:predict", json.dumps(
          {rng.choice(["instance", "input", "x", "Inputs", ""]): [[1.0]]})),
      "wrong shape/dtype": lambda: ("POST", "reg:predict", json.dumps(
          {rng.choice(["instances", "inputs"]): np.full(shape(), fill()).tolist()},
          allow_nan=True)),
      "NaN/inf/huge": lambda: ("POST", "reg:predict", '{"instances": [[%s]]}' % rng.choice(
          ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "-1e39", "3.4e38"])),
      "deep nesting": lambda: ("POST", "reg:predict", '{"instances": %s%s}' % (
          "[" * int(rng.integers(65, 100_001)), "]" * int(rng.integers(0, 3)))),
      "non-UTF-8 strings": lambda: ("POST", "reg:predict", b'{"instances": [["' +
                                    rng.bytes(8) + b'"]], "signature_name": "\xff"}'),
      "paths": lambda: ("POST", rng.choice([
          "..%2F..%2Fetc%2Fpasswd:predict", "reg/versions/7:predict", "nope:predict",
          "reg/labels/x:predict", "reg:classify", "reg/versions/-1:predict", "a" * 100_000]),
          '{"instances": [[1.0]]}'),
      "methods": lambda: (rng.choice(["PUT", "DELETE", "PATCH"]), "reg:predict", "{}"),
      "over-limit rows/body": lambda: ("POST", "reg:predict", json.dumps(
          {"instances": [[0.5]] * int(rng.choice([100_001, 200_000, 3_000_000]))})),
  }


def _grpc_kinds(rng):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top

  def request(name="reg", x=None, key="x", **spec):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = name
    if "version" in spec:
      r.model_spec.version.value = spec["version"]
    if "label" in spec:  # One of version / version_label (a oneof).
      r.model_spec.version_label = spec["label"]
    r.model_spec.signature_name = spec.get("signature", "")
    if key is not None:
      r.inputs[key].CopyFrom(x if x is not None else tf.make_tensor_proto(
          np.zeros((2, 1), np.float32)))
    return r

  def bad_proto():
    p = tf.make_tensor_proto(np.zeros((1, 1), np.float32))
    p.Clear()
    p.dtype = int(rng.choice([0, 2, 3, 7, 9, 10, 14, 20, 21, 1000, 1]))
    for d in rng.choice([-1, 0, 1, 2, 3, 10**12], rng.integers(0, 4)):
      p.tensor_shape.dim.add(size=int(d))
    p.tensor_content = rng.bytes(int(rng.integers(0, 40)))
    return p

  return {
      "wrong dtype": lambda: request(x=tf.make_tensor_proto(
          np.zeros((2, 1), rng.choice([np.float64, np.int32, np.int64, np.bool_, np.str_])))),
      "wrong shape": lambda: request(x=tf.make_tensor_proto(
          np.zeros(tuple(int(d) for d in rng.integers(0, 4, rng.integers(0, 4))), np.float32))),
      "wrong content": lambda: request(x=bad_proto()),
      "missing/extra inputs": lambda: request(key=rng.choice([None, "y", ""])),
      "unknown model/version/label/signature": lambda: request(**dict(
          [("name", "nope"), ("version", 7), ("label", "stable"),
           ("signature", "bogus")][int(rng.integers(0, 4)):][:1])),
      "over-limit rows/message": lambda: request(x=tf.make_tensor_proto(
          np.zeros((int(rng.choice([100_001, 5_000_000])), 1), np.float32))),
  }


def main(quick: bool = False) -> None:
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests.serving import contract  # pylint: disable=g-import-not-at-top
  n = 20 if quick else 150
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "reg")
    _export(base)
    port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfp_ext.cli", "serve", "--model_name=reg",
         f"--model_base_path={base}", f"--rest_api_port={port}", f"--port={grpc_port}",
         "--file_system_poll_wait_seconds=0", "--enable_batching",
         f"--batching_parameters_file={os.path.join(_REPO, 'serving', 'batching.config')}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      url = f"http://127.0.0.1:{port}"
      _wait_ready(f"{url}/v1/models/reg", proc)
      predict, _ = contract.grpc_stubs(f"127.0.0.1:{grpc_port}")
      x_ref = np.linspace(-2, 2, 5, dtype=np.float32)[:, None]
      ref = contract.post(url, "reg", {"inputs": x_ref.tolist()}).json()["outputs"]
      broken = 0

      def still_serving():
        r = contract.post(url, "reg", {"inputs": x_ref.tolist()})
        g = contract.grpc_outputs(predict.Predict(contract.grpc_predict_request("reg", x_ref),
                                                  timeout=60))
        return (r.status_code == 200 and r.json()["outputs"] == ref and
                all(np.array_equal(g[k], np.asarray(ref[k], np.float32)) for k in ref))

      print(f"{n} requests per kind, one at a time; then a valid request on each transport.")
      print("| transport | kind | answers by status | still serving |\n|---|---|---|---|")
      totals = collections.Counter()
      for kind, make in _rest_kinds(rng).items():
        counts = collections.Counter()
        for _ in range(n if kind != "over-limit rows/body" else max(3, n // 10)):
          method, path, body = make()
          r = requests.request(method, f"{url}/v1/models/{path}", data=body, timeout=60)
          ok_error = r.status_code == 200 or "error" in r.json()
          counts[r.status_code if ok_error else f"{r.status_code} (no error text)"] += 1
        alive = still_serving()
        broken += not alive
        totals.update({f"REST {k}": v for k, v in counts.items()})
        print(f"| REST | {kind} | {dict(sorted(counts.items(), key=str))} | {alive} |")
      for kind, make in _grpc_kinds(rng).items():
        counts = collections.Counter()
        for _ in range(n if kind != "over-limit rows/message" else max(3, n // 10)):
          try:
            predict.Predict(make(), timeout=60)
            counts["OK"] += 1
          except grpc.RpcError as e:
            counts[e.code().name] += 1
        alive = still_serving()
        broken += not alive
        totals.update({f"gRPC {k}": v for k, v in counts.items()})
        print(f"| gRPC | {kind} | {dict(sorted(counts.items()))} | {alive} |")
      print(f"\nTotals: {dict(sorted(totals.items()))}; still serving after every kind: "
            f"{broken == 0}")

      # Mixed load: valid requests (some with NaN/inf rows) and malformed ones at once.
      valid = [rng.uniform(-3, 3, (int(rng.integers(1, 6)), 1)).astype(np.float32)
               for _ in range(40 if not quick else 8)]
      valid += [np.array([[np.nan], [np.inf]], np.float32), np.array([[3e38]], np.float32)]
      alone = [contract.grpc_outputs(predict.Predict(contract.grpc_predict_request("reg", x),
                                                     timeout=60)) for x in valid]
      rest_kinds, grpc_kinds = _rest_kinds(rng), _grpc_kinds(rng)
      rest_bad = [k for k in rest_kinds if k not in ("over-limit rows/body", "NaN/inf/huge")]

      def job(i):
        kind = i % 4
        if kind < 2:  # Valid, alternately REST and gRPC.
          j = (i // 4 * 2 + kind) % len(valid)
          x = valid[j]
          if kind == 0:
            r = requests.post(f"{url}/v1/models/reg:predict", timeout=60,
                              data=json.dumps({"inputs": x.tolist()}, allow_nan=True))
            if r.status_code != 200:
              return "valid", f"REST {r.status_code}"
            got = {k: np.asarray(v, np.float32) for k, v in json.loads(r.text)["outputs"].items()}
          else:
            got = contract.grpc_outputs(predict.Predict(contract.grpc_predict_request("reg", x),
                                                        timeout=60))
          same = all(np.array_equal(got[k], alone[j][k], equal_nan=True) for k in alone[j])
          return "valid", "same as alone" if same else "DIFFERENT"
        if kind == 2:
          method, path, body = rest_kinds[rest_bad[i // 4 % len(rest_bad)]]()
          r = requests.request(method, f"{url}/v1/models/{path}", data=body, timeout=60)
          return "malformed REST", r.status_code
        try:
          predict.Predict(list(grpc_kinds.values())[i // 4 % 5](), timeout=60)
          return "malformed gRPC", "OK"
        except grpc.RpcError as e:
          return "malformed gRPC", e.code().name

      jobs = 400 if not quick else 80
      start = time.perf_counter()
      with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(job, i) for i in range(jobs)]
        done, pending = concurrent.futures.wait(futures, timeout=300)
      wall = time.perf_counter() - start
      mixed = collections.Counter(f.result() for f in done)
      print(f"\nMixed load: {jobs} requests, 16 threads, {wall:.1f} s; unanswered: {len(pending)}")
      for (what, status), count in sorted(mixed.items(), key=str):
        print(f"  {what}: {status} x {count}")
      print(f"still serving: {still_serving()}")
    finally:
      proc.terminate()
      try:
        proc.wait(30)
      except subprocess.TimeoutExpired:
        proc.kill()
  del tf


if __name__ == "__main__":
  main()
