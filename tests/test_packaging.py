"""The install files agree with each other: pyproject.toml, requirements*.txt, environment.yml."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            lines.append(line)
    return lines


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_requirement_line_says_why_it_is_needed():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for raw in (ROOT / name).read_text().splitlines():
            if raw.strip() and not raw.startswith("#") and not raw.startswith("-r"):
                assert "#" in raw, f"{name}: '{raw}' has no comment saying why it is needed"


def test_requirements_txt_is_the_package_plus_its_lab_and_test_extras():
    project = _pyproject()["project"]
    declared = {str(Requirement(r)) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {str(Requirement(r)) for r in extra}
    listed = {str(Requirement(r)) for r in _requirement_lines(ROOT / "requirements.txt")}
    assert listed == declared


def test_torch_floor_is_the_weights_only_release_and_ipywidgets_admits_colab():
    reqs = {Requirement(r).name: Requirement(r) for r in _pyproject()["project"]["dependencies"]}
    assert reqs["torch"].specifier.contains("2.6.0") and not reqs["torch"].specifier.contains("2.5.1")
    assert reqs["ipywidgets"].specifier.contains("7.7.1") and reqs["ipywidgets"].specifier.contains("8.1.5")
    assert not reqs["ipywidgets"].specifier.contains("9.0.0")


def test_environment_yml_installs_requirements_txt():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- -r requirements\.txt\s*$", text, re.M)
    assert re.search(r"^\s+- pip\s*$", text, re.M)
    assert re.search(r"^\s+- python=3\.1\d\s*$", text, re.M)


def test_dev_requirements_include_the_runtime_ones():
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()


def test_gitignore_covers_the_venv_and_run_artifacts():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (".venv/", "runs/", "checkpoints/", "*.pt", "bench/results/"):
        assert entry in ignored


def test_gitignore_covers_build_outputs():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "build/" in ignored and "dist/" in ignored
    if shutil.which("git") and (ROOT / ".git").exists():
        done = subprocess.run(["git", "check-ignore", "-q", "build/lib/helpers/__init__.py"],
                              cwd=ROOT, check=False)
        assert done.returncode == 0, "git does not ignore build/"


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    data = _pyproject()
    assert data["project"]["license"] == "MIT"  # PEP 639; the { text = ... } table is deprecated
    floor = next(Requirement(r) for r in data["build-system"]["requires"]
                 if Requirement(r).name == "setuptools")
    assert not floor.specifier.contains("76.1") and floor.specifier.contains("77.0.0")


def test_built_metadata_has_the_license_expression_and_no_deprecation_warning(tmp_path):
    """Build the wheel metadata of a copy of the package with the installed setuptools."""
    import setuptools

    if Version(setuptools.__version__) < Version("77"):
        import pytest

        pytest.skip(f"setuptools {setuptools.__version__} predates PEP 639")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "helpers", tmp_path / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, setuptools.build_meta as b; "
            "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    out = tmp_path / "meta"
    out.mkdir()
    done = subprocess.run([sys.executable, "-W", "always", "-c", code, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
    metadata = (out / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "license" not in done.stderr.lower(), done.stderr[-2000:]


def test_python_floor_is_the_one_tested_and_linted():
    """requires-python, ruff's target and the tomllib imports (3.11+) agree: 3.10 is supported,
    so every tomllib import falls back to tomli."""
    data = _pyproject()
    floor = SpecifierSet(data["project"]["requires-python"])
    assert floor.contains("3.10.0") and not floor.contains("3.9.18")
    assert data["tool"]["ruff"]["target-version"] == "py310"
    bare = []
    for path in [*ROOT.glob("tests/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("helpers/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        if re.search(r"^import tomllib\b", text, re.M):
            bare.append(path.relative_to(ROOT).as_posix())
    assert not bare, f"tomllib exists from Python 3.11 only; add the tomli fallback in {bare}"



def test_the_wheel_ships_the_compiled_message_catalogs(tmp_path):
    """Colab installs the package non-editable from git: the Chinese .mo must be in the wheel."""
    import zipfile

    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "helpers", tmp_path / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = tmp_path / "dist"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
    wheel = out / done.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    catalogs = sorted(n for n in names if n.startswith("helpers/locale/"))
    assert catalogs == ["helpers/locale/zh/LC_MESSAGES/helpers.mo"], catalogs
    assert "helpers/i18n.py" in names and "helpers/py.typed" in names
    # the Chinese diagrams' font, its licence and the module that registers it
    fonts = sorted(n for n in names if n.startswith("helpers/fonts/"))
    assert fonts == ["helpers/fonts/NotoSansSC-course.otf", "helpers/fonts/OFL.txt",
                     "helpers/fonts/__init__.py"], fonts
