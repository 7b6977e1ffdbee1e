"""TF Serving's REST contract, shared by the local-server tests and the real-server tests.

Every check here holds for `tensorflow_model_server` and for `tfp_ext.serving.Server` alike.
"""

import json

import numpy as np
import requests


def post(url, model, body, suffix=":predict", raw=False):
  data = body if raw else json.dumps(body)
  return requests.post(f"{url}/v1/models/{model}{suffix}", data=data, timeout=60)


def check_status_and_metadata(url, model):
  r = requests.get(f"{url}/v1/models/{model}", timeout=60)
  assert r.status_code == 200, r.text
  status = r.json()["model_version_status"]
  assert any(s["state"] == "AVAILABLE" and s["status"]["error_code"] == "OK" for s in status)
  version = max(int(s["version"]) for s in status if s["state"] == "AVAILABLE")
  r = requests.get(f"{url}/v1/models/{model}/versions/{version}", timeout=60)
  assert r.status_code == 200 and r.json()["model_version_status"][0]["version"] == str(version)
  r = requests.get(f"{url}/v1/models/{model}/metadata", timeout=60)
  assert r.status_code == 200, r.text
  meta = r.json()
  assert meta["model_spec"]["name"] == model and meta["model_spec"]["version"] == str(version)
  sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert list(sig["inputs"]) == ["x"] and sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
  assert sig["inputs"]["x"]["tensor_shape"]["dim"][0]["size"] == "-1"
  assert {"mean", "stddev"} <= set(sig["outputs"])
  r = requests.get(f"{url}/v1/models/{model}/versions/{version}/metadata", timeout=60)
  assert r.status_code == 200
  return version


def check_predict_formats(url, model, x):
  """Row and columnar requests give the same batch-first answers, every time."""
  x = np.asarray(x, np.float32)
  rows = post(url, model, {"instances": x.tolist()})
  assert rows.status_code == 200, rows.text
  preds = rows.json()["predictions"]
  assert isinstance(preds, list) and len(preds) == len(x)
  assert {"mean", "stddev"} <= set(preds[0])
  named = post(url, model, {"instances": [{"x": r} for r in x.tolist()],
                            "signature_name": "serving_default"})
  assert named.status_code == 200 and named.json()["predictions"] == preds
  cols = post(url, model, {"inputs": x.tolist()})
  assert cols.status_code == 200, cols.text
  outputs = cols.json()["outputs"]
  cols_named = post(url, model, {"inputs": {"x": x.tolist()}})
  assert cols_named.json()["outputs"] == outputs
  for name, value in outputs.items():
    assert np.asarray(value).shape[0] == len(x)
    assert [p[name] for p in preds] == value
  again = post(url, model, {"instances": x.tolist()})
  assert again.json()["predictions"] == preds  # Seeded in-graph sampling: idempotent.
  return {k: np.asarray(v) for k, v in outputs.items()}


def _error(response, code):
  assert response.status_code == code, (response.status_code, response.text)
  body = response.json()
  assert isinstance(body.get("error"), str) and body["error"]
  return body["error"]


def check_bad_requests(url, model, in_dim):
  good_row = [0.5] * in_dim
  _error(post(url, model, '{"instances": [', raw=True), 400)  # Malformed JSON.
  _error(post(url, model, {"instances": [good_row], "inputs": [good_row]}), 400)  # Both.
  _error(post(url, model, {"signature_name": "serving_default"}), 400)  # Neither.
  _error(post(url, model, {"instances": [[0.5] * (in_dim + 1)]}), 400)  # Wrong inner dim.
  _error(post(url, model, {"inputs": [[[0.5] * in_dim]]}), 400)  # Wrong rank.
  _error(post(url, model, {"instances": [good_row, [0.5] * (in_dim + 2)]}), 400)  # Ragged.
  _error(post(url, model, {"instances": [["a"] * in_dim]}), 400)  # Wrong dtype.
  _error(post(url, model, {"instances": [good_row], "signature_name": "no_such_sig"}), 400)
  _error(post(url, "no_such_model", {"instances": [good_row]}), 404)
  _error(post(url, model, {"instances": [good_row]}, suffix="/versions/999999:predict"), 404)
  _error(requests.get(f"{url}/v1/models/no_such_model", timeout=60), 404)
  _error(requests.get(f"{url}/v1/models/{model}/versions/999999", timeout=60), 404)


# ------------------------------------------------------------------------------------ gRPC
# The same contract over TF Serving's gRPC API, with the official stubs and protos of
# `tensorflow-serving-api` as every production client uses them.


def grpc_stubs(target):
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  channel = grpc.insecure_channel(target)
  return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
          model_service_pb2_grpc.ModelServiceStub(channel))


