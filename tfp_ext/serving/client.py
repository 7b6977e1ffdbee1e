"""A small client for TF Serving's REST API (the real server or `tfp_ext.serving.Server`)."""

from typing import Dict, Optional

import numpy as np
import requests

__all__ = ["Client", "ServingError"]


class ServingError(RuntimeError):
  """The server answered with an error: `status_code` and the server's `message`."""

  def __init__(self, status_code: int, message: str):
    super().__init__(f"HTTP {status_code}: {message}")
    self.status_code = status_code
    self.message = message


class Client:
  """Calls one model of a TF Serving REST endpoint.

  #### Examples

  ```python
  client = tfp_ext.serving.Client("http://127.0.0.1:8501", "quickstart")
  out = client.predict(np.array([[0.5], [2.0]], np.float32))
  out["mean"], out["stddev"]          # numpy arrays, batch first
  client.status(), client.metadata()
  ```
  """

  def __init__(self, url: str, model_name: str, timeout: float = 30.0,
               session: Optional[requests.Session] = None):
    """Args: url: `http://HOST:PORT`; model_name: the served name; timeout: seconds per call."""
    if not url.startswith(("http://", "https://")):
      raise ValueError(f"url must start with http:// or https://, got {url!r}.")
    if not model_name or "/" in model_name or ":" in model_name:
      raise ValueError(f"Invalid model name {model_name!r}.")
    self.url = url.rstrip("/")
    self.model_name = model_name
    self.timeout = timeout
    self._session = session or requests.Session()

  def _model_url(self, version: Optional[int]) -> str:
    url = f"{self.url}/v1/models/{self.model_name}"
    if version is not None:
      if isinstance(version, bool) or int(version) != version or version < 0:
        raise ValueError(f"version must be a non-negative int, got {version!r}.")
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
    """`GET /v1/models/NAME[/versions/N]`: the `model_version_status` response."""
    return self._decode(self._session.get(self._model_url(version), timeout=self.timeout))

  def metadata(self, version: Optional[int] = None) -> dict:
    """`GET .../metadata`: the model spec and signature definitions."""
    return self._decode(self._session.get(self._model_url(version) + "/metadata",
                                          timeout=self.timeout))

  def predict_json(self, body: dict, version: Optional[int] = None) -> dict:
    """POSTs a raw predict request body; returns the raw JSON response."""
    return self._decode(self._session.post(self._model_url(version) + ":predict", json=body,
                                           timeout=self.timeout))

  def predict(self, x, signature_name: Optional[str] = None, version: Optional[int] = None,
              columnar: bool = True) -> Dict[str, np.ndarray]:
    """Predicts for a batch `x` (batch first); returns `{output name: array}`.

    Args:
      x: an array-like batch for the single input `x`, or a dict `{input name: batch}`.
      signature_name: default `serving_default`.
      version: a specific version; default the latest.
      columnar: send `{"inputs": ...}` (default) or the row format `{"instances": ...}`.
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

  def close(self) -> None:
    """Closes the HTTP session."""
    self._session.close()
