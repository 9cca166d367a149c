"""Execute the notebooks in ``examples/`` end to end and check what they report. No mocks.

The kernel is the interpreter running the tests (``sys.executable -m ipykernel_launcher``), whatever kernel specs
are or are not installed on the machine, with the repository root on ``PYTHONPATH`` and one torch thread.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the dev extra installs it; a missing kernel must fail, not skip)
import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to an ipykernel on ``sys.executable``: no ``jupyter kernelspec install``."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3 (tests)", language="python",
            env={"PYTHONPATH": pythonpath, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                 "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "TOKENIZERS_PARALLELISM": "false"},
        )


def execute_notebook(name: str, workdir: Path):
    """Run ``examples/<name>`` in ``workdir`` (a copy: the committed file stays output-free); return it executed."""
    path = workdir / name
    shutil.copy(EXAMPLES / name, path)
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    client = nbclient.NotebookClient(nb, km=km, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError on the first cell that errors
    nbformat.write(nb, path)
    return nb


def test_committed_notebooks_have_no_outputs():
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear outputs"


def test_unlearning_notebook_hides_rather_than_removes(tmp_path):
    nb = execute_notebook("acr_unlearning.ipynb", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.outputs), "the plot should render"

    summary = json.loads((tmp_path / "unlearning_results.json").read_text())
    rows = summary["strings"]
    assert len(rows) == 3
    assert 0 < summary["unlearn_steps"] < 1000  # stopped by the completion test, not by the step cap
    assert all(summary["retain_completes_before"])
    for row in rows:
        # Memorized before, by both tests, with a prompt that model.generate confirmed.
        assert row["completion_before"] is True
        assert row["memorized_before"] and row["verified_before"] and not row["censored_before"]
        assert row["acr_before"] > 1.0
        # Unlearning stopped exactly when the completion test failed.
        assert row["completion_after"] is False and row["match_fraction_after"] < 1.0
        assert 1 <= row["unlearn_steps"] <= summary["unlearn_steps"]
        if row["memorized_after"]:
            assert row["verified_after"] and not row["censored_after"] and row["acr_after"] > 1.0
            assert row["acr_after"] == pytest.approx(row["target_tokens"] / row["prompt_tokens_after"])
        elif row["censored_after"]:
            assert row["acr_after"] is None and not row["verified_after"]  # no prompt found: no ACR
    # The README's claim, the paper's finding: unlearning until the completion test fails leaves quotes that
    # a verified prompt shorter than them still extracts -- at least one of three (two when this was written:
    # hamlet 16 -> 1.78, caesar 8 -> 5.33; float rounding differs between CPUs, so the count is not pinned).
    assert summary["still_compressible_after"] == [r["title"] for r in rows if r["memorized_after"]]
    assert len(summary["still_compressible_after"]) >= 1
