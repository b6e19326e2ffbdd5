"""experiments/tutorial.ipynb runs top to bottom (on a small budget), so it cannot silently rot."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "the notebook's budget lives in one cell tagged 'parameters'"
    params[0].source = "STEPS = 40\nK = 20"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "IWAE log p̂(x)" in text and "per_datapoint" in text and "Laplace prior" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures were drawn
    assert list(tmp_path.iterdir()) == []  # the tutorial writes no files
