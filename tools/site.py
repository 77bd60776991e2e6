"""Build the course website from the committed notebooks (`make site`), both editions, offline.

    python -m tools.site                     # build/site/en/, build/site/zh/, build/site/index.html
    python -m tools.site --out /tmp/site     # somewhere else

Each edition's sources are staged under ``build/site-src/<edition>/``: README (the index page), the
chapters' notebooks with their stored outputs (never re-run) and the notebooks again as downloads.
Staging changes the copies only: the Colab badge image becomes a file of the site, a widget output
becomes a note ("run the notebook to use the widget"), and README's links to repository files
point at GitHub. Sphinx then builds each edition with docs/conf.py (myst-nb, the furo theme).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.stamp_urls import Target

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CHAPTER = re.compile(r"\d\d_\w+\.ipynb")


@dataclass(frozen=True)
class Edition:
    """One language of the site: ``EDITIONS["zh"].notebooks == ROOT / "notebooks" / "zh"``."""

    name: str
    notebooks: Path
    readme: Path
    other_readme: str  # the other edition's README file name, linked from this README
    chapters_caption: str
    widget_note: str


EDITIONS = {
    "en": Edition("en", ROOT / "notebooks", ROOT / "README.md", "README.zh-CN.md", "Chapters",
                  "An interactive widget is shown here when you run the notebook "
                  "(in JupyterLab or Colab); the website shows the notebook's stored outputs only."),
    "zh": Edition("zh", ROOT / "notebooks" / "zh", ROOT / "README.zh-CN.md", "README.md", "章节",
                  "运行笔记本（JupyterLab 或 Colab）时，这里会显示一个交互控件；"
                  "网站只展示笔记本保存的输出。"),
}
EN = EDITIONS["en"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def widget_note(note: str) -> dict:
    """The display_data output that stands in for a widget on the site."""
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/html": f'<p class="course-widget-note">{note}</p>', "text/plain": note}}


def stage_notebook(nb: dict, edition: Edition) -> dict:
    """The site's copy of a chapter: local badge image, widget outputs replaced by a note.

    >>> staged = stage_notebook(json.loads(Path("notebooks/01_model_definition.ipynb").read_text()), EN)
    """
    for cell in nb.get("cells", []):
        text = _source(cell)
        if BADGE_URL in text:
            cell["source"] = text.replace(BADGE_URL, "colab-badge.svg")
        outputs = cell.get("outputs")
        if outputs:
            cell["outputs"] = [widget_note(edition.widget_note) if WIDGET_MIME in out.get("data", {})
                               else out for out in outputs]
    nb.get("metadata", {}).pop("widgets", None)  # saved widget state would pull in widget JS
    return nb


def index_page(edition: Edition, chapters: list[str], target: Target) -> str:
    """README rewritten for the site, with the chapters' table of contents after it."""
    text = edition.readme.read_text(encoding="utf-8")
    other = "zh" if edition.name == "en" else "en"
    # the paragraph that sends README's readers to this website is left out of the website
    site_url = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "urls"].get("Documentation", "https://")
    text = "\n\n".join(p for p in text.split("\n\n") if site_url not in p)

    def link(match: re.Match[str]) -> str:
        label, path = match[1], match[2]
        if path == edition.other_readme:  # the other edition's page, outside this Sphinx project
            return f'<a href="../{other}/index.html" hreflang="{other}">{label}</a>'
        if re.match(r"[a-z]+:|#", path):
            return match[0]
        return f"[{label}]({target.url}/blob/{target.ref}/{path})"

    text = re.sub(r"\[([^\]]*)\]\(([^)\s]+)\)", link, text)
    # the chapter table names the notebooks: each name becomes a link to its page
    prefix = "notebooks/zh/" if edition.name == "zh" else ""
    for stem in chapters:
        text = text.replace(f"`{prefix}{stem}.ipynb`", f"[`{prefix}{stem}.ipynb`]({stem}.ipynb)")
    toctree = "\n".join(chapters)
    return (f"{text.rstrip()}\n\n```{{toctree}}\n:maxdepth: 1\n:caption: {edition.chapters_caption}\n\n"
            f"{toctree}\n```\n")


def stage(edition: Edition, srcdir: Path, target: Target) -> list[str]:
    """Write the Sphinx sources of one edition into ``srcdir``; return the chapters' names."""
    if srcdir.exists():
        shutil.rmtree(srcdir)
    downloads = srcdir / "_extra" / "notebooks"
    downloads.mkdir(parents=True)
    chapters = []
    for path in sorted(edition.notebooks.glob("*.ipynb")):
        if not CHAPTER.fullmatch(path.name):
            continue
        chapters.append(path.stem)
        shutil.copy2(path, downloads / path.name)
        nb = stage_notebook(json.loads(path.read_text(encoding="utf-8")), edition)
        (srcdir / path.name).write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
    if not chapters:
        raise SystemExit(f"no chapter notebooks in {edition.notebooks}")
    shutil.copy2(DOCS / "_static" / "colab-badge.svg", srcdir / "colab-badge.svg")
    (srcdir / "index.md").write_text(index_page(edition, chapters, target), encoding="utf-8")
    return chapters


def build_edition(edition: Edition, out: Path, staging: Path, target: Target) -> None:
    """Stage and build one edition into ``out`` (Sphinx in its own process)."""
    srcdir = staging / edition.name
    chapters = stage(edition, srcdir, target)
    context = {"chapters": chapters, "extra_path": str(srcdir / "_extra")}
    if out.exists():
        shutil.rmtree(out)  # nothing left over from an earlier build
    env = dict(os.environ, COURSE_SITE_EDITION=edition.name, COURSE_SITE_CONTEXT=json.dumps(context))
    # -W: a warning (a broken reference, an output Sphinx cannot show) fails the build
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-W", "--keep-going",
               "-c", str(DOCS), "-d", str(staging / f"doctrees-{edition.name}"), str(srcdir), str(out)]
    subprocess.run(command, env=env, check=True)


ROOT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="0; url=en/index.html">
<title>PyTorch model engineering</title></head>
<body><p><a href="en/index.html">English</a> | <a href="zh/index.html" hreflang="zh">中文</a></p></body>
</html>
"""


def build(out: Path, editions: list[str] | None = None) -> Path:
    """Build the site into ``out`` (``out/en``, ``out/zh``, ``out/index.html``); return ``out``."""
    target = Target.from_pyproject(ROOT / "pyproject.toml")
    staging = out.parent / f"{out.name}-src"
    out.mkdir(parents=True, exist_ok=True)
    for name in editions or list(EDITIONS):
        build_edition(EDITIONS[name], out / name, staging, target)
    (out / "index.html").write_text(ROOT_PAGE, encoding="utf-8")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve _static/ as it is
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    parser.add_argument("--edition", choices=sorted(EDITIONS), action="append",
                        help="build only this edition (repeatable; default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build(args.out.resolve(), args.edition)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"site: {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
