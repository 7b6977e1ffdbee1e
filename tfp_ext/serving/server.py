"""A local server speaking TF Serving's REST API, for development and tests.

It serves the SavedModels under each model's base path (TF Serving's layout `BASE/<version>/`)
with the same URLs, request and response formats and HTTP error codes as `tensorflow_model_server`:

* `GET  /v1/models/NAME[/versions/N]`: version status;
* `GET  /v1/models/NAME[/versions/N]/metadata`: the signature definitions;
* `POST /v1/models/NAME[/versions/N]:predict`: `{"instances": ...}` (row format) or
  `{"inputs": ...}` (columnar), optional `"signature_name"`.

New versions appearing under a base path are loaded in the background and swapped in (the
`latest` version policy); requests in flight finish on the version they started with, so none is
dropped. Signatures run in a thread pool so requests are served concurrently.

Safe by default: binds 127.0.0.1, rejects bodies larger than `max_body_bytes` (413), and model
names and versions from URLs are only looked up among the models loaded from the configured base
paths, never used to build a file path.
"""

import json
import logging
import os
import re
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from tfp_ext.serving.model_config import ModelConfig
from tfp_ext.serving.model_config import read_model_config_file

__all__ = ["Server", "DEFAULT_MAX_BODY_BYTES"]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_log = logging.getLogger("tfp_ext.serving")
_VERSION_DIR = re.compile(r"^[0-9]+$")
_GET_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+))?(?P<meta>/metadata)?$")
_POST_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+))?:(?P<verb>[a-z]+)$")


