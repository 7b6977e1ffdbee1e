"""Executes colab/05_relativistic_hmc.ipynb offline (small settings) and checks what it computed."""

from tests.notebook_util import count_images
from tests.notebook_util import run_notebook


def _outputs(nb):
  text = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      text.append(out.get("text", ""))
  return "\n".join(text)


def _floats(line):
  return [float(t) for t in line.split("[")[1].split("]")[0].split()]


def test_notebook_runs_and_serves(tmp_path):
  nb = run_notebook("05_relativistic_hmc.ipynb", tmp_path, timeout=600)
  # Small settings draw the same figures as the full run.
  assert count_images(nb) == 1, count_images(nb)
  text = _outputs(nb)
  assert "small settings: True" in text
  # The step-size sweep (0.005 ... 0.2): HMC's leapfrog is unstable beyond step 0.02 (twice the
  # smallest sd) and rejects everything at 0.05 and above, while relativistic HMC still accepts.
  lines = {l.split(" acceptance:")[0]: _floats(l) for l in text.splitlines() if " acceptance:" in l}
  assert max(lines["HMC"][3:]) < 0.05, lines
  assert min(lines["relativistic HMC"][:4]) > 0.5, lines
  # The BNN chain: chance is 0.1 on digits, a diverged chain ~0.1, a working ensemble ~0.9.
  acc = [float(l.split(":")[1]) for l in text.splitlines()
         if l.startswith("posterior predictive test accuracy")]
  assert acc and acc[0] > 0.8, acc
  # The served predictions were compared with the in-process predictive inside the notebook
  # (np.testing.assert_allclose); a failure there would have raised.
  assert "predicted:" in text
