"""Smoke test of `make bench`: it runs and writes its table; speed itself is never asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_mode_writes_table_and_json(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| measure | value | goal |" in result.stdout
    data = json.loads((tmp_path / "latest.json").read_text())
    assert set(data) >= {"machine", "loop", "io", "accuracy", "course"}
    assert data["loop"]["bare_epoch_seconds"] > 0 and data["io"]["weights_mb"] > 10
    assert (tmp_path / "latest.md").read_text().strip() in result.stdout


def test_bench_rejects_unknown_parts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.run", "--only", "gpu", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown part(s) ['gpu']" in result.stderr
