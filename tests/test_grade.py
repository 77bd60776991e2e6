"""``python -m helpers.grade``: learners' notebooks re-run headless, one row each, whatever they hold.

The fast tests read verdicts from notebooks built here and check the command line's refusals;
the slow ones generate submissions from chapter 1 (the scaffold with solutions pasted, with wrong
answers and fake stored outputs, with exercise cells deleted, with an early cell that raises) and
a notebook that never ends, and grade them in real kernels.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from helpers import grade
from helpers.exercises.ch1 import solution

ROOT = Path(__file__).resolve().parents[1]
CHAPTER1 = ROOT / "notebooks" / "01_model_definition.ipynb"
sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))


def _ran(source: str, text: str = "", error: bool = False):
    cell = new_code_cell(source)
    if text:
        cell.outputs = [new_output("stream", name="stdout", text=text)]
    if error:
        cell.outputs = [new_output("error", ename="NameError", evalue="name 'x' is not defined",
                                   traceback=[])]
    return cell


def test_results_come_from_the_last_call_of_each_checker():
    nb = new_notebook(cells=[
        _ran("check_registered_blocks(BrokenNet(10))", "[TRY AGAIN] your blocks are in ...\n"),
        _ran("x = 1"),
        _ran("check_registered_blocks(FixedNet(10), expected_blocks=3)", "[OK] 3 blocks\n"),
        _ran("check_named_sequential(named_net, num_classes=10, batch=X)",
             "[TODO] Build named_net\n"),
        _ran("check_tiny_resnet(budget_net, ...)", error=True),
        _ran("check_activation_net(act_net, ...)"),
    ])
    results = grade.read_results(nb)
    assert {k: r.status for k, r in results.items()} == {
        "ch1.1": "TODO", "ch1.2": "OK", "ch1.3": "missing", "ch1.4": "error"}
    assert results["ch1.2"].message == "[OK] 3 blocks"


def test_checker_registry_matches_the_notebooks():
    """Every exercise cell's checker cell calls the checker the registry names for it."""
    for chapter, names in grade.CHECKERS.items():
        path = next((ROOT / "notebooks").glob(f"0{chapter}_*.ipynb"))
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [i for i, c in enumerate(code) if "exercise" in c.metadata.get("tags", [])]
        called = [grade.CALL.findall(code[i + 1].source)[-1] for i in tagged]
        assert tuple(called) == names, f"chapter {chapter}"


def test_table_lists_every_exercise_of_the_chapters_seen():
    rows = [grade.Row("ada", "ada.ipynb", "ran", 1.0,
                      {"ch4.2": grade.Result("OK", "[OK] fine")}),
            grade.Row("bob", "bob.ipynb", "not a notebook (NotJSONError)")]
    text = grade.table(rows)
    assert text.splitlines()[0].split() == ["learner", "ch4.1", "ch4.2", "ch4.3", "ch4.4",
                                            "ch4.5", "notebook"]
    assert text.splitlines()[1].split()[:3] == ["ada", "missing", "OK"]
    assert "not a notebook" in text.splitlines()[2]


def test_learners_with_the_same_file_name_are_told_apart():
    names = grade._learner_names([Path("a/ex.ipynb"), Path("b/ex.ipynb"), Path("c/zoe.ipynb")])
    assert names == ["a/ex", "b/ex", "zoe"]


