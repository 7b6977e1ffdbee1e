"""TF Serving's gRPC API over the serving core, on the official service bases and protos.

`PredictionService.Predict` and `GetModelMetadata` (the `signature_def` field) and
`ModelService.GetModelStatus`, from `tensorflow-serving-api`; tensors convert with
`tf.make_ndarray` / `tf.make_tensor_proto`. This module only translates: the core's
`StatusError` becomes the call's status code and message. The other methods (Classify, Regress,
MultiInference, HandleReloadConfigRequest) answer UNIMPLEMENTED.
"""

import concurrent.futures
from typing import Optional

import grpc
import numpy as np

from tfp_ext.serving.predict import PredictPath
from tfp_ext.serving.status import Code
from tfp_ext.serving.status import StatusError
from tfp_ext.serving.status import invalid_argument

__all__ = ["GrpcServer"]


def _model_spec(spec):
  """(name, version or None, label or None) of a `ModelSpec`."""
  version = spec.version.value if spec.HasField("version") else None
  label = spec.version_label or None
  return spec.name, version, label


def _abort(context, e: StatusError):
  context.abort(getattr(grpc.StatusCode, e.code.name), e.message)


def _check_shape(key, proto, specs, max_rows: int, max_elements: int) -> None:
  """Refuses a TensorProto whose shape cannot be the input's, before it becomes an array (a
  declared shape of 10^12 elements would otherwise be allocated)."""
  if key not in specs:
    raise invalid_argument(f"input {key!r} is not in the signature; it takes {sorted(specs)}")
  if proto.tensor_shape.unknown_rank:
    raise invalid_argument(f"input {key!r}: the TensorProto has an unknown rank")
  dims = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in dims):
    raise invalid_argument(f"input {key!r}: negative dimension in shape {dims}")
  want = specs[key].shape
  if want.rank is not None and len(dims) != want.rank:
    raise invalid_argument(f"input {key!r}: expected rank {want.rank}, got shape {dims}")
  if dims and dims[0] > max_rows:
    raise invalid_argument(f"input {key!r}: {dims[0]} rows, more than the limit of {max_rows} "
                           "(--max_rows_per_request)")
  if want.rank is not None:
    for got, w in zip(dims, want.as_list()):
      if w is not None and got != w:
        raise invalid_argument(f"input {key!r}: expected shape {want.as_list()}, got {dims}")
  if int(np.prod(dims, dtype=object)) > max_elements:
    raise invalid_argument(f"input {key!r}: shape {dims} holds more elements than a message "
                           f"may ({max_elements})")


def _tensor_feeds(inputs, specs=None, max_rows: Optional[int] = None,
                  max_elements: Optional[int] = None):
  """The request's TensorProtos as arrays (the predict path checks them against the signature);
  with `specs`, shapes are checked first."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feeds = {}
  for key, proto in inputs.items():
    if specs is not None:
      _check_shape(key, proto, specs, max_rows, max_elements)
    try:
      feeds[key] = np.asarray(tf.make_ndarray(proto))
    except Exception as e:  # pylint: disable=broad-except
      raise invalid_argument(f"input {key!r}: not a valid TensorProto ({type(e).__name__}: "
                             f"{e})") from e
  return feeds


def _services(path: PredictPath, max_message_bytes: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import status_pb2  # pylint: disable=g-import-not-at-top

  registry = path.registry
  error_codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
  states = get_model_status_pb2.ModelVersionStatus.State

  class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

    def Predict(self, request, context):  # pylint: disable=invalid-name
      name, version, label = _model_spec(request.model_spec)
      try:
        future = path.predict("GRPC", name, version, label, request.model_spec.signature_name,
                              lambda specs: _tensor_feeds(request.inputs, specs, path.max_rows,
                                                          max_message_bytes),
                              list(request.output_filter))
        result = future.result()
      except StatusError as e:
        _abort(context, e)
      except Exception as e:  # pylint: disable=broad-except
        _abort(context, StatusError(Code.INTERNAL, f"{type(e).__name__}: {e}"))
      response = predict_pb2.PredictResponse()
      response.model_spec.name = result.name
      response.model_spec.version.value = result.version
      response.model_spec.signature_name = result.signature_name
      for key, value in result.outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
      return response

    def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
      name, version, label = _model_spec(request.model_spec)
      try:
        if not request.metadata_field:
          raise invalid_argument("GetModelMetadataRequest must specify at least one "
                                 "metadata_field")
        for field in request.metadata_field:
          if field != "signature_def":
            raise invalid_argument(f"Metadata field {field} is not supported")
        servable = registry.resolve(name, version, label)
      except StatusError as e:
        _abort(context, e)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(servable.signature_def_map)
      return response

  class ModelService(model_service_pb2_grpc.ModelServiceServicer):

    def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
      name, version, label = _model_spec(request.model_spec)
      try:
        if label:
          version = registry.resolve(name, version, label).version
        statuses = registry.status(name, version)
      except StatusError as e:
        _abort(context, e)
      response = get_model_status_pb2.GetModelStatusResponse()
      for v, state, code, message in statuses:
        status = response.model_version_status.add()
        status.version = v
        status.state = states.Value(state)
        status.status.error_code = error_codes.values_by_name[code].number
        status.status.error_message = message
      return response

  return (PredictionService(), prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
          ModelService(), model_service_pb2_grpc.add_ModelServiceServicer_to_server)


class GrpcServer:
  """The gRPC front-end: `start()` binds `host:port` (0 picks a free port), `stop()` ends it."""

  def __init__(self, path: PredictPath, host: str, port: int, max_message_bytes: int,
               max_threads: int):
    self._path = path
    self.host, self.port = host, port
    self.max_message_bytes = max_message_bytes
    self.max_threads = max_threads
    self._server: Optional[grpc.Server] = None

  @property
  def target(self) -> str:
    host = self.host if ":" not in self.host else f"[{self.host}]"
    return f"{host}:{self.port}"

  def start(self) -> None:
    options = [("grpc.max_receive_message_length", self.max_message_bytes),
               ("grpc.max_send_message_length", self.max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(self.max_threads, "tfp-ext-grpc"),
                         options=options)
    prediction, add_prediction, model, add_model = _services(self._path,
                                                             self.max_message_bytes)
    add_prediction(prediction, server)
    add_model(model, server)
    try:
      port = server.add_insecure_port(self.target)
    except RuntimeError as e:
      raise OSError(f"Cannot bind gRPC to {self.target}: {e}") from e
    if not port:
      raise OSError(f"Cannot bind gRPC to {self.target}")
    self.port = port
    server.start()
    self._server = server

  def stop(self, grace: float = 5.0) -> None:
    if self._server is not None:
      self._server.stop(grace).wait(grace + 5)
      self._server = None
