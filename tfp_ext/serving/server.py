"""A local server speaking TF Serving's REST and gRPC APIs, for development and tests.

It serves the SavedModels under each model's base path (TF Serving's layout `BASE/<version>/`)
with the same URLs, RPCs, request and response formats and status codes as
`tensorflow_model_server`. It is laid out as TF Serving is: a model registry
(`tfp_ext.serving.registry`: versions, polling, loaded signatures) and one predict path
(`tfp_ext.serving.predict`) that both front-ends call, `rest.py` (REST, `port`) and `grpc.py`
(gRPC, `grpc_port`); with batching parameters a batcher (`batching.py`) sits between them and
the signatures, and with a monitoring config the predict path feeds Prometheus metrics
(`metrics.py`) served on the REST port.

New versions appearing under a base path are loaded in the background and swapped in (the
`latest` version policy); requests in flight finish on the version they started with, so none is
dropped.

Safe by default: binds 127.0.0.1, rejects REST bodies larger than `max_body_bytes` (413), REST
bodies nested deeper than `max_json_depth` (400), requests of more than `max_rows_per_request`
rows (400 / INVALID_ARGUMENT) and gRPC messages larger than `grpc_max_message_bytes`
(RESOURCE_EXHAUSTED), each before any work is done for the request; model names and versions
from requests are only looked up among the models loaded from the configured base paths, never
used to build a file path.
"""

import logging
import os
import re
import threading
import time
from typing import Dict, List, Optional, Union

from tfp_ext.serving.batching import BatchingParameters
from tfp_ext.serving.batching import Batcher
from tfp_ext.serving.batching import read_batching_parameters_file
from tfp_ext.serving.grpc import GrpcServer
from tfp_ext.serving.metrics import Metrics
from tfp_ext.serving.metrics import MonitoringConfig
from tfp_ext.serving.metrics import read_monitoring_config_file
from tfp_ext.serving.model_config import ModelConfig
from tfp_ext.serving.model_config import read_model_config_file
from tfp_ext.serving.predict import DEFAULT_MAX_ROWS
from tfp_ext.serving.predict import PredictPath
from tfp_ext.serving.registry import ModelRegistry
from tfp_ext.serving.rest import build_app

