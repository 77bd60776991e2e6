"""Every chapter ends with "Further reading": links of the right form to the official docs (never
fetched: the tests run offline), and the source article is credited with its repository."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("0[1-4]_*.ipynb"))
# The Chinese edition keeps the same links under its own heading.
FURTHER_READING = {"notebooks": "## Further reading", "zh": "## 延伸阅读"}
BOTH = CHAPTERS + sorted((ROOT / "notebooks" / "zh").glob("0[1-4]_*.ipynb"))
LINK = re.compile(r"\[[^\]]+\]\((?P<url>[^)\s]+)\)")
# Official documentation hosts; anything else in Further reading needs a reason to be there.
HOSTS = {"docs.pytorch.org", "huggingface.co", "onnxruntime.ai", "github.com"}
SOURCE_REPO = "https://github.com/datawhalechina/thorough-pytorch"


def _markdown(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", BOTH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_chapter_ends_with_further_reading_of_well_formed_official_links(path):
    last = _markdown(path)[-1]
    heading = FURTHER_READING[path.parent.name]
    assert last.startswith(heading), f"{path.name}: the last cell is not {heading}"
    urls = [m["url"] for m in LINK.finditer(last)]
    assert len(urls) >= 4, urls
    for url in urls:
        match = re.fullmatch(r"https://(?P<host>[a-z0-9.-]+)(?P<path>/[^\s]*)?", url)
        assert match, f"{path.name}: {url!r} is not an https URL"
        assert match["host"] in HOSTS, f"{path.name}: {url} is not on an official documentation host"
        if match["host"] == "docs.pytorch.org":
            assert re.match(r"/(docs|tutorials|vision)/stable/|/tutorials/", match["path"] or ""), url
            assert re.search(r"\.html(#[\w.-]+)?$", url), f"{url}: docs pages end in .html"
    assert SOURCE_REPO in last, f"{path.name}: Further reading does not credit the source"


def test_the_source_article_has_one_name_introduced_in_chapter_1_with_its_link():
    names = set()
    for path in CHAPTERS:
        for text in _markdown(path):
            names |= {m.lower() for m in re.findall(r"\b(?:seed|source) article", text, re.I)}
    assert names == {"source article"}, names
    intro = _markdown(CHAPTERS[0])[0]
    assert "*the source article*" in intro and SOURCE_REPO in intro
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Where the course comes from" in readme and SOURCE_REPO in readme


def test_the_chinese_edition_calls_it_the_original_and_links_it_in_chapter_1():
    chinese = sorted((ROOT / "notebooks" / "zh").glob("0[1-4]_*.ipynb"))
    if not chinese:
        pytest.skip("no Chinese edition built")
    intro = _markdown(chinese[0])[0]
    assert "原文" in intro and SOURCE_REPO in intro and "深入浅出PyTorch" in intro
    for path in chinese:
        text = "\n".join(_markdown(path))
        assert "source article" not in text.lower(), f"{path.name}: English name left in the Chinese text"
