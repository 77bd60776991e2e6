"""Grade learners' notebooks: re-run each one headless, read its checkers' verdicts, tabulate.

    python -m helpers.grade submissions/*.ipynb --out grades --timeout 300

Each notebook is copied into a fresh temporary folder and run top to bottom in a new kernel of
this Python (``COURSE_DEVICE=cpu``, ``OMP_NUM_THREADS=1``), with every stored output cleared
first: the verdicts come from this run, never from what the file says. A cell that raises does
not stop the run (the error is reported); a notebook that takes longer than ``--timeout``
seconds is stopped there, and a file that is not a notebook gets a row too. The exercises are
found by the checker each cell calls (``check_named_sequential(...)``: chapter 1, exercise 1);
when a notebook calls a checker twice (a demonstration, then the exercise), the last call counts.

The table (learner x exercise: ``OK``, ``TRY AGAIN``, ``TODO``, ``error`` when the checker cell
raised, ``missing`` when it was deleted or never ran) is printed and written to
``DIR/grades.csv`` and ``DIR/grades.json`` (with each checker's full line); the executed
notebooks go to ``DIR/notebooks/``.

>>> grade([Path("submissions/ada.ipynb")], out=Path("grades"), timeout=300)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.i18n import _, ngettext

#: The checkers of each chapter, in exercise order (``check_x`` -> chapter N, exercise K).
CHECKERS: dict[int, tuple[str, ...]] = {
    1: ("check_named_sequential", "check_registered_blocks", "check_activation_net",
        "check_tiny_resnet"),
    2: ("check_new_head", "check_frozen_except", "check_logits_and_features",
        "check_loaded_checkpoint"),
    3: ("check_save_for_inference", "check_prefix_stripper", "check_resume",
        "check_ready_for_inference"),
    4: ("check_extended_model", "check_predict_function", "check_resume_training",
        "check_torchrun_command", "check_cautious_predict"),
}
EXERCISE_OF = {name: f"ch{ch}.{n}" for ch, names in CHECKERS.items()
               for n, name in enumerate(names, 1)}
VERDICT = re.compile(r"^\[(OK|TRY AGAIN|TODO)\] ?(.*)$")
CALL = re.compile(r"\b(" + "|".join(EXERCISE_OF) + r")\s*\(")


@dataclass
class Result:
    """One exercise of one learner: its status and the checker's line."""

    status: str  # OK, TRY AGAIN, TODO, error, missing
    message: str = ""


@dataclass
class Row:
    """One learner's notebook: how the run went and a result per exercise."""

    learner: str
    file: str
    notebook: str  # "ran", "ran; cell 4 raised ...", "timed out ...", "not a notebook ..."
    seconds: float = 0.0
    results: dict[str, Result] = field(default_factory=dict)