__all__ = ["Server", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_JSON_DEPTH", "DEFAULT_MAX_ROWS"]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
_log = logging.getLogger("tfp_ext.serving")


class Server:
  """A TF-Serving-compatible REST and gRPC server for SavedModels exported by `export`.

  #### Examples

  ```python
  with tfp_ext.serving.Server({"m": "serving/models/m"}, port=0, grpc_port=0) as server:
    tfp_ext.serving.Client(server.url, "m").predict(x)           # REST
    tfp_ext.serving.Client(f"grpc://{server.grpc_target}", "m").predict(x)   # gRPC
  ```

  From the shell: `tfp-ext serve --model_name=m --model_base_path=serving/models/m`.
  """

  def __init__(self, models: Optional[Dict[str, str]] = None,
               model_config_file: Optional[str] = None, host: str = "127.0.0.1",
               port: Optional[int] = 8501, file_system_poll_wait_seconds: float = 1.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, num_threads: int = 8,
               grpc_port: Optional[int] = None, grpc_host: Optional[str] = None,
               grpc_max_message_bytes: int = DEFAULT_MAX_BODY_BYTES,
               grpc_max_threads: int = 64,
               batching: Union[BatchingParameters, str, None] = None,
               monitoring: Union[MonitoringConfig, str, None] = None,
               max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
               max_rows_per_request: int = DEFAULT_MAX_ROWS):
    """Configures the server; models load on `start()` / `serve_forever()`.

    Args:
      models: model name -> base path (TF Serving's `--model_name` / `--model_base_path`).
      model_config_file: a TF Serving `ModelServerConfig` text file (instead of `models`).
      host: address the REST API binds; the default accepts local connections only.
      port: REST port; 0 picks a free one (see `url` after starting); None: no REST API.
      file_system_poll_wait_seconds: how often base paths are polled for new versions
        (0 disables polling after the initial load).
      max_body_bytes: larger REST request bodies get HTTP 413.
      num_threads: concurrent signature calls without batching.
      grpc_port: gRPC port (TF Serving's `--port`); 0 picks a free one (see `grpc_target`);
        None: no gRPC API.
      grpc_host: address the gRPC API binds; default `host`.
      grpc_max_message_bytes: larger gRPC messages (either way) fail with RESOURCE_EXHAUSTED.
      grpc_max_threads: gRPC calls handled at once (each waits for its answer in a thread).
      batching: `BatchingParameters`, or the path of a `--batching_parameters_file`: merges
        concurrent predict requests into batches (TF Serving's `--enable_batching`).
      monitoring: `MonitoringConfig`, or the path of a `--monitoring_config_file`: with
        `prometheus_config { enable: true }` the REST port serves Prometheus metrics.
      max_json_depth: REST bodies nesting arrays and objects deeper get HTTP 400 (checked on the
        raw bytes, before parsing).
      max_rows_per_request: requests with more rows (the batch dimension) get HTTP 400 /
        INVALID_ARGUMENT, checked before the inputs become arrays.
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
    if (max_body_bytes <= 0 or num_threads <= 0 or file_system_poll_wait_seconds < 0 or
        grpc_max_message_bytes <= 0 or grpc_max_threads <= 0 or max_json_depth <= 0 or
        max_rows_per_request <= 0):
      raise ValueError("max_body_bytes, num_threads, grpc_max_message_bytes, grpc_max_threads, "
                       "max_json_depth and max_rows_per_request must be positive, "
                       "file_system_poll_wait_seconds non-negative.")
    if port is None and grpc_port is None:
      raise ValueError("Give a REST `port` or a `grpc_port` (or both).")
    if isinstance(batching, str):
      batching = read_batching_parameters_file(batching)
    if isinstance(monitoring, str):
      monitoring = read_monitoring_config_file(monitoring)
    if monitoring is not None and monitoring.enable and port is None:
      raise ValueError("Prometheus metrics are served on the REST port: give `port`.")
    self.registry = ModelRegistry(configs)
    self.host, self.port = host, port
    self.grpc_host = grpc_host or host
    self.grpc_port = grpc_port
    self.poll_wait = file_system_poll_wait_seconds
    self.max_body_bytes = max_body_bytes
    self.num_threads = num_threads
    self.grpc_max_message_bytes = grpc_max_message_bytes
    self.grpc_max_threads = grpc_max_threads
    self.max_json_depth = max_json_depth
    self.max_rows_per_request = max_rows_per_request
    self.batching = batching
    self.monitoring = monitoring
    self.metrics = Metrics() if monitoring is not None and monitoring.enable else None
    self._stop = threading.Event()
    self._poller = None
    self._thread = None
    self._uvicorn = None
    self._grpc = None
    self._path = None
    self.app = None

  # ---------------------------------------------------------------- model management

  def poll(self) -> None:
    """Scans every base path once and loads new versions (also done periodically)."""
    self.registry.poll()

  def _poll_loop(self):
    while not self._stop.wait(self.poll_wait):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        _log.exception("Polling the model base paths failed")

  # ---------------------------------------------------------------- lifecycle

  @property
  def url(self) -> str:
    """`http://HOST:PORT` of the running REST API."""
    host = self.host if ":" not in self.host else f"[{self.host}]"
    return f"http://{host}:{self.port}"

  @property
  def grpc_target(self) -> str:
    """`HOST:PORT` of the running gRPC API (a channel target)."""
    return self._grpc.target if self._grpc is not None else f"{self.grpc_host}:{self.grpc_port}"

  @property
  def versions(self) -> Dict[str, List[int]]:
    """The loaded versions of each model."""
    return self.registry.versions()

  def _prepare(self):
    self.poll()
    for name, versions in self.registry.versions().items():
      if not versions:
        _log.warning("No loadable version of %r yet; polling.", name)
    self._path = PredictPath(self.registry, metrics=self.metrics, num_threads=self.num_threads,
                             max_rows=self.max_rows_per_request)
    if self.batching is not None:
      self._path.batcher = Batcher(self.batching, on_batch=self._path.on_batch)
    if self.port is not None:
      import uvicorn  # pylint: disable=g-import-not-at-top
      self.app = build_app(self._path, self.max_body_bytes, self.metrics,
                           self.monitoring.path if self.metrics is not None else None,
                           max_json_depth=self.max_json_depth)
      # uvicorn binds the address itself: handing it a pre-bound socket measured ~40 ms of extra
      # latency per request here.
      config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                              access_log=False, timeout_graceful_shutdown=5)
      self._uvicorn = uvicorn.Server(config)
    if self.grpc_port is not None:
      self._grpc = GrpcServer(self._path, self.grpc_host, self.grpc_port,
                              self.grpc_max_message_bytes, self.grpc_max_threads)
      try:
        self._grpc.start()
      except OSError:
        self._grpc = None
        self.stop()
        raise
      self.grpc_port = self._grpc.port
    self._stop.clear()
    if self.poll_wait > 0:
      self._poller = threading.Thread(target=self._poll_loop, name="tfp-ext-poller", daemon=True)
      self._poller.start()

  def start(self, timeout: float = 60.0) -> "Server":
    """Loads the models and serves from background threads; returns once accepting requests."""
    self._prepare()
    if self._uvicorn is None:
      return self
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
    apis = []
    if self._uvicorn is not None:
      apis.append(f"REST on {self.url}")
    if self._grpc is not None:
      apis.append(f"gRPC on {self.grpc_target}")
    print(f"Serving {self.registry.names}: {', '.join(apis)} (TF Serving API"
          f"{', batching' if self.batching else ''})", flush=True)
    try:
      if self._uvicorn is not None:
        self._uvicorn.run()
      else:
        self._grpc._server.wait_for_termination()  # pylint: disable=protected-access
    except KeyboardInterrupt:
      pass
    finally:
      self.stop()

  def stop(self) -> None:
    """Stops serving and polling."""
    self._stop.set()
    if self._uvicorn is not None:
      self._uvicorn.should_exit = True
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None
    if self._grpc is not None:
      self._grpc.stop()
    if self._path is not None:
      if self._path.batcher is not None:
        self._path.batcher.stop()
      self._path.close()
    if self._poller is not None:
      self._poller.join(timeout=10)
      self._poller = None

  def __enter__(self) -> "Server":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()
