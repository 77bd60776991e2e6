"""The course in JupyterLab in a real browser (marker ``browser``).

A JupyterLab server runs on a temporary copy of ``notebooks/`` (nothing in the repository changes)
and headless Chromium, driven by playwright, does what a learner does in each notebook: restart the
kernel and run all cells. The test then checks the page: every cell ran, no cell shows an error
(pitfalls print theirs through expect_error), and the class-count and device widgets are real
widgets, not their text fallback. In one chapter it moves the class-count slider, re-runs the
cells below it and checks that the model output size on the page follows. One screenshot per
notebook is saved under ``tests/artifacts/screenshots/`` (git-ignored); the test prints the paths.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``; playwright's own
browser download is not used). Without it the tests skip, unless ``COURSE_REQUIRE_BROWSER=1``
(set by ``.ci/run``) turns the skip into a failure. ``COURSE_CHROMIUM`` points elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers.settings import DEFAULT_CLASSES, MAX_CLASSES, MIN_CLASSES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# One chapter of the Chinese edition runs too (chapter 1: widgets, checkers and a diagram); its code
# is the English code, so the other Chinese chapters add no browser behaviour to check.
IN_LAB = NOTEBOOKS + sorted((ROOT / "notebooks" / "zh").glob("01_*.ipynb"))
CJK_VERDICT = re.compile(r"\[TODO\][^\n]*[\u4e00-\u9fff]")
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
SETTINGS_CALL = "course_settings("
NEW_CLASS_COUNT = 3  # what the test sets the slider to; any value other than the default works
RUN_TIMEOUT_MS = 300_000  # per Run All: far above the budget, it only turns a hang into a failure
# A shape as printed by torch (torch.Size([8, 10])) or as a tuple ((8, 10)).
SHAPE = re.compile(r"torch\.Size\(\[(\d+(?:, \d+)*)\]\)|\((\d+(?:, \d+)+)\)")
WIDGET_AS_TEXT = re.compile(r"\b(IntSlider|Dropdown|HBox|VBox|FloatProgress|IntProgress)\(")

assert MIN_CLASSES <= NEW_CLASS_COUNT <= MAX_CLASSES and NEW_CLASS_COUNT != DEFAULT_CLASSES


# --- static facts about the committed notebooks (no browser needed) ------------------------------

def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        text = out.get("text") or out.get("data", {}).get("text/plain", "")
        parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def _last_dims(text: str) -> list[int]:
    return [int((m[1] or m[2]).split(", ")[-1]) for m in SHAPE.finditer(text)]


def _settings_index(cells: list[dict]) -> int | None:
    return next((i for i, c in enumerate(cells)
                 if c["cell_type"] == "code" and SETTINGS_CALL in _source(c)), None)


def _output_size_cell(cells: list[dict]) -> int | None:
    """The first cell below the settings cell whose saved output shows a shape ending in the
    default class count: the model output size that must follow the slider."""
    start = _settings_index(cells)
    if start is None:
        return None
    for index in range(start + 1, len(cells)):
        cell = cells[index]
        if cell["cell_type"] == "code" and DEFAULT_CLASSES in _last_dims(_output_text(cell)):
            return index
    return None


def _widget_change_params() -> list:
    with_settings = [p for p in NOTEBOOKS if _settings_index(_cells(p)) is not None]
    for path in with_settings:
        if _output_size_cell(_cells(path)) is not None:
            return [path.name]
    if with_settings:  # chapters exist, but none shows what the slider changes: the test fails
        return [pytest.param(None, id="no-chapter-shows-an-output-shape")]
    no_chapter = pytest.mark.skip(reason="no chapter with a settings widget yet")
    return [pytest.param(None, marks=no_chapter)]


# --- the browser ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (Debian/Ubuntu: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (make test installs requirements-dev.txt)"
    if problem:
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{problem}; COURSE_REQUIRE_BROWSER=1 makes a missing browser a failure")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server with an empty token on a copy of notebooks/; yields its base URL."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("lab")
    root_dir = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root_dir,
                    ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints", "__pycache__"))
    settings_dir = tmp / "user-settings" / "@jupyterlab"
    # All cells stay in the DOM (the default attaches off-screen cells lazily), and no news fetch.
    (settings_dir / "notebook-extension").mkdir(parents=True)
    (settings_dir / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}')
    (settings_dir / "apputils-extension").mkdir(parents=True)
    (settings_dir / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    env = dict(os.environ, COURSE_DEVICE="cpu", JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), IPYTHONDIR=str(tmp / "ipython"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("COURSE_NUM_CLASSES", "MPLBACKEND"):  # the learner's defaults: 10, inline plots
        env.pop(name, None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
           "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root_dir}",
           f"--LabApp.user_settings_dir={tmp / 'user-settings'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url="]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (tmp / "jupyterlab.log").open("w")
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start on port {port}:\n"
                            + (tmp / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def open_notebooks():
    """Pages left open after their notebook ran, for the widget test to continue in."""
    return {}


@pytest.fixture
def show(capsys):
    """Print into the test output even when pytest captures it (screenshot paths)."""
    def _show(message: str) -> None:
        with capsys.disabled():
            print(f"\n    {message}", end="")
    return _show


CELLS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  return panel.content.widgets.map((cell, index) => {
    const model = cell.model;
    if (model.type !== 'code') return {index, type: model.type};
    const outputs = [];
    for (let i = 0; i < model.outputs.length; i++) outputs.push(model.outputs.get(i).toJSON());
    return {index, type: 'code', source: model.sharedModel.getSource(),
            tags: model.getMetadata('tags') || [], count: model.executionCount,
            prompt: cell.node.querySelector('.jp-InputPrompt')?.textContent || '',
            text: cell.outputArea.node.textContent, outputs};
  });
}"""

