"""The course website (`make site`, tools/site.py) in a real browser (markers ``browser``, ``slow``).

The site is built once into a temporary folder and served on 127.0.0.1; headless Chromium, driven
by playwright, may reach that server only (every other request is aborted and counted as a
failure). Every page must load without a console error or a failed request, every image must have
a size, every link inside the site must lead to a file (and to its anchor), the search must find
``weights_only`` in chapter 3 of both editions, and the language switch must land on the same
chapter. Screenshots of chapter 3 in each language, desktop and phone width, are saved under
``tests/artifacts/screenshots/site-*.png`` (git-ignored).

Quick tests (no browser) check that both READMEs link pyproject's ``Documentation`` address and
that .github/workflows/pages.yml (actionlint, `make site`, actions/deploy-pages) publishes it.

Needs Debian's Chromium like tests/test_browser.py: without it the tests skip, unless
``COURSE_REQUIRE_BROWSER=1`` turns the skip into a failure.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _require_browser
from tools import site

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

CHAPTER = "03_saving_and_loading"
SEARCH_TERM = "weights_only"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SKIP_LINKS = re.compile(r"^(mailto:|javascript:)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The site, built once; yields (folder, seconds the build took)."""
    _require_browser()
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    site.build(out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\nsite built in {seconds:.0f} s, {size / 1e6:.1f} MB")
    return out


@pytest.fixture(scope="module")
def server(built):
    """The built site over HTTP on 127.0.0.1; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class _Page:
    """A page whose requests may reach ``base`` only; records what went wrong."""

    def __init__(self, browser, base: str, viewport: dict | None = None):
        self.context = browser.new_context(viewport=viewport or DESKTOP, service_workers="block")
        self.problems: list[str] = []
        host = urlsplit(base).netloc

        def route(r):
            if urlsplit(r.request.url).netloc == host:
                r.continue_()
            else:
                self.problems.append(f"request to another host: {r.request.url}")
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(
            f"failed request: {r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"HTTP {r.status}: {r.url}"))

    def close(self) -> None:
        self.context.close()


def _pages(built: Path) -> list[str]:
    """Every page of both editions (the root page only redirects: its own test checks it)."""
    return sorted(p.relative_to(built).as_posix() for p in built.glob("*/**/*.html"))


def _ids(path: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))


@pytest.mark.browser
@pytest.mark.slow
def test_every_page_loads_offline_with_its_images_and_internal_links(built, server, browser):
    pages = _pages(built)
    assert {f"{lang}/{CHAPTER}.html" for lang in ("en", "zh")} <= set(pages), pages
    ids: dict[Path, set[str]] = {}
    problems = []
    checked = 0
    for rel in pages:
        tab = _Page(browser, server)
        try:
            tab.page.goto(server + rel, wait_until="load")
            images = tab.page.eval_on_selector_all(
                "img", "els => els.map(e => [e.currentSrc || e.src, e.complete, e.naturalWidth])")
            links = tab.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        finally:
            tab.close()
        problems += [f"{rel}: {p}" for p in tab.problems]
        problems += [f"{rel}: image without a size: {src}" for src, done, width in images
                     if not done or width == 0]
        for href in links:
            if SKIP_LINKS.match(href) or not href.startswith(server):
                continue
            parts = urlsplit(href)
            target = built / unquote(parts.path[len(urlsplit(server).path):])
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                problems.append(f"{rel}: broken link {href}")
            elif parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = _ids(target)
                if unquote(parts.fragment) not in ids[target]:
                    problems.append(f"{rel}: no anchor #{parts.fragment} in {target.name}")
    assert not problems, "\n".join(problems[:40])
    assert checked > 100, f"only {checked} internal links found: the crawl saw no navigation"


@pytest.mark.browser
@pytest.mark.slow
def test_the_site_root_leads_to_the_english_edition(server, browser):
    tab = _Page(browser, server)
    try:
        tab.page.goto(server)
        tab.page.wait_for_url(f"{server}en/index.html")
    finally:
        tab.close()
    assert not tab.problems, tab.problems


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("lang", "term"), [("en", SEARCH_TERM), ("zh", SEARCH_TERM),
                                            ("zh", "断点续训")])  # a glossary word, via jieba
def test_search_finds_weights_only_in_chapter_3(server, browser, lang, term):
    tab = _Page(browser, server)
    try:
        tab.page.goto(f"{server}{lang}/search.html?q={quote(term)}")
        results = tab.page.locator("#search-results ul.search li a")
        results.first.wait_for(timeout=30_000)
        hrefs = results.evaluate_all("els => els.map(e => e.href)")
    finally:
        tab.close()
    assert any(urlsplit(h).path.endswith(f"/{lang}/{CHAPTER}.html") for h in hrefs), hrefs
    assert not tab.problems, tab.problems


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("lang", "other"), [("en", "zh"), ("zh", "en")])
def test_the_language_switch_lands_on_the_same_chapter(server, browser, lang, other):
    tab = _Page(browser, server)
    try:
        tab.page.goto(f"{server}{lang}/{CHAPTER}.html")
        switch = tab.page.locator(".course-bar a.course-lang-switch")
        assert switch.count() == 1
        switch.click()
        tab.page.wait_for_url(f"{server}{other}/{CHAPTER}.html")
        assert tab.page.evaluate("document.documentElement.lang").startswith(other)
        download = tab.page.locator(".course-bar a.course-download").get_attribute("href")
        assert urljoin(tab.page.url, download) == f"{server}{other}/notebooks/{CHAPTER}.ipynb"
    finally:
        tab.close()
    assert not tab.problems, tab.problems


@pytest.mark.browser
@pytest.mark.slow
def test_chapter_pages_carry_the_colab_badge_and_the_notebooks_download(built):
    for lang in ("en", "zh"):
        notebooks = site.EDITIONS[lang].notebooks
        for page in sorted((built / lang).glob("0*.html")):
            text = page.read_text(encoding="utf-8")
            assert "colab.research.google.com/github/" in text, page
            assert re.search(r'<img [^>]*src="_images/colab-badge\.svg"', text), page
            assert site.BADGE_URL not in text, page
            download = built / lang / "notebooks" / f"{page.stem}.ipynb"
            assert download.read_bytes() == (notebooks / download.name).read_bytes()


@pytest.mark.browser
@pytest.mark.slow
def test_widget_outputs_are_a_note_not_an_embed(built):
    """No widget JavaScript or widget view is on any page; each widget output became the note."""
    for edition in site.EDITIONS.values():
        for page in (built / edition.name).glob("0*.html"):
            nb = json.loads((edition.notebooks / f"{page.stem}.ipynb").read_text(encoding="utf-8"))
            widgets = sum(site.WIDGET_MIME in out.get("data", {})
                          for cell in nb["cells"] for out in cell.get("outputs", []))
            text = page.read_text(encoding="utf-8")
            assert site.WIDGET_MIME not in text and "embed-amd.js" not in text, page
            assert "require.js" not in text and "require.min.js" not in text, page
            assert text.count("course-widget-note") == widgets, page
            if widgets:
                assert html.escape(edition.widget_note, quote=False) in text, page


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize(("width", "viewport"), [("desktop", DESKTOP), ("mobile", PHONE)])
def test_screenshots_of_chapter_3(server, browser, lang, width, viewport):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab = _Page(browser, server, viewport)
    try:
        tab.page.goto(f"{server}{lang}/{CHAPTER}.html", wait_until="load")
        path = SCREENSHOTS / f"site-{lang}-{width}.png"
        tab.page.screenshot(path=str(path))
    finally:
        tab.close()
    print(f"screenshot: {path}")
    assert path.stat().st_size > 0 and not tab.problems, tab.problems


def test_readme_links_the_website_named_in_pyproject():
    """pyproject's [project.urls] Documentation is the address both READMEs give (zh/ for 中文)."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]
    assert url.startswith("https://") and url.endswith("/")
    assert f"<{url}>" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"<{url}zh/>" in (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")


# --- .github/workflows/pages.yml: publishing the site ----------------------------------------------

PAGES = ROOT / ".github" / "workflows" / "pages.yml"


def test_actionlint_accepts_the_pages_workflow():
    from tests.test_workflow import _actionlint

    exe = _actionlint()
    if exe is None:
        if os.environ.get("COURSE_REQUIRE_DEV_TOOLS") == "1":  # set by `make test`
            pytest.fail("actionlint is missing: `make test` installs it from requirements-dev.txt")
        pytest.skip("actionlint is missing (no wheel for this platform): `brew install actionlint`")
    result = subprocess.run([exe, "-no-color", str(PAGES.relative_to(ROOT))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pages_workflow_builds_with_make_site_and_deploys_on_the_default_branch():
    import yaml

    from tests.test_workflow import _make_targets

    workflow = yaml.safe_load(PAGES.read_text())
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [step["run"] for step in build["steps"] if "run" in step]
    assert "make site" in runs and "site" in _make_targets()
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "build/site"  # where tools/site.py writes
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert workflow["permissions"] == {"contents": "read"}  # only the deploy job may write
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= 30
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]
