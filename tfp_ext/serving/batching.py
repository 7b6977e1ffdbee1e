"""Server-side request batching with TF Serving's semantics (`--enable_batching`).

Requests for the same servable, signature and input shapes (past the batch dimension) join one
queue. A queue's newest batch is open: a request joins it while the rows fit in
`max_batch_size`, otherwise it closes and a new batch opens. A batch runs once it is closed, or
`batch_timeout_micros` after its first request arrived, on one of `num_batch_threads` threads.
A request that would open a batch while `max_enqueued_batches` batches already wait gets
UNAVAILABLE (HTTP 503): "the batch scheduling queue ... is full"; one larger than
`max_batch_size` gets INVALID_ARGUMENT.

Each batch is padded to the smallest of `allowed_batch_sizes` that holds it (TF Serving's
padding, with copies of the first row); the padding rows' outputs are dropped. A request alone
is padded too. That is half of what keeps answers exact: the exports' signatures choose their
computation by the row count (see `tfp_ext.posterior.predictive_samples`), and TF's kernels may
round a row differently at another batch size, so every batch runs at the same few sizes.

The other half: at one size, some kernels still round a row by its position in the batch (a
tail of rows handled by other code; seen here with oneDNN's batched matmul, and Eigen's at 32
rows of a 16-128-128-1 MLP). So before merging requests at a size, the batcher checks, once per
servable, signature, input shapes and size, that the signature's rows do not depend on their
position or on the other rows (random rows, shifted by several offsets, must give the same
answers bit for bit). Where they do, the requests of a batch run one by one, each padded to the
size, and a warning names the size: a request's answer never depends on what it was batched
with. Choose `allowed_batch_sizes` that pass (serving/README.md).
"""

import collections
import dataclasses
import logging
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np

from tfp_ext.serving.model_config import parse_text_proto
from tfp_ext.serving.status import Code
from tfp_ext.serving.status import StatusError
from tfp_ext.serving.status import invalid_argument

__all__ = ["BatchingParameters", "Batcher", "parse_batching_parameters",
           "read_batching_parameters_file", "rows_independent"]