IDLE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session?.kernel;
  const busy = [...panel.node.querySelectorAll('.jp-InputPrompt')]
    .some(p => p.textContent.includes('[*]'));
  return kernel?.status === 'idle' && !busy;
}"""

START_COMMAND_JS = """(command) => {
  window.__courseRun = null;
  window.jupyterapp.commands.execute(command).then(
    ok => { window.__courseRun = {ok}; }, err => { window.__courseRun = {error: String(err)}; });
}"""

# The command's promise settles at the first error, while the kernel still works through the
# queued cells (and JupyterLab already cleared their [*]). An empty request queued behind them
# finishes only after the last of them, and its idle status arrives after all their outputs.
BARRIER_JS = """() => {
  window.__courseBarrier = false;
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  kernel.requestExecute({code: '', silent: true, store_history: false}).done.then(
    () => { window.__courseBarrier = true; }, () => { window.__courseBarrier = true; });
}"""


class LabNotebook:
    """One notebook open in its own JupyterLab page."""

    def __init__(self, browser, base: str, name: str):
        self.name = name
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.console: list[str] = []
        self.page.on("pageerror", lambda err: self.console.append(f"page error: {err}"))
        workspace = re.sub(r"\W", "-", name)
        self.page.goto(f"{base}/lab/workspaces/{workspace}/tree/{quote(name)}?reset")
        self.page.wait_for_function(
            """(name) => { const w = window.jupyterapp?.shell?.currentWidget;
                           return !!(w && w.context?.path === name && w.sessionContext); }""",
            arg=name, timeout=120_000)
        self.page.evaluate("""async () => {
            const w = window.jupyterapp.shell.currentWidget;
            await w.context.ready; await w.sessionContext.ready; }""")
        self.page.wait_for_function(IDLE_JS, timeout=120_000)

    def _run(self, command: str, *, confirm_restart: bool = False) -> None:
        self.page.evaluate(START_COMMAND_JS, command)
        if confirm_restart:  # "Restart Kernel? ... All variables will be lost." -> Restart
            dialog = self.page.locator(".jp-Dialog")
            dialog.wait_for(timeout=60_000)
            assert "Restart" in dialog.inner_text()
            dialog.locator(".jp-mod-accept").click()
        self.page.wait_for_function("() => window.__courseRun !== null", timeout=RUN_TIMEOUT_MS)
        result = self.page.evaluate("() => window.__courseRun")
        assert "error" not in result, f"{self.name}: {command} failed: {result['error']}"
        self.page.evaluate(BARRIER_JS)
        self.page.wait_for_function("() => window.__courseBarrier", timeout=RUN_TIMEOUT_MS)
        self.page.wait_for_function(IDLE_JS, timeout=RUN_TIMEOUT_MS)

    def restart_and_run_all(self) -> None:
        self._run("notebook:restart-run-all", confirm_restart=True)

    def run_all_below(self, index: int) -> None:
        """Run cell ``index`` and all below it (Run > Run Selected Cell and All Below)."""
        self.page.evaluate(
            "(i) => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", index)
        self._run("notebook:run-all-below")

    def cells(self) -> list[dict]:
        return self.page.evaluate(CELLS_JS)

    def cell(self, index: int):
        """The cell's DOM node as a playwright locator."""
        self.page.evaluate("""(i) => { const cell = window.jupyterapp.shell.currentWidget
                                       .content.widgets[i]; cell.node.dataset.courseCell = i; }""",
                           index)
        return self.page.locator(f'[data-course-cell="{index}"]')

    def screenshot(self, stem: str, index: int | None = None) -> Path:
        if index is not None:
            self.cell(index).evaluate("node => node.scrollIntoView({block: 'center'})")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{stem}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        """Shut the kernel down and close the page (the server's exit would end the kernel too)."""
        try:
            self.page.evaluate("async () => { await window.jupyterapp.shell.currentWidget"
                               ".sessionContext.shutdown(); }")
        finally:
            self.page.close()

    def close_after_failure(self) -> None:
        """Close without hiding the failure; show what the page logged."""
        for line in self.console:
            print(line)
        try:
            self.close()
        except Exception as err:  # the page may be gone already
            print(f"closing {self.name}: {err}")


