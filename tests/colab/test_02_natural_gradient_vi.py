"""Executes colab/02_natural_gradient_vi.ipynb on small settings (VOGN, IVON, Adam → export → REST)."""

import re

from tests.notebook_util import run_notebook


def test_notebook_runs_end_to_end(tmp_path):
  nb = run_notebook("02_natural_gradient_vi.ipynb", tmp_path)
  assert (tmp_path / "serving" / "models" / "ivon_digits" / "1" / "saved_model.pb").is_file()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "served agrees with the local predictive: PASS" in text
  # The export and the local predictive share the seed, hence the samples: float32 rounding only.
  gap = re.search(r"max \|served − local\| probability ([0-9.e+-]+)", text)
  assert gap and float(gap.group(1)) < 1e-5, text
  # All three methods were evaluated and learned the task (10 classes: chance is 0.1).
  for name in ("Adam", "VOGN", "IVON"):
    match = re.search(rf"{name}: accuracy ([0-9.]+)", text)
    assert match and float(match.group(1)) > 0.8, (name, text)
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 1  # The reliability diagram.
