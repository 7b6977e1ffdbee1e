"""Executes colab/01_vadam_uncertainty.ipynb on small settings (Vadam → export → check → REST)."""

import json

from tests.notebook_util import run_notebook


def test_notebook_runs_end_to_end(tmp_path):
  nb = run_notebook("01_vadam_uncertainty.ipynb", tmp_path)
  assert (tmp_path / "serving" / "models" / "vadam_demo" / "1" / "saved_model.pb").is_file()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "PASS" in text and "epistemic stddev" in text
  # The printed REST response: three rows, each with the four regression outputs.
  response = json.loads(text[text.index("{\n"):text.index("\n}\n") + 2])
  assert len(response["predictions"]) == 3
  assert {"mean", "stddev", "epistemic_stddev", "aleatoric_stddev"} == set(
      response["predictions"][1])
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 2  # The data and the predictive plot.
