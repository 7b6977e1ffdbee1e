"""`tfp-ext check`: load an export the way `tensorflow_model_server` does and run every signature.

TF Serving loads a SavedModel with TF's C++ loader (`LoadSavedModel`, tag `serve`) into a session
in a process where XLA JIT compilation is disabled (`tensorflow::DisableXlaCompilation()`, unless
the server was started with `--xla_cpu_compilation_enabled`), then runs signatures by tensor name.
This module does the same through TF's C API from the shared library shipped in the pip wheel
(`libtensorflow_cc.so.2` exports both `TF_LoadSessionFromSavedModel` and the C++ symbol
`tensorflow::DisableXlaCompilation`), in a separate process so the caller's TF is unaffected:

1. `dlopen` the library, call `DisableXlaCompilation()`;
2. `TF_LoadSessionFromSavedModel(tags=["serve"])`, which also returns the `MetaGraphDef`;
3. parse its `SignatureDef`s (TF's Python protos) for input / output tensor names, dtypes, shapes;
4. `TF_SessionRun` each signature on a dummy batch and verify every output is batch-first with the
   dummy batch size and finite.

The child runs this file as a script and imports only TF's generated protos, not TF's Python
runtime, so it is a plain C API client like the server (and starts in about a second).

Python's eager `tf.saved_model.load` is not used: it is a different loader, and it would run an
XLA-compiled signature happily where TF Serving fails with "XLA compilation disabled".
"""

import ctypes
import dataclasses
import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence

__all__ = ["check", "check_many", "CheckError", "CheckResult", "SignatureReport"]

_DUMMY_BATCH = 3
_MARKER = "TFP_EXT_CHECK_RESULT "
# The mangled name of `void tensorflow::DisableXlaCompilation()`.
_XLA_DISABLED_SYMBOL = "_ZN10tensorflow21DisableXlaCompilationEv"


class CheckError(RuntimeError):
  """The export failed to load or a signature failed or returned non-batch-first outputs."""


@dataclasses.dataclass
class SignatureReport:
  """What running one signature on the dummy batch produced."""
  name: str
  inputs: dict
  outputs: dict  # output name -> shape returned for the dummy batch
  ok: bool
  error: str = ""


@dataclasses.dataclass
class CheckResult:
  """The outcome of `check`: one report per signature."""
  export_dir: str
  xla_enabled: bool
  signatures: List[SignatureReport]

  @property
  def ok(self) -> bool:
    return bool(self.signatures) and all(s.ok for s in self.signatures)

  def summary(self) -> str:
    """A human-readable multi-line summary."""
    mode = "XLA JIT enabled" if self.xla_enabled else "XLA JIT disabled, as tensorflow_model_server"
    lines = [f"{self.export_dir}: loaded with the C++ SavedModel loader (tag 'serve', {mode})"]
    for s in self.signatures:
      if s.ok:
        outs = ", ".join(f"{k}{v}" for k, v in sorted(s.outputs.items()))
        lines.append(f"  OK    {s.name}: inputs {s.inputs} -> {outs}")
      else:
        lines.append(f"  FAIL  {s.name}: {s.error}")
    lines.append("PASS" if self.ok else "FAIL")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The worker: runs in its own process.


class _TFBuffer(ctypes.Structure):
  _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t),
              ("data_deallocator", ctypes.c_void_p)]


class _TFOutput(ctypes.Structure):
  _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


_LIBRARY_DIR = []


def _tf_library_dir() -> str:
  if _LIBRARY_DIR:
    return _LIBRARY_DIR[0]
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("tensorflow")
  if spec is None or not spec.submodule_search_locations:
    raise CheckError("tensorflow is not installed.")
  _LIBRARY_DIR.append(list(spec.submodule_search_locations)[0])
  return _LIBRARY_DIR[0]


def _import_protos_only():
  """Imports TF's generated protos without TF's Python runtime (`tensorflow/__init__.py`).

  The worker should be a plain C API client like the model server, not a second TF runtime in the
  same process; it is also several times faster to start. Empty package modules stand in for
  `tensorflow` and `tensorflow.core` so only the pure-protobuf `*_pb2` modules are executed.
  """
  import types  # pylint: disable=g-import-not-at-top
  libdir = _tf_library_dir()
  if "tensorflow" not in sys.modules:
    for name, path in (("tensorflow", libdir), ("tensorflow.core", os.path.join(libdir, "core"))):
      module = types.ModuleType(name)
      module.__path__ = [path]
      sys.modules[name] = module
  from tensorflow.core.protobuf import meta_graph_pb2  # pylint: disable=g-import-not-at-top
  return meta_graph_pb2