def _kernel_manager() -> Any:
    """A kernel manager that starts ipykernel under this very interpreter."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class CurrentPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"], display_name="Python (grading)",
                              language="python")

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=CurrentPython())


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def _error(cell: Any) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {str(out.get('evalue', ''))[:120]}"
    return None


def read_results(nb: Any) -> dict[str, Result]:
    """The verdict of every exercise whose checker the notebook calls (last call wins).

    >>> read_results(nbformat.read("ada.ipynb", as_version=4))["ch1.1"].status  # doctest: +SKIP
    'OK'
    """
    results: dict[str, Result] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        called = CALL.findall(cell.source)
        if not called:
            continue
        exercise = EXERCISE_OF[called[-1]]
        lines = [m for m in map(VERDICT.match, _text(cell).splitlines()) if m]
        if lines:
            results[exercise] = Result(lines[-1].group(1), lines[-1].group(0))
        elif _error(cell):
            results[exercise] = Result("error", _error(cell) or "")
        else:
            results[exercise] = Result("missing", _("the checker cell did not run"))
    return results


def run_notebook(nb: Any, path: Path, timeout: float) -> str:
    """Execute ``nb`` (read from ``path``) in a fresh folder and kernel; say how it went.

    >>> run_notebook(nbformat.read("ada.ipynb", as_version=4), Path("ada.ipynb"), 300)  # doctest: +SKIP
    'ran'
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    for cell in nb.cells:  # never trust stored outputs: a cell that does not run shows nothing
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    deadline = time.monotonic() + timeout
    env = {**os.environ, "COURSE_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="grade-") as folder:
        client = NotebookClient(nb, km=_kernel_manager(), allow_errors=True,
                                timeout_func=lambda cell: max(1, math.ceil(
                                    deadline - time.monotonic())),
                                resources={"metadata": {"path": folder}})
        try:
            client.execute(cleanup_kc=True, env=env, stderr=subprocess.DEVNULL)  # kernel logs
            how = _("ran")
        except CellTimeoutError:
            index = next((i for i, c in reversed(list(enumerate(nb.cells)))
                          if c.cell_type == "code" and c.get("execution_count")), 0)
            how = _("timed out after {seconds} s (cell {cell} was still running)").format(
                seconds=f"{timeout:g}", cell=index + 1)
        except DeadKernelError:
            how = _("the kernel died")
        finally:
            if client.km is not None and client.km.has_kernel:  # nbclient left it running
                run_sync(client.km.shutdown_kernel)(now=True)
    errors = [(i, e) for i, c in enumerate(nb.cells) if c.cell_type == "code" and (e := _error(c))]
    if errors and how == _("ran"):
        first, what = errors[0]
        how = ngettext("ran; {count} cell raised (first: cell {cell}, {error})",
                       "ran; {count} cells raised (first: cell {cell}, {error})",
                       len(errors)).format(count=len(errors), cell=first + 1, error=what)
    return how


def _learner_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


def grade(paths: Sequence[Path], *, out: Path, timeout: float) -> list[Row]:
    """Run every notebook and write ``grades.csv``, ``grades.json`` and the executed notebooks.

    >>> rows = grade([Path("ada.ipynb")], out=Path("grades"), timeout=300)  # doctest: +SKIP
    """
    import nbformat

    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    rows = []
    for learner, path in zip(_learner_names(paths), paths, strict=True):
        start = time.monotonic()
        print(_("grading {file} ...").format(file=path), file=sys.stderr, flush=True)
        try:
            nb = nbformat.read(path, as_version=4)
            assert all(cell.cell_type and "source" in cell for cell in nb.cells)
        except Exception as exc:  # any file nbformat cannot read as a notebook
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            how = _("not a notebook ({error})").format(
                error=type(exc).__name__ + (": " + reason if reason else ""))
            print(f"{path}: {how}", file=sys.stderr)
            rows.append(Row(learner, str(path), how, round(time.monotonic() - start, 1)))
            continue
        how = run_notebook(nb, path, timeout)
        safe = re.sub(r"[^\w.-]+", "_", learner)
        nbformat.write(nb, out / "notebooks" / f"{safe}.ipynb")
        rows.append(Row(learner, str(path), how, round(time.monotonic() - start, 1),
                        read_results(nb)))
    _write(rows, out)
    return rows


def exercises_of(rows: Sequence[Row]) -> list[str]:
    """The columns: every exercise of every chapter some notebook calls a checker of.

    >>> exercises_of([Row("ada", "ada.ipynb", "ran", 1.0, {"ch3.2": Result("OK")})])
    ['ch3.1', 'ch3.2', 'ch3.3', 'ch3.4']
    """
    chapters = sorted({int(ex[2:].split(".")[0]) for row in rows for ex in row.results})
    return [f"ch{ch}.{n}" for ch in chapters for n in range(1, len(CHECKERS[ch]) + 1)]


def _status(row: Row, exercise: str) -> str:
    result = row.results.get(exercise)
    return result.status if result else "missing"


def _shown(status: str) -> str:
    """A status as the table shows it: the verdict tags as they are, ``error``/``missing`` translated."""
    return {"error": _("error"), "missing": _("missing")}.get(status, status)


def table(rows: Sequence[Row]) -> str:
    """The learner x exercise table as aligned text, with how each notebook ran.

    >>> print(table(rows))  # doctest: +SKIP
    learner  ch1.1  ch1.2  ch1.3    ch1.4    notebook
    """
    columns = exercises_of(rows)
    header = [_("learner"), *columns, _("notebook")]
    body = [[row.learner, *(_shown(_status(row, ex)) for ex in columns), row.notebook]
            for row in rows]
    widths = [max(_width(line[i]) for line in [header, *body]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(_pad(cell, w) for cell, w in zip(line, widths, strict=False)),
                                line[-1]]).rstrip() for line in [header, *body])


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide characters (中文) take two.

    >>> _width("learner"), _width("学员")
    (7, 4)
    """
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _write(rows: Sequence[Row], out: Path) -> None:
    columns = exercises_of(rows)
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["learner", "file", *columns, "notebook", "seconds"])
        for row in rows:
            writer.writerow([row.learner, row.file, *(_status(row, ex) for ex in columns),
                             row.notebook, row.seconds])
    data = {"exercises": columns,
            "learners": [{**asdict(row), "results": {
                ex: asdict(row.results.get(ex, Result("missing"))) for ex in columns}}
                for row in rows]}
    (out / "grades.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m helpers.grade NOTEBOOK... [--out DIR] [--timeout S]``.

    >>> main(["submissions/ada.ipynb", "--out", "grades"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grade",
        description=_("Re-run learners' notebooks headless and tabulate their exercise verdicts."))
    parser.add_argument("notebooks", nargs="*", type=Path, help=_("the learners' .ipynb files"))
    parser.add_argument("--out", type=Path, default=Path("grades"),
                        help=_("folder for grades.csv, grades.json and the executed notebooks "
                               "(default: grades)"))
    parser.add_argument("--timeout", type=float, default=600,
                        help=_("seconds one notebook may run in all (default: 600)"))
    args = parser.parse_args(argv)
    if not args.notebooks:
        parser.error(_("no notebooks given; pass the learners' files, e.g. submissions/*.ipynb"))
    if args.timeout <= 0:
        parser.error(_("--timeout must be a positive number of seconds, got {timeout}").format(
            timeout=f"{args.timeout:g}"))
    absent = [str(p) for p in args.notebooks if not p.is_file()]
    if absent:
        parser.error(_("no such file: {files} (a shell pattern that matches nothing stays as it "
                       "is)").format(files=", ".join(absent)))
    rows = grade(args.notebooks, out=args.out, timeout=args.timeout)
    print(table(rows))
    print()
    print(_("written: {csv}, {json}, {folder}/").format(
        csv=args.out / "grades.csv", json=args.out / "grades.json", folder=args.out / "notebooks"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
