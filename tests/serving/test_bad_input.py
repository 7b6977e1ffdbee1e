"""Serving under bad input: generated REST bodies and gRPC PredictRequests, each answered with a
client error that names the problem (or, when the generator happened to make a valid request,
the right numbers), and the server keeps serving: a valid request right after each one gets the
signature's answer. The stated limits (body size, JSON depth, rows) refuse before any work."""

import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from tensorflow_serving.apis import predict_pb2

from tests.serving import contract
from tfp_ext.serving import Server
from tfp_ext.serving.rest import json_depth

X = np.linspace(-2., 2., 5, dtype=np.float32)[:, None]
REST_CLIENT_ERRORS = {400, 404, 405, 413}
GRPC_CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                      grpc.StatusCode.FAILED_PRECONDITION,  # Unknown signature, as TF Serving.
                      grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

# ------------------------------------------------------------------ generated REST bodies

_leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8) |
         st.floats(allow_nan=True, allow_infinity=True) |
         st.sampled_from([1e308, -1e308, 3.5e38, 1e-45, 10**400]))
_tree = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) |
                     st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=20)
_keys = st.sampled_from(["instances", "inputs", "signature_name", "x", "y", "Instances", ""])
_shaped = st.builds(
    lambda shape, fill: np.full(shape, fill).tolist(),
    st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple),
    st.sampled_from([0.5, float("nan"), float("inf"), -1e300, 7, "a", None, True]))


def _deep(n, opener="[", closer="]"):
  return opener * n + closer * n


_bodies = st.one_of(
    st.binary(max_size=64),  # Garbage, including non-UTF-8.
    _tree.map(lambda t: json.dumps(t).encode()),
    st.dictionaries(_keys, _tree | _shaped, max_size=3).map(lambda d: json.dumps(d).encode()),
    st.builds(lambda k, v, named: json.dumps({k: {"x": v} if named else v}).encode(),
              st.sampled_from(["instances", "inputs"]), _shaped, st.booleans()),
    st.builds(lambda k, n, o: f'{{"{k}": {_deep(n, *o)}}}'.encode(),
              st.sampled_from(["instances", "inputs"]),
              st.integers(30, 100_000) | st.just(100_000),
              st.sampled_from([("[", "]"), ('{"x":', "}"), ("[", "")])),
    st.integers(1, 100_000).map(lambda n: _deep(n).encode()),
    st.binary(max_size=16).map(lambda b: b'{"instances": [[1.0]], "signature_name": "' + b + b'"}'),
)
_paths = st.sampled_from(["reg:predict"] * 12 + ["reg/versions/1:predict", "reg/versions/7:predict",
                          "reg/labels/stable:predict", "nope:predict", "reg:classify",
                          "reg:regress", "..%2F..%2Fetc:predict", "reg/versions/x:predict",
                          "reg/versions/99999999999999999999:predict"])


def _rest_inputs(body: bytes):
  """The `x` of a body that the server answered 200 (a valid request the generator made)."""
  request = json.loads(body)
  value = request.get("instances", request.get("inputs"))
  if isinstance(value, dict):
    value = value["x"]
  if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
    value = [r["x"] for r in value]
  return np.asarray(value, np.float32)


def _assert_outputs(got, want):
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(np.asarray(got[k], np.float32), want[k])


@pytest.fixture(scope="module")
def reg_signatures(regression):
  loaded = tf.saved_model.load(regression.path)
  return {name: loaded.signatures[name] for name in ("serving_default", "serving_xla")}


@pytest.fixture(scope="module")
def reg_expected(reg_signatures):
  return {k: v.numpy() for k, v in reg_signatures["serving_default"](x=tf.constant(X)).items()}


def _check_still_serving(server, reg_expected):
  r = contract.post(server.url, "reg", {"inputs": X.tolist()})
  assert r.status_code == 200, r.text
  _assert_outputs(r.json()["outputs"], reg_expected)


