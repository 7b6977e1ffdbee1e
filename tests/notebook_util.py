"""Execute a Colab notebook offline, the way the tests run every notebook in `colab/`.

Cells tagged `colab_only` (pip installs, TFDS downloads, Drive mounts) are skipped, and the
environment variable TFP_EXT_NOTEBOOK_SMALL=1 tells the notebook to use small settings and
offline data.
"""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

COLAB_DIR = pathlib.Path(__file__).resolve().parents[1] / "colab"


def run_notebook(name: str, tmp_path, timeout: int = 300):
  """Executes `colab/<name>` in `tmp_path` (outputs such as exports land there); returns the notebook."""
  nb = nbformat.read(COLAB_DIR / name, as_version=4)
  nb.cells = [c for c in nb.cells if "colab_only" not in c.get("metadata", {}).get("tags", [])]
  old = os.environ.get("TFP_EXT_NOTEBOOK_SMALL")
  os.environ["TFP_EXT_NOTEBOOK_SMALL"] = "1"
  try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    if old is None:
      os.environ.pop("TFP_EXT_NOTEBOOK_SMALL", None)
    else:
      os.environ["TFP_EXT_NOTEBOOK_SMALL"] = old
  return nb


def count_images(nb) -> int:
  """The figures a notebook drew (PNG outputs), as a Colab user sees them."""
  return sum("image/png" in out.get("data", {}) for cell in nb.cells
             for out in cell.get("outputs", []))
