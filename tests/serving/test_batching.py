"""Request batching with TF Serving's semantics (`--enable_batching`): the queue rules, exact
answers whatever a request is batched with, on both transports, and a full queue."""

import concurrent.futures
import json
import threading
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import contract
from tfp_ext.serving import Client
from tfp_ext.serving import Server
from tfp_ext.serving import ServingError
from tfp_ext.serving.batching import Batcher
from tfp_ext.serving.batching import BatchingParameters
from tfp_ext.serving.batching import parse_batching_parameters
from tfp_ext.serving.batching import read_batching_parameters_file
from tfp_ext.serving.batching import rows_independent
from tfp_ext.serving.metrics import MonitoringConfig
from tfp_ext.serving.status import StatusError

SIZE = 16  # The one allowed batch size of the servers here.


def test_batching_parameters_file():
  p = read_batching_parameters_file("serving/batching.config")
  assert (p.max_batch_size, p.allowed_batch_sizes, p.num_batch_threads) == (16, (16,), 1)
  assert p.padded_size(1) == p.padded_size(16) == 16
  assert parse_batching_parameters("") == BatchingParameters()  # TF Serving's defaults.
  assert parse_batching_parameters("allowed_batch_sizes: 4 allowed_batch_sizes: 8 "
                                   "max_batch_size { value: 8 }").padded_size(5) == 8
  for text, match in [("max_batch_size { value: 8 } allowed_batch_sizes: 4", "last entry"),
                      ("max_batch_size: 8", "value"), ("max_batch_sizes { value: 8 }", "Unsup"),
                      ("max_batch_size { value: 0 }", "positive"),
                      ("pad_variable_length_inputs: true", "not supported")]:
    with pytest.raises(ValueError, match=match):
      parse_batching_parameters(text)


def _batcher(run, **kwargs):
  params = dict(max_batch_size=4, allowed_batch_sizes=(4,), max_enqueued_batches=2,
                num_batch_threads=1, batch_timeout_micros=0)
  params.update(kwargs)
  batches = []
  return Batcher(BatchingParameters(**params), on_batch=lambda k, r, p: batches.append((r, p))), \
      batches


def test_batcher_queue_rules():
  """Batches close when full, a full queue refuses with UNAVAILABLE, answers split back."""
  gate, started, seen = threading.Event(), threading.Event(), []

  def run(feeds):
    seen.append(len(feeds["x"]))
    started.set()
    assert gate.wait(30)
    return {"y": feeds["x"] * 2.}

  batcher, batches = _batcher(run)
  x = lambda rows, v: {"x": np.full((rows, 1), v, np.float32)}
  try:
    a = batcher.submit("k", run, x(1, 1.))
    assert started.wait(30)  # The only batch thread now runs A's batch; the others queue.
    b, c = batcher.submit("k", run, x(2, 2.)), batcher.submit("k", run, x(1, 3.))
    d, e = batcher.submit("k", run, x(2, 4.)), batcher.submit("k", run, x(1, 5.))
    with pytest.raises(StatusError) as full:  # [B C] and [D E] wait: max_enqueued_batches = 2.
      batcher.submit("k", run, x(2, 6.))
    assert full.value.code.name == "UNAVAILABLE" and "full" in full.value.message
    with pytest.raises(StatusError) as big:
      batcher.submit("k", run, x(5, 7.))
    assert big.value.code.name == "INVALID_ARGUMENT" and "maximum batch size 4" in \
        big.value.message
    gate.set()
    for future, rows, v in [(a, 1, 1.), (b, 2, 2.), (c, 1, 3.), (d, 2, 4.), (e, 1, 5.)]:
      np.testing.assert_array_equal(future.result(30)["y"], np.full((rows, 1), 2 * v))
    assert batches == [(1, 4), (3, 4), (3, 4)]  # Rows, padded rows: merged, padded to 4.
    f = batcher.submit("k", run, x(2, 8.))  # Keeps serving after the overflow.
    np.testing.assert_array_equal(f.result(30)["y"], np.full((2, 1), 16.))
  finally:
    gate.set()
    batcher.stop()


