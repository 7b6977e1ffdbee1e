"""`tfp-ext check`: TF's C++ SavedModel loader (C API) with XLA disabled, as the model server."""

import numpy as np
import pytest

from tfp_ext import cli
from tfp_ext.serving import CheckError
from tfp_ext.serving import check_many


@pytest.fixture(scope="module")
def results(regression, classification, ensemble):
  # One child process for every kind of export (TF starts once).
  return dict(zip(["reg", "cls", "ens"],
                  check_many([regression.path, classification.path, ensemble.path])))


def test_every_kind_of_export_passes_serving_default(results):
  for kind, result in results.items():
    sig = {s.name: s for s in result.signatures}
    assert sig["serving_default"].ok, (kind, sig["serving_default"].error)
    assert sig["serving_default"].inputs["x"][0] == -1
    for shape in sig["serving_default"].outputs.values():
      assert shape[0] == 3  # The dummy batch size, first.
  assert results["reg"].signatures[0].outputs["mean"] == [3, 1]
  assert results["cls"].signatures[0].outputs["mean"] == [3, 3]
  assert results["cls"].signatures[0].outputs["mutual_information"] == [3]
  assert results["cls"].ok and results["ens"].ok


def test_xla_signature_fails_like_tensorflow_model_server(results):
  # The bug the check exists to catch: a jit-compiled signature loads fine but fails on its first
  # request in a stock tensorflow_model_server, which disables XLA compilation.
  result = results["reg"]
  sig = {s.name: s for s in result.signatures}
  assert not sig["serving_xla"].ok
  assert "XLA compilation disabled" in sig["serving_xla"].error
  assert not result.ok
  assert "FAIL  serving_xla" in result.summary()


def test_not_a_saved_model(tmp_path):
  with pytest.raises(CheckError, match="no saved_model.pb"):
    check_many([str(tmp_path)])
  assert cli.main(["check", str(tmp_path)]) == 1


def test_corrupt_saved_model_fails_to_load(tmp_path):
  (tmp_path / "saved_model.pb").write_bytes(np.arange(64, dtype=np.uint8).tobytes())
  with pytest.raises(CheckError, match="TF_LoadSessionFromSavedModel failed"):
    check_many([str(tmp_path)])


def test_package_names_are_the_functions():
  # `check` and `export` are both submodules and functions: the package must expose the functions
  # whatever was imported first.
  import tfp_ext.serving  # pylint: disable=g-import-not-at-top
  import tfp_ext.serving.check  # pylint: disable=g-import-not-at-top,unused-import
  import tfp_ext.serving.export  # pylint: disable=g-import-not-at-top,unused-import
  assert callable(tfp_ext.serving.check) and callable(tfp_ext.serving.export)
