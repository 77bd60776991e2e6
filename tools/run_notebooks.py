"""Re-run notebooks from a clean kernel and save their outputs in place (`make notebooks`).

    python -m tools.run_notebooks notebooks/01_model_definition.ipynb [...]

The saved notebook is what `pytest --nbval` compares against, so this strips what changes on every
run and means nothing to a reader: widget state (GitHub renders widgets without it) and timing
metadata. Run it with COURSE_DEVICE=cpu so the committed outputs come from a CPU run (the Makefile
does).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "python3"
REPO = Path(__file__).resolve().parents[1]
# Tracebacks name files by absolute path; a committed notebook shows them relative instead.
_SITE_PACKAGES = re.compile(r"/[^\s'\"]*?/site-packages/")


def relative_paths(text: str) -> str:
    """``/home/me/course/.venv/lib/python3.11/site-packages/torch/x.py`` -> ``site-packages/torch/x.py``
    and ``/home/me/course/helpers/x.py`` -> ``helpers/x.py``."""
    return _SITE_PACKAGES.sub("site-packages/", text).replace(f"{REPO}/", "")


def clean(nb: nbformat.NotebookNode) -> None:
    """Drop run-specific metadata so that re-running an unchanged notebook changes no bytes."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": KERNEL}
    nb.metadata.setdefault("language_info", {})["version"] = "3"
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                out.get("metadata", {}).pop("execution", None)
                if out.output_type == "error":
                    out.traceback = [relative_paths(line) for line in out.traceback]


def run(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    raising = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            # The comment tells the reader (and nbval); the tag tells nbclient, JupyterLab's
            # "run all" and the browser test that this cell fails on purpose. Keep both in step.
            tags = cell.metadata.get("tags", [])
            if "NBVAL_RAISES_EXCEPTION" in cell.source:
                if "raises-exception" not in tags:
                    cell.metadata["tags"] = [*tags, "raises-exception"]
                raising.append(cell)
            elif "raises-exception" in tags:
                raise RuntimeError(f"{path}: a cell is tagged raises-exception but lacks the "
                                   f"# NBVAL_RAISES_EXCEPTION comment:\n{cell.source}")
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=False)
    client.execute()
    for cell in raising:
        if not any(out.output_type == "error" for out in cell.outputs):
            raise RuntimeError(f"{path}: a cell marked NBVAL_RAISES_EXCEPTION did not raise:\n"
                               f"{cell.source}")
    clean(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        path = Path(name)
        seconds = run(path)
        print(f"{path}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
