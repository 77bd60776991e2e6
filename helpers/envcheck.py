"""Environment check: versions, devices, and an [OK]/[FAIL] line per requirement.

>>> report = check_environment()   # prints the table
>>> report.ok
True

Run it from a terminal too: ``python -m helpers.envcheck`` (exit status 1 when something fails).
"""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from packaging.requirements import Requirement

from helpers.i18n import _, ngettext

DIST_NAME = "pytorch-model-engineering"
# Needed to run the notebooks locally, not inside Colab (which has its own Jupyter).
LAB_EXTRA = "lab"
# Hosted notebooks ship their own builds of these (CUDA torch, the front end's ipywidgets):
# installing another version over them breaks the runtime, so the course never does.
NEVER_INSTALL = frozenset({"torch", "torchvision", "ipywidgets"})


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    needed_for: str = "the notebooks"

    def __str__(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name:<14} {self.detail}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def __str__(self) -> str:
        return "\n".join(str(c) for c in self.checks)


def requirements(include_lab: bool = True) -> list[Requirement]:
    """The course's requirements, read from the installed package's metadata."""
    try:
        raw = metadata.requires(DIST_NAME) or []
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            _("the course package {name!r} is not installed; from the repository root run "
              "`pip install -e .` (or `make lab`, which does it for you)").format(name=DIST_NAME)
        ) from None
    reqs = []
    for line in raw:
        req = Requirement(line)
        if req.marker is None:
            reqs.append(req)
        elif include_lab and req.marker.evaluate({"extra": LAB_EXTRA}):
            reqs.append(req)
    return reqs


def check_requirement(req: Requirement) -> Check:
    """One [OK]/[FAIL] line: is ``req`` installed in a version it accepts?"""
    needed_for = "JupyterLab (not needed in Colab)" if req.marker is not None else "the notebooks"
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return Check(req.name, False, _("missing; install with: pip install '{req}'").format(req=req),
                     needed_for)
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return Check(req.name, False, _("{version} installed, but the course needs {specifier}; "
                                        "upgrade with: pip install '{req}'").format(
                                          version=version, specifier=req.specifier, req=req), needed_for)
    wanted = _(" (needs {specifier})").format(specifier=req.specifier) if req.specifier else ""
    return Check(req.name, True, f"{version}{wanted}", needed_for)


def missing_requirements(include_lab: bool = False) -> list[Requirement]:
    """The course's requirements not installed in a version they accept (empty when ready).

    >>> missing_requirements()
    []
    """
    return [req for req in requirements(include_lab) if not check_requirement(req).ok]


def install_missing(*, install: bool | None = None,
                    run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """Install the course's light requirements that are missing; print one line for each.

    The Setup cell of every chapter calls it after installing the course with ``--no-deps``.
    ``install`` defaults to True on Colab, where the Setup cell installed the course; elsewhere it
    only prints what is missing and the command that installs it. torch, torchvision and
    ipywidgets are never installed (see ``NEVER_INSTALL``). Prints nothing when all is there.
    Returns the requirements that are still missing.

    >>> install_missing()
    []
    """
    if install is None:
        install = "google.colab" in sys.modules
    missing = missing_requirements()
    to_install = [str(r) for r in missing if install and r.name not in NEVER_INSTALL]
    for req in missing:
        if str(req) not in to_install:
            why = (_(" (the Setup cell never installs torch, torchvision or ipywidgets)")
                   if req.name in NEVER_INSTALL else "")
            print(_("missing: {name}, needs {specifier}; install it with: pip install '{req}'{why}").format(
                      name=req.name, specifier=req.specifier or _("any version"), req=req, why=why))
    if to_install:
        print(_("installing what the course needs and this runtime lacks:"), ", ".join(to_install))
        install_packages(to_install, run=run)
    return [str(r) for r in missing_requirements()] if missing else []


def install_packages(specs: list[str], *,
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """``pip install`` ``specs`` into this kernel's Python, quietly; say what to do if it fails.

    Unlike ``%pip`` it prints no "you may need to restart the kernel" note: new packages import
    at once (the import caches are refreshed), so no restart is needed.

    >>> install_packages(["onnx>=1.17"])
    True
    """
    result = run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  *specs], capture_output=True, text=True)
    importlib.invalidate_caches()
    if result.returncode != 0:
        last = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or ["no output"]
        print(_("could not install {specs}: pip says: {last}; run `pip install {quoted}` yourself, "
                "then restart the kernel").format(
                  specs=", ".join(specs), last=last[0], quoted=" ".join(repr(s) for s in specs)))
    return result.returncode == 0


def device_lines() -> list[str]:
    """Human-readable list of the devices torch can use here."""
    import torch

    from helpers.settings import available_devices

    lines = []
    for name in available_devices():
        if name.startswith("cuda"):
            lines.append(f"{name}: {torch.cuda.get_device_name(int(name.split(':')[1]))}")
        elif name == "mps":
            lines.append("mps: Apple GPU (Metal)")
        else:
            threads = torch.get_num_threads()
            lines.append("cpu: " + ngettext("{cpu}, {threads} torch thread", "{cpu}, {threads} torch threads",
                                            threads).format(cpu=platform.processor() or platform.machine(),
                                                            threads=threads))
    return lines


def check_environment(*, include_lab: bool | None = None, verbose: bool = True) -> Report:
    """Check every requirement and that ``helpers`` imports; print the table when ``verbose``.

    ``include_lab`` defaults to False inside Colab (its Jupyter is not ours) and True elsewhere.
    """
    if include_lab is None:
        include_lab = "google.colab" not in sys.modules
    report = Report()
    report.checks.append(Check("python", sys.version_info >= (3, 10),
                               _("{version} (needs >=3.10)").format(version=platform.python_version())))
    report.checks += [check_requirement(r) for r in requirements(include_lab)]
    try:
        import helpers.checkpoint  # noqa: F401  (the heaviest helper module imports everything else)
        import helpers.data
        import helpers.settings
        import helpers.training  # noqa: F401

        report.checks.append(Check("helpers", True, _("imports from {short_path}").format(
                                                        short_path=_short_path(helpers.data.__file__))))
    except Exception as exc:  # report any import problem as a failed line, not a traceback
        report.checks.append(Check("helpers", False, _("import failed: {type}: {exc}").format(
                                                         type=type(exc).__name__, exc=exc)))
    if verbose:
        print(report)
        print(_("all requirements met") if report.ok else
              _("{count} problem(s): fix the [FAIL] lines above, then restart the kernel").format(
                  count=len(report.failures)))
    return report


def _short_path(path: str) -> str:
    """``.../helpers/data.py`` -> ``helpers/`` in a site-packages or the repository."""
    import os

    parent = os.path.dirname(os.path.abspath(path))
    where = "site-packages" if "site-packages" in parent else _("the repository")
    return _("{folder}/ ({where})").format(folder=os.path.basename(parent), where=where)


def main() -> int:
    import torch

    print(_("torch {version}, devices: {devices}").format(version=torch.__version__,
                                                          devices="; ".join(device_lines())))
    return 0 if check_environment().ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