@pytest.mark.parametrize("argv, message", [
    ([], "no notebooks given"),
    (["nothing/here.ipynb"], "no such file: nothing/here.ipynb"),
    (["--timeout", "0", "x.ipynb"], "--timeout must be a positive number"),
])
def test_bad_command_lines_are_refused_with_a_reason(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        grade.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# Real runs -------------------------------------------------------------------------------------

def _chapter1() -> nbformat.NotebookNode:
    return nbformat.read(CHAPTER1, as_version=4)


def _exercise_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", [])]


def _submissions(folder: Path) -> list[Path]:
    import corpus_ch1

    ada = _chapter1()  # every solution pasted
    for n, i in enumerate(_exercise_cells(ada), 1):
        ada.cells[i].source = str(solution(n))
    bob = _chapter1()  # two wrong answers, one untouched, one right; stored outputs say [OK]
    answers = {a.label: a.code for a in corpus_ch1.ANSWERS}
    cells = _exercise_cells(bob)
    bob.cells[cells[0]].source = answers["numbered-layers"]
    bob.cells[cells[1]].source = answers["one-block-repeated"]
    bob.cells[cells[3]].source = answers["width-32"]
    for i in cells:
        bob.cells[i + 1].outputs = [new_output("stream", name="stdout", text="[OK] trust me\n")]
    cat = _chapter1()  # exercises 3 and 4 deleted (exercise and checker cells)
    cat.cells[cells[0]].source = str(solution(1))
    del cat.cells[cells[2]:]
    dan = _chapter1()  # an early cell raises
    dan.cells.insert(5, new_code_cell('raise RuntimeError("my own bug")'))
    paths = []
    for name, nb in {"ada": ada, "bob": bob, "cat": cat, "dan": dan}.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
        paths.append(folder / f"{name}.ipynb")
    return paths


@pytest.mark.slow
def test_grading_chapter1_submissions(tmp_path, capsys):
    paths = _submissions(tmp_path)
    assert grade.main([*map(str, paths), "--out", str(tmp_path / "grades"),
                       "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    with open(tmp_path / "grades" / "grades.csv", encoding="utf-8") as file:
        rows = {row["learner"]: row for row in csv.DictReader(file)}
    status = {name: [row[f"ch1.{n}"] for n in range(1, 5)] for name, row in rows.items()}
    assert status == {
        "ada": ["OK", "OK", "OK", "OK"],
        "bob": ["TRY AGAIN", "TRY AGAIN", "TODO", "OK"],
        "cat": ["OK", "TODO", "missing", "missing"],
        "dan": ["TODO", "TODO", "TODO", "TODO"],
    }
    assert rows["ada"]["notebook"] == "ran"
    assert rows["dan"]["notebook"].startswith("ran; 1 cell raised (first: cell 6, RuntimeError: "
                                              "my own bug)")
    data = json.loads((tmp_path / "grades" / "grades.json").read_text())
    bob = next(row for row in data["learners"] if row["learner"] == "bob")
    assert "same Bottleneck object" in bob["results"]["ch1.2"]["message"]
    assert "learner" in printed and "bob" in printed
    assert (tmp_path / "grades" / "notebooks" / "ada.ipynb").is_file()


@pytest.mark.slow
def test_a_notebook_that_hangs_or_is_no_notebook_still_gets_a_row(tmp_path):
    hang = new_notebook(cells=[
        new_code_cell("from helpers.exercises.ch4 import check_torchrun_command\n"
                      "command = 'torchrun --standalone --nproc-per-node=4 -m helpers.pipeline "
                      "--device cpu --num-classes 10 --epochs 5 --checkpoint-dir runs/ch4/ex4'"),
        new_code_cell("check_torchrun_command(command, processes=4, num_classes=10, epochs=5, "
                      "checkpoint_dir='runs/ch4/ex4')"),
        new_code_cell("while True:\n    pass"),
        new_code_cell("check_cautious_predict(None, None, None)"),
    ])
    nbformat.write(hang, tmp_path / "hang.ipynb")
    (tmp_path / "notes.ipynb").write_text("my answers are in the email", encoding="utf-8")
    rows = grade.grade([tmp_path / "hang.ipynb", tmp_path / "notes.ipynb"],
                       out=tmp_path / "grades", timeout=20)
    hang_row, notes_row = rows
    assert hang_row.notebook.startswith("timed out after 20 s (cell 3")
    assert hang_row.results["ch4.4"].status == "OK"
    assert hang_row.results["ch4.5"].status == "missing"
    assert notes_row.notebook.startswith("not a notebook (NotJSONError")
    assert grade.table(rows).splitlines()[2].split()[:6] == ["notes", *["missing"] * 5]
