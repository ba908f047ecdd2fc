"""The kube-proxy process starts on the port it is given and stops cleanly on Ctrl-C or SIGTERM, although
os-ken's native hub cannot be stopped (no switch needed: it only has to listen and leave)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from lab.polling import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def unix_listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


@pytest.mark.parametrize("sig, where", [(signal.SIGINT, "tcp"), (signal.SIGTERM, "tcp"), (signal.SIGTERM, "unix")])
def test_controller_listens_and_exits_cleanly(tmp_path, sig, where):
    """On a loopback port, or on a Unix socket (the lab's channel: only root reaches its 0700 folder)."""
    port, path = free_port(), str(tmp_path / "of.sock")
    listen = ["--port", str(port)] if where == "tcp" else ["--socket", path]
    proc = subprocess.Popen([sys.executable, "-m", "controllers", "--state", str(tmp_path / "state.json"),
                             "--status", str(tmp_path / "status.json"), *listen],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: listening(port) if where == "tcp" else unix_listening(path), timeout=20,
                 what="the controller to listen")
        proc.send_signal(sig)
        proc.wait(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "controllers", "--state", str(tmp_path / "s.json"),
                               "--status", str(tmp_path / "t.json"), "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr and len(done.stderr.strip().splitlines()) == 1

