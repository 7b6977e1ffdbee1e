"""The REST and gRPC contracts against a real `tensorflow_model_server` (see docker/README.md).

Runs when TFP_EXT_SERVING_URL is set, e.g. `TFP_EXT_SERVING_URL=http://127.0.0.1:8501`, against
the quickstart model (`TFP_EXT_SERVING_MODEL`, default `quickstart`, one input feature); the gRPC
checks also need TFP_EXT_SERVING_GRPC, e.g. `127.0.0.1:8500`. Skipped otherwise.
"""

import os

import numpy as np
import pytest

from tests.serving import contract

URL = os.environ.get("TFP_EXT_SERVING_URL")
MODEL = os.environ.get("TFP_EXT_SERVING_MODEL", "quickstart")
IN_DIM = int(os.environ.get("TFP_EXT_SERVING_IN_DIM", "1"))
GRPC = os.environ.get("TFP_EXT_SERVING_GRPC")

pytestmark = pytest.mark.skipif(not URL, reason="TFP_EXT_SERVING_URL is not set")


def test_status_and_metadata():
  contract.check_status_and_metadata(URL.rstrip("/"), MODEL)


def test_predict_formats():
  x = np.linspace(-2., 2., 4 * IN_DIM, dtype=np.float32).reshape(4, IN_DIM)
  contract.check_predict_formats(URL.rstrip("/"), MODEL, x)


def test_bad_requests():
  contract.check_bad_requests(URL.rstrip("/"), MODEL, IN_DIM)


@pytest.mark.skipif(not GRPC, reason="TFP_EXT_SERVING_GRPC is not set")
def test_grpc_contract():
  contract.check_grpc_status_and_metadata(GRPC, MODEL)
  x = np.linspace(-2., 2., 4 * IN_DIM, dtype=np.float32).reshape(4, IN_DIM)
  contract.check_grpc_predict(GRPC, MODEL, x)
  contract.check_grpc_bad_requests(GRPC, MODEL, IN_DIM)
  contract.check_rest_equals_grpc(URL.rstrip("/"), GRPC, MODEL, x)
