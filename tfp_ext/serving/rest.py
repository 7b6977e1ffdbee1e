"""TF Serving's REST API over the serving core: it only translates JSON and HTTP.

* `GET  /v1/models/NAME[/versions/N | /labels/L]`: version status;
* `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`: the signature definitions;
* `POST /v1/models/NAME[/versions/N | /labels/L]:predict`: `{"instances": ...}` (row format) or
  `{"inputs": ...}` (columnar), optional `"signature_name"`;
* `GET  /monitoring/prometheus/metrics` (or the configured path) with a monitoring config.

Errors are `{"error": message}` with the HTTP status of the core's `StatusError`.
"""

import asyncio
import json
import re
from typing import Dict, Optional

import numpy as np

from tfp_ext.serving.metrics import Metrics
from tfp_ext.serving.predict import PredictPath
from tfp_ext.serving.status import Code
from tfp_ext.serving.status import StatusError
from tfp_ext.serving.status import invalid_argument
from tfp_ext.serving.status import not_found

__all__ = ["build_app"]

_SPEC = r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[A-Za-z0-9_.-]+))?"
_GET_PATH = re.compile(_SPEC + r"(?P<meta>/metadata)?$")
_POST_PATH = re.compile(_SPEC + r":(?P<verb>[a-z]+)$")


# A JSON string, or an unterminated one to the end of the body: matched in linear time (possessive,
# and an unterminated string is consumed once rather than retried from each later quote).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
  """The deepest nesting of arrays and objects in a JSON text, without parsing it (brackets
  inside strings do not count); a cheap scan, so a deep body is refused before any work."""
  if not body:
    return 0
  steps = _OPEN[np.frombuffer(_STRING.sub(b"", body), np.uint8)]
  depth = np.cumsum(steps[steps != 0], dtype=np.int32)  # Brackets only: a fraction of a body.
  return int(depth.max()) if depth.size else 0


def _rows(value) -> int:
  """The batch size a JSON value asks for (0 if not a list)."""
  return len(value) if isinstance(value, list) else 0


def _check_rows(request: dict, max_rows: int) -> None:
  """Refuses a parsed body with more than `max_rows` rows, before any array is built."""
  if "instances" in request:
    rows = _rows(request["instances"])
  elif isinstance(request["inputs"], dict):
    rows = max((_rows(v) for v in request["inputs"].values()), default=0)
  else:
    rows = _rows(request["inputs"])
  if rows > max_rows:
    raise invalid_argument(f"The request has {rows} rows, more than the limit of {max_rows} "
                           "(--max_rows_per_request)")


def _json_array(value, spec, what: str) -> np.ndarray:
  """Converts JSON `value` to an array of `spec`'s dtype (shapes are checked by the core)."""
  stack = [value]
  while stack:  # Reject strings, null and booleans for numeric inputs, as TF Serving does.
    v = stack.pop()
    if isinstance(v, list):
      stack.extend(v)
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
      raise invalid_argument(f"{what}: expected numbers for a {spec.dtype.name} tensor, got "
                             f"{type(v).__name__} {_short(v)}")
  try:
    return np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
  except (ValueError, OverflowError, TypeError) as e:
    raise invalid_argument(f"{what}: the list is ragged or not numeric ({e})") from e


def _short(v) -> str:
  try:
    return json.dumps(v)[:40]
  except (ValueError, TypeError, RecursionError):
    return type(v).__name__


def _parse_body(body: bytes, max_depth: int) -> dict:
  depth = json_depth(body)
  if depth > max_depth:
    raise invalid_argument(f"JSON Parse error: the body nests arrays and objects {depth} deep, "
                           f"more than the limit of {max_depth} (--max_json_depth)")
  try:
    request = json.loads(body)
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise invalid_argument(f"JSON Parse error: {type(e).__name__}: {e}") from e
  if not isinstance(request, dict):
    raise invalid_argument("JSON Value: the request must be a JSON object")
  unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
  if unknown:
    raise invalid_argument(f"Unknown key(s) {unknown} in the request; expected 'instances' or "
                           "'inputs' and optionally 'signature_name'")
  if not isinstance(request.get("signature_name", ""), str):
    raise invalid_argument("'signature_name' must be a string")
  has_rows, has_cols = "instances" in request, "inputs" in request
  if has_rows == has_cols:
    raise invalid_argument("Missing 'inputs' or 'instances' key" if not has_rows else
                           "Not both 'inputs' and 'instances' can be set")
  return request


