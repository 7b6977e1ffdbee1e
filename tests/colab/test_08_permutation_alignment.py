"""Executes colab/08_permutation_alignment.ipynb offline (small settings) and checks its results."""

import re

from tests.notebook_util import run_notebook


def test_notebook_aligns_and_measures_barriers(tmp_path):
  nb = run_notebook("08_permutation_alignment.ipynb", tmp_path, timeout=300)
  text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
  assert "small settings: True" in text
  assert "converged" in text and "not converged" not in text
  barriers = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in
              re.finditer(r"barrier (.+): (-?[\d.]+) ± ([\d.]+) nats", text)}
  assert set(barriers) == {"unaligned", "weight matching (means)", "aligned"}, barriers
  # The paper's finding: a large barrier before alignment and a much smaller one after, by many
  # standard errors (the two barriers share no draws, so their errors add in quadrature).
  (b0, s0), (b1, s1) = barriers["unaligned"], barriers["aligned"]
  assert b0 - b1 > 5 * (s0 ** 2 + s1 ** 2) ** 0.5 and b1 < b0 / 2, barriers
  # The figure was drawn (an inline PNG), not only computed.
  assert any("image/png" in out.get("data", {}) for cell in nb.cells
             for out in cell.get("outputs", []))
