"""The `tfp-ext` console script: `serve` in its own process speaks the REST and gRPC contracts,
with batching and metrics from TF Serving's config files; argument errors are clear."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from tests.serving import contract
from tfp_ext import cli


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_command(regression, tmp_path):
  port, grpc_port = _free_port(), _free_port()
  monitoring = tmp_path / "monitoring.config"
  monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen(
      [sys.executable, "-m", "tfp_ext.cli", "serve", "--model_name=reg",
       f"--model_base_path={regression.base}", f"--rest_api_port={port}",
       f"--port={grpc_port}", "--enable_batching",
       f"--batching_parameters_file={REPO}/serving/batching.config",
       f"--monitoring_config_file={monitoring}", "--max_json_depth=8",
       "--max_rows_per_request=4"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 120
    while True:
      assert proc.poll() is None, proc.stdout.read()
      try:
        if requests.get(f"{url}/v1/models/reg", timeout=5).status_code == 200:
          break
      except requests.ConnectionError:
        pass
      assert time.monotonic() < deadline, "tfp-ext serve did not come up"
      time.sleep(0.25)
    contract.check_status_and_metadata(url, "reg")
    x = np.array([[0.], [1.]], np.float32)
    contract.check_predict_formats(url, "reg", x)
    target = f"127.0.0.1:{grpc_port}"
    contract.check_grpc_status_and_metadata(target, "reg")
    contract.check_rest_equals_grpc(url, target, "reg", x)
    r = contract.post(url, "reg", {"instances": [[[[[[[[0.]]]]]]]]})  # 9 deep.
    assert r.status_code == 400 and "--max_json_depth" in r.json()["error"]
    r = contract.post(url, "reg", {"instances": [[0.]] * 5})
    assert r.status_code == 400 and "--max_rows_per_request" in r.json()["error"]
    page = requests.get(f"{url}/metrics", timeout=30).text
    assert 'status="OK"' in page and "batching_session:input_batch_size" in page
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def test_argument_errors(capsys):
  with pytest.raises(SystemExit):
    cli.main([])
  with pytest.raises(SystemExit, match="model_base_path"):
    cli.main(["serve", "--model_name=m"])
  with pytest.raises(SystemExit, match="either"):
    cli.main(["serve", "--model_config_file=x", "--model_base_path=y"])
  with pytest.raises(SystemExit, match="not a directory"):
    cli.main(["serve", "--model_base_path=/nonexistent/tfp_ext_models"])
  with pytest.raises(SystemExit, match="enable_batching"):
    cli.main(["serve", "--model_base_path=y", "--batching_parameters_file=serving/batching.config"])
  with pytest.raises(SystemExit, match="max_json_depth and max_rows_per_request must be positive"):
    cli.main(["serve", "--model_base_path=serving", "--max_rows_per_request=0"])
  with pytest.raises(SystemExit):
    cli.main(["check"])
  capsys.readouterr()