def _check_ran_cleanly(name: str, cells: list[dict], first: int = 0) -> None:
    code = [c for c in cells if c["type"] == "code" and c["index"] >= first]
    skipped = [c["index"] for c in code if c["count"] is None]
    errors = [(c, o) for c in code for o in c["outputs"] if o["output_type"] == "error"]
    shown = [(c["index"], o.get("ename"), o.get("evalue", "")[:200]) for c, o in errors]
    assert not skipped, f"{name}: cells {skipped} never ran; Run All stopped early. Errors: {shown}"
    assert not errors, (f"{name}: cells raised {shown}; a pitfall shows its error through "
                        "helpers.errors.expect_error, never by raising")
    for c in code:
        as_text = WIDGET_AS_TEXT.search(c["text"])
        assert not as_text, (f"{name}: cell {c['index']} shows a widget as text "
                             f"({as_text[0]}...): the widget front end did not render it")
        assert "Error displaying widget" not in c["text"], f"{name}: cell {c['index']}: {c['text']}"


def _wait_for_settings_widgets(nb: LabNotebook, index: int) -> None:
    """The settings cell shows a real slider and dropdown (DOM widgets), not text."""
    cell = nb.cell(index)
    cell.locator(".jupyter-widgets.widget-slider").wait_for(timeout=60_000)
    cell.locator(".jupyter-widgets.widget-dropdown").wait_for(timeout=60_000)
    readout = cell.locator(".widget-slider .widget-readout")
    assert readout.inner_text().strip() == str(DEFAULT_CLASSES)
    assert cell.locator(".widget-dropdown select").input_value() == "cpu"


