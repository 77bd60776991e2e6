"""Start a ``torchrun`` job from Python (a notebook, a test) and wait for it.

>>> job = run_torchrun("helpers.pipeline", ["--device", "cpu", "--epochs", "3"], nproc_per_node=2)
torchrun --standalone --nproc-per-node=2 -m helpers.pipeline --device cpu --epochs 3
exit code 0: the job finished
>>> job.ok, job.stdout.splitlines()[-1]
(True, 'done: ...')

``start_torchrun`` starts the same job in the background and returns it; ``job.wait()`` later
collects it (a notebook goes on meanwhile). A background job runs at a lower CPU priority (Unix
``nice``, 10 by default), so the notebook's own cells keep their speed and the job takes the
cores they leave free.

``torchrun`` is ``python -m torch.distributed.run``. The job runs with the interpreter of this
process (``sys.executable``), so it uses the same environment as the notebook, whatever the
``PATH`` says. A job that fails, or runs past its timeout, raises ``LaunchError`` with the exit
code and the last lines of its output, which is where torchrun and the script say what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from helpers.i18n import _

JOB_MARKER = "HELPERS_LAUNCH_JOB"  # environment variable that marks every process of a job
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a job is stopped
BACKGROUND_NICE = 10  # how much lower a background job's CPU priority is than its caller's


class LaunchError(RuntimeError):
    """A torchrun job failed or timed out; the message holds the tail of its output."""


@dataclass
class JobResult:
    """What a finished job left: its command, exit code and output (stdout and stderr)."""

    command: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""
    shown: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def torchrun_command(module: str, args: Sequence[str] = (), *, nproc_per_node: int = 2,
                     python: str | None = None) -> list[str]:
    """The argument list that runs ``module`` under torchrun in ``nproc_per_node`` processes on this
    machine (``--standalone``), with this process's interpreter.

    >>> torchrun_command("helpers.pipeline", ["--device", "cpu"], python="python")
    ['python', '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=2', '-m', \
'helpers.pipeline', '--device', 'cpu']
    """
    if not isinstance(nproc_per_node, int) or isinstance(nproc_per_node, bool) or nproc_per_node < 1:
        raise ValueError(_("nproc_per_node must be a positive int (processes to start), got "
                           "{value}").format(value=repr(nproc_per_node)))
    if isinstance(args, str):
        raise TypeError(_("args must be a list of strings, e.g. {example}, not one string")
                        .format(example=repr(args.split())))
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc_per_node}", "-m", module, *[str(a) for a in args]]


def _shown(command: Sequence[str]) -> str:
    """The command as a learner would type it: ``torchrun ...`` (no local interpreter path)."""
    rest = list(command)
    if rest[1:3] == ["-m", "torch.distributed.run"]:
        rest = ["torchrun", *rest[3:]]
    return " ".join(rest)


_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")


def _workers_output(stderr: str) -> tuple[str, str]:
    """Split torchrun's stderr into what the workers wrote and a one-line cause.

    torchrun ends a failed job with its own log line and a long ``ChildFailedError`` report; the
    workers' messages (the useful part) come before it.
    """
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        found = _FAILED.search(line)
        if found and "torch/distributed/elastic" in line:
            cause = _("the process of local rank {rank} exited with code {code} first; "
                      ).format(rank=found[2], code=found[1])
            return "\n".join(lines[:i]), cause
    return stderr, ""


def _marked_pids(marker: str) -> set[int]:
    """Processes started for this job: their environment holds ``HELPERS_LAUNCH_JOB=<marker>``.

    Workers inherit it from torchrun even when they start a session of their own (``setsid``),
    where a signal to torchrun's process group no longer reaches them. Linux only (``/proc``).
    """
    needle = f"{JOB_MARKER}={marker}".encode()
    found: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.add(int(name))
        except OSError:  # gone already, or another user's
            continue
    return found


def _signal_all(job: subprocess.Popen[str], marker: str, sig: int) -> set[int]:
    """Send ``sig`` to torchrun's process group and to every process of the job; return those."""
    pids = _marked_pids(marker)
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, sig)
    elif job.poll() is None:  # pragma: no cover - Windows
        job.terminate()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return pids


def _stop(job: subprocess.Popen[str], marker: str, grace: float = STOP_GRACE) -> None:
    """Stop torchrun and every worker: SIGTERM, ``grace`` seconds, then SIGKILL until none is left.

    Workers that ignore SIGTERM or left torchrun's session (``setsid``) are found by the marker
    in their environment (``_marked_pids``) and killed too.
    """
    _signal_all(job, marker, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (job.poll() is None or _marked_pids(marker)):
        time.sleep(0.1)
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)
    for _attempt in range(50):  # a worker may fork while we kill: repeat until nothing is left
        if not _signal_all(job, marker, kill) and job.poll() is not None:
            break
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        job.wait(timeout=5)


def _lower_priority(pid: int, nice: int) -> None:
    """Make process ``pid`` ``nice`` steps less important to the scheduler (Unix); the workers that
    torchrun starts later inherit it. Where that is impossible the job runs at normal priority."""
    if not hasattr(os, "setpriority"):  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, current + nice))


def _tail(text: str, lines: int) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) or "    " + _("(no output)")