def grpc_predict_request(model, x, version=None, label=None, signature=None, output_filter=(),
                         input_name="x"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  if signature is not None:
    request.model_spec.signature_name = signature
  request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
  request.output_filter.extend(output_filter)
  return request


def grpc_outputs(response):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def check_grpc_status_and_metadata(target, model):
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
  predict, models = grpc_stubs(target)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = model
  status = models.GetModelStatus(request, timeout=60).model_version_status
  available = [s for s in status if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
  assert available and all(s.status.error_code == 0 for s in available)
  version = max(s.version for s in available)
  request.model_spec.version.value = version
  assert [s.version for s in models.GetModelStatus(request, timeout=60).model_version_status] == \
      [version]
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = model
  response = predict.GetModelMetadata(request, timeout=60)
  assert response.model_spec.name == model and response.model_spec.version.value == version
  signatures = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata["signature_def"].Unpack(signatures)
  sig = signatures.signature_def["serving_default"]
  assert list(sig.inputs) == ["x"] and sig.inputs["x"].dtype == 1  # DT_FLOAT
  assert sig.inputs["x"].tensor_shape.dim[0].size == -1
  assert {"mean", "stddev"} <= set(sig.outputs)
  return version


def check_grpc_predict(target, model, x):
  """Predict answers batch-first outputs, names the servable that ran, honours output_filter."""
  x = np.asarray(x, np.float32)
  predict, _ = grpc_stubs(target)
  response = predict.Predict(grpc_predict_request(model, x), timeout=60)
  assert response.model_spec.name == model
  assert response.model_spec.signature_name == "serving_default"
  assert response.model_spec.version.value >= 1
  outputs = grpc_outputs(response)
  assert {"mean", "stddev"} <= set(outputs)
  for value in outputs.values():
    assert value.shape[0] == len(x)
  named = predict.Predict(grpc_predict_request(model, x, signature="serving_default",
                                               version=response.model_spec.version.value),
                          timeout=60)
  filtered = predict.Predict(grpc_predict_request(model, x, output_filter=["stddev"]), timeout=60)
  assert list(filtered.outputs) == ["stddev"]
  for k, v in grpc_outputs(named).items():
    np.testing.assert_array_equal(v, outputs[k])
  np.testing.assert_array_equal(grpc_outputs(filtered)["stddev"], outputs["stddev"])
  return outputs


def _grpc_error(call, request, code):
  import grpc  # pylint: disable=g-import-not-at-top
  try:
    call(request, timeout=60)
  except grpc.RpcError as e:
    assert e.code() == getattr(grpc.StatusCode, code), (e.code(), e.details())
    assert e.details()
    return e.details()
  raise AssertionError(f"expected {code}, the call succeeded")


def check_grpc_bad_requests(target, model, in_dim):
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
  predict, models = grpc_stubs(target)
  good = np.full((1, in_dim), 0.5, np.float32)
  req = grpc_predict_request
  assert "no_such_model" in _grpc_error(predict.Predict, req("no_such_model", good), "NOT_FOUND")
  _grpc_error(predict.Predict, req(model, good, version=999999), "NOT_FOUND")
  _grpc_error(predict.Predict, req(model, np.full((1, in_dim + 1), .5, np.float32)),
              "INVALID_ARGUMENT")  # Wrong inner dimension.
  _grpc_error(predict.Predict, req(model, good[None]), "INVALID_ARGUMENT")  # Wrong rank.
  _grpc_error(predict.Predict, req(model, good.astype(np.float64)), "INVALID_ARGUMENT")  # dtype.
  _grpc_error(predict.Predict, req(model, np.array([["a"] * in_dim])), "INVALID_ARGUMENT")
  _grpc_error(predict.Predict, req(model, good, input_name="y"), "INVALID_ARGUMENT")
  _grpc_error(predict.Predict, req(model, good, output_filter=["nope"]), "INVALID_ARGUMENT")
  _grpc_error(predict.Predict, req(model, good, signature="no_such_sig"), "FAILED_PRECONDITION")
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = "no_such_model"
  _grpc_error(models.GetModelStatus, request, "NOT_FOUND")
  request.model_spec.name = model
  request.model_spec.version.value = 999999
  _grpc_error(models.GetModelStatus, request, "NOT_FOUND")
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = "no_such_model"
  _grpc_error(predict.GetModelMetadata, request, "NOT_FOUND")
  request.model_spec.name = model
  del request.metadata_field[:]
  _grpc_error(predict.GetModelMetadata, request, "INVALID_ARGUMENT")


def check_rest_equals_grpc(url, target, model, x):
  """The same request gets the same numbers, output names, status and metadata on both APIs."""
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, np.float32)
  rest = post(url, model, {"inputs": {"x": x.tolist()}})
  assert rest.status_code == 200, rest.text
  predict, _ = grpc_stubs(target)
  grpc_out = grpc_outputs(predict.Predict(grpc_predict_request(model, x), timeout=60))
  rest_out = rest.json()["outputs"]
  assert sorted(rest_out) == sorted(grpc_out)
  for k, v in grpc_out.items():
    # JSON carries float32 exactly (the shortest repr of the float32 as a double).
    np.testing.assert_array_equal(np.asarray(rest_out[k], v.dtype), v)
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = model
  signatures = get_model_metadata_pb2.SignatureDefMap()
  predict.GetModelMetadata(request, timeout=60).metadata["signature_def"].Unpack(signatures)
  rest_meta = requests.get(f"{url}/v1/models/{model}/metadata", timeout=60).json()
  assert rest_meta["metadata"]["signature_def"] == json_format.MessageToDict(
      signatures, preserving_proto_field_name=True)
