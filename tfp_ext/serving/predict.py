"""The predict path that both transports call, as TF Serving's `predict_util`.

A transport parses its request into a model spec, a signature name, a function that makes the
input arrays from the signature's input specs, and an output filter. The path resolves the
servable, checks the inputs against the signature (names, dtype, shape, one batch size), runs
the signature directly or through the batcher, filters the outputs and records metrics. Every
failure is a `StatusError` with TF Serving's code.
"""

import concurrent.futures
import dataclasses
import functools
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from tfp_ext.serving.batching import Batcher
from tfp_ext.serving.metrics import Metrics
from tfp_ext.serving.registry import ModelRegistry
from tfp_ext.serving.registry import Servable
from tfp_ext.serving.status import Code
from tfp_ext.serving.status import StatusError
from tfp_ext.serving.status import invalid_argument

__all__ = ["PredictPath", "PredictResult", "DEFAULT_SIGNATURE", "DEFAULT_MAX_ROWS"]

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_ROWS = 100_000


@dataclasses.dataclass
class PredictResult:
  """The answer of one predict request: the servable that ran and its (filtered) outputs."""
  name: str
  version: int
  signature_name: str
  outputs: Dict[str, np.ndarray]


def shape_str(shape) -> str:
  return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def check_inputs(specs, feeds: Dict[str, np.ndarray], max_rows: Optional[int] = None) -> None:
  """Raises INVALID_ARGUMENT unless `feeds` match the signature's input `specs` exactly (and
  hold at most `max_rows` rows)."""
  missing, extra = sorted(set(specs) - set(feeds)), sorted(set(feeds) - set(specs))
  if missing or extra:
    raise invalid_argument(f"The signature takes inputs {sorted(specs)}; missing {missing}, "
                           f"unknown {extra}")
  for key, spec in specs.items():
    arr = feeds[key]
    want_dtype = spec.dtype.as_numpy_dtype
    if arr.dtype != want_dtype:
      raise invalid_argument(f"input {key!r}: expects a {spec.dtype.name} tensor, got "
                             f"{arr.dtype.name}")
    want = spec.shape
    if want.rank is not None:
      if arr.ndim != want.rank:
        raise invalid_argument(f"input {key!r}: expected shape {shape_str(want)} (rank "
                               f"{want.rank}), got shape {list(arr.shape)}")
      for got, w in zip(arr.shape, want.as_list()):
        if w is not None and got != w:
          raise invalid_argument(f"input {key!r}: expected shape {shape_str(want)}, got shape "
                                 f"{list(arr.shape)}")
    if arr.ndim == 0:
      raise invalid_argument(f"input {key!r}: needs a batch dimension first, got a scalar")
    if arr.shape[0] == 0:
      raise invalid_argument(f"input {key!r}: the batch is empty")
  batch = {v.shape[0] for v in feeds.values()}
  if len(batch) > 1:
    raise invalid_argument(f"Inputs have different batch sizes {sorted(batch)}")
  if max_rows is not None and batch.pop() > max_rows:
    raise invalid_argument(f"The request has {next(iter(feeds.values())).shape[0]} rows, more "
                           f"than the limit of {max_rows} (--max_rows_per_request)")


def _check_filter(outputs: Sequence[str], output_filter: Sequence[str]) -> None:
  seen = set()
  for name in output_filter:
    if name not in outputs:
      raise invalid_argument(f"output tensor alias not found in signature: {name}. Outputs "
                             f"expected to be in the set {{{','.join(outputs)}}}.")
    if name in seen:
      raise invalid_argument(f"duplicate output tensor alias: {name}")
    seen.add(name)


def _run_error(e: BaseException) -> StatusError:
  if isinstance(e, StatusError):
    return e
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(e, tf.errors.InvalidArgumentError):
    return StatusError(Code.INVALID_ARGUMENT, f"{type(e).__name__}: {e.message}")
  return StatusError(Code.INTERNAL, f"{type(e).__name__}: {e}")


