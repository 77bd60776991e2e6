"""The exercises of chapters 1-4 as a learner meets them: scaffolds first, solutions one call away.

- The committed notebook holds scaffolds (cells tagged ``exercise``), and the checker cell after
  each prints one ``[TODO]`` line: *Run all* goes on, and no ``[OK]`` appears before the learner
  has written anything.
- The same notebook with every ``exercise`` cell replaced by ``helpers.exercises.chN.solution(n)``
  runs top to bottom and every checker prints ``[OK]``.

Both hold for the Chinese edition (notebooks/zh/) too: its checkers speak Chinese, but print the
same tags.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = {1: "01_model_definition", 2: "02_model_modification", 3: "03_saving_and_loading",
            4: "04_full_pipeline"}
STATUS = ("[OK]", "[TODO]", "[TRY AGAIN]")
EDITIONS = {"en": (NOTEBOOKS, "## Exercises"), "zh": (NOTEBOOKS / "zh", "## 练习")}
CASES = [pytest.param(edition, chapter, id=f"{edition}-{chapter}")
         for edition in EDITIONS for chapter in sorted(CHAPTERS)
         if (EDITIONS[edition][0] / f"{CHAPTERS[chapter]}.ipynb").exists()]


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _exercises(nb) -> list[tuple[int, int]]:
    """(exercise cell index, checker cell index): the checker is the next code cell."""
    pairs = []
    for i, cell in enumerate(nb.cells):
        if "exercise" in cell.metadata.get("tags", []):
            assert cell.cell_type == "code", f"cell {i} is tagged exercise but is not code"
            checker = next(j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code")
            pairs.append((i, checker))
    return pairs


def _status_lines(cell) -> list[str]:
    return [line for line in _text(cell).splitlines() if line.startswith(STATUS)]


@pytest.mark.parametrize(("edition", "chapter"), CASES)
def test_committed_notebook_holds_scaffolds(edition, chapter):
    folder, heading = EDITIONS[edition]
    nb = nbformat.read(folder / f"{CHAPTERS[chapter]}.ipynb", as_version=4)
    pairs = _exercises(nb)
    assert len(pairs) >= 3, f"chapter {chapter} has {len(pairs)} exercise cells; at least 3 expected"
    start = next(i for i, c in enumerate(nb.cells)
                 if c.cell_type == "markdown" and c.source.lstrip().startswith(heading))
    assert all(i > start for i, _ in pairs), "exercise cells belong in the Exercises section"
    for n, (_, checker) in enumerate(pairs, 1):
        lines = _status_lines(nb.cells[checker])
        assert len(lines) == 1 and lines[0].startswith("[TODO] "), \
            f"chapter {chapter} exercise {n}: the checker printed {lines}, expected one [TODO] line"
        assert not any(o.output_type == "execute_result" for o in nb.cells[checker].outputs), \
            f"chapter {chapter} exercise {n}: the checker returns a value that Jupyter echoes"
    tail = "".join(_text(c) for c in nb.cells[start:])
    assert "[OK]" not in tail, f"chapter {chapter}: an [OK] in the Exercises section before any answer"


@pytest.mark.slow
@pytest.mark.parametrize(("edition", "chapter"), CASES)
def test_solutions_make_every_checker_pass(edition, chapter, tmp_path):
    from nbclient import NotebookClient

    solution = importlib.import_module(f"helpers.exercises.ch{chapter}").solution
    folder = EDITIONS[edition][0]
    nb = nbformat.read(folder / f"{CHAPTERS[chapter]}.ipynb", as_version=4)
    pairs = _exercises(nb)
    for n, (index, _) in enumerate(pairs, 1):
        nb.cells[index].source = str(solution(n))
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks", ignore=shutil.ignore_patterns("runs"))
    where = tmp_path / "notebooks" / folder.relative_to(NOTEBOOKS)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(where)}}).execute()
    for n, (_, checker) in enumerate(pairs, 1):
        lines = _status_lines(nb.cells[checker])
        assert len(lines) == 1 and lines[0].startswith("[OK] "), \
            f"chapter {chapter} exercise {n} with solution({n}): the checker printed {lines}"


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_solution_lookup(chapter):
    module = importlib.import_module(f"helpers.exercises.ch{chapter}")
    nb = nbformat.read(NOTEBOOKS / f"{CHAPTERS[chapter]}.ipynb", as_version=4)
    count = len(_exercises(nb))
    for n in range(1, count + 1):
        code = module.solution(n)
        compile(code, f"ch{chapter} solution {n}", "exec")
        assert "```python" in code._repr_markdown_()
    with pytest.raises(ValueError, match=f"no exercise {count + 1}"):
        module.solution(count + 1)