def _load_c_api(disable_xla: bool):
  libdir = _tf_library_dir()
  # The C API is split across the two libraries; load the framework globally first.
  ctypes.CDLL(os.path.join(libdir, "libtensorflow_framework.so.2"), mode=ctypes.RTLD_GLOBAL)
  lib = ctypes.CDLL(os.path.join(libdir, "libtensorflow_cc.so.2"), mode=ctypes.RTLD_GLOBAL)
  if disable_xla:
    try:
      disable = getattr(lib, _XLA_DISABLED_SYMBOL)
    except AttributeError as e:
      raise CheckError(f"{_XLA_DISABLED_SYMBOL} is not exported by libtensorflow_cc.so.2.") from e
    disable.restype = None
    disable()
  vp, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
  sigs = {
      "TF_NewStatus": (vp, []), "TF_DeleteStatus": (None, [vp]),
      "TF_GetCode": (c_int, [vp]), "TF_Message": (c_char_p, [vp]),
      "TF_NewGraph": (vp, []), "TF_DeleteGraph": (None, [vp]),
      "TF_NewSessionOptions": (vp, []), "TF_DeleteSessionOptions": (None, [vp]),
      "TF_NewBuffer": (ctypes.POINTER(_TFBuffer), []),
      "TF_DeleteBuffer": (None, [ctypes.POINTER(_TFBuffer)]),
      "TF_LoadSessionFromSavedModel": (vp, [vp, vp, c_char_p, ctypes.POINTER(c_char_p), c_int, vp,
                                            ctypes.POINTER(_TFBuffer), vp]),
      "TF_GraphOperationByName": (vp, [vp, c_char_p]),
      "TF_AllocateTensor": (vp, [c_int, ctypes.POINTER(ctypes.c_int64), c_int, ctypes.c_size_t]),
      "TF_DeleteTensor": (None, [vp]), "TF_TensorData": (vp, [vp]),
      "TF_TensorByteSize": (ctypes.c_size_t, [vp]), "TF_NumDims": (c_int, [vp]),
      "TF_Dim": (ctypes.c_int64, [vp, c_int]), "TF_TensorType": (c_int, [vp]),
      "TF_SessionRun": (None, [vp, vp, ctypes.POINTER(_TFOutput), ctypes.POINTER(vp), c_int,
                               ctypes.POINTER(_TFOutput), ctypes.POINTER(vp), c_int,
                               ctypes.POINTER(vp), c_int, vp, vp]),
      "TF_CloseSession": (None, [vp, vp]), "TF_DeleteSession": (None, [vp, vp]),
  }
  for name, (res, args) in sigs.items():
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = res, args
  return lib


def _status_error(lib, status) -> Optional[str]:
  if lib.TF_GetCode(status) == 0:
    return None
  return lib.TF_Message(status).decode("utf-8", "replace")


def _tensor_op(name: str):
  op, _, index = name.partition(":")
  return op, int(index or 0)


def _graph_output(lib, graph, tensor_name: str):
  """The `TF_Output` of a tensor name ("op:index"), or None if the op is not in the graph."""
  op_name, index = _tensor_op(tensor_name)
  op = lib.TF_GraphOperationByName(graph, op_name.encode())
  return _TFOutput(op, index) if op else None


def _new_tensor(lib, dtype: int, value):
  """A `TF_Tensor` of TF dtype enum `dtype` holding a copy of the C-contiguous array `value`."""
  dims = (ctypes.c_int64 * value.ndim)(*value.shape)
  tensor = lib.TF_AllocateTensor(dtype, dims, value.ndim, value.nbytes)
  ctypes.memmove(lib.TF_TensorData(tensor), value.ctypes.data, value.nbytes)
  return tensor