class PredictPath:
  """Resolves, checks and runs predict requests; one instance per server, shared by transports.

  Without a batcher each request runs on a pool of `num_threads` threads; with one, requests are
  merged into batches (see `tfp_ext.serving.batching`).
  """

  def __init__(self, registry: ModelRegistry, batcher: Optional[Batcher] = None,
               metrics: Optional[Metrics] = None, num_threads: int = 8,
               max_rows: int = DEFAULT_MAX_ROWS):
    self.registry = registry
    self.max_rows = max_rows  # Rows per request; transports refuse more before converting.
    self.batcher = batcher
    self.metrics = metrics
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads, "tfp-ext-predict")

  def signature_specs(self, servable: Servable, signature_name: str):
    if signature_name not in servable.signatures:
      raise StatusError(Code.FAILED_PRECONDITION, f"Serving signature key \"{signature_name}\" "
                        f"not found (the model has {sorted(servable.signatures)})")
    return servable.inputs[signature_name]

  def predict(self, entrypoint: str, name: str, version: Optional[int], label: Optional[str],
              signature_name: str, make_feeds: Callable[[dict], Dict[str, np.ndarray]],
              output_filter: Sequence[str] = ()) -> concurrent.futures.Future:
    """Starts a predict request; returns a future of its `PredictResult`.

    Raises `StatusError` at once for a request that cannot run (unknown model, bad inputs, a
    full batch queue); a failure while running is the future's exception, also a `StatusError`.
    """
    start = time.perf_counter()
    signature_name = signature_name or DEFAULT_SIGNATURE
    servable = None
    try:
      servable = self.registry.resolve(name, version, label)
      specs = self.signature_specs(servable, signature_name)
      try:
        feeds = make_feeds(specs)
      except StatusError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Translating the request is the transport's work on the client's data: whatever fails
        # there is the request's fault, never the server's.
        raise invalid_argument(f"The inputs cannot be read ({type(e).__name__}: {e})") from e
      check_inputs(specs, feeds, self.max_rows)
      _check_filter(servable.outputs[signature_name], output_filter)
      if self.batcher is not None:
        key = (servable, signature_name,
               tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items())))
        inner = self.batcher.submit(key, functools.partial(servable.run, signature_name), feeds)
      else:
        inner = self._pool.submit(servable.run, signature_name, feeds)
    except StatusError as e:
      self._observe(entrypoint, name, servable, signature_name, e.code.name, start)
      raise
    result = concurrent.futures.Future()

    def done(f):
      try:
        outputs = f.result()
      except BaseException as e:  # pylint: disable=broad-except
        err = _run_error(e)
        self._observe(entrypoint, name, servable, signature_name, err.code.name, start)
        result.set_exception(err)
        return
      if output_filter:
        outputs = {k: outputs[k] for k in output_filter}
      self._observe(entrypoint, name, servable, signature_name, "OK", start)
      result.set_result(PredictResult(servable.name, servable.version, signature_name, outputs))

    inner.add_done_callback(done)
    return result

  def on_batch(self, key, rows: int, padded: int) -> None:
    """The batcher's hook: records each batch's size and padding."""
    if self.metrics is not None:
      servable, signature_name, _ = key
      self.metrics.observe_batch(servable.name, str(servable.version), signature_name, rows,
                                 padded)

  def count_failure(self, entrypoint: str, name: str, error: StatusError) -> None:
    """Counts a request a transport refused before it reached `predict`."""
    self._observe(entrypoint, name, None, "", error.code.name, time.perf_counter())

  def _observe(self, entrypoint, name, servable, signature_name, status, start):
    if self.metrics is None:
      return
    # Only configured names become label values: a flood of unknown names cannot grow the page.
    model = name if self.registry.has(name) else ""
    version = str(servable.version) if servable is not None else ""
    signature = signature_name if servable is not None and \
        signature_name in servable.signatures else ""
    self.metrics.observe_request(model, version, signature, entrypoint, status,
                                 time.perf_counter() - start)

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)
