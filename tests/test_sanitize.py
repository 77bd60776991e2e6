"""conftest.py picks the sanitizer: sanitize.cfg on the CPU, plus device names elsewhere."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sanitize(cfg: Path, text: str) -> str:
    pairs = re.findall("^regex: (.*)$\n^replace: (.*)$", cfg.read_text(encoding="ascii"), flags=re.M)
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    return text


CPU = "CourseSettings(num_classes=10, device='cpu') device(type='cpu') ... device=cpu, all on cpu"
GPU = ("CourseSettings(num_classes=10, device='cuda:0') device(type='cuda', index=0) ... "
       "device=cuda:0, all on cuda")


def test_cpu_runs_compare_device_names(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    cfg = _conftest()._sanitize_file()
    assert cfg.name == "sanitize.cfg" and cfg.parent.name == "notebooks"
    assert _sanitize(cfg, CPU) != _sanitize(cfg, GPU)


def test_gpu_runs_mask_device_names_and_keep_the_other_rules(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    cfg = _conftest()._sanitize_file()
    assert _sanitize(cfg, CPU) == _sanitize(cfg, GPU)
    assert _sanitize(cfg, "accuracy \u22480.97 in 3.1 s") == _sanitize(cfg, "accuracy \u22480.99 in 2 s")
    assert _sanitize(cfg, "torch.Size([8, 10])") == "torch.Size([8, 10])"
    # the Chinese edition's units
    assert _sanitize(cfg, "\u7528\u65f6 3.1 \u79d2") == _sanitize(cfg, "\u7528\u65f6 12 \u79d2")
    assert _sanitize(cfg, "8 \u6beb\u79d2") == _sanitize(cfg, "15\u6beb\u79d2") != "8 \u6beb\u79d2"


def test_a_changed_shape_digit_fails_nbval(tmp_path):
    """Comparisons are live: one digit of a committed shape output changed makes nbval fail."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "00_environment_check.ipynb", as_version=4)
    changed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            if "torch.Size([1259," in text:
                out.data["text/plain"] = text.replace("torch.Size([1259,", "torch.Size([1258,")
                changed += 1
    assert changed == 1
    path = tmp_path / "changed.ipynb"
    nbformat.write(nb, path)
    args = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
            "--nbval-sanitize-with", str(ROOT / "notebooks" / "sanitize.cfg"), "-q", str(path)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed" in result.stdout and "1258" in result.stdout and "1259" in result.stdout
