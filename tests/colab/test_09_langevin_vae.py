"""Executes colab/09_langevin_vae.ipynb offline (small settings) and checks what it computed."""

import json
import math

from tests.notebook_util import run_notebook


def test_notebook_runs(tmp_path):
  nb = run_notebook("09_langevin_vae.ipynb", tmp_path, timeout=600)
  outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
  text = "\n".join(out.get("text", "") for out in outputs)
  assert "small settings: True" in text
  # One gradient per Langevin step, K + 1 for K leapfrog steps (K = 10).
  assert "target gradients for K = 10 Langevin steps: 10" in text
  assert "target gradients for K = 10 leapfrog steps: 11" in text
  # Both figures were drawn (inline PNGs).
  assert sum("image/png" in out.get("data", {}) for out in outputs) == 2
  results = json.loads((tmp_path / "langevin_results.json").read_text())
  conj = results["conjugate"]
  # The Langevin ELBO estimate lies below the exact evidence and above the plain VAE's exact
  # bound at the same q_0, each by more than 4 standard errors of the estimate.
  assert conj["plain"] + 4 * conj["se"] < conj["elbo"] < conj["log_evidence"] - 4 * conj["se"], conj
  elbo = results["elbo_history"]
  assert elbo[-1] > elbo[0], elbo
  # Importance sampling is a tighter bound than the ELBO (Jensen): the mean NLL may not exceed the
  # mean -ELBO by more than 4 standard errors of the latter.
  for name, r in results["digits"].items():
    assert math.isfinite(r["nll"]) and r["nll"] < r["neg_elbo"] + 4 * r["se"], (name, r)