_log = logging.getLogger("tfp_ext.serving")
_PROBE_SHIFTS = (1, 2, 3, 5, 8)


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """TF Serving's `BatchingParameters` (defaults as `tensorflow_model_server`'s)."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = 2
  allowed_batch_sizes: Tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False

  def __post_init__(self):
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Batching parameter {name} must be a positive integer, got {value!r}.")
    if (isinstance(self.batch_timeout_micros, bool) or
        not isinstance(self.batch_timeout_micros, int) or self.batch_timeout_micros < 0):
      raise ValueError("Batching parameter batch_timeout_micros must be a non-negative integer, "
                       f"got {self.batch_timeout_micros!r}.")
    sizes = list(self.allowed_batch_sizes)
    if sizes:
      if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"allowed_batch_sizes must be positive integers, got {sizes}.")
      if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"allowed_batch_sizes must increase, got {sizes}.")
      if sizes[-1] != self.max_batch_size:
        raise ValueError(f"The last entry of allowed_batch_sizes ({sizes[-1]}) must equal "
                         f"max_batch_size ({self.max_batch_size}).")
    if self.pad_variable_length_inputs:
      raise ValueError("pad_variable_length_inputs is not supported: requests are batched only "
                       "with requests of the same input shapes.")

  def padded_size(self, rows: int) -> int:
    """The batch size a batch of `rows` rows runs at."""
    for size in self.allowed_batch_sizes:
      if size >= rows:
        return size
    return rows


def parse_batching_parameters(text: str) -> BatchingParameters:
  """Parses a `--batching_parameters_file` (a `BatchingParameters` text proto)."""
  fields = parse_text_proto(text)
  wrapped = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
             "num_batch_threads")
  known = wrapped + ("allowed_batch_sizes", "pad_variable_length_inputs")
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"Unsupported field(s) {unknown} in the batching parameters; supported: "
                     f"{list(known)}.")
  kwargs = {}
  for name in wrapped:
    if name in fields:
      value = fields[name][-1]
      # Written `max_batch_size { value: 128 }` (a wrapper message), as TF Serving's files are.
      if not isinstance(value, dict) or set(value) != {"value"}:
        raise ValueError(f"Write the batching parameter as `{name} {{ value: N }}`.")
      kwargs[name] = value["value"][-1]
  if "allowed_batch_sizes" in fields:
    kwargs["allowed_batch_sizes"] = tuple(fields["allowed_batch_sizes"])
  if "pad_variable_length_inputs" in fields:
    flag = fields["pad_variable_length_inputs"][-1]
    if flag not in ("true", "false"):
      raise ValueError(f"pad_variable_length_inputs must be true or false, got {flag!r}.")
    kwargs["pad_variable_length_inputs"] = flag == "true"
  return BatchingParameters(**kwargs)


def read_batching_parameters_file(path: str) -> BatchingParameters:
  with open(path, encoding="utf-8") as f:
    return parse_batching_parameters(f.read())


def _pad(feeds: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
  """Pads batch-first arrays to `size` rows with copies of the first row, as TF Serving."""
  rows = next(iter(feeds.values())).shape[0]
  if rows == size:
    return feeds
  return {name: np.concatenate([v, np.repeat(v[:1], size - rows, axis=0)])
          for name, v in feeds.items()}


def rows_independent(run: "RunFn", example: Dict[str, np.ndarray], size: int,
                     seed: int = 0) -> bool:
  """Whether `run` at `size` rows answers each row the same, bit for bit, wherever it sits in
  the batch and whatever the other rows hold (inputs shaped and typed as `example`'s rows)."""
  rng = np.random.default_rng(seed)

  def random_rows(n):
    out = {}
    for name, v in example.items():
      shape = (n,) + v.shape[1:]
      values = rng.standard_normal(shape) if v.dtype.kind == "f" else rng.integers(0, 10, shape)
      out[name] = values.astype(v.dtype)
    return out

  x = random_rows(size)
  base = run(x)
  for shift in sorted({s % size for s in _PROBE_SHIFTS + (size // 2,)} - {0}):
    shifted = run({k: np.roll(v, shift, axis=0) for k, v in x.items()})
    if not all(np.array_equal(np.roll(base[k], shift, axis=0), shifted[k]) for k in base):
      return False
  if size > 1:  # The first row again, among other rows.
    other = random_rows(size)
    mixed = run({k: np.concatenate([x[k][:1], other[k][1:]]) for k in x})
    if not all(np.array_equal(base[k][:1], mixed[k][:1]) for k in base):
      return False
  return True


class _Task:
  __slots__ = ("feeds", "rows", "future")

  def __init__(self, feeds, rows):
    self.feeds, self.rows, self.future = feeds, rows, Future()


class _Batch:
  __slots__ = ("tasks", "rows", "created", "closed")

  def __init__(self, now):
    self.tasks: List[_Task] = []
    self.rows = 0
    self.created = now
    self.closed = False


class _Queue:
  __slots__ = ("run", "batches")

  def __init__(self, run):
    self.run = run
    self.batches = collections.deque()


RunFn = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


class Batcher:
  """Merges requests into batches and runs them on `num_batch_threads` threads.

  `submit(key, run, feeds)` queues the request's `feeds` (batch-first arrays, same row count)
  under `key`; `run(merged_feeds)` computes a batch and returns batch-first outputs. The future
  holds the request's rows of every output.
  """

  def __init__(self, params: BatchingParameters, on_batch: Optional[Callable] = None):
    self.params = params
    self._on_batch = on_batch  # (key, rows, padded rows), for metrics.
    self._queues: Dict[Hashable, _Queue] = {}
    # Whether a key's rows may merge at a size, per the key's first element (the servable): held
    # weakly, so an unloaded version is not kept alive by it.
    self._mergeable = weakref.WeakKeyDictionary()
    self._mergeable_strong = {}
    self._mergeable_lock = threading.Lock()
    self._cond = threading.Condition()
    self._stopped = False
    self._threads = [threading.Thread(target=self._work, name=f"tfp-ext-batch-{i}", daemon=True)
                     for i in range(params.num_batch_threads)]
    for t in self._threads:
      t.start()

  def submit(self, key: Hashable, run: RunFn, feeds: Dict[str, np.ndarray]) -> Future:
    rows = next(iter(feeds.values())).shape[0]
    p = self.params
    if rows > p.max_batch_size:
      raise invalid_argument(f"Task size {rows} is larger than maximum batch size "
                             f"{p.max_batch_size}")
    task = _Task(feeds, rows)
    with self._cond:
      if self._stopped:
        raise StatusError(Code.UNAVAILABLE, "The server is shutting down")
      queue = self._queues.get(key)
      if queue is None:
        queue = self._queues[key] = _Queue(run)
      batches = queue.batches
      last = batches[-1] if batches else None
      if last is None or last.closed or last.rows + rows > p.max_batch_size:
        if last is not None and not last.closed:
          last.closed = True
          self._cond.notify()  # It is due now, even if this request is refused.
        if len(batches) >= p.max_enqueued_batches:
          raise StatusError(Code.UNAVAILABLE, "The batch scheduling queue to which this task was "
                            f"submitted is full ({p.max_enqueued_batches} batches wait; "
                            "max_enqueued_batches)")
        last = _Batch(time.monotonic())
        batches.append(last)
      last.tasks.append(task)
      last.rows += rows
      if last.rows == p.max_batch_size:
        last.closed = True
      self._cond.notify()
    return task.future

  def _next_batch(self):
    """Waits for a batch that is due (under the lock); None once stopped."""
    timeout = self.params.batch_timeout_micros / 1e6
    with self._cond:
      while True:
        if self._stopped:
          return None
        now = time.monotonic()
        due, wait = None, None
        for key, queue in self._queues.items():
          if not queue.batches:
            continue
          first = queue.batches[0]
          ready_at = now if first.closed else first.created + timeout
          if ready_at <= now and (due is None or first.created < due[1].created):
            due = (key, first)
          elif ready_at > now:
            wait = ready_at - now if wait is None else min(wait, ready_at - now)
        if due is not None:
          key, batch = due
          queue = self._queues[key]
          queue.batches.popleft()
          batch.closed = True
          if not queue.batches:
            del self._queues[key]  # Keys of unloaded versions do not pile up.
          return key, queue.run, batch
        self._cond.wait(wait)

  def _work(self):
    while True:
      item = self._next_batch()
      if item is None:
        return
      key, run, batch = item
      try:
        padded = self.params.padded_size(batch.rows)
        if len(batch.tasks) == 1 or self._can_merge(key, run, batch.tasks[0].feeds, padded):
          self._run(key, run, batch.tasks, batch.rows, padded)
        else:
          for t in batch.tasks:
            self._run(key, run, [t], t.rows, self.params.padded_size(t.rows))
      except BaseException as e:  # pylint: disable=broad-except
        for t in batch.tasks:
          if not t.future.done():
            t.future.set_exception(e)
      # Waiting for the next batch must not hold this one's servable (an unloaded version).
      del item, key, run, batch

  def _can_merge(self, key, run, example, padded: int) -> bool:
    """Checked once per key and size (see the module docstring)."""
    owner = key[0] if isinstance(key, tuple) and key else key
    with self._mergeable_lock:
      try:
        cache = self._mergeable.setdefault(owner, {})
      except TypeError:  # Not weakly referenceable (a plain key).
        cache = self._mergeable_strong.setdefault(owner, {})
    # Without the owner: a value holding it would keep the weak entry alive.
    cache_key = (key[1:] if isinstance(key, tuple) else None, padded)
    if cache_key not in cache:
      ok = rows_independent(run, example, padded)
      if not ok:
        _log.warning("Batching %s: at %d rows the signature rounds a row by its position in the "
                     "batch, so requests run one by one (each padded to %d rows) to keep answers "
                     "exact; other allowed_batch_sizes may merge.", key[:2], padded, padded)
      cache[cache_key] = ok
    return cache[cache_key]

  def _run(self, key, run, tasks, rows, padded):
    merged = (tasks[0].feeds if len(tasks) == 1 else
              {name: np.concatenate([t.feeds[name] for t in tasks]) for name in tasks[0].feeds})
    merged = _pad(merged, padded)
    if self._on_batch is not None:
      self._on_batch(key, rows, padded)
    outputs = run(merged)
    for name, value in outputs.items():
      if np.ndim(value) == 0 or value.shape[0] != padded:
        raise StatusError(Code.FAILED_PRECONDITION, f"Output {name!r} has shape "
                          f"{list(np.shape(value))}: batching needs batch-first outputs")
    start = 0
    for t in tasks:
      t.future.set_result({k: v[start:start + t.rows] for k, v in outputs.items()})
      start += t.rows

  def stop(self) -> None:
    """Fails what is still queued with UNAVAILABLE and stops the threads."""
    with self._cond:
      self._stopped = True
      queues, self._queues = self._queues, {}
      self._cond.notify_all()
    for queue in queues.values():
      for batch in queue.batches:
        for t in batch.tasks:
          t.future.set_exception(StatusError(Code.UNAVAILABLE, "The server is shutting down"))
    for t in self._threads:
      t.join(timeout=10)
