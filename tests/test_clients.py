"""Every notebook runs top to bottom in the clients a learner uses, none of which honours a
``raises-exception`` tag: papermill (as Colab's and VS Code's *Run all*, it stops at the first
uncaught exception), ``pytest --nbmake`` from the repository root, and ``jupyter nbconvert
--execute`` without ``--allow-errors``. JupyterLab is covered by tests/test_browser.py and nbval
by ``make test`` itself. The Chinese edition (notebooks/zh/) runs in every client as well: its
code is the English code, but its first cell switches the helpers' language.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "zh").glob("*.ipynb"))
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ, COURSE_DEVICE="cpu", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("COURSE_NUM_CLASSES", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _copy_notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    return folder


def _notebooks(folder: Path) -> list[Path]:
    """The copied English and Chinese notebooks under ``folder``."""
    return [folder / p.relative_to(ROOT / "notebooks") for p in NOTEBOOKS]


def _assert_ran_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    errors = [(i, out.get("ename")) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"{path.name}: cells raised: {errors}"
    unexecuted = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                  and cell.source.strip() and cell.get("execution_count") is None]
    assert not unexecuted, f"{path.name}: cells never ran: {unexecuted}"


def test_no_cell_is_marked_to_raise_and_no_output_holds_a_traceback():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            assert "raises-exception" not in cell.metadata.get("tags", []), f"{path.name} cell {i}"
            assert "NBVAL_RAISES_EXCEPTION" not in cell.source, f"{path.name} cell {i}"
            for out in cell.get("outputs", []):
                text = json.dumps(out)
                assert out.output_type != "error", f"{path.name} cell {i} stores an error"
                assert "Traceback (most recent call last)" not in text, f"{path.name} cell {i}"
                for local in (str(ROOT), "/site-packages/", "/home/", "/root/"):
                    assert local not in text, f"{path.name} cell {i} shows a local path ({local})"


@pytest.mark.slow
def test_papermill_runs_every_notebook(tmp_path):
    folder = _copy_notebooks(tmp_path)
    for path in _notebooks(folder):
        out = tmp_path / f"out-{path.parent.name}-{path.name}"
        result = subprocess.run(
            [str(BIN / "papermill"), str(path), str(out), "--cwd", str(path.parent), "--no-progress-bar",
             "--kernel", "python3"],
            env=_env(), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"papermill {path.name}:\n{result.stderr[-3000:]}"
        _assert_ran_clean(out)


@pytest.mark.slow
def test_nbconvert_execute_without_allow_errors(tmp_path):
    folder = _copy_notebooks(tmp_path)
    for edition in sorted({p.parent for p in _notebooks(folder)}):
        out_dir = tmp_path / "executed" / edition.name
        result = subprocess.run(
            [str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=900", "--output-dir", str(out_dir),
             *map(str, sorted(edition.glob("*.ipynb")))],
            cwd=edition, env=_env(), capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, f"nbconvert --execute ({edition.name}):\n{result.stderr[-3000:]}"
        for path in sorted(edition.glob("*.ipynb")):
            _assert_ran_clean(out_dir / path.name)


@pytest.mark.slow
def test_pytest_nbmake_from_the_repository_root(tmp_path):
    # From the repository root, as a learner types it: conftest.py must not assume nbval.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=900", "-q",
         "-p", "no:cacheprovider", *(str(p.relative_to(ROOT)) for p in NOTEBOOKS)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"pytest --nbmake:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    assert f"{len(NOTEBOOKS)} passed" in result.stdout, result.stdout[-2000:]