def _run_notebook(browser, lab, name: str) -> LabNotebook:
    nb = LabNotebook(browser, lab, name)
    try:
        nb.restart_and_run_all()
    except BaseException:
        nb.close_after_failure()  # a kernel left running would slow down the next notebooks
        raise
    return nb


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", IN_LAB, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_notebook_runs_in_jupyterlab(browser, lab, open_notebooks, show, path):
    name = path.relative_to(ROOT / "notebooks").as_posix()  # zh/01_... for the Chinese edition
    start = time.perf_counter()
    nb = _run_notebook(browser, lab, name)
    try:
        cells = nb.cells()
        _check_ran_cleanly(name, cells)
        if path.parent.name == "zh":  # the helpers spoke Chinese in the browser's kernel
            assert any(CJK_VERDICT.search(c["text"]) for c in cells if c["type"] == "code"), (
                f"{name}: no checker verdict in Chinese; the language cell did not take effect")
        settings = _settings_index(_cells(path))
        if settings is not None:
            _wait_for_settings_widgets(nb, settings)
        shot = nb.screenshot(name.removesuffix(".ipynb").replace("/", "-"), settings)
    except BaseException:
        nb.close_after_failure()
        raise
    seconds = time.perf_counter() - start
    show(f"screenshot: {shot.relative_to(ROOT)} ({seconds:.0f} s in the browser)")
    open_notebooks[name] = nb
    if len(open_notebooks) > 1:  # keep only the latest page (and kernel) open
        for other in [n for n in open_notebooks if n != name]:
            open_notebooks.pop(other).close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("name", _widget_change_params())
def test_class_count_widget_changes_the_model_output_size(browser, lab, open_notebooks, show, name):
    if name is None:
        pytest.fail(f"no chapter shows a model output shape ending in {DEFAULT_CLASSES} (e.g. "
                    "torch.Size([8, 10])) below its settings cell, so nothing shows the class-count "
                    "widget at work")
    path = ROOT / "notebooks" / name
    settings = _settings_index(_cells(path))
    target = _output_size_cell(_cells(path))
    nb = open_notebooks.pop(name, None) or _run_notebook(browser, lab, name)
    failed = True
    try:
        before = nb.cells()
        assert DEFAULT_CLASSES in _last_dims(before[target]["text"]), before[target]["text"]
        readout = nb.cell(settings).locator(".widget-slider .widget-readout")
        readout.click()
        nb.page.keyboard.press("Control+A")
        nb.page.keyboard.type(str(NEW_CLASS_COUNT))
        nb.page.keyboard.press("Enter")
        nb.page.wait_for_function(
            "([el, want]) => el.textContent.trim() === want",
            arg=[readout.element_handle(), str(NEW_CLASS_COUNT)], timeout=30_000)
        nb.run_all_below(settings + 1)
        after = nb.cells()
        _check_ran_cleanly(name, after, first=settings + 1)
        last_count = max(c["count"] or 0 for c in before if c["type"] == "code")
        rerun = [c["index"] for c in after[settings + 1:]
                 if c["type"] == "code" and c["count"] <= last_count]
        assert not rerun, f"{name}: cells {rerun} were not re-run"
        assert readout.inner_text().strip() == str(NEW_CLASS_COUNT)  # the re-run kept the value
        dims = _last_dims(after[target]["text"])
        assert NEW_CLASS_COUNT in dims and DEFAULT_CLASSES not in dims, (
            f"{name}: after setting the slider to {NEW_CLASS_COUNT}, cell {target} shows "
            f"{after[target]['text']!r}")
        shot = nb.screenshot(f"{path.stem}-classes-{NEW_CLASS_COUNT}", target)
        failed = False
    finally:
        nb.close_after_failure() if failed else nb.close()
    show(f"cell {target}: {before[target]['text'].strip()[:60]!r} -> "
         f"{after[target]['text'].strip()[:60]!r}; screenshot: {shot.relative_to(ROOT)}")