class _HTTPError(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


class _Servable:
  """One loaded version of a model."""

  def __init__(self, name: str, version: int, path: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    self.name, self.version, self.path = name, version, path
    self._tf = tf
    self.loaded = tf.saved_model.load(path, tags=["serve"])
    self.signatures = dict(self.loaded.signatures)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    meta = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
    self.signature_def_map = {
        "signature_def": {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                          for k, v in meta.signature_def.items()}}
    self.inputs = {}  # signature -> {input name: TensorSpec}
    self.outputs = {}  # signature -> sorted output names
    for key, fn in self.signatures.items():
      _, kwargs = fn.structured_input_signature
      self.inputs[key] = dict(kwargs)
      self.outputs[key] = sorted(fn.structured_outputs)

  def run(self, signature: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    fn = self.signatures[signature]
    out = fn(**{k: self._tf.constant(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items()}


class _Model:
  """A model name, its base path and its currently loaded versions (newest `num_versions`)."""

  def __init__(self, config: ModelConfig):
    self.config = config
    self.versions: Dict[int, _Servable] = {}
    self.failed: Dict[int, str] = {}

  def poll(self) -> None:
    """Loads new versions found on disk, then drops versions beyond `num_versions`."""
    base = self.config.base_path
    try:
      on_disk = sorted((int(d) for d in os.listdir(base)
                        if _VERSION_DIR.match(d) and os.path.isdir(os.path.join(base, d))),
                       reverse=True)
    except FileNotFoundError:
      on_disk = []
    wanted = on_disk[:self.config.num_versions]
    new = dict(self.versions)
    for v in wanted:
      if v in new or v in self.failed:
        continue
      path = os.path.join(base, str(v))
      try:
        _log.info("Loading %s version %d from %s", self.config.name, v, path)
        new[v] = _Servable(self.config.name, v, path)
      except Exception as e:  # pylint: disable=broad-except
        # Keep serving what is loaded; a broken version is reported by the status endpoint.
        _log.error("Failed to load %s version %d: %s", self.config.name, v, e)
        self.failed[v] = f"{type(e).__name__}: {e}"
    # Versions deleted from disk are unloaded (a rollback), unless nothing else could be served.
    keep = [v for v in sorted(new, reverse=True) if v in on_disk][:self.config.num_versions]
    if not keep:
      keep = sorted(new, reverse=True)[:self.config.num_versions]
    # One assignment: a request sees either the old or the new dict, never a partial update.
    self.versions = {v: new[v] for v in keep}

  def get(self, version: Optional[int]) -> _Servable:
    versions = self.versions
    if version is None:
      if not versions:
        raise _HTTPError(404, f"Servable not found for request: Latest({self.config.name})")
      return versions[max(versions)]
    if version not in versions:
      raise _HTTPError(404, f"Servable not found for request: Specific({self.config.name}, "
                       f"{version})")
    return versions[version]


def _as_array(value, spec, what: str) -> np.ndarray:
  """Converts JSON `value` to an array with `spec`'s dtype and shape, or raises a 400."""
  dtype = spec.dtype.as_numpy_dtype
  stack = [value]
  while stack:  # Reject strings, null and booleans for numeric inputs, as TF Serving does.
    v = stack.pop()
    if isinstance(v, list):
      stack.extend(v)
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
      raise _HTTPError(400, f"{what}: expected numbers for a {spec.dtype.name} tensor, got "
                       f"{type(v).__name__} {json.dumps(v)[:40]}")
  try:
    arr = np.asarray(value, dtype=dtype)
  except (ValueError, OverflowError) as e:
    raise _HTTPError(400, f"{what}: the list is ragged or not numeric ({e})") from e
  want = spec.shape
  if want.rank is not None:
    if arr.ndim != want.rank:
      raise _HTTPError(400, f"{what}: expected shape {_shape_str(want)} (rank {want.rank}), "
                       f"got shape {list(arr.shape)}")
    for got, w in zip(arr.shape, want.as_list()):
      if w is not None and got != w:
        raise _HTTPError(400, f"{what}: expected shape {_shape_str(want)}, got shape "
                         f"{list(arr.shape)}")
  if arr.shape and arr.shape[0] == 0:
    raise _HTTPError(400, f"{what}: the batch is empty")
  return arr


def _shape_str(shape) -> str:
  return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def _parse_predict(body: bytes, servable: _Servable):
  """Validates a predict body; returns (signature, feeds, row_format)."""
  try:
    request = json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    raise _HTTPError(400, f"JSON Parse error: {e}") from e
  if not isinstance(request, dict):
    raise _HTTPError(400, "JSON Value: the request must be a JSON object")
  unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
  if unknown:
    raise _HTTPError(400, f"Unknown key(s) {unknown} in the request; expected 'instances' or "
                     "'inputs' and optionally 'signature_name'")
  signature = request.get("signature_name", "serving_default")
  if not isinstance(signature, str):
    raise _HTTPError(400, "'signature_name' must be a string")
  if signature not in servable.signatures:
    raise _HTTPError(400, f"Serving signature name: \"{signature}\" not found in signature def "
                     f"(available: {sorted(servable.signatures)})")
  has_rows, has_cols = "instances" in request, "inputs" in request
  if has_rows == has_cols:
    raise _HTTPError(400, "Missing 'inputs' or 'instances' key" if not has_rows else
                     "Not both 'inputs' and 'instances' can be set")
  specs = servable.inputs[signature]
  feeds = {}
  if has_rows:
    rows = request["instances"]
    if not isinstance(rows, list) or not rows:
      raise _HTTPError(400, "'instances' must be a non-empty JSON list")
    if all(isinstance(r, dict) for r in rows):
      for key, spec in specs.items():
        if any(key not in r for r in rows):
          raise _HTTPError(400, f"Every instance needs the input {key!r}")
        feeds[key] = _as_array([r[key] for r in rows], spec, f"input {key!r}")
      extra = sorted({k for r in rows for k in r} - set(specs))
      if extra:
        raise _HTTPError(400, f"Unknown input(s) {extra}; the signature takes {sorted(specs)}")
    elif any(isinstance(r, dict) for r in rows):
      raise _HTTPError(400, "Instances mix named (object) and unnamed values")
    elif len(specs) == 1:
      (key, spec), = specs.items()
      feeds[key] = _as_array(rows, spec, f"input {key!r}")
    else:
      raise _HTTPError(400, f"The signature has inputs {sorted(specs)}: each instance must be an "
                       "object naming them")
  else:
    cols = request["inputs"]
    if isinstance(cols, dict):
      missing, extra = sorted(set(specs) - set(cols)), sorted(set(cols) - set(specs))
      if missing or extra:
        raise _HTTPError(400, f"'inputs' must name exactly {sorted(specs)}; missing {missing}, "
                         f"unknown {extra}")
      feeds = {k: _as_array(cols[k], specs[k], f"input {k!r}") for k in specs}
    elif len(specs) == 1:
      (key, spec), = specs.items()
      feeds[key] = _as_array(cols, spec, f"input {key!r}")
    else:
      raise _HTTPError(400, f"The signature has inputs {sorted(specs)}: 'inputs' must be an "
                       "object naming them")
  batch = {v.shape[0] for v in feeds.values() if v.ndim}
  if len(batch) > 1:
    raise _HTTPError(400, f"Inputs have different batch sizes {sorted(batch)}")
  return signature, feeds, has_rows


def _format_response(outputs: Dict[str, np.ndarray], row_format: bool) -> dict:
  names = sorted(outputs)
  if row_format:
    if len(names) == 1:
      return {"predictions": outputs[names[0]].tolist()}
    lists = {k: outputs[k].tolist() for k in names}
    n = len(lists[names[0]])
    return {"predictions": [{k: lists[k][i] for k in names} for i in range(n)]}
  if len(names) == 1:
    return {"outputs": outputs[names[0]].tolist()}
  return {"outputs": {k: outputs[k].tolist() for k in names}}


class Server:
  """A TF-Serving-compatible REST server for SavedModels exported by `tfp_ext.serving.export`.

  #### Examples

  ```python
  with tfp_ext.serving.Server({"m": "serving/models/m"}, port=0) as server:
    client = tfp_ext.serving.Client(server.url, "m")
    client.predict(x)
  ```

  From the shell: `tfp-ext serve --model_name=m --model_base_path=serving/models/m`.
  """

  def __init__(self, models: Optional[Dict[str, str]] = None,
               model_config_file: Optional[str] = None, host: str = "127.0.0.1",
               port: int = 8501, file_system_poll_wait_seconds: float = 1.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, num_threads: int = 8):
    """Configures the server; models load on `start()` / `serve_forever()`.

    Args:
      models: model name -> base path (TF Serving's `--model_name` / `--model_base_path`).
      model_config_file: a TF Serving `ModelServerConfig` text file (instead of `models`).
      host: address to bind; the default accepts local connections only.
      port: TCP port; 0 picks a free one (see `url` after starting).
      file_system_poll_wait_seconds: how often base paths are polled for new versions
        (0 disables polling after the initial load).
      max_body_bytes: larger request bodies get HTTP 413.
      num_threads: concurrent model calls.
    """
    if (models is None) == (model_config_file is None):
      raise ValueError("Give exactly one of `models` (name -> base path) or `model_config_file`.")
    if model_config_file is not None:
      configs = read_model_config_file(model_config_file)
    else:
      if not models:
        raise ValueError("`models` is empty.")
      configs = []
      for name, base in models.items():
        if not name or not re.match(r"^[A-Za-z0-9_.-]+$", name):
          raise ValueError(f"Model name {name!r} may only use letters, digits, '_', '.', '-'.")
        configs.append(ModelConfig(name, os.path.abspath(base)))
    for c in configs:
      if not os.path.isdir(c.base_path):
        raise ValueError(f"Model base path {c.base_path} of {c.name!r} is not a directory.")
    if max_body_bytes <= 0 or num_threads <= 0 or file_system_poll_wait_seconds < 0:
      raise ValueError("max_body_bytes and num_threads must be positive, "
                       "file_system_poll_wait_seconds non-negative.")
    self._models = {c.name: _Model(c) for c in configs}
    self.host, self.port = host, port
    self.poll_wait = file_system_poll_wait_seconds
    self.max_body_bytes = max_body_bytes
    self.num_threads = num_threads
    self._stop = threading.Event()
    self._poller = None
    self._thread = None
    self._uvicorn = None
    self.app = self._build_app()

  # ---------------------------------------------------------------- model management

  def poll(self) -> None:
    """Scans every base path once and loads new versions (also done periodically)."""
    for m in self._models.values():
      m.poll()

  def _poll_loop(self):
    while not self._stop.wait(self.poll_wait):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        _log.exception("Polling the model base paths failed")

  def _model(self, name: str) -> _Model:
    # Only names from the configuration exist; a URL name is never joined into a path.
    model = self._models.get(name)
    if model is None:
      raise _HTTPError(404, f"Servable not found for request: Latest({name})")
    return model

  # ---------------------------------------------------------------- HTTP

  def _build_app(self):
    from starlette.applications import Starlette  # pylint: disable=g-import-not-at-top
    from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
    from starlette.responses import Response  # pylint: disable=g-import-not-at-top
    from starlette.routing import Route  # pylint: disable=g-import-not-at-top
    import anyio  # pylint: disable=g-import-not-at-top

    limiter = anyio.CapacityLimiter(self.num_threads)

    def error(e: _HTTPError):
      return JSONResponse({"error": e.message}, status_code=e.status)

    def json_response(payload, status=200):
      # TF Serving writes NaN/Infinity literally rather than failing.
      return Response(json.dumps(payload, allow_nan=True), status_code=status,
                      media_type="application/json")

    async def read_body(request) -> bytes:
      length = request.headers.get("content-length")
      if length is not None:
        try:
          if int(length) > self.max_body_bytes:
            raise _HTTPError(413, f"Request body of {length} bytes exceeds the limit of "
                             f"{self.max_body_bytes} bytes")
        except ValueError as e:
          raise _HTTPError(400, "Invalid Content-Length header") from e
      chunks, size = [], 0
      async for chunk in request.stream():  # Also bounds chunked bodies without a length.
        size += len(chunk)
        if size > self.max_body_bytes:
          raise _HTTPError(413, f"Request body exceeds the limit of {self.max_body_bytes} bytes")
        chunks.append(chunk)
      return b"".join(chunks)

    async def get(request):
      try:
        m = _GET_PATH.match(request.path_params["rest"])
        if not m:
          raise _HTTPError(404, f"Malformed request: GET {request.url.path}")
        model = self._model(m["name"])
        version = int(m["version"]) if m["version"] else None
        if m["meta"]:
          servable = model.get(version)
          return json_response({
              "model_spec": {"name": model.config.name, "signature_name": "",
                             "version": str(servable.version)},
              "metadata": {"signature_def": servable.signature_def_map}})
        if version is None:
          statuses = [(v, "AVAILABLE", "OK", "") for v in sorted(model.versions, reverse=True)]
          statuses += [(v, "END", "UNKNOWN", msg) for v, msg in sorted(model.failed.items())
                       if v not in model.versions]
          if not statuses:
            raise _HTTPError(404, f"Could not find any versions of model {model.config.name}")
        else:
          if version in model.versions:
            statuses = [(version, "AVAILABLE", "OK", "")]
          elif version in model.failed:
            statuses = [(version, "END", "UNKNOWN", model.failed[version])]
          else:
            raise _HTTPError(404, f"Could not find version {version} of model "
                             f"{model.config.name}")
        return json_response({"model_version_status": [
            {"version": str(v), "state": s, "status": {"error_code": c, "error_message": msg}}
            for v, s, c, msg in statuses]})
      except _HTTPError as e:
        return error(e)

    async def post(request):
      try:
        m = _POST_PATH.match(request.path_params["rest"])
        if not m:
          raise _HTTPError(404, f"Malformed request: POST {request.url.path}")
        model = self._model(m["name"])
        if m["verb"] != "predict":
          raise _HTTPError(400, f"Only :predict is supported, got :{m['verb']}")
        body = await read_body(request)
        servable = model.get(int(m["version"]) if m["version"] else None)
        signature, feeds, row_format = _parse_predict(body, servable)
        try:
          outputs = await anyio.to_thread.run_sync(servable.run, signature, feeds,
                                                   limiter=limiter)
        except Exception as e:  # pylint: disable=broad-except
          raise _HTTPError(400 if "InvalidArgument" in type(e).__name__ else 500,
                           f"{type(e).__name__}: {e}") from e
        return json_response(_format_response(outputs, row_format))
      except _HTTPError as e:
        return error(e)

    async def not_found(request, exc):  # pylint: disable=unused-argument
      return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}"},
                          status_code=404)

    async def method_not_allowed(request, exc):  # pylint: disable=unused-argument
      return JSONResponse({"error": f"Method {request.method} is not allowed here"},
                          status_code=405)

    routes = [Route("/v1/models/{rest:path}", get, methods=["GET"]),
              Route("/v1/models/{rest:path}", post, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})

  # ---------------------------------------------------------------- lifecycle

  @property
  def url(self) -> str:
    """`http://HOST:PORT` of the running server."""
    host = self.host if ":" not in self.host else f"[{self.host}]"
    return f"http://{host}:{self.port}"

  @property
  def versions(self) -> Dict[str, List[int]]:
    """The loaded versions of each model."""
    return {name: sorted(m.versions) for name, m in self._models.items()}

  def _prepare(self):
    import uvicorn  # pylint: disable=g-import-not-at-top
    self.poll()
    for name, m in self._models.items():
      if not m.versions:
        _log.warning("No loadable version of %r under %s yet; polling.", name,
                     m.config.base_path)
    # uvicorn binds the address itself: handing it a pre-bound socket measured ~40 ms of extra
    # latency per request here.
    config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=5)
    self._uvicorn = uvicorn.Server(config)
    self._stop.clear()
    if self.poll_wait > 0:
      self._poller = threading.Thread(target=self._poll_loop, name="tfp-ext-poller", daemon=True)
      self._poller.start()

  def start(self, timeout: float = 60.0) -> "Server":
    """Loads the models and serves from a background thread; returns once accepting requests."""
    self._prepare()
    self._thread = threading.Thread(target=self._uvicorn.run, name="tfp-ext-server", daemon=True)
    self._thread.start()
    deadline = time.monotonic() + timeout
    while not self._uvicorn.started:
      if not self._thread.is_alive() or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(f"The server did not start on {self.url}.")
      time.sleep(0.02)
    self.port = self._uvicorn.servers[0].sockets[0].getsockname()[1]  # The chosen one if 0.
    return self

  def serve_forever(self) -> None:
    """Loads the models and serves in this thread until interrupted (Ctrl-C / SIGTERM)."""
    self._prepare()
    print(f"Serving {sorted(self._models)} on {self.url} (REST, TF Serving API)", flush=True)
    try:
      self._uvicorn.run()
    finally:
      self._stop.set()

  def stop(self) -> None:
    """Stops serving and polling."""
    self._stop.set()
    if self._uvicorn is not None:
      self._uvicorn.should_exit = True
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None
    if self._poller is not None:
      self._poller.join(timeout=10)
      self._poller = None

  def __enter__(self) -> "Server":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()
