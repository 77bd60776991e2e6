"""helpers.article keeps the source article's defective TinyResNet verbatim, and chapter 1 shows
it honestly: the NameError comes from the article's code in every kernel state, and the class that
"runs unchanged once Bottleneck is defined" has exactly the article's lines."""

import ast
import inspect
import json
from pathlib import Path

import pytest
import torch

from helpers import article
from helpers.models import Bottleneck

CHAPTER1 = Path(__file__).resolve().parents[1] / "notebooks" / "01_model_definition.ipynb"


def test_building_the_article_model_raises_the_real_name_error():
    with pytest.raises(NameError, match="^name 'Bottleneck' is not defined$"):
        article.TinyResNet()


def test_a_bottleneck_defined_elsewhere_does_not_hide_the_defect():
    namespace = {"Bottleneck": Bottleneck, "article": article}  # as in a kernel that imported it
    with pytest.raises(NameError, match="'Bottleneck' is not defined"):
        exec("article.TinyResNet()", namespace)
    assert not hasattr(article, "Bottleneck")


def _class_body(source: str, name: str) -> str:
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)
    node.name = "TinyResNet"
    return ast.unparse(node)


def test_chapter_1_runs_the_article_lines_unchanged_once_bottleneck_exists():
    cells = ["".join(c["source"]) for c in json.loads(CHAPTER1.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    retyped = next(c for c in cells if c.startswith("class ArticleTinyResNet("))
    assert _class_body(retyped, "ArticleTinyResNet") == \
        _class_body(inspect.getsource(article), "TinyResNet")
    namespace = {"nn": torch.nn, "Bottleneck": Bottleneck}
    exec(retyped.split("\n\n\n")[0], namespace)
    assert namespace["ArticleTinyResNet"]()(torch.zeros(1, 64, 8, 8)).shape == (1, 64, 8, 8)


def test_no_learner_cell_of_chapter_1_edits_globals():
    text = CHAPTER1.read_text(encoding="utf-8")
    assert "globals()" not in text
