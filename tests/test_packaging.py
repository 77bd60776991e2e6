"""The install files agree with each other: pyproject.toml, requirements*.txt, environment.yml."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

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
