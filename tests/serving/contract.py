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
