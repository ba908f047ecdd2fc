"""Every walkthrough in notebooks/ runs headlessly against the real lab, as a reader would run it.

A notebook fails the suite when a cell raises, when a code cell shows nothing (a walkthrough explains
what it shows, so an empty cell is a broken one), or when it leaves any of the lab behind. The kernel
is this interpreter (the venv's python, which sees Mininet and the lab), declared in a kernelspec of
the test's own, so no Jupyter configuration of the machine or the user can swap it. Set
``NPL_EXECUTED_NOTEBOOKS=DIR`` to keep the executed copies (with outputs) for reading.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.integration.conftest import lab_leftovers

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
KERNEL = "nodeport-lab-test"
# Generous: a cell may queue for the machine lock (NPL_LOCK_WAIT) before it builds its network.
CELL_TIMEOUT = 600 + int(float(os.environ.get("NPL_LOCK_WAIT", "0")))


def test_there_is_a_walkthrough():
    assert NOTEBOOKS, "notebooks/ holds no walkthrough"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    folder = tmp_path_factory.mktemp("kernels") / KERNEL
    folder.mkdir()
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nodeport-lab (test)", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(folder.parent)])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_every_cell_shows_something(path: Path, kernel_specs: KernelSpecManager):
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, startup_timeout=120,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised:\n{e}")
    finally:
        _keep_executed_copy(nb, path)
    elapsed = time.monotonic() - started
    print(f"{path.name}: executed in {elapsed:.1f} s")

    silent = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and not cell.outputs]
    assert not silent, f"{path.name}: code cells {silent} (0-based) produced no output"
    errors = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: cells {errors} show an error"
    pictures = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs)
    assert pictures, f"{path.name}: no cell showed a picture"


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    assert lab_leftovers() == [], "a notebook left the lab behind"


def _keep_executed_copy(nb, path: Path) -> None:
    folder = os.environ.get("NPL_EXECUTED_NOTEBOOKS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        nbformat.write(nb, os.path.join(folder, path.name))
