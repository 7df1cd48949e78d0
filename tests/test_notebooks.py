"""Every notebook under notebooks/ runs from top to bottom without error (kernel: this venv's python3,
working directory: the notebook's folder, so notebooks read their data by relative paths), and every
notebook that draws shows its figures (an image in its outputs: a figure drawn under a non-interactive
backend and never displayed would pass silently otherwise)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
# Notebooks that read a finished demo (runs/demo) run in tests/test_demo.py, on the demo it builds.
NEEDS_A_DEMO = {"explore_demo.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in NEEDS_A_DEMO],
                         ids=[p.name for p in NOTEBOOKS if p.name not in NEEDS_A_DEMO])
def test_notebook_executes_without_error(path: Path) -> None:
    run_notebook(path)


def run_notebook(path: Path) -> None:
    """Execute the notebook (kernel environment: this process's) and check it raised nothing and, if it
    draws, showed its figures."""
    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}  # the kernel starts in the notebook's folder
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, resources=resources)
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    if "matplotlib" in source or "plot_" in source:
        images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
                  if "image/png" in output.get("data", {})]
        assert images, f"{path.name} draws figures but shows none"