def _load_session(lib, export_dir: str, meta_graph_pb2, status):
  """`TF_LoadSessionFromSavedModel(tags=["serve"])`: (session, graph, options, MetaGraphDef).

  Raises:
    CheckError: the loader's message; nothing is left allocated.
  """
  graph = lib.TF_NewGraph()
  options = lib.TF_NewSessionOptions()
  meta = lib.TF_NewBuffer()
  tags = (ctypes.c_char_p * 1)(b"serve")
  session = lib.TF_LoadSessionFromSavedModel(options, None, export_dir.encode(), tags, 1, graph,
                                             meta, status)
  error = _status_error(lib, status)
  if error:
    lib.TF_DeleteBuffer(meta)
    lib.TF_DeleteSessionOptions(options)
    lib.TF_DeleteGraph(graph)
    raise CheckError(error)
  graph_def = meta_graph_pb2.MetaGraphDef()
  graph_def.ParseFromString(ctypes.string_at(meta.contents.data, meta.contents.length))
  lib.TF_DeleteBuffer(meta)
  return session, graph, options, graph_def


def _run_signature(lib, session, graph, name, sig, np, status) -> SignatureReport:
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  np_dtypes = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
               types_pb2.DT_HALF: np.float16, types_pb2.DT_INT32: np.int32,
               types_pb2.DT_INT64: np.int64}
  in_desc = {}
  feeds, feed_tensors = [], []
  for key, info in sorted(sig.inputs.items()):
    if info.dtype not in np_dtypes:
      return SignatureReport(name, in_desc, {}, False,
                             f"input {key!r} has dtype {types_pb2.DataType.Name(info.dtype)}, "
                             "which the check cannot feed")
    if info.tensor_shape.unknown_rank:
      return SignatureReport(name, in_desc, {}, False, f"input {key!r} has unknown rank")
    dims = [d.size for d in info.tensor_shape.dim]
    if not dims or dims[0] not in (-1,):
      return SignatureReport(name, in_desc, {}, False,
                             f"input {key!r} shape {dims} has no variable batch dimension first")
    shape = [_DUMMY_BATCH] + [d if d > 0 else 1 for d in dims[1:]]
    in_desc[key] = dims
    value = np.linspace(-1., 1., int(np.prod(shape))).reshape(shape).astype(np_dtypes[info.dtype])
    value = np.ascontiguousarray(value)
    feed = _graph_output(lib, graph, info.name)
    if feed is None:
      return SignatureReport(name, in_desc, {}, False, f"input tensor {info.name} not in the graph")
    feeds.append(feed)
    feed_tensors.append(_new_tensor(lib, info.dtype, value))
  out_keys = sorted(sig.outputs)
  fetches = []
  for key in out_keys:
    fetch = _graph_output(lib, graph, sig.outputs[key].name)
    if fetch is None:
      return SignatureReport(name, in_desc, {}, False,
                             f"output tensor {sig.outputs[key].name} not in the graph")
    fetches.append(fetch)
  c_feeds = (_TFOutput * len(feeds))(*feeds)
  c_feed_values = (ctypes.c_void_p * len(feeds))(*feed_tensors)
  c_fetches = (_TFOutput * len(fetches))(*fetches)
  c_fetch_values = (ctypes.c_void_p * len(fetches))()
  lib.TF_SessionRun(session, None, c_feeds, c_feed_values, len(feeds), c_fetches, c_fetch_values,
                    len(fetches), None, 0, None, status)
  for t in feed_tensors:
    lib.TF_DeleteTensor(t)
  error = _status_error(lib, status)
  if error:
    return SignatureReport(name, in_desc, {}, False, error)
  outputs, problems = {}, []
  for key, t in zip(out_keys, c_fetch_values):
    shape = [lib.TF_Dim(t, i) for i in range(lib.TF_NumDims(t))]
    outputs[key] = shape
    dtype = np_dtypes.get(lib.TF_TensorType(t))
    if not shape or shape[0] != _DUMMY_BATCH:
      problems.append(f"output {key!r} has shape {shape}, not batch-first with batch "
                      f"{_DUMMY_BATCH}")
    elif dtype is not None and np.dtype(dtype).kind == "f":
      size = lib.TF_TensorByteSize(t)
      buf = (ctypes.c_char * size).from_address(lib.TF_TensorData(t))
      if not np.all(np.isfinite(np.frombuffer(buf, dtype=dtype))):
        problems.append(f"output {key!r} has non-finite values")
    lib.TF_DeleteTensor(t)
  return SignatureReport(name, in_desc, outputs, not problems, "; ".join(problems))


