"""Write the repository URL and the pinned git ref into every notebook, and the website's address
into the READMEs (`make stamp-urls`).

    python -m tools.stamp_urls            # rewrite the notebooks and READMEs in place
    python -m tools.stamp_urls --check    # change nothing; exit 1 if one is out of date

The URL lives in one place, ``pyproject.toml`` ``[project.urls] Repository``, and the ref (a tag or
a commit) in ``[tool.course] colab-ref``. Two things in a notebook carry them:

- the Open-in-Colab badge in the first cell, whose link is
  ``https://colab.research.google.com/github/<owner>/<repo>/blob/<ref>/<path of this notebook>``;
- the Setup cell's course spec, ``"<package> @ git+<url>@<ref>"`` (pip installs it on Colab).

Other Colab links keep the notebook path they point at. Only cell sources change: outputs and
metadata keep their bytes, and a second run changes nothing.

The website's address is ``[project.urls] Documentation`` (``https://...``, ending in ``/``). Each
README has one line that links it (``SITE_LINKS``: the English README the address itself, the
Chinese one its ``zh/`` edition); only the address in that line changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = "colab-badge.svg"
COLAB_LINK = re.compile(
    r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/[^/\s]+/(?P<path>[^\s)\"'<>]+)"
)
GITHUB_URL = re.compile(r"https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(?:\.git)?/?")
REF = re.compile(r"[\w.-]+")  # a tag or a commit; no slashes, so it fits in a Colab link
# README -> (the text just before the site link on its line, the edition's folder under the site)
SITE_LINKS = {
    "README.md": ("Read it as a website, no install needed: ", ""),
    "README.zh-CN.md": ("网站版（无需安装，直接阅读）：", "zh/"),
}


class StampError(ValueError):
    """pyproject.toml or a notebook is not in the shape this tool writes."""


@dataclass(frozen=True)
class Target:
    """Where badges and Setup cells point: ``Target.from_pyproject(Path("pyproject.toml"))``."""

    package: str
    url: str  # https://github.com/<owner>/<repo>
    owner: str
    repo: str
    ref: str
    site: str | None = None  # [project.urls] Documentation, the website's address

    @classmethod
    def from_pyproject(cls, path: Path) -> Target:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        try:
            package = data["project"]["name"]
            raw_url = data["project"]["urls"]["Repository"]
            ref = data["tool"]["course"]["colab-ref"]
        except KeyError as err:
            raise StampError(
                f"{path}: needs [project] name, [project.urls] Repository and "
                f"[tool.course] colab-ref (missing {err})"
            ) from None
        match = GITHUB_URL.fullmatch(raw_url.strip())
        if not match:
            raise StampError(f"{path}: Repository must be https://github.com/<owner>/<repo>, "
                             f"got {raw_url!r} (Colab opens notebooks from GitHub only)")
        if not REF.fullmatch(ref):
            raise StampError(
                f"{path}: colab-ref must be a tag or commit without slashes, got {ref!r}")
        owner, repo = match["owner"], match["repo"]
        site = data["project"]["urls"].get("Documentation")
        if site is not None and not re.fullmatch(r"https://[^\s<>]+/", site):
            raise StampError(f"{path}: Documentation must be the website's https:// address, "
                             f"ending in /, got {site!r}")
        return cls(package, f"https://github.com/{owner}/{repo}", owner, repo, ref, site)

    def colab_link(self, notebook_path: str) -> str:
        return (f"https://colab.research.google.com/github/{self.owner}/{self.repo}"
                f"/blob/{self.ref}/{notebook_path}")

    def pip_pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.package) + r" @ git\+https?://[^\s\"'@]+(?:@[^\s\"']+)?")

    def pip_spec(self) -> str:
        return f"{self.package} @ git+{self.url}@{self.ref}"


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell["source"], list) else text


def stamp_notebook(nb: dict, notebook_path: str, target: Target) -> list[str]:
    """Rewrite the badge and Setup cell of ``nb`` in place; return what is missing from it.

    >>> stamp_notebook(json.loads(text), "notebooks/01_x.ipynb", Target.from_pyproject(pyproject))
    []
    """
    problems = []
    cells = nb.get("cells", [])
    pip = target.pip_pattern()
    badge_cell = next((i for i, c in enumerate(cells) if BADGE_IMAGE in _source(c)), None)
    if badge_cell is None:
        problems.append("no Open-in-Colab badge (a cell showing colab-badge.svg)")
    elif badge_cell != 0:
        problems.append(f"the Open-in-Colab badge is in cell {badge_cell}, not in the first cell")
    found_pip = False
    for index, cell in enumerate(cells):
        text = _source(cell)
        new = text
        if index == badge_cell:
            links = list(COLAB_LINK.finditer(new))
            if not links:
                problems.append("the badge cell has no colab.research.google.com/github link")
            else:  # the badge's own link always opens this notebook
                first = links[0]
                new = new[: first.start()] + target.colab_link(notebook_path) + new[first.end():]
        new = COLAB_LINK.sub(lambda m: target.colab_link(m["path"]), new)
        if cell.get("cell_type") == "code" and pip.search(new):
            found_pip = True
            new = pip.sub(lambda _: target.pip_spec(), new)
        if new != text:
            _set_source(cell, new)
    if not found_pip:
        problems.append(f'no Setup cell with the course spec "{target.package} @ git+<url>@<ref>"')
    return problems


def stamp_readme(text: str, name: str, target: Target) -> tuple[str, list[str]]:
    """Point README ``name``'s website line at ``target.site``; return the text and what is missing.

    >>> stamp_readme(text, "README.md", Target.from_pyproject(pyproject))[1]
    []
    """
    if target.site is None or name not in SITE_LINKS:
        return text, []
    before, folder = SITE_LINKS[name]
    line = re.compile(re.escape(before) + r"<https?://[^>\s]*>")
    if not line.search(text):
        return text, [f"no website line to stamp ({before}<{target.site}{folder}>)"]
    return line.sub(lambda _: f"{before}<{target.site}{folder}>", text), []


def dumps(nb: dict) -> str:
    """Serialize like nbformat.write, so an unchanged notebook keeps its bytes."""
    text = json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
    return text + "\n"


def find_notebooks(root: Path) -> list[Path]:
    """Every notebook under ``root/notebooks``, skipping checkpoints and run folders."""
    found = []
    for path in sorted((root / "notebooks").rglob("*.ipynb")):
        parts = path.relative_to(root).parts
        if not any(p.startswith(".") or p == "runs" for p in parts):
            found.append(path)
    return found


def _settle(rel: str, path: Path, changed: str | None, problems: list[str], *, check: bool,
            what: str) -> bool:
    """Report ``problems``, then write ``changed`` (``None``: nothing to change) or, with ``check``,
    report it as out of date; return whether this file fails the run."""
    for problem in problems:
        print(f"{rel}: {problem}")
    if changed is None:
        return bool(problems)
    if check:
        print(f"{rel}: out of date (run `make stamp-urls`)")
        return True
    path.write_text(changed, encoding="utf-8")
    print(f"{rel}: stamped {what}")
    return bool(problems)


def stamp(root: Path, paths: list[Path] | None = None, *, check: bool = False) -> int:
    """Stamp (or with ``check``, only inspect) the notebooks and READMEs; return the exit code."""
    target = Target.from_pyproject(root / "pyproject.toml")
    failed = False
    for name in SITE_LINKS if paths is None else ():
        readme = root / name
        if readme.exists():
            original = readme.read_text(encoding="utf-8")
            updated, problems = stamp_readme(original, name, target)
            failed |= _settle(name, readme, None if updated == original else updated, problems,
                              check=check, what=str(target.site))
    for path in paths or find_notebooks(root):
        path = path.resolve()
        rel = path.relative_to(root.resolve()).as_posix()
        original = path.read_text(encoding="utf-8")
        nb = json.loads(original)
        problems = stamp_notebook(nb, rel, target)
        updated = dumps(nb)
        same = json.loads(updated) == json.loads(original)  # then keep the file's bytes
        failed |= _settle(rel, path, None if same else updated, problems, check=check,
                          what=f"{target.url}@{target.ref}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/**/*.ipynb")
    parser.add_argument("--root", type=Path, default=ROOT, help="folder with pyproject.toml")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a notebook or README is out of date")
    args = parser.parse_args(argv)
    try:
        return stamp(args.root.resolve(), args.notebooks or None, check=args.check)
    except StampError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
