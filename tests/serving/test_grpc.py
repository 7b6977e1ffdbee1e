"""TF Serving's gRPC API with the official stubs: the shared contract, the same answers as REST,
the Client's gRPC mode, message limits and the Prometheus metrics of both."""

import grpc
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import contract
from tfp_ext.serving import Client
from tfp_ext.serving import Server
from tfp_ext.serving import ServingError

X = np.linspace(-2., 2., 5, dtype=np.float32)[:, None]


def test_grpc_contract(server):
  assert server.grpc_target.startswith("127.0.0.1:")  # Loopback unless an address is given.
  assert contract.check_grpc_status_and_metadata(server.grpc_target, "reg") == 1
  contract.check_grpc_predict(server.grpc_target, "reg", X)
  contract.check_grpc_predict(server.grpc_target, "cls", [[0., 0.], [1., 2.]])
  contract.check_grpc_bad_requests(server.grpc_target, "reg", in_dim=1)
  contract.check_grpc_bad_requests(server.grpc_target, "cls", in_dim=2)
  # No version labels are configured: a label is refused on both APIs, as by TF Serving.
  predict, _ = contract.grpc_stubs(server.grpc_target)
  with pytest.raises(grpc.RpcError) as e:
    predict.Predict(contract.grpc_predict_request("reg", X, label="stable"), timeout=30)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stable" in e.value.details()
  r = contract.post(server.url, "reg", {"inputs": X.tolist()}, suffix="/labels/stable:predict")
  assert r.status_code == 400 and "stable" in r.json()["error"]


@pytest.mark.parametrize("model,x", [("reg", X), ("cls", [[0., 0.], [1., 2.], [-1., .5]]),
                                     ("ens", X[:2])])
def test_rest_and_grpc_answer_the_same(server, model, x):
  contract.check_rest_equals_grpc(server.url, server.grpc_target, model, x)


def test_client_grpc_mode_equals_rest(server, regression):
  rest, grpc_client = Client(server.url, "reg"), Client(f"grpc://{server.grpc_target}", "reg")
  x64 = X.astype(np.float64)  # Cast to the input's dtype over gRPC too, as REST's JSON is.
  got, want = grpc_client.predict(x64), rest.predict(x64)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  assert grpc_client.status() == rest.status()
  assert grpc_client.metadata() == rest.metadata()
  assert list(grpc_client.predict(X, output_filter=["mean"])) == ["mean"]
  for call in (lambda c: c.predict(np.ones((2, 3), np.float32)),
               lambda c: c.predict(X, version=7), lambda c: Client(c.url, "nope").status()):
    with pytest.raises(ServingError) as from_rest:
      call(rest)
    with pytest.raises(ServingError) as from_grpc:
      call(grpc_client)
    assert from_grpc.value.status_code == from_rest.value.status_code
    assert from_grpc.value.code in ("INVALID_ARGUMENT", "NOT_FOUND")
  grpc_client.close()


def test_grpc_message_limit(regression):
  with Server({"reg": regression.base}, port=None, grpc_port=0, file_system_poll_wait_seconds=0,
              grpc_max_message_bytes=4096) as small:
    client = Client(f"grpc://{small.grpc_target}", "reg")
    with pytest.raises(ServingError) as e:
      client.predict(np.zeros((2000, 1), np.float32))  # 8 kB of floats.
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert client.predict(X)["mean"].shape == (5, 1)  # Still serving.
    client.close()


def _samples(url):
  page = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=30)
  assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
  return {(s.name, tuple(sorted(s.labels.items()))): s.value
          for family in text_string_to_metric_families(page.text) for s in family.samples}


def test_prometheus_metrics(server):
  labels = lambda entrypoint, **extra: tuple(sorted(dict(
      model_name="cls", model_version="1", signature_name="serving_default",
      entrypoint=entrypoint, **extra).items()))
  count = ":tensorflow:serving:request_count_total"
  before = _samples(server.url)
  rest, grpc_client = Client(server.url, "cls"), Client(f"grpc://{server.grpc_target}", "cls")
  for _ in range(3):
    rest.predict([[0., 1.]])
  for _ in range(2):
    grpc_client.predict([[0., 1.]])
  with pytest.raises(ServingError):
    grpc_client.predict(np.ones((1, 5), np.float32))
  with pytest.raises(ServingError):
    Client(server.url, "unknown_model").predict([[0., 1.]])
  assert contract.post(server.url, "cls", '{"inputs": [', raw=True).status_code == 400
  after = _samples(server.url)
  delta = lambda key: after.get(key, 0) - before.get(key, 0)
  assert delta((count, labels("REST", status="OK"))) == 3
  assert delta((count, labels("GRPC", status="OK"))) == 2
  assert delta((count, labels("GRPC", status="INVALID_ARGUMENT"))) == 1
  latency = ":tensorflow:serving:request_latency"
  assert delta((latency + "_count", labels("REST"))) == 3
  assert delta((latency + "_count", labels("GRPC"))) == 2
  assert delta((latency + "_sum", labels("GRPC"))) > 0  # Microseconds.
  # An unknown model is counted without its name: requests cannot add label values at will.
  unknown = tuple(sorted(dict(model_name="", model_version="", signature_name="",
                              entrypoint="REST", status="NOT_FOUND").items()))
  assert delta((count, unknown)) == 1
  # A body that does not parse is counted against the model, before any version is resolved.
  bad_json = tuple(sorted(dict(model_name="cls", model_version="", signature_name="",
                               entrypoint="REST", status="INVALID_ARGUMENT").items()))
  assert delta((count, bad_json)) == 1
  assert not any(dict(k[1]).get("model_name") == "unknown_model" for k in after)
  grpc_client.close()