def _worker_one(lib, export_dir: str, meta_graph_pb2, np) -> dict:
  """Loads and runs one export in this process; returns a JSON-able result."""
  status = lib.TF_NewStatus()
  try:
    session, graph, options, graph_def = _load_session(lib, export_dir, meta_graph_pb2, status)
  except CheckError as e:
    lib.TF_DeleteStatus(status)
    return {"load_error": str(e)}
  reports = []
  for name, sig in sorted(graph_def.signature_def.items()):
    if name.startswith("__"):  # `__saved_model_init_op` is not a servable signature.
      continue
    reports.append(dataclasses.asdict(_run_signature(lib, session, graph, name, sig, np, status)))
  lib.TF_CloseSession(session, status)
  lib.TF_DeleteSession(session, status)
  lib.TF_DeleteSessionOptions(options)
  lib.TF_DeleteGraph(graph)
  lib.TF_DeleteStatus(status)
  return {"signatures": reports}


def _worker(export_dirs: List[str], xla_enabled: bool) -> list:
  """Checks each export in this process (one TF start-up for all of them)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  meta_graph_pb2 = _import_protos_only()
  lib = _load_c_api(disable_xla=not xla_enabled)
  return [_worker_one(lib, d, meta_graph_pb2, np) for d in export_dirs]


def check_many(export_dirs: Sequence[str], xla_cpu_compilation_enabled: bool = False,
               timeout: float = 600.0) -> List[CheckResult]:
  """`check` for several exports in one child process (TF starts once); one result per export.

  Raises:
    CheckError: a directory is not a SavedModel, or the loader failed to load one.
  """
  export_dirs = [os.path.abspath(d) for d in export_dirs]
  for d in export_dirs:
    if not os.path.isfile(os.path.join(d, "saved_model.pb")):
      raise CheckError(f"{d} has no saved_model.pb: give a version directory such as "
                       "serving/models/NAME/1.")
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Run as a script, not `-m tfp_ext.serving.check`: the package would import TF's Python runtime,
  # and the child must be a plain C API client.
  cmd = [sys.executable, os.path.abspath(__file__)]
  if xla_cpu_compilation_enabled:
    cmd.append("--xla")
  cmd += ["--worker"] + export_dirs
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                        check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_MARKER)]
  if proc.returncode != 0 or not lines:
    raise CheckError(f"The check process failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
  results = []
  for d, result in zip(export_dirs, json.loads(lines[-1][len(_MARKER):])):
    if "load_error" in result:
      raise CheckError(f"TF_LoadSessionFromSavedModel failed for {d}: {result['load_error']}")
    results.append(CheckResult(d, xla_cpu_compilation_enabled,
                               [SignatureReport(**s) for s in result["signatures"]]))
  return results


def check(export_dir: str, xla_cpu_compilation_enabled: bool = False,
          timeout: float = 600.0) -> CheckResult:
  """Loads `export_dir` as TF Serving does (C++ loader, tag `serve`) and runs every signature.

  Runs in a child process. By default XLA JIT is disabled there, as in a stock
  `tensorflow_model_server`; `xla_cpu_compilation_enabled=True` mirrors a server started with
  that flag.

  Args:
    export_dir: a SavedModel directory (one version, e.g. `serving/models/m/1`).
    xla_cpu_compilation_enabled: keep XLA JIT enabled.
    timeout: seconds before the child process is abandoned.

  Returns:
    A `CheckResult`; `result.ok` is True when the export loaded and every signature ran on a
    dummy batch and returned finite batch-first outputs.

  Raises:
    CheckError: the directory is not a SavedModel, or the loader failed to load it.
  """
  return check_many([export_dir], xla_cpu_compilation_enabled, timeout)[0]


if __name__ == "__main__":
  # Run as a script, this directory is sys.path[0]; drop it so `server.py` & co. cannot shadow
  # anything imported below.
  if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
  _args = sys.argv[1:]
  _xla = "--xla" in _args
  _args = [a for a in _args if a != "--xla"]
  if len(_args) >= 2 and _args[0] == "--worker":
    _result = _worker(_args[1:], xla_enabled=_xla)
    print(_MARKER + json.dumps(_result), flush=True)
  else:
    sys.exit("usage: tfp-ext check EXPORT_DIR [EXPORT_DIR ...]")