class TorchrunJob:
    """A torchrun job that ``start_torchrun`` started and that runs in the background.

    ``wait()`` waits for it, prints its exit code and returns a ``JobResult``, or raises
    ``LaunchError`` (failed, or still running ``timeout`` seconds after the start: then it is
    stopped). ``stop()`` ends it early, workers included.

    >>> job = start_torchrun("helpers.pipeline", ["--device", "cpu"], nproc_per_node=2)
    torchrun --standalone --nproc-per-node=2 -m helpers.pipeline --device cpu
    >>> job.wait().ok  # doctest: +SKIP
    exit code 0: the job finished
    True
    """

    def __init__(self, command: list[str], *, timeout: float, cwd: str | Path | None,
                 quiet: bool, nice: int = 0) -> None:
        self.command, self.shown, self.quiet = command, _shown(command), quiet
        self.timeout = timeout
        self._result: JobResult | None = None
        # A session of its own, so that a timeout stops torchrun and every worker it started, and
        # a marker in the environment, which finds the workers that left that session. The
        # output goes to temporary files: a pipe that nobody reads would block a chatty job.
        self._marker = uuid.uuid4().hex
        self._out = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self._err = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self._deadline = time.monotonic() + timeout
        self._process = subprocess.Popen(
            command, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL, text=True,
            cwd=cwd, env={**os.environ, JOB_MARKER: self._marker},
            start_new_session=hasattr(os, "killpg"))
        if nice:
            _lower_priority(self._process.pid, nice)

    def running(self) -> bool:
        """True while torchrun has not exited."""
        return self._process.poll() is None

    def _output(self) -> tuple[str, str]:
        texts = []
        for stream in (self._out, self._err):
            stream.seek(0)
            texts.append(stream.read())
            stream.close()
        return texts[0], texts[1]

    def stop(self) -> None:
        """Stop torchrun and every worker of the job (SIGTERM, then SIGKILL)."""
        _stop(self._process, self._marker)

    def wait(self, *, tail: int = 15) -> JobResult:
        """Wait for the job, print its exit code and return what it left (see the class)."""
        if self._result is not None:
            return self._result
        try:
            self._process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            stdout, stderr = self._output()
            raise LaunchError(_("the job ran longer than {seconds} s and was stopped: "
                                "{command}\nits last output:\n{output}\n"
                                "Give it a larger timeout, or less work (fewer epochs).").format(
                seconds=f"{self.timeout:g}", command=self.shown,
                output=_tail(stdout + stderr, tail))) from None
        except BaseException:  # e.g. KeyboardInterrupt (the notebook's stop button): no orphans
            self.stop()
            raise
        stdout, stderr = self._output()
        result = JobResult(self.command, self._process.returncode, stdout, stderr, self.shown)
        if not result.ok:
            workers, cause = _workers_output(stderr)
            output = workers if workers.strip() else stdout
            raise LaunchError(_("the job failed with exit code {code}: {command}\n"
                                "{cause}its last lines of output:\n{output}").format(
                code=result.returncode, command=self.shown, cause=cause,
                output=_tail(output, tail)))
        if not self.quiet:
            print(_("exit code 0: the job finished"), flush=True)
        self._result = result
        return result


def start_torchrun(module: str, args: Sequence[str] = (), *, nproc_per_node: int = 2,
                   timeout: float = 600, cwd: str | Path | None = None,
                   quiet: bool = False, nice: int = BACKGROUND_NICE) -> TorchrunJob:
    """Start ``module`` under torchrun in the background and print the command; return the job.

    The notebook (or test) goes on while the job runs; ``job.wait()`` collects it. ``timeout``
    counts from the start. The job runs ``nice`` steps below the caller's CPU priority (Unix), so
    it slows the caller's own work down as little as possible; ``nice=0`` keeps the priority.

    >>> job = start_torchrun("helpers.pipeline", ["--device", "cpu"], nproc_per_node=2)
    torchrun --standalone --nproc-per-node=2 -m helpers.pipeline --device cpu
    """
    if isinstance(nice, bool) or not isinstance(nice, int) or nice < 0:
        raise ValueError(_("nice must be an int >= 0 (how much lower the job's CPU priority is), "
                           "got {value}").format(value=repr(nice)))
    command = torchrun_command(module, args, nproc_per_node=nproc_per_node)
    if not quiet:
        print(_shown(command), flush=True)
    return TorchrunJob(command, timeout=timeout, cwd=cwd, quiet=quiet, nice=nice)


def run_torchrun(module: str, args: Sequence[str] = (), *, nproc_per_node: int = 2,
                 timeout: float = 600, cwd: str | Path | None = None, tail: int = 15,
                 quiet: bool = False) -> JobResult:
    """Run ``module`` under torchrun, wait for it, print the command and its exit code.

    Returns a ``JobResult`` (``stdout``, ``stderr``, ``returncode``). Raises ``LaunchError`` with
    the last ``tail`` lines of the output when the job exits with another code than 0 or runs
    longer than ``timeout`` seconds (the processes are then stopped).

    >>> run_torchrun("helpers.pipeline", ["--device", "cpu"], nproc_per_node=2).ok
    torchrun --standalone --nproc-per-node=2 -m helpers.pipeline --device cpu
    exit code 0: the job finished
    True
    """
    job = start_torchrun(module, args, nproc_per_node=nproc_per_node, timeout=timeout, cwd=cwd,
                         quiet=quiet, nice=0)  # nothing else runs meanwhile: normal priority
    return job.wait(tail=tail)


__all__ = ["JobResult", "LaunchError", "TorchrunJob", "run_torchrun", "start_torchrun",
           "torchrun_command"]
