"""The local TF-Serving-compatible REST server: contract, exact answers, limits, concurrency,
new versions."""

import concurrent.futures
import os
import shutil
import threading
import time

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.serving import contract
from tests.serving.conftest import mean_field
from tfp_ext.serving import Client
from tfp_ext.serving import Server
from tfp_ext.serving import ServingError
from tfp_ext.serving import export
from tfp_ext.serving import read_model_config_file
from tfp_ext.serving.export import TEMP_PREFIX

X = np.linspace(-2., 2., 5, dtype=np.float32)[:, None]


def test_contract_regression(server):
  assert server.host == "127.0.0.1"  # Local connections only unless an address is given.
  assert contract.check_status_and_metadata(server.url, "reg") == 1
  contract.check_predict_formats(server.url, "reg", X)
  contract.check_bad_requests(server.url, "reg", in_dim=1)


def test_contract_classification_and_ensemble(server):
  out = contract.check_predict_formats(server.url, "cls", [[0., 0.], [1., 2.]])
  assert out["mean"].shape == (2, 3) and out["mutual_information"].shape == (2,)
  contract.check_bad_requests(server.url, "cls", in_dim=2)
  contract.check_predict_formats(server.url, "ens", X)


def test_rest_answers_equal_the_signature(server, regression):
  # JSON carries float32 values exactly (shortest float64 repr of a float32), so equality is exact.
  expected = regression.signature()(x=tf.constant(X))
  got = Client(server.url, "reg").predict(X)
  rows = Client(server.url, "reg").predict(X, columnar=False)
  assert sorted(got) == sorted(expected)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k].numpy())
    np.testing.assert_array_equal(rows[k], expected[k].numpy())
  assert Client(server.url, "reg").metadata()["metadata"]["signature_def"]["signature_def"].keys() \
      >= {"serving_default", "serving_xla"}


def test_server_specific_limits_and_paths(server, regression):
  small = Server({"reg": regression.base}, port=0, file_system_poll_wait_seconds=0,
                 max_body_bytes=200)
  with small:
    r = contract.post(small.url, "reg", {"instances": [[0.1]] * 100})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    assert contract.post(small.url, "reg", {"instances": [[0.1]]}).status_code == 200
  for path in ["/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/../reg",
               "/v1/models/reg/versions/..%2F1", "/v1/models/reg/versions/-1",
               "/v1/models/%2Ftmp", "/v2/models/reg"]:
    r = requests.get(server.url + path, timeout=30)
    assert r.status_code == 404 and "error" in r.json(), (path, r.text)
  r = requests.post(server.url + "/v1/models/reg:classify", json={"instances": [[1.0]]}, timeout=30)
  assert r.status_code == 400
  r = requests.put(server.url + "/v1/models/reg:predict", json={"instances": [[1.0]]}, timeout=30)
  assert r.status_code == 405


def test_client_errors(server):
  client = Client(server.url, "reg")
  with pytest.raises(ServingError) as e:
    Client(server.url, "nope").status()
  assert e.value.status_code == 404
  with pytest.raises(ServingError) as e:
    client.predict(np.ones((2, 3), np.float32))
  assert e.value.status_code == 400 and "shape" in e.value.message
  with pytest.raises(ValueError, match="NaN"):
    client.predict(np.array([[np.nan]], np.float32))
  with pytest.raises(ValueError, match="batch"):
    client.predict(np.float32(1.))
  with pytest.raises(ValueError, match="http"):
    Client("127.0.0.1:8501", "reg")


def test_concurrent_requests_get_single_thread_answers(server):
  rng = np.random.default_rng(0)
  batches = [rng.uniform(-3, 3, (int(rng.integers(1, 6)), 1)).astype(np.float32)
             for _ in range(24)]
  client = Client(server.url, "reg")
  expected = [client.predict(b) for b in batches]

  def call(i):
    return i, Client(server.url, "reg").predict(batches[i], columnar=bool(i % 2))

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(call, [i for i in range(len(batches)) for _ in range(2)]))
  for i, got in results:
    for k in expected[i]:
      np.testing.assert_array_equal(got[k], expected[i][k])


