"""Committed outputs hold on other CPUs, and plain ``pytest --nbval notebooks/`` needs no flags.

PyTorch picks CPU kernels by instruction set (AVX-512, AVX2, plain): float sums differ in the last
bits, and a few epochs of training turn that into different accuracies. The notebooks print such
numbers as measurements (``helpers.report.measured``), masked by notebooks/sanitize.cfg, and compare
everything else strictly. Running the strict comparison under other kernel paths here catches a
machine-dependent output before a learner's laptop does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The Chinese edition's code cells are the English ones (tests/test_i18n_notebooks.py), so the
# other kernel paths are checked on the English notebooks only.
ENGLISH = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_plain_nbval_under_another_cpu_kernel_path(capability):
    # No Makefile variables: the sanitizer, kernel, thread count and device come from conftest.py.
    env = {k: v for k, v in os.environ.items()
           if k not in ("COURSE_DEVICE", "COURSE_NUM_CLASSES", "OMP_NUM_THREADS", "MPLBACKEND")}
    env["ATEN_CPU_CAPABILITY"] = capability
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", *ENGLISH, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    tail = result.stdout[-4000:]
    assert result.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}:\n{tail}\n{result.stderr[-2000:]}"
    assert " passed" in tail and "failed" not in tail
