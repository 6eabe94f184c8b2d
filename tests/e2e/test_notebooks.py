"""The notebooks are committed without outputs and run top to bottom on real data."""

import nbformat
import pytest
from conftest import ARCHIVES, TEST_DATA_DIR, archives_present
from helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, real_source, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MNIST_TF_NOTEBOOK_SMALL", "1")
    if archives_present():
        monkeypatch.setenv("MNIST_TF_MANUAL_DIR", str(ARCHIVES))
    monkeypatch.setenv("MNIST_TF_DATA_DIR", str(TEST_DATA_DIR))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook should show plots"