def test_new_version_is_picked_up_without_dropping_requests(regression, tmp_path):
  base = tmp_path / "live"
  shutil.copytree(regression.path, base / "1")
  (base / f"{TEMP_PREFIX}crashed").mkdir()  # Leftover of a killed export: must be ignored.
  (base / f"{TEMP_PREFIX}crashed" / "saved_model.pb").write_bytes(b"garbage")
  (base / "notes").mkdir()
  with Server({"live": str(base)}, port=0, file_system_poll_wait_seconds=0.2) as server:
    assert server.versions == {"live": [1]}
    client = Client(server.url, "live")
    v1 = client.predict(X)
    errors, answers, stop = [], [], threading.Event()

    def hammer():
      c = Client(server.url, "live")
      while not stop.is_set():
        try:
          answers.append(c.predict(X)["mean"])
        except Exception as e:  # pylint: disable=broad-except
          errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
      t.start()
    try:
      # A different posterior (wider scale), exported while requests are in flight.
      q2 = mean_field(regression.model, 0.6)
      export(regression.model, q2, str(base), num_samples=16, noise_stddev=0.1, seed=3)
      deadline = time.monotonic() + 60
      while server.versions["live"] != [2] and time.monotonic() < deadline:
        time.sleep(0.1)
      time.sleep(0.3)
    finally:
      stop.set()
      for t in threads:
        t.join()
    assert server.versions == {"live": [2]}  # Latest policy: only the newest stays loaded.
    assert not errors, errors[:3]
    assert len(answers) > 0
    v2 = client.predict(X)
    assert not np.allclose(v2["stddev"], v1["stddev"])
    status = client.status()["model_version_status"]
    assert [s["version"] for s in status] == ["2"]
    with pytest.raises(ServingError) as e:
      client.predict(X, version=1)
    assert e.value.status_code == 404
    np.testing.assert_array_equal(client.predict(X, version=2)["mean"], v2["mean"])
    for a in answers:  # Every answer came whole from one version or the other.
      assert np.array_equal(a, v1["mean"]) or np.array_equal(a, v2["mean"])
    # Rolling back (deleting the newest version) brings the previous one back.
    shutil.rmtree(base / "2")
    deadline = time.monotonic() + 60
    while server.versions["live"] != [1] and time.monotonic() < deadline:
      time.sleep(0.1)
    assert server.versions == {"live": [1]}
    np.testing.assert_array_equal(client.predict(X)["mean"], v1["mean"])


def test_model_config_file(tmp_path, regression, classification):
  config = tmp_path / "models.config"
  config.write_text(f"""
# Two models, as TF Serving's --model_config_file.
model_config_list {{
  config {{
    name: "reg"
    base_path: "{regression.base}"
    model_platform: "tensorflow"
  }}
  config {{
    name: 'cls'
    base_path: "{os.path.relpath(classification.base, tmp_path)}"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
}}
""")
  configs = read_model_config_file(str(config))
  assert [(c.name, c.base_path, c.num_versions) for c in configs] == [
      ("reg", regression.base, 1), ("cls", classification.base, 2)]
  with Server(model_config_file=str(config), port=0, file_system_poll_wait_seconds=0) as s:
    assert s.versions == {"reg": [1], "cls": [1]}
    assert Client(s.url, "cls").predict([[0., 1.]])["mean"].shape == (1, 3)
  bad = tmp_path / "bad.config"
  bad.write_text('model_config_list { config { name: "a" base_path: "/x" labels: 1 } }')
  with pytest.raises(ValueError, match="labels"):
    read_model_config_file(str(bad))
  bad.write_text('model_config_list { config { name: "a" }')
  with pytest.raises(ValueError):
    read_model_config_file(str(bad))


def test_server_arguments(tmp_path):
  with pytest.raises(ValueError, match="exactly one"):
    Server()
  with pytest.raises(ValueError, match="not a directory"):
    Server({"m": str(tmp_path / "missing")})
  with pytest.raises(ValueError, match="Model name"):
    Server({"../m": str(tmp_path)})