def test_batcher_never_merges_position_dependent_rows():
  """A signature that answers a row by its position in the batch runs each request alone."""
  gate, started = threading.Event(), threading.Event()

  def run(feeds):  # Row i gets x + i: its answer depends on where it sits.
    started.set()
    assert gate.wait(30)
    return {"y": feeds["x"] + np.arange(len(feeds["x"]), dtype=np.float32)[:, None]}

  batcher, batches = _batcher(run, max_enqueued_batches=4)
  try:
    first = batcher.submit("k", run, {"x": np.zeros((1, 1), np.float32)})
    assert started.wait(30)
    futures = [batcher.submit("k", run, {"x": np.full((2, 1), v, np.float32)}) for v in (1, 2)]
    gate.set()
    np.testing.assert_array_equal(first.result(30)["y"], [[0.]])
    for f, v in zip(futures, (1, 2)):  # What each gets alone: x + [0, 1].
      np.testing.assert_array_equal(f.result(30)["y"], [[v], [v + 1.]])
    assert batches == [(1, 4), (2, 4), (2, 4)]
  finally:
    gate.set()
    batcher.stop()


def test_batcher_does_not_keep_unloaded_servables_alive():
  import gc  # pylint: disable=g-import-not-at-top
  import weakref  # pylint: disable=g-import-not-at-top

  class Servable:  # Stands for a loaded model version: the first element of the batching key.
    pass

  servable = Servable()
  alive = weakref.ref(servable)
  run = lambda feeds: {"y": feeds["x"] * 2.}
  batcher, batches = _batcher(run, batch_timeout_micros=50_000, max_enqueued_batches=4)
  try:
    futures = [batcher.submit((servable, "sig"), run, {"x": np.ones((1, 1), np.float32)})
               for _ in range(2)]
    for f in futures:
      np.testing.assert_array_equal(f.result(30)["y"], [[2.]])
    assert batches == [(2, 4)]  # Merged (checked first), so the check result is cached.
    del servable, futures
    gc.collect()
    assert alive() is None
  finally:
    batcher.stop()


@pytest.fixture(scope="module")
def batching_server(regression, classification):
  params = BatchingParameters(max_batch_size=SIZE, allowed_batch_sizes=(SIZE,),
                              batch_timeout_micros=20000, max_enqueued_batches=64,
                              num_batch_threads=2)
  with Server({"reg": regression.base, "cls": classification.base}, port=0, grpc_port=0,
              file_system_poll_wait_seconds=0, batching=params,
              monitoring=MonitoringConfig(enable=True)) as s:
    yield s


def _batch_stats(url):
  page = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=30).text
  stats = {}
  for family in text_string_to_metric_families(page):
    for s in family.samples:
      if s.name.startswith(":tensorflow:serving:batching_session:input_batch_size_"):
        key = s.name.rsplit("_", 1)[1]
        stats[key] = stats.get(key, 0) + s.value
  return stats.get("count", 0), stats.get("sum", 0)


@pytest.mark.parametrize("model,in_dim,export", [("reg", 1, "regression"),
                                                  ("cls", 2, "classification")])
