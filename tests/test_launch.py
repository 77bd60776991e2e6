"""helpers.launch: the torchrun command, a job that succeeds, fails, or runs too long."""

import os
import sys
import time
from pathlib import Path

import pytest

from helpers.launch import LaunchError, run_torchrun, start_torchrun, torchrun_command

# Workers that need no torch, so a job takes about as long as torchrun's own start.
# One os.write per line: both workers share torchrun's stdout pipe, and print() may write the text
# and its newline separately (unbuffered), so two ranks' lines could interleave; a write of under
# PIPE_BUF bytes to a pipe is atomic.
OK = """
import os
os.write(1, f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\\n".encode())
"""
FAILS = """
import os, sys
if os.environ["RANK"] == "1":
    print("rank 1: something went wrong here", file=sys.stderr, flush=True)
    sys.exit(3)
"""
CHATTY = """
import os
for i in range(20000):  # far more than a pipe holds: nobody reads it while the job runs
    print(f"rank {os.environ['RANK']} line {i} " + "x" * 40)
"""
SLEEPS = """
import os, pathlib, time
pathlib.Path(f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
time.sleep(60)
"""


def _module(folder: Path, name: str, code: str) -> str:
    (folder / f"{name}.py").write_text(code)
    return name


def test_command_uses_this_interpreter_and_standalone():
    command = torchrun_command("helpers.pipeline", ["--device", "cpu", "--epochs", 3],
                               nproc_per_node=4)
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=4", "-m", "helpers.pipeline", "--device", "cpu",
                       "--epochs", "3"]


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_command_refuses_a_bad_process_count(bad):
    with pytest.raises(ValueError, match="nproc_per_node must be a positive int"):
        torchrun_command("helpers.pipeline", nproc_per_node=bad)


def test_command_refuses_one_string_of_arguments():
    with pytest.raises(TypeError, match=r"a list of strings, e.g. \['--device', 'cpu'\]"):
        torchrun_command("helpers.pipeline", "--device cpu")


def test_a_job_that_succeeds(tmp_path, capsys):
    module = _module(tmp_path, "job_ok", OK)
    result = run_torchrun(module, ["--flag"], nproc_per_node=2, cwd=tmp_path, timeout=120)
    assert result.ok and result.returncode == 0
    assert sorted(result.stdout.split("\n")[:2]) == ["rank 0 of 2", "rank 1 of 2"]
    out = capsys.readouterr().out
    assert out == ("torchrun --standalone --nproc-per-node=2 -m job_ok --flag\n"
                   "exit code 0: the job finished\n")
    assert sys.executable not in out  # no local path in what a notebook stores


def test_quiet_prints_nothing(tmp_path, capsys):
    run_torchrun(_module(tmp_path, "job_quiet", OK), nproc_per_node=1, cwd=tmp_path, quiet=True)
    assert capsys.readouterr().out == ""


def test_a_failed_job_says_why_with_its_output(tmp_path):
    module = _module(tmp_path, "job_fails", FAILS)
    with pytest.raises(LaunchError) as caught:
        run_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=120, quiet=True)
    message = str(caught.value)
    assert message.startswith("the job failed with exit code 1: torchrun --standalone "
                              "--nproc-per-node=2 -m job_fails\nthe process of local rank 1 "
                              "exited with code 3 first; its last lines of output:\n")
    assert message.rstrip().endswith("rank 1: something went wrong here")
    assert "ChildFailedError" not in message  # torchrun's own report is left out


def test_a_job_past_its_timeout_is_stopped_with_its_workers(tmp_path):
    module = _module(tmp_path, "job_sleeps", SLEEPS)
    start = time.monotonic()
    with pytest.raises(LaunchError, match=r"ran longer than 8 s and was stopped: torchrun "
                                          r"--standalone --nproc-per-node=2 -m job_sleeps"):
        run_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=8, quiet=True)
    assert time.monotonic() - start < 30
    pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
    assert pids, "the workers never started: raise the timeout of this test"
    time.sleep(0.5)
    for pid in pids:  # the workers went down with torchrun
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_background_job_runs_while_the_caller_goes_on(tmp_path, capsys):
    module = _module(tmp_path, "job_chatty", CHATTY)
    job = start_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=120)
    assert capsys.readouterr().out == "torchrun --standalone --nproc-per-node=2 -m job_chatty\n"
    deadline = time.monotonic() + 120
    while job.running() and time.monotonic() < deadline:  # finishes with nobody reading
        time.sleep(0.2)
    assert not job.running(), "the job blocked on its own output"
    result = job.wait()
    assert result.ok and result.stdout.count("\n") == 40000
    assert job.wait() is result  # collected once
    assert capsys.readouterr().out == "exit code 0: the job finished\n"


def test_a_background_job_past_its_timeout_is_stopped_when_waited_for(tmp_path):
    module = _module(tmp_path, "job_sleeps_bg", SLEEPS)
    job = start_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=6, quiet=True)
    time.sleep(1)
    assert job.running()
    with pytest.raises(LaunchError, match=r"ran longer than 6 s and was stopped"):
        job.wait()
    assert not job.running()


NICENESS = """
import os
os.write(1, f"rank {os.environ['RANK']} nice {os.nice(0)}\\n".encode())  # one write: see OK
"""


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="CPU priorities are a Unix feature")
def test_a_background_job_runs_at_a_lower_priority_and_a_waited_one_does_not(tmp_path):
    module = _module(tmp_path, "job_nice", NICENESS)
    mine = os.nice(0)
    result = start_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=120, quiet=True).wait()
    lowered = min(19, mine + 10)
    assert sorted(result.stdout.splitlines()) == [f"rank 0 nice {lowered}", f"rank 1 nice {lowered}"]
    result = start_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=120, quiet=True,
                            nice=3).wait()
    assert f"rank 0 nice {min(19, mine + 3)}" in result.stdout
    result = run_torchrun(module, nproc_per_node=2, cwd=tmp_path, timeout=120, quiet=True)
    assert sorted(result.stdout.splitlines()) == [f"rank 0 nice {mine}", f"rank 1 nice {mine}"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_start_refuses_a_bad_nice(bad):
    with pytest.raises(ValueError, match="nice must be an int >= 0"):
        start_torchrun("helpers.pipeline", nice=bad)
