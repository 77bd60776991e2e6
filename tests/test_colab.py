"""Colab readiness, checked without Colab.

- The notebooks run from an installed (not editable) copy of the course package, in a folder that
  holds nothing but the ``.ipynb`` files, as after the Setup cell's ``pip install`` on Colab.
- The notebooks run with ipywidgets 7.7.1, the version Colab ships, laid over this environment.
- Committed notebooks render on GitHub (widget metadata, when present, carries its state).
- ``make stamp-urls`` writes the repository URL from pyproject.toml into badges and Setup cells,
  and a second run changes nothing.

The two notebook runs use ``pytest --nbval-lax``: every cell must run (cells marked
NBVAL_RAISES_EXCEPTION must raise), outputs are not compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

from tools import stamp_urls

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COLAB_IPYWIDGETS = "7.7.1"
# What ipywidgets 7.7.1 needs beyond this environment (its pins: widgetsnbextension~=3.6.0,
# ipython_genutils~=0.2.0; jupyterlab_widgets>=1 and the rest are already here).
OVERLAY_PACKAGES = [f"ipywidgets=={COLAB_IPYWIDGETS}", "widgetsnbextension==3.6.*",
                    "ipython_genutils==0.2.0"]
OVERLAY = ROOT / ".venv" / "overlays" / f"ipywidgets-{COLAB_IPYWIDGETS}"  # git-ignored cache
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# On PYTHONPATH before anything else, this hides the repository's editable install (setuptools'
# __editable__ finder) in every Python process of the run, the kernel and the subprocesses that
# notebooks start (python -m helpers.pipeline, torchrun): `helpers` can only come from the
# installed copy, as on Colab. Without it a module missing from the package would be found in the
# repository.
HIDE_EDITABLE = '''\
import sys


def _editable(obj):
    module = getattr(obj, "__module__", None) or type(obj).__module__ or ""
    return module.startswith("__editable__")


sys.meta_path[:] = [f for f in sys.meta_path if not _editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not _editable(h)]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
'''


def _check_notebook(path: Path, lines: list[str]) -> None:
    """A one-cell notebook that asserts, inside a kernel of the run, where things come from."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("\n".join(lines))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _run_nbval_lax(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """pytest --nbval-lax on every notebook in ``folder``, started there (no repo on sys.path)."""
    notebooks = sorted(p.name for p in folder.glob("*.ipynb"))
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
           "--nbval-cell-timeout=600", "-p", "no:cacheprovider", "-q", "-rfE",
           f"--rootdir={folder}", *notebooks]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)


def _assert_passed(result: subprocess.CompletedProcess, what: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{what}: pytest --nbval-lax failed\n{out[-6000:]}"
    print(out.strip().splitlines()[-1])


def _env(pythonpath: list[Path]) -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(p) for p in pythonpath] + [p for p in [env.get("PYTHONPATH", "")] if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    # Kernels, `python -m ...` and torchrun come from this environment, as in `make test`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    return env


# --- the installed package, not the repository ---------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The course package installed (not editable) into a folder of its own, as pip does on Colab.

    Built from a copy of the files the package is made of, so that the build leaves nothing
    (build/, *.egg-info) in the repository; --no-build-isolation uses this environment's
    setuptools, so no network is needed.
    """
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "helpers", source / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-compile", "--no-input", "--target", str(site),
                    str(source)], check=True, capture_output=True, text=True, cwd=tmp)
    return site


def test_the_installed_package_has_every_helpers_module(installed):
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*.py")
                if "__pycache__" not in p.parts}
    shipped = {p.relative_to(installed).as_posix() for p in (installed / "helpers").rglob("*.py")}
    assert expected - shipped == set(), "missing from the installed package (pyproject.toml " \
        "[tool.setuptools.packages.find])"
    assert (installed / "helpers" / "py.typed").exists()


