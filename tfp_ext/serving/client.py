"""A small client for TF Serving's REST or gRPC API (the real server or `tfp_ext.serving.Server`).

REST with `http://HOST:PORT`, gRPC with `grpc://HOST:PORT` (the official `tensorflow-serving-api`
stubs); both give the same answers in the same form.
"""

from typing import Dict, Optional

import numpy as np
import requests

__all__ = ["Client", "ServingError"]


class ServingError(RuntimeError):
  """The server answered with an error: `status_code` (HTTP; over gRPC the HTTP status TF Serving
  maps the code to), the gRPC `code` name over gRPC, and the server's `message`."""

  def __init__(self, status_code: int, message: str, code: Optional[str] = None):
    super().__init__(f"{code or 'HTTP'} {status_code}: {message}")
    self.status_code = status_code
    self.message = message
    self.code = code


class Client:
  """Calls one model of a TF Serving REST (`http://`) or gRPC (`grpc://`) endpoint.

  #### Examples

  ```python
  client = tfp_ext.serving.Client("http://127.0.0.1:8501", "quickstart")
  out = client.predict(np.array([[0.5], [2.0]], np.float32))
  out["mean"], out["stddev"]          # numpy arrays, batch first
  client.status(), client.metadata()
  grpc_client = tfp_ext.serving.Client("grpc://127.0.0.1:8500", "quickstart")  # Same answers.
  ```
  """

  def __init__(self, url: str, model_name: str, timeout: float = 30.0,
               session: Optional[requests.Session] = None,
               max_message_bytes: int = 64 * 1024 * 1024):
    """Args: url: `http://HOST:PORT` (REST) or `grpc://HOST:PORT` (gRPC); model_name: the served
    name; timeout: seconds per call; max_message_bytes: gRPC message size limit, both ways."""
    if not url.startswith(("http://", "https://", "grpc://")):
      raise ValueError(f"url must start with http://, https:// or grpc://, got {url!r}.")
    if not model_name or "/" in model_name or ":" in model_name:
      raise ValueError(f"Invalid model name {model_name!r}.")
    self.url = url.rstrip("/")
    self.model_name = model_name
    self.timeout = timeout
    self.grpc = url.startswith("grpc://")
    self._session = None
    self._channel = None
    self._dtypes = {}
    if self.grpc:
      import grpc  # pylint: disable=g-import-not-at-top
      from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
      from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
      self._channel = grpc.insecure_channel(
          self.url[len("grpc://"):],
          options=[("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)])
      self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
      self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
    else:
      self._session = session or requests.Session()

  @staticmethod
  def _check_version(version):
    if version is not None and (isinstance(version, bool) or int(version) != version or
                                version < 0):
      raise ValueError(f"version must be a non-negative int, got {version!r}.")

  def _spec(self, spec, version, signature_name=None):
    self._check_version(version)
    spec.name = self.model_name
    if version is not None:
      spec.version.value = int(version)
    if signature_name is not None:
      spec.signature_name = signature_name

  def _call(self, method, request):
    import grpc  # pylint: disable=g-import-not-at-top
    from tfp_ext.serving.status import Code  # pylint: disable=g-import-not-at-top
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as e:
      name = e.code().name
      http = Code[name].http_status if name in Code.__members__ else 500
      raise ServingError(http, e.details() or "", code=name) from e

  def _model_url(self, version: Optional[int]) -> str:
    url = f"{self.url}/v1/models/{self.model_name}"
    self._check_version(version)
    if version is not None:
      url += f"/versions/{int(version)}"
    return url

  @staticmethod
  def _decode(response) -> dict:
    try:
      payload = response.json()
    except ValueError:
      payload = None
    if response.status_code != 200:
      message = payload.get("error") if isinstance(payload, dict) else None
      raise ServingError(response.status_code, message or response.text[:500])
    if not isinstance(payload, dict):
      raise ServingError(response.status_code, f"Not a JSON object: {response.text[:200]}")
    return payload

  def status(self, version: Optional[int] = None) -> dict:
    """`GET /v1/models/NAME[/versions/N]` or `GetModelStatus`: the `model_version_status`
    response, as REST's JSON."""
    if not self.grpc:
      return self._decode(self._session.get(self._model_url(version), timeout=self.timeout))
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
    request = get_model_status_pb2.GetModelStatusRequest()
    self._spec(request.model_spec, version)
    response = self._call(self._model_stub.GetModelStatus, request)
    return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)

  def metadata(self, version: Optional[int] = None) -> dict:
    """`GET .../metadata` or `GetModelMetadata`: the model spec and signature definitions, as
    REST's JSON."""
    if not self.grpc:
      return self._decode(self._session.get(self._model_url(version) + "/metadata",
                                            timeout=self.timeout))
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request.model_spec, version)
    response = self._call(self._predict_stub.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {"model_spec": {"name": response.model_spec.name, "signature_name": "",
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signatures, preserving_proto_field_name=True)}}

  def predict_json(self, body: dict, version: Optional[int] = None) -> dict:
    """POSTs a raw predict request body (REST only); returns the raw JSON response."""
    if self.grpc:
      raise ValueError("predict_json speaks REST; this client speaks gRPC: use predict.")
    return self._decode(self._session.post(self._model_url(version) + ":predict", json=body,
                                           timeout=self.timeout))

  def predict(self, x, signature_name: Optional[str] = None, version: Optional[int] = None,
              columnar: bool = True, output_filter=()) -> Dict[str, np.ndarray]:
    """Predicts for a batch `x` (batch first); returns `{output name: array}`.

    Args:
      x: an array-like batch for the single input `x`, or a dict `{input name: batch}`.
      signature_name: default `serving_default`.
      version: a specific version; default the latest.
      columnar: REST: send `{"inputs": ...}` (default) or the row format `{"instances": ...}`.
      output_filter: gRPC: only these outputs (default all).
    """
    feeds = x if isinstance(x, dict) else {"x": x}
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    for k, v in feeds.items():
      if v.ndim < 1 or v.shape[0] == 0:
        raise ValueError(f"Input {k!r} needs a non-empty batch dimension first, got shape "
                         f"{v.shape}.")
      if v.dtype.kind not in "fiu":
        raise ValueError(f"Input {k!r} must be numeric, got dtype {v.dtype}.")
      if not np.all(np.isfinite(v)):
        raise ValueError(f"Input {k!r} has NaN or infinite values.")
    if self.grpc:
      return self._predict_grpc(feeds, signature_name, version, output_filter)
    if output_filter:
      raise ValueError("output_filter is a gRPC field; REST answers every output.")
    if columnar:
      body = {"inputs": {k: v.tolist() for k, v in feeds.items()}}
    else:
      n = next(iter(feeds.values())).shape[0]
      body = {"instances": [{k: v[i].tolist() for k, v in feeds.items()} for i in range(n)]}
    if signature_name is not None:
      body["signature_name"] = signature_name
    response = self.predict_json(body, version)
    if columnar:
      out = response["outputs"]
      if not isinstance(out, dict):
        raise ServingError(200, "The model has a single unnamed output; use predict_json.")
      return {k: np.asarray(v) for k, v in out.items()}
    rows = response["predictions"]
    if not rows or not isinstance(rows[0], dict):
      raise ServingError(200, "The model has a single unnamed output; use predict_json.")
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}

  def _input_dtypes(self, signature_name, version):
    """`{input: numpy dtype}` of a signature, from the model's metadata (asked once)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
    key = (signature_name, version)
    if key not in self._dtypes:
      signatures = self.metadata(version)["metadata"]["signature_def"]["signature_def"]
      inputs = signatures.get(signature_name, {}).get("inputs", {})
      self._dtypes[key] = {
          k: tf.dtypes.as_dtype(types_pb2.DataType.Value(v["dtype"])).as_numpy_dtype
          for k, v in inputs.items() if "dtype" in v}
    return self._dtypes[key]

  def _predict_grpc(self, feeds, signature_name, version, output_filter):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, version, signature_name)
    dtypes = self._input_dtypes(request.model_spec.signature_name or "serving_default", version)
    for k, v in feeds.items():
      # JSON numbers carry no dtype and REST casts them to the input's; a TensorProto carries
      # one, so cast here (e.g. NumPy's float64 to a float32 input) for the same answers.
      request.inputs[k].CopyFrom(tf.make_tensor_proto(v.astype(dtypes.get(k, v.dtype))))
    request.output_filter.extend(output_filter)
    response = self._call(self._predict_stub.Predict, request)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

  def close(self) -> None:
    """Closes the HTTP session or the gRPC channel."""
    if self._session is not None:
      self._session.close()
    if self._channel is not None:
      self._channel.close()