def test_rest_generated_bodies_get_client_errors(server, reg_signatures, reg_expected):
  seen = {}

  @FAST
  @given(body=_bodies, path=_paths, method=st.sampled_from(["POST"] * 8 + ["PUT", "DELETE"]))
  def check(body, path, method):
    r = requests.request(method, f"{server.url}/v1/models/{path}", data=body, timeout=30)
    seen[r.status_code] = seen.get(r.status_code, 0) + 1
    if r.status_code == 200:  # The generator made a valid request: the numbers must be right.
      x = _rest_inputs(body)
      want = {k: v.numpy()
              for k, v in reg_signatures["serving_default"](x=tf.constant(x)).items()}
      request = json.loads(body)
      got = r.json()["outputs" if "inputs" in request else "predictions"]
      if "instances" in request:
        got = {k: [row[k] for row in got] for k in want}
      _assert_outputs(got, want)
    else:
      assert r.status_code in REST_CLIENT_ERRORS, (r.status_code, r.text, body[:200])
      error = r.json()["error"]
      assert isinstance(error, str) and error
    _check_still_serving(server, reg_expected)

  check()  # pylint: disable=no-value-for-parameter
  print("REST answers:", seen)
  assert set(seen) - {200} <= REST_CLIENT_ERRORS and seen.get(400, 0) > 50, seen
  assert seen.get(200, 0) > 0 and seen.get(404, 0) > 0 and seen.get(405, 0) > 0, seen


def test_deep_json_is_refused_before_parsing(server, reg_expected):
  """The fuzzer's HTTP 500: a body nesting 100,000 arrays. Refused by the depth limit, from a
  scan of the bytes; brackets inside strings do not count."""
  for body in (_deep(100_000), '{"instances": ' + _deep(100_000) + "}",
               '{"instances": ' + "[" * 100_000 + "}", '{"inputs": ' + '{"x":' * 5000 + "1"
               + "}" * 5001):
    r = contract.post(server.url, "reg", body, raw=True)
    assert r.status_code == 400 and "--max_json_depth" in r.json()["error"], r.text
  assert json_depth(b'{"a": "[[[[[[", "b": [[1], [2]]}') == 3
  assert json_depth(b'"\\"[[[["') == 0
  assert json_depth(b'["\\\\", [[1]]]') == 3 and json_depth(b'[[ "[[[[ \\') == 2
  # Unterminated strings full of escaped quotes: the scan stays linear (a regex retrying from
  # each quote took minutes on this body; the request's timeout would fail the test).
  r = contract.post(server.url, "reg", '{"instances": "' + '\\"' * 3_000_000, raw=True)
  assert r.status_code == 400 and "JSON Parse error" in r.json()["error"], r.text
  _check_still_serving(server, reg_expected)


def test_stated_limits(regression):
  with Server({"reg": regression.base}, port=0, grpc_port=0, file_system_poll_wait_seconds=0,
              max_body_bytes=4096, max_json_depth=4, max_rows_per_request=8,
              grpc_max_message_bytes=4096) as small:
    post = lambda body: contract.post(small.url, "reg", body)
    assert post({"inputs": {"x": X.tolist()}}).status_code == 200  # Depth 3.
    r = post({"instances": [[[0.1]]]})  # Depth 4 is allowed; the shape is wrong.
    assert r.status_code == 400 and "rank" in r.json()["error"], r.text
    r = post({"instances": [[[[0.1]]]]})
    assert r.status_code == 400 and "5 deep" in r.json()["error"]
    for body in ({"instances": [[0.1]] * 9}, {"inputs": [[0.1]] * 9},
                 {"inputs": {"x": [[0.1]] * 9}}):
      r = post(body)
      assert r.status_code == 400 and "9 rows" in r.json()["error"], r.text
    assert post({"instances": [[0.1]] * 8}).status_code == 200
    r = post({"instances": [[0.1]] * 1000})
    assert r.status_code == 413 and "4096" in r.json()["error"]
    predict, _ = contract.grpc_stubs(small.grpc_target)
    with pytest.raises(grpc.RpcError) as e:
      predict.Predict(contract.grpc_predict_request("reg", np.zeros((9, 1), np.float32)),
                      timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "9 rows" in e.value.details()
    # A declared shape far larger than the message: refused before it becomes an array.
    request = contract.grpc_predict_request("reg", np.zeros((1, 1), np.float32))
    request.inputs["x"].tensor_shape.dim[1].size = 10**12
    with pytest.raises(grpc.RpcError) as e:
      predict.Predict(request, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    with pytest.raises(grpc.RpcError) as e:
      predict.Predict(contract.grpc_predict_request("reg", np.zeros((8, 200), np.float32)),
                      timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = predict.Predict(contract.grpc_predict_request("reg", X), timeout=30)
    assert contract.grpc_outputs(response)["mean"].shape == (5, 1)


# ------------------------------------------------------------------ generated PredictRequests

_DTYPES = [1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 19, 20, 21, 23, 0, 1000]  # 1 = DT_FLOAT.


@st.composite
def _tensor_protos(draw):
  kind = draw(st.sampled_from(["valid", "values", "content", "shape"]))
  if kind == "valid":
    rows = draw(st.integers(1, 4))
    values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                           min_size=rows, max_size=rows))
    return tf.make_tensor_proto(np.asarray(values, np.float32)[:, None])
  proto = tf.make_tensor_proto(np.zeros((1, 1), np.float32))
  proto.Clear()
  proto.dtype = draw(st.sampled_from(_DTYPES))
  dims = draw(st.lists(st.integers(-2, 4) | st.sampled_from([10**6, 10**12, 2**62]),
                       max_size=4))
  for d in dims:
    proto.tensor_shape.dim.add(size=d)
  if draw(st.booleans()) and not dims:
    proto.tensor_shape.unknown_rank = True
  if kind == "values":
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=6)))
    proto.int_val.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=3)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=4), max_size=2)))
  elif kind == "content":
    proto.tensor_content = draw(st.binary(max_size=40))
  return proto