def _feeds(request: dict, specs) -> Dict[str, np.ndarray]:
  """The input arrays of a parsed predict body, given the signature's input specs."""
  if "instances" in request:
    rows = request["instances"]
    if not isinstance(rows, list) or not rows:
      raise invalid_argument("'instances' must be a non-empty JSON list")
    if all(isinstance(r, dict) for r in rows):
      missing = [k for k in specs if any(k not in r for r in rows)]
      if missing:
        raise invalid_argument(f"Every instance needs the input {missing[0]!r}")
      extra = sorted({k for r in rows for k in r} - set(specs))
      if extra:
        raise invalid_argument(f"Unknown input(s) {extra}; the signature takes {sorted(specs)}")
      return {k: _json_array([r[k] for r in rows], spec, f"input {k!r}")
              for k, spec in specs.items()}
    if any(isinstance(r, dict) for r in rows):
      raise invalid_argument("Instances mix named (object) and unnamed values")
    if len(specs) != 1:
      raise invalid_argument(f"The signature has inputs {sorted(specs)}: each instance must be "
                             "an object naming them")
    (key, spec), = specs.items()
    return {key: _json_array(rows, spec, f"input {key!r}")}
  cols = request["inputs"]
  if isinstance(cols, dict):
    missing, extra = sorted(set(specs) - set(cols)), sorted(set(cols) - set(specs))
    if missing or extra:
      raise invalid_argument(f"'inputs' must name exactly {sorted(specs)}; missing {missing}, "
                             f"unknown {extra}")
    return {k: _json_array(cols[k], specs[k], f"input {k!r}") for k in specs}
  if len(specs) != 1:
    raise invalid_argument(f"The signature has inputs {sorted(specs)}: 'inputs' must be an "
                           "object naming them")
  (key, spec), = specs.items()
  return {key: _json_array(cols, spec, f"input {key!r}")}


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


def model_status_json(statuses) -> dict:
  return {"model_version_status": [
      {"version": str(v), "state": s, "status": {"error_code": c, "error_message": msg}}
      for v, s, c, msg in statuses]}


def build_app(path: PredictPath, max_body_bytes: int, metrics: Optional[Metrics] = None,
              metrics_path: Optional[str] = None, max_json_depth: int = 64):
  """The Starlette app of the REST API over `path` (and the metrics page, if given).

  Bodies over `max_body_bytes` get 413, bodies nested deeper than `max_json_depth` and bodies
  with more rows than `path.max_rows` get 400, before any array is built for them.
  """
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from starlette.applications import Starlette  # pylint: disable=g-import-not-at-top
  from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
  from starlette.responses import Response  # pylint: disable=g-import-not-at-top
  from starlette.routing import Route  # pylint: disable=g-import-not-at-top

  registry = path.registry

  def error(e: StatusError):
    return JSONResponse({"error": e.message}, status_code=e.http_status)

  def json_response(payload, status=200):
    # TF Serving writes NaN/Infinity literally rather than failing.
    return Response(json.dumps(payload, allow_nan=True), status_code=status,
                    media_type="application/json")

  async def read_body(request) -> bytes:
    too_large = lambda what: StatusError(
        Code.RESOURCE_EXHAUSTED, f"Request body {what} exceeds the limit of {max_body_bytes} "
        "bytes", http_status=413)
    length = request.headers.get("content-length")
    if length is not None:
      try:
        length_value = int(length)
      except ValueError as e:
        raise invalid_argument("Invalid Content-Length header") from e
      if length_value > max_body_bytes:
        raise too_large(f"of {length} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # Also bounds chunked bodies without a length.
      size += len(chunk)
      if size > max_body_bytes:
        raise too_large("")
      chunks.append(chunk)
    return b"".join(chunks)

  def spec_of(m):
    return m["name"], int(m["version"]) if m["version"] else None, m["label"]

  async def get(request):
    try:
      m = _GET_PATH.match(request.path_params["rest"])
      if not m:
        raise not_found(f"Malformed request: GET {request.url.path}")
      name, version, label = spec_of(m)
      if m["meta"]:
        servable = registry.resolve(name, version, label)
        return json_response({
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                servable.signature_def_map, preserving_proto_field_name=True)}})
      if label:
        version = registry.resolve(name, version, label).version
      return json_response(model_status_json(registry.status(name, version)))
    except StatusError as e:
      return error(e)

  async def post(request):
    try:
      m = _POST_PATH.match(request.path_params["rest"])
      if not m:
        raise not_found(f"Malformed request: POST {request.url.path}")
      name, version, label = spec_of(m)
      try:  # Refusals before the predict path (which counts its own) are counted here.
        registry.resolve(name, version, label)  # 404 before reading the body, as TF Serving.
        if m["verb"] != "predict":
          raise invalid_argument(f"Only :predict is supported, got :{m['verb']}")
        body = _parse_body(await read_body(request), max_json_depth)
        _check_rows(body, path.max_rows)
      except StatusError as e:
        path.count_failure("REST", name, e)
        raise
      future = path.predict("REST", name, version, label, body.get("signature_name", ""),
                            lambda specs: _feeds(body, specs))
      result = await asyncio.wrap_future(future)
      return json_response(_format_response(result.outputs, "instances" in body))
    except StatusError as e:
      return error(e)

  async def not_found_handler(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}"},
                        status_code=404)

  async def method_not_allowed(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({"error": f"Method {request.method} is not allowed here"},
                        status_code=405)

  routes = [Route("/v1/models/{rest:path}", get, methods=["GET"]),
            Route("/v1/models/{rest:path}", post, methods=["POST"])]
  if metrics is not None:
    async def scrape(request):  # pylint: disable=unused-argument
      return Response(metrics.render(), media_type=metrics.content_type)
    routes.append(Route(metrics_path, scrape, methods=["GET"]))
  return Starlette(routes=routes,
                   exception_handlers={404: not_found_handler, 405: method_not_allowed})