@pytest.mark.slow
def test_notebooks_run_from_the_installed_package(installed, tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(HIDE_EDITABLE)
    folder = tmp_path / "colab"
    folder.mkdir()
    for path in NOTEBOOKS:  # only the notebooks: no helpers/, no pyproject.toml, no conftest.py
        shutil.copy2(path, folder / path.name)
    # One chapter of the Chinese edition: its messages come from the catalog inside the package.
    for path in sorted((ROOT / "notebooks" / "zh").glob("01_*.ipynb")):
        shutil.copy2(path, folder / f"zh_{path.name}")
    site = installed.resolve()
    _check_notebook(folder / "00a_installed_package_check.ipynb", [
        "import importlib, os, pkgutil, sys",
        "import helpers",
        f"site = {str(site)!r}",
        "assert helpers.__file__.startswith(site + os.sep), helpers.__file__",
        "for module in pkgutil.walk_packages(helpers.__path__, 'helpers.'):",
        "    path = importlib.import_module(module.name).__file__",
        "    assert path.startswith(site + os.sep), (module.name, path)",
        f"assert not any(os.path.realpath(p or '.') == {str(ROOT)!r} for p in sys.path), sys.path",
        "print('helpers comes from the installed package')",
    ])
    env = _env([guard, site])
    where = subprocess.run([sys.executable, "-c", "import helpers; print(helpers.__file__)"],
                           cwd=folder, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    result = _run_nbval_lax(folder, env)
    _assert_passed(result, "notebooks with the installed package")


# --- Colab's ipywidgets ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colab_widgets() -> Path:
    """ipywidgets 7.7.1 installed with --target into a cached folder, to go first on PYTHONPATH."""
    marker = OVERLAY / ".complete"
    if marker.exists() and marker.read_text() == "\n".join(OVERLAY_PACKAGES):
        return OVERLAY
    shutil.rmtree(OVERLAY, ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--no-compile", "--no-input", "--target", str(OVERLAY),
                             *OVERLAY_PACKAGES], capture_output=True, text=True)
    assert result.returncode == 0, f"could not install {OVERLAY_PACKAGES}:\n{result.stderr[-3000:]}"
    marker.write_text("\n".join(OVERLAY_PACKAGES))
    return OVERLAY


@pytest.mark.slow
def test_notebooks_run_with_colab_ipywidgets(colab_widgets, tmp_path):
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder,
                    ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    _check_notebook(folder / "00a_ipywidgets_version_check.ipynb", [
        "import ipywidgets",
        f"assert ipywidgets.__version__ == {COLAB_IPYWIDGETS!r}, ipywidgets.__version__",
        f"assert ipywidgets.__file__.startswith({str(colab_widgets.resolve())!r})",
        "from helpers.settings import course_settings",
        "settings = course_settings()",
        "print(ipywidgets.__version__, settings)",
    ])
    result = _run_nbval_lax(folder, _env([colab_widgets.resolve()]))
    _assert_passed(result, f"notebooks with ipywidgets {COLAB_IPYWIDGETS}")


# --- GitHub renders the committed notebooks --------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widget_metadata_lets_github_render_the_notebook(path):
    """GitHub refuses a notebook whose metadata.widgets lacks its `state` ("Invalid Notebook");
    without metadata.widgets it shows each widget output's text/plain fallback."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    widgets = nb["metadata"].get("widgets")
    if widgets is not None:
        for mimetype, entry in widgets.items():
            assert "state" in entry, f"{path.name}: metadata.widgets[{mimetype!r}] has no 'state'"
    for index, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                assert "text/plain" in data, f"{path.name}: cell {index} widget has no text fallback"
                if widgets is not None:
                    model = data[WIDGET_VIEW]["model_id"]
                    assert model in widgets.get(WIDGET_STATE, {}).get("state", {}), (
                        f"{path.name}: cell {index} shows widget {model}, which has no saved state")


# --- make stamp-urls ---------------------------------------------------------------------------------

def _stamp_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    for name in ("pyproject.toml", *stamp_urls.SITE_LINKS):
        shutil.copy2(ROOT / name, root / name)
    for path in NOTEBOOKS:
        shutil.copy2(path, root / "notebooks" / path.name)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "notebooks").glob("*.ipynb"))}


def _without_sources(raw: bytes) -> list:
    nb = json.loads(raw)
    return [nb["metadata"], nb["nbformat"],
            [{k: v for k, v in c.items() if k != "source"} for c in nb["cells"]]]


def test_committed_notebooks_carry_the_repository_url_from_pyproject(capsys):
    assert stamp_urls.stamp(ROOT, check=True) == 0, capsys.readouterr().out


def test_stamp_urls_is_idempotent_and_follows_pyproject(tmp_path):
    root = _stamp_copy(tmp_path)
    assert stamp_urls.stamp(root) == 0
    first = _snapshot(root)
    assert stamp_urls.stamp(root) == 0
    assert _snapshot(root) == first, "a second run changed bytes"

    pyproject = root / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    old_url, old_ref = data["project"]["urls"]["Repository"], data["tool"]["course"]["colab-ref"]
    pyproject.write_text(pyproject.read_text()
                         .replace(f'Repository = "{old_url}"',
                                  'Repository = "https://github.com/learner/fork.git"')
                         .replace(f'colab-ref = "{old_ref}"', 'colab-ref = "0123abc"'))
    assert stamp_urls.stamp(root) == 0
    second = _snapshot(root)
    assert second == _snapshot(root)
    for name, raw in second.items():
        assert raw != first[name], f"{name} kept the old URL"
        assert _without_sources(raw) == _without_sources(first[name]), f"{name}: outputs changed"
        cells = json.loads(raw)["cells"]
        sources = ["".join(c["source"]) for c in cells]
        badge = ("https://colab.research.google.com/github/learner/fork/blob/0123abc/notebooks/"
                 + name)
        assert badge in sources[0], sources[0]
        assert any('"pytorch-model-engineering @ git+https://github.com/learner/fork@0123abc"'
                   in s for s in sources), name
        assert not any(old_url in s or f"@{old_ref}" in s for s in sources), name
    assert stamp_urls.stamp(root) == 0
    assert _snapshot(root) == second, "a second run after the change changed bytes"
    assert stamp_urls.stamp(root, check=True) == 0


def test_stamp_urls_points_both_readmes_at_the_website_in_pyproject(tmp_path, capsys):
    root = _stamp_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    old = tomllib.loads(pyproject.read_text())["project"]["urls"]["Documentation"]
    pyproject.write_text(pyproject.read_text().replace(
        f'Documentation = "{old}"', 'Documentation = "https://learner.github.io/fork/"'))
    readmes = {name: (root / name).read_text(encoding="utf-8") for name in stamp_urls.SITE_LINKS}
    assert stamp_urls.stamp(root, check=True) == 1
    assert "README.md: out of date (run `make stamp-urls`)" in capsys.readouterr().out
    assert stamp_urls.stamp(root) == 0
    english = (root / "README.md").read_text(encoding="utf-8")
    chinese = (root / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "<https://learner.github.io/fork/>" in english and old not in english
    assert "<https://learner.github.io/fork/zh/>" in chinese and old not in chinese
    # only the address changed: every other line keeps its bytes
    for name, text in (("README.md", english), ("README.zh-CN.md", chinese)):
        assert text.replace("https://learner.github.io/fork/", old) == readmes[name], name
    assert stamp_urls.stamp(root, check=True) == 0


def test_stamp_urls_names_a_readme_without_its_website_line(tmp_path, capsys):
    root = _stamp_copy(tmp_path)
    readme = root / "README.zh-CN.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("网站版", "网站"), encoding="utf-8")
    assert stamp_urls.stamp(root, check=True) == 1
    assert "README.zh-CN.md: no website line to stamp (网站版（无需安装，直接阅读）：<" in (
        capsys.readouterr().out)


def test_stamp_urls_check_reports_a_stale_notebook(tmp_path, capsys):
    root = _stamp_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('colab-ref = "', 'colab-ref = "v9.9.9-'))
    before = _snapshot(root)
    assert stamp_urls.stamp(root, check=True) == 1
    assert "out of date (run `make stamp-urls`)" in capsys.readouterr().out
    assert _snapshot(root) == before, "--check wrote files"


@pytest.mark.parametrize("key, bad, message", [
    ("Repository", "https://gitlab.com/someone/course", "Colab opens notebooks from GitHub only"),
    ("Documentation", "http://example.org/course", "Documentation must be the website's https://"),
])
def test_stamp_urls_refuses_an_address_it_cannot_use(tmp_path, key, bad, message):
    root = _stamp_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    url = tomllib.loads(pyproject.read_text())["project"]["urls"][key]
    pyproject.write_text(pyproject.read_text().replace(f'{key} = "{url}"', f'{key} = "{bad}"'))
    with pytest.raises(stamp_urls.StampError, match=message):
        stamp_urls.stamp(root)


def test_colab_ref_resolves_in_this_repository():
    """The badges and Setup cells open the notebooks at colab-ref: it must exist (a branch, tag or
    commit of this repository), or every Colab install fails."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ref = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["course"]["colab-ref"]
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                           cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, (
        f"[tool.course] colab-ref = {ref!r} is not a branch, tag or commit of this repository; "
        "push the tag first, or point colab-ref at the default branch, then `make stamp-urls`")
