"""Run the suite on another Python / torch / ipywidgets stack (`make test-compat`).

    python -m tools.compat --python 3.12 --torch 2.11 --ipywidgets 7.7.1
    python -m tools.compat --python 3.13 --torch 2.15 --only notebooks

Builds (once) a virtual environment of its own under ``.venv-compat/`` with the asked-for Python
and torch (torchvision to match), installs the course and its test tools there, then runs the
unit tests (``-m "not slow and not browser"``) and strict ``pytest --nbval notebooks/``, the same
comparison `make test` makes (``--lax``: every cell must run, outputs are not compared). Each
run appends a row (versions, pass counts, seconds) to ``.venv-compat/results.jsonl`` and prints
it; CONTRIBUTING.md records the matrix.

The machine-wide pip configuration (a constraint that caps torch on some machines) is lifted for
this environment only (``PIP_CONFIG_FILE=/dev/null``). Downloads can be several GB per stack: run
it once per release, not in every `make test`.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / ".venv-compat"
# Colab's ipywidgets 7.7.1 pins these two; the rest of its needs are already in requirements.txt.
IPYWIDGETS_7_EXTRAS = ["widgetsnbextension==3.6.*", "ipython_genutils==0.2.0"]
LAST_KNOWN_TORCH_MINOR = 14  # the newest torch with a torchvision release of its own, as of 2026-12
NB_ENV = {"COURSE_DEVICE": "cpu", "COURSE_NUM_CLASSES": "", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


class CompatError(RuntimeError):
    """The environment cannot be built: says which step failed and what to try."""


def torchvision_for(torch_version: str) -> str:
    """A torchvision requirement for a torch 2.x release; pip picks the release that fits.

    torchvision 0.(m+15) is the first release made for torch 2.m. A newer torch may have none of
    its own (torch 2.15 runs with torchvision 0.29.2, which asks for torch>=2.14), so this gives a
    lower bound and pip picks the newest torchvision whose own torch requirement admits the pin.

    >>> torchvision_for("2.11")
    'torchvision>=0.26'
    """
    match = re.fullmatch(r"2\.(\d+)(?:\.(\d+|\*))?", torch_version.strip())
    if not match:
        raise CompatError(f"--torch must look like 2.11 or 2.11.0 (torch 2.x), got {torch_version!r}")
    minor = int(match[1])
    if minor < 6:
        raise CompatError(f"the course needs torch >= 2.6, got {torch_version!r}")
    return f"torchvision>=0.{min(minor, LAST_KNOWN_TORCH_MINOR) + 15}"


def find_python(spec: str) -> str:
    """An interpreter for ``spec`` (``3.12``, ``python3.12`` or a path), also from pyenv.

    >>> find_python("3.12")  # doctest: +SKIP
    '/root/.pyenv/versions/3.12.1/bin/python3.12'
    """
    version = spec.removeprefix("python")
    candidates = [spec, f"python{version}"]
    for name in candidates:
        found = shutil.which(name) if os.sep not in name else (name if os.path.exists(name) else None)
        if found and _runs(found):
            return found
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for found in sorted(glob.glob(os.path.join(root, "versions", f"{version}*", "bin", f"python{version}"))):
        if _runs(found):
            return found
    raise CompatError(f"no Python {spec!r} here: install it (e.g. `pyenv install {version}`) or pass "
                      f"--python with the interpreter's path")


def _runs(python: str) -> bool:
    return subprocess.run([python, "-c", "import venv"], capture_output=True).returncode == 0


def pins(torch_version: str, ipywidgets: str | None) -> list[str]:
    """The pip requirements that fix the stack, on top of requirements-dev.txt.

    >>> pins("2.11", None)
    ['torch==2.11.*', 'torchvision>=0.26']
    """
    torch_pin = torch_version if torch_version.count(".") == 2 else f"{torch_version}.*"
    out = [f"torch=={torch_pin}", torchvision_for(torch_version)]
    if ipywidgets:
        out.append(f"ipywidgets=={ipywidgets}")
        if ipywidgets.startswith("7."):
            out += IPYWIDGETS_7_EXTRAS
    return out


def build(python: str, folder: Path, requirements: list[str]) -> Path:
    """Create ``folder`` as a venv with ``requirements`` and the course; reuse it when unchanged."""
    venv_python = folder / "bin" / "python"
    digest = hashlib.sha256("\n".join([python, *requirements, *(
        (ROOT / name).read_text(encoding="utf-8") for name in
        ("requirements.txt", "requirements-dev.txt", "pyproject.toml"))]).encode()).hexdigest()[:12]
    stamp = folder / f".installed-{digest}"
    if stamp.exists():
        return venv_python
    if not venv_python.exists():
        _step([python, "-m", "venv", str(folder)], "create the virtual environment")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": ""}
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _step([*pip, *requirements, "-r", str(ROOT / "requirements-dev.txt")], "install the stack", env=env)
    _step([*pip, "--no-deps", "-e", str(ROOT)], "install the course package", env=env)
    for old in folder.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return venv_python


def _step(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
        raise CompatError(f"could not {what} (the command above failed)")


def versions(venv_python: Path) -> dict[str, str]:
    code = ("import json, platform, torch, torchvision, ipywidgets; print(json.dumps({'python': "
            "platform.python_version(), 'torch': torch.__version__, 'torchvision': "
            "torchvision.__version__, 'ipywidgets': ipywidgets.__version__}))")
    out = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_pytest(venv_python: Path, args: list[str], folder: Path) -> dict[str, object]:
    """One pytest run in the compat environment; its counts and wall time."""
    env = {**os.environ, **NB_ENV, "PATH": f"{venv_python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    cmd = [str(venv_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *args]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = result.stdout + result.stderr
    (folder / f"last-{args[-1].replace('/', '_')}.log").write_text(out, encoding="utf-8")
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", tail)}
    if result.returncode not in (0, 1, 5):
        print(out[-4000:])
    elif result.returncode == 1:
        print("\n".join(line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))))
    return {"rc": result.returncode, "seconds": round(seconds, 1), **counts, "summary": tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="3.10, 3.12, python3.13 or a path")
    parser.add_argument("--torch", required=True, help="torch release, e.g. 2.6 or 2.11.0")
    parser.add_argument("--ipywidgets", default=None, help="pin ipywidgets, e.g. 7.7.1 (Colab's)")
    parser.add_argument("--only", choices=["unit", "notebooks", "all"], default="all")
    parser.add_argument("--setup-only", action="store_true", help="build the environment, run nothing")
    parser.add_argument("--lax", action="store_true",
                        help="run every notebook cell without comparing outputs (--nbval-lax): for "
                             "torch older than the committed outputs' oldest (see CONTRIBUTING.md)")
    args = parser.parse_args(argv)
    try:
        python = find_python(args.python)
        requirements = pins(args.torch, args.ipywidgets)
        name = f"py{args.python.removeprefix('python')}-torch{args.torch}" + (
            f"-ipywidgets{args.ipywidgets}" if args.ipywidgets else "")
        folder = COMPAT / name
        folder.mkdir(parents=True, exist_ok=True)
        venv_python = build(python, folder, requirements)
    except CompatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    row: dict[str, object] = {"stack": name, **versions(venv_python),
                              "date": time.strftime("%Y-%m-%d")}
    print("stack:", row, flush=True)
    if args.setup_only:
        return 0
    if args.only in ("unit", "all"):
        row["unit"] = run_pytest(venv_python, ["-m", "not slow and not browser", "tests"], folder)
    if args.only in ("notebooks", "all"):
        mode = "--nbval-lax" if args.lax else "--nbval"
        row["notebooks"] = run_pytest(venv_python, [mode, "--nbval-cell-timeout=600", "notebooks"], folder)
        row["notebooks"]["mode"] = mode
    with (COMPAT / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
    failed = [k for k in ("unit", "notebooks") if isinstance(row.get(k), dict) and row[k]["rc"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
