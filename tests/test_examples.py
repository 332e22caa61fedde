"""The notebooks of examples/ run from top to bottom, as a user runs them (their code cells in order, in a
fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

NOTEBOOK = REPO / "examples" / "dicom_to_ef.ipynb"


def code_cells(path) -> list[str]:
    notebook = json.loads(path.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_the_notebook_is_kept_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    stored = [
        c["id"]
        for c in notebook["cells"]
        if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])
    ]
    assert not stored, f"{NOTEBOOK.name}: cells {stored} hold outputs; clear them before committing"


@pytest.mark.slow
def test_dicom_to_ef_runs_and_gives_ef_gradcam_and_shift(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(code_cells(NOTEBOOK)) + "\n")
    work = tmp_path / "work"
    env = dict(os.environ, COREECHO_EXAMPLE_DIR=str(work), PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    lines = done.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("EF "))
    assert "(90 %)" in summary or summary.split()[1].isdigit(), summary
    shift = next(line for line in lines if line.startswith("shift percentile: "))
    assert 0.0 <= float(shift.split(": ")[1]) <= 100.0  # the run's training embeddings were found
    strips = list((work / "gradcam").glob("gradcam_*_stage2.png"))
    assert len(strips) == 1 and strips[0].stat().st_size > 1000