def test_batched_answers_equal_unbatched_exactly(batching_server, model, in_dim, export, request):
  exported = request.getfixturevalue(export)
  rng = np.random.default_rng(7)
  xs = [rng.uniform(-3, 3, (int(rng.integers(1, 6)), in_dim)).astype(np.float32)
        for _ in range(16)]
  clients = [Client(batching_server.url, model),
             Client(f"grpc://{batching_server.grpc_target}", model)]
  # Alone: one request at a time, so every batch holds just that request.
  alone = [clients[i % 2].predict(x) for i, x in enumerate(xs)]
  signature = exported.signature()
  for x, got in zip(xs, alone):
    # The server ran the signature on the request padded to SIZE rows with its first row ...
    padded = np.concatenate([x, np.repeat(x[:1], SIZE - len(x), axis=0)])
    want = {k: v.numpy()[:len(x)] for k, v in signature(x=tf.constant(padded)).items()}
    assert sorted(got) == sorted(want)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
      # ... which is the predictive of the request alone, up to the kernels' rounding.
      np.testing.assert_allclose(got[k], signature(x=tf.constant(x))[k].numpy(), rtol=1e-5,
                                 atol=1e-6)
  batches_before, rows_before = _batch_stats(batching_server.url)
  # Together: 8 clients at once, each request twice, over both transports; the batcher merges
  # requests of different row counts and splits the answers back.
  jobs = [(i, t) for i in range(len(xs)) for t in (0, 1)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    together = list(pool.map(lambda job: (job, clients[job[1]].predict(xs[job[0]])), jobs))
  for (i, _), got in together:
    for k in alone[i]:
      np.testing.assert_array_equal(got[k], alone[i][k])
  batches_after, rows_after = _batch_stats(batching_server.url)
  assert rows_after - rows_before == 2 * sum(len(x) for x in xs)
  # Requests were merged, unless this CPU's kernels round a row by its position at SIZE rows;
  # then the server ran them one by one (the same check as the server's).
  run = lambda feeds: {k: v.numpy() for k, v in signature(x=tf.constant(feeds["x"])).items()}
  if rows_independent(run, {"x": xs[0]}, SIZE):
    assert batches_after - batches_before < len(jobs)
  else:
    assert batches_after - batches_before == len(jobs)
  for c in clients:
    c.close()


def test_full_queue_answers_unavailable_and_keeps_serving(regression):
  # One open batch may wait (max_enqueued_batches = 1) and it waits long (batch_timeout): a
  # 1-row request opens it; a 2-row one does not fit beside it (max_batch_size = 2), needs a
  # second batch and is refused. That closes the first batch, which then runs.
  params = BatchingParameters(max_batch_size=2, batch_timeout_micros=60_000_000,
                              max_enqueued_batches=1, num_batch_threads=1)
  x1, x2 = np.array([[0.3]], np.float32), np.array([[0.1], [0.2]], np.float32)
  want = {k: v.numpy() for k, v in regression.signature()(x=tf.constant(x1)).items()}
  with Server({"reg": regression.base}, port=0, grpc_port=0, file_system_poll_wait_seconds=0,
              batching=params) as s:
    predict, _ = contract.grpc_stubs(s.grpc_target)
    rest, grpc_client = Client(s.url, "reg"), Client(f"grpc://{s.grpc_target}", "reg")
    for refuse in (lambda: rest.predict(x2), lambda: grpc_client.predict(x2)):
      first = predict.Predict.future(contract.grpc_predict_request("reg", x1), timeout=60)
      time.sleep(1.0)  # The first request is in its batch.
      with pytest.raises(ServingError) as e:
        refuse()
      assert e.value.status_code == 503 and e.value.code in (None, "UNAVAILABLE")
      assert "batch scheduling queue" in e.value.message and "full" in e.value.message
      got = contract.grpc_outputs(first.result())  # The waiting request is answered ...
      for k in want:  # ... alone, with its own numbers (no padding sizes here).
        np.testing.assert_array_equal(got[k], want[k])
    # Still serving, both ways.
    np.testing.assert_allclose(rest.predict(x2)["mean"], grpc_client.predict(x2)["mean"])
    with pytest.raises(ServingError) as e:
      rest.predict(np.zeros((3, 1), np.float32))
    assert e.value.status_code == 400 and "maximum batch size 2" in e.value.message
    rest.close()
    grpc_client.close()


def test_mixed_load_bad_requests_fail_alone(batching_server, regression):
  """Concurrent valid and malformed requests on both transports with batching on: each valid
  answer equals the request's unbatched answer, each malformed one gets its client error, and
  every request is answered. Rows of NaN, inf and huge numbers are valid requests that do reach
  the batcher; their neighbours in a batch keep their own numbers."""
  import grpc  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(11)
  signature = regression.signature()

  def unbatched(x):  # What the server answers to the request alone (padded to SIZE).
    padded = np.concatenate([x, np.repeat(x[:1], SIZE - len(x), axis=0)])
    return {k: v.numpy()[:len(x)] for k, v in signature(x=tf.constant(padded)).items()}

  odd = np.array([[np.nan], [np.inf], [-np.inf], [3e38], [-1e30]], np.float32)
  valid = [rng.uniform(-3, 3, (int(rng.integers(1, 6)), 1)).astype(np.float32)
           for _ in range(20)] + [odd[i:i + 2] for i in range(4)]
  predict, _ = contract.grpc_stubs(batching_server.grpc_target)
  x2 = np.array([[0.1], [0.2]], np.float32)
  url = batching_server.url
  rest_bad = [("[" * 100_000 + "]" * 100_000, "max_json_depth"),
              ('{"instances": [[1.0, 2.0]]}', "shape"), ('{"instances": [["a"]]}', "numbers"),
              ('{"inputs": {"y": [[1.0]]}}', "'x'"), ('{"instances": [[1.0]], "z": 1}', "z"),
              (b'\xff\xfe{"instances"', "JSON"), ('{"instances": []}', "non-empty"),
              ('{"instances": [[1.0], [2.0, 3.0]]}', "ragged")]
  grpc_bad = [(contract.grpc_predict_request("reg", np.ones((2, 3), np.float32)), "shape"),
              (contract.grpc_predict_request("reg", np.ones((2, 1), np.float64)), "float"),
              (contract.grpc_predict_request("reg", x2, input_name="y"), "y"),
              (contract.grpc_predict_request("nope", x2), "nope"),
              (contract.grpc_predict_request("reg", x2, version=9), "9"),
              (contract.grpc_predict_request("reg", x2, signature="bogus"), "bogus")]
  grpc_codes = {"nope": grpc.StatusCode.NOT_FOUND, "9": grpc.StatusCode.NOT_FOUND,
                "bogus": grpc.StatusCode.FAILED_PRECONDITION}

  def valid_job(i):
    x = valid[i]
    if i % 2:
      r = requests.post(f"{url}/v1/models/reg:predict", data=json.dumps(
          {"inputs": x.tolist()}, allow_nan=True), timeout=60)
      assert r.status_code == 200, r.text
      return i, {k: np.asarray(v, np.float32) for k, v in
                 json.loads(r.text).items() for k, v in v.items()}
    return i, contract.grpc_outputs(predict.Predict(contract.grpc_predict_request("reg", x),
                                                    timeout=60))

  def rest_bad_job(j):
    body, words = rest_bad[j]
    r = requests.post(f"{url}/v1/models/reg:predict", data=body, timeout=60)
    assert r.status_code == 400 and words in r.json()["error"], (body[:40], r.text)
    return "rest", j

  def grpc_bad_job(j):
    request, words = grpc_bad[j]
    try:
      predict.Predict(request, timeout=60)
    except grpc.RpcError as e:
      assert e.code() == grpc_codes.get(words, grpc.StatusCode.INVALID_ARGUMENT), e
      assert words in e.details(), e.details()
      return "grpc", j
    raise AssertionError(f"answered a malformed request: {words}")

  jobs = [(valid_job, i) for i in range(len(valid))] * 2
  jobs += [(rest_bad_job, j) for j in range(len(rest_bad))] * 2
  jobs += [(grpc_bad_job, j) for j in range(len(grpc_bad))] * 2
  order = rng.permutation(len(jobs))
  batches_before, rows_before = _batch_stats(url)
  with concurrent.futures.ThreadPoolExecutor(12) as pool:
    futures = [pool.submit(jobs[k][0], jobs[k][1]) for k in order]
    done, pending = concurrent.futures.wait(futures, timeout=120)
  assert not pending  # Every request got an answer.
  answers = [f.result() for f in futures]  # Re-raises any failed check.
  for answer in answers:
    if isinstance(answer[0], int):
      i, got = answer
      want = unbatched(valid[i])
      assert sorted(got) == sorted(want)
      for k in want:
        np.testing.assert_array_equal(got[k], want[k])
  assert len(answers) == len(jobs)
  # Only the valid requests reached the batcher (the malformed were refused before), merged
  # unless this CPU's kernels round a row by its position at SIZE rows (see above).
  batches_after, rows_after = _batch_stats(url)
  assert rows_after - rows_before == 2 * sum(len(x) for x in valid)
  run = lambda feeds: {k: v.numpy() for k, v in signature(x=tf.constant(feeds["x"])).items()}
  if rows_independent(run, {"x": valid[0]}, SIZE):
    assert batches_after - batches_before < 2 * len(valid)
