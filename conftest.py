"""pytest configuration shared by the unit tests and the notebook tests (nbval, nbmake).

Plain ``pytest --nbval notebooks/`` works from the repository root without flags or variables:
the committed outputs were generated on the CPU with one torch thread, and this file sets the
same defaults (an explicit environment variable still wins, e.g. ``COURSE_DEVICE=cuda`` in
``make test-gpu``), reads ``notebooks/sanitize.cfg`` and runs the kernel of the current
environment.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SANITIZE = ROOT / "notebooks" / "sanitize.cfg"

# Kernels inherit the environment of the pytest process: set it before any kernel starts.
os.environ.setdefault("COURSE_DEVICE", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Widget views carry a random model_id and HTML reprs embed ids; compare text/plain instead.
NBVAL_SKIP_COMPARE = (
    "application/vnd.jupyter.widget-view+json",
    "text/html",
    "application/javascript",
)


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval", False) or getattr(option, "nbval_lax", False):
        if not getattr(option, "nbval_sanitize_with", None):
            option.nbval_sanitize_with = str(SANITIZE)
        if not getattr(option, "nbval_kernel_name", None):
            option.nbval_current_env = True


def pytest_collectstart(collector):
    # Only nbval's notebook collector has skip_compare; nbmake's (and others') are left alone.
    if hasattr(collector, "skip_compare"):
        collector.skip_compare += NBVAL_SKIP_COMPARE