@st.composite
def _predict_requests(draw):
  """Half with a good model spec and one input `x`, so the tensors themselves get tried."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "reg"
  if draw(st.booleans()):
    request.model_spec.name = draw(st.sampled_from(["reg", "nope", "", "reg/../cls"]))
    version = draw(st.sampled_from([None, 1, 7, 0, -1, 2**62]))
    if version is not None:
      request.model_spec.version.value = version
    if draw(st.booleans()):
      request.model_spec.version_label = draw(st.sampled_from(["stable", "canary"]))
    request.model_spec.signature_name = draw(
        st.sampled_from(["", "serving_default", "serving_xla", "bogus"]))
  keys = ["x"]
  if draw(st.integers(0, 3)) == 0:
    keys = draw(st.lists(st.sampled_from(["x", "y", ""]), max_size=3, unique=True))
  for key in keys:
    request.inputs[key].CopyFrom(draw(_tensor_protos()))
  request.output_filter.extend(draw(st.lists(st.sampled_from(["mean", "stddev", "nope"]),
                                             max_size=2)))
  return request


def test_grpc_generated_requests_get_client_errors(server, reg_signatures, reg_expected):
  predict, _ = contract.grpc_stubs(server.grpc_target)
  seen = {}

  @FAST
  @given(request=_predict_requests())
  def check(request):
    try:
      response = predict.Predict(request, timeout=30)
    except grpc.RpcError as e:
      seen[e.code().name] = seen.get(e.code().name, 0) + 1
      assert e.code() in GRPC_CLIENT_ERRORS, (e.code(), e.details(), request)
      assert e.details()
    else:  # A valid request: the signature's numbers.
      seen["OK"] = seen.get("OK", 0) + 1
      x = tf.make_ndarray(request.inputs["x"])
      signature = request.model_spec.signature_name or "serving_default"
      want = {k: v.numpy() for k, v in reg_signatures[signature](x=tf.constant(x)).items()}
      if request.output_filter:
        want = {k: want[k] for k in request.output_filter}
      _assert_outputs(contract.grpc_outputs(response), want)
    response = predict.Predict(contract.grpc_predict_request("reg", X), timeout=30)
    _assert_outputs(contract.grpc_outputs(response), reg_expected)

  check()  # pylint: disable=no-value-for-parameter
  print("gRPC answers:", seen)
  assert seen.get("INVALID_ARGUMENT", 0) > 30 and seen.get("NOT_FOUND", 0) > 0, seen
  assert seen.get("OK", 0) > 0, seen
