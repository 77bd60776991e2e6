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
