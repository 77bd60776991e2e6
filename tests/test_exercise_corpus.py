"""The corpus of learners' answers, judged through the notebook-facing checkers.

For every exercise of chapters 1-4, ``tests/corpus/corpus_chN.py`` holds wrong answers that real
learners write (each must get ``[TRY AGAIN]`` with a message that names the mistake), right answers
written in different ways (``[OK]``), and small mutations of the reference solution (caught). Each
answer runs as an exercise cell in an IPython shell, then the chapter's checker cell runs; the
line it prints is the verdict. The committed scaffolds must get ``[TODO]`` the same way.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))

import corpus_ch1  # noqa: E402
import corpus_ch2  # noqa: E402
import corpus_ch3  # noqa: E402
import corpus_ch4  # noqa: E402
from harness import Notebook  # noqa: E402

CORPORA = {1: corpus_ch1, 2: corpus_ch2, 3: corpus_ch3, 4: corpus_ch4}
NOTEBOOKS = {1: "01_model_definition", 2: "02_model_modification", 3: "03_saving_and_loading",
             4: "04_full_pipeline"}
CASES = [pytest.param(chapter, answer, id=f"ch{chapter}-{answer.id}")
         for chapter, corpus in CORPORA.items() for answer in corpus.ANSWERS]


@functools.cache
def chapter_namespace(chapter: int) -> dict:
    return CORPORA[chapter].namespace()


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook()


@pytest.mark.parametrize("chapter, answer", CASES)
def test_answer_gets_its_verdict(chapter, answer, notebook):
    corpus = CORPORA[chapter]
    line = notebook.run(chapter_namespace(chapter), answer.code, corpus.CHECKS[answer.exercise])
    assert line.startswith(f"[{answer.verdict}] "), f"{answer.label}: {line}"
    for word in answer.words:
        assert word in line, f"{answer.label}: {word!r} not in {line!r}"


def _scaffolds(chapter: int) -> list[str]:
    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{NOTEBOOKS[chapter]}.ipynb"
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("chapter", sorted(CORPORA))
def test_committed_scaffolds_get_todo(chapter, notebook):
    corpus = CORPORA[chapter]
    scaffolds = _scaffolds(chapter)
    assert len(scaffolds) == len(corpus.CHECKS)
    for n, source in enumerate(scaffolds, 1):
        line = notebook.run(chapter_namespace(chapter), source, corpus.CHECKS[n])
        assert line.startswith("[TODO] "), f"chapter {chapter} exercise {n}: {line}"


@pytest.mark.parametrize("chapter", sorted(CORPORA))
def test_every_exercise_has_a_corpus(chapter):
    corpus = CORPORA[chapter]
    for n in corpus.CHECKS:
        answers = [a for a in corpus.ANSWERS if a.exercise == n]
        learners = [a for a in answers if not a.label.startswith("mutation-")]
        wrong = [a for a in learners if a.verdict == "TRY AGAIN"]
        right = [a for a in learners if a.verdict == "OK"]
        assert len(wrong) >= 6, f"chapter {chapter} exercise {n}: {len(wrong)} wrong answers"
        assert len(right) >= 2, f"chapter {chapter} exercise {n}: {len(right)} right answers"
        assert all(a.words for a in wrong), "every wrong answer names words its message must hold"
        assert any(a.label.startswith("mutation-") for a in answers), \
            f"chapter {chapter} exercise {n}: no mutation of the reference solution"
