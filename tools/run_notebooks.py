"""Re-run notebooks from a clean kernel and save their outputs in place (`make notebooks`).

    python -m tools.run_notebooks notebooks/01_model_definition.ipynb [...]

The saved notebook is what `pytest --nbval` compares against, so this strips what changes on every
run and means nothing to a reader: widget state (GitHub renders widgets without it) and timing
metadata. Run it with COURSE_DEVICE=cpu so the committed outputs come from a CPU run (the Makefile
does).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "python3"
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


def run(path: Path, timeout: int = 600) -> float:
    """Execute ``path`` in a fresh kernel and save it; refuse a notebook with a raising cell.

    Every cell must run without an uncaught exception: Colab, VS Code and papermill stop at the
    first one. Pitfalls show their error through ``helpers.errors.expect_error`` instead.
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            tags = cell.metadata.get("tags", [])
            if "raises-exception" in tags or "NBVAL_RAISES_EXCEPTION" in cell.source:
                raise RuntimeError(f"{path}: a cell is marked to raise; show the error with "
                                   f"helpers.errors.expect_error instead:\n{cell.source}")
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=False)
    client.execute()
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
