from importlib import metadata

from packaging.requirements import Requirement

from helpers import envcheck


def test_every_requirement_of_this_environment_is_ok(capsys):
    report = envcheck.check_environment()
    out = capsys.readouterr().out
    assert report.ok, out
    names = {c.name for c in report.checks}
    assert {"python", "torch", "torchvision", "ipywidgets", "jupyterlab", "helpers"} <= names
    assert out.count("[OK]") == len(report.checks) and "[FAIL]" not in out


def test_lab_requirements_are_skipped_on_colab():
    names = {r.name for r in envcheck.requirements(include_lab=False)}
    assert "torch" in names and "jupyterlab" not in names


def test_missing_and_too_old_packages_fail_with_the_fix(monkeypatch):
    missing = envcheck.check_requirement(Requirement("not-a-real-package-xyz>=1"))
    assert not missing.ok and "pip install 'not-a-real-package-xyz>=1'" in str(missing)
    monkeypatch.setattr(metadata, "version", lambda name: "2.5.1")
    old = envcheck.check_requirement(Requirement("torch>=2.6"))
    assert str(old).startswith("[FAIL] torch")
    assert "2.5.1 installed, but the course needs >=2.6" in str(old)


def test_broken_helpers_import_is_a_fail_line_not_a_traceback(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "helpers.checkpoint":
            raise ImportError("simulated")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    report = envcheck.check_environment()
    assert not report.ok
    assert [c.name for c in report.failures] == ["helpers"]
    assert "1 problem(s)" in capsys.readouterr().out


def test_command_line_entry_point_exit_status():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "helpers.envcheck"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "devices: cpu" in result.stdout


# --- the Setup cell's install of missing light requirements ----------------------------------------

def _hide(monkeypatch, *names: str) -> None:
    """Make ``names`` look uninstalled to the environment check."""
    real = metadata.version

    def version(name: str) -> str:
        if name in names:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)


class _Pip:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, cmd, **kwargs):
        import subprocess

        self.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


def test_nothing_missing_prints_nothing_and_installs_nothing(capsys):
    pip = _Pip()
    assert envcheck.install_missing(install=True, run=pip) == []
    assert capsys.readouterr().out == "" and pip.calls == []


def test_off_colab_each_missing_package_is_one_line_with_its_command(monkeypatch, capsys):
    _hide(monkeypatch, "safetensors", "tqdm")
    pip = _Pip()
    left = envcheck.install_missing(run=pip)  # not on Colab: report only
    lines = capsys.readouterr().out.splitlines()
    assert pip.calls == []
    assert sorted(left) == sorted(str(r) for r in envcheck.requirements(False)
                                  if r.name in ("safetensors", "tqdm"))
    assert len(lines) == 2 and all(line.startswith("missing: ") for line in lines)
    safetensors = next(line for line in lines if "safetensors" in line)
    assert "pip install 'safetensors>=" in safetensors


def test_on_colab_light_packages_are_installed_never_torch(monkeypatch, capsys):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    _hide(monkeypatch, "safetensors", "torch", "ipywidgets")
    pip = _Pip()
    envcheck.install_missing(run=pip)
    out = capsys.readouterr().out
    assert len(pip.calls) == 1
    installed = [arg for arg in pip.calls[0] if not arg.startswith("-")][3:]
    assert [a.split(">")[0] for a in installed] == ["safetensors"]
    assert pip.calls[0][:4] == [sys.executable, "-m", "pip", "install"]
    assert "never installs torch, torchvision or ipywidgets" in out
    assert "missing: torch," in out and "missing: ipywidgets," in out


def test_a_failed_pip_install_says_what_to_run(monkeypatch, capsys):
    _hide(monkeypatch, "safetensors")
    pip = _Pip(returncode=1, stderr="ERROR: No matching distribution found for safetensors>=0.4\n")
    left = envcheck.install_missing(install=True, run=pip)
    out = capsys.readouterr().out
    assert left and left[0].startswith("safetensors")
    assert "could not install safetensors" in out and "No matching distribution" in out
