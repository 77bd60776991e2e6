"""`make lab` really starts a JupyterLab server (install skipped: the stamp is fresh)."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_over_http(tmp_path):
    port, token = _free_port(), "course-test-token"
    args = (f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} "
            f"--ServerApp.root_dir={ROOT / 'notebooks'}")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = response.status
                    body = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        if status != 200:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            output = proc.communicate(timeout=20)[0].decode(errors="replace")[-3000:]
            pytest.fail(f"JupyterLab did not answer on port {port} (exit code {proc.poll()}):\n{output}")
        assert '"started"' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
            assert "JupyterLab" in r.read().decode()
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
            assert "00_environment_check.ipynb" in r.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
