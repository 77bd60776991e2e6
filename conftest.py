"""pytest configuration shared by the unit tests and the notebook tests (nbval, nbmake).

Plain ``pytest --nbval notebooks/`` works from the repository root without flags or variables:
the committed outputs were generated on the CPU with one torch thread, and this file sets the
same defaults (an explicit environment variable still wins, e.g. ``COURSE_DEVICE=cuda`` in
``make test-gpu``), reads ``notebooks/sanitize.cfg`` and runs the kernel of the current
environment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SANITIZE = ROOT / "notebooks" / "sanitize.cfg"
# On a GPU (or MPS) the committed CPU outputs are compared with the device's name masked.
SANITIZE_DEVICES = ROOT / "notebooks" / "sanitize-devices.cfg"

# Kernels inherit the environment of the pytest process: set it before any kernel starts.
os.environ.setdefault("COURSE_DEVICE", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The English notebooks' outputs are English: a COURSE_LANG=zh exported in the shell must not
# turn the helpers' messages Chinese under the strict comparison.
os.environ.pop("COURSE_LANG", None)

# Widget views carry a random model_id and HTML reprs embed ids; compare text/plain instead.
NBVAL_SKIP_COMPARE = (
    "application/vnd.jupyter.widget-view+json",
    "text/html",
    "application/javascript",
)


def _sanitize_file() -> Path:
    """sanitize.cfg, plus the device-name rules when the notebooks run on another device."""
    if os.environ.get("COURSE_DEVICE", "cpu").strip().lower() == "cpu":
        return SANITIZE
    # nbval reads a single file: write both rule sets into one, for this run only.
    combined = Path(tempfile.mkdtemp(prefix="course-sanitize-")) / "sanitize.cfg"
    combined.write_text(SANITIZE.read_text(encoding="ascii") + "\n"
                        + SANITIZE_DEVICES.read_text(encoding="ascii"), encoding="ascii")
    return combined


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval", False) or getattr(option, "nbval_lax", False):
        if not getattr(option, "nbval_sanitize_with", None):
            option.nbval_sanitize_with = str(_sanitize_file())
        if not getattr(option, "nbval_kernel_name", None):
            option.nbval_current_env = True


def pytest_collectstart(collector):
    # Only nbval's notebook collector has skip_compare; nbmake's (and others') are left alone.
    if hasattr(collector, "skip_compare"):
        collector.skip_compare += NBVAL_SKIP_COMPARE
