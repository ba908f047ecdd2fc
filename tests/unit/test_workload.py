"""lab.emulation.workload as a real process on 127.0.0.1, probed with lab.measure.probe; one root-only netns test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab.emulation.workload import parse_saved_syn, render_response
from lab.measure.probe import run_probe

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TTL = int(Path("/proc/sys/net/ipv4/ip_default_ttl").read_text())
T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while not (last := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s; last saw {last!r}")
        time.sleep(0.02)
    return last


def listener(pod: str, port: int = 0, netns_pid: int | None = None, bind: str = "127.0.0.1") -> dict:
    return {"pod": pod, "namespace": "default", "node": "node1", "podIP": "10.244.1.2", "port": port,
            "netnsPid": netns_pid, "bind": bind}


@dataclass
class Workload:
    proc: subprocess.Popen[bytes]
    ready: Path
    control: Path
    stderr: Path

    def ports(self) -> dict[str, int]:
        return {item["pod"]: item["port"] for item in json.loads(self.ready.read_text())["listeners"]}

    def command(self, *commands: dict[str, Any] | bytes) -> list[dict[str, Any]]:
        """Send control commands on one connection; one answer each."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.control))
            stream = sock.makefile("rwb")
            answers = []
            for cmd in commands:
                stream.write(cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode() + b"\n")
                stream.flush()
                answers.append(json.loads(stream.readline()))
            return answers

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"workload exited {self.proc.returncode}: {self.stderr.read_text()}")
        return self.ready.exists()


@contextlib.contextmanager
def workload(tmp_path: Path, listeners: list[dict]) -> Iterator[Workload]:
    """Run ``python -m lab.emulation.workload`` until the block ends; always stop exactly that process."""
    ready, control, stderr = tmp_path / "ready.json", tmp_path / "control.sock", tmp_path / "stderr"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"listeners": listeners, "ready": str(ready), "control": str(control)}))
    with stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lab.emulation.workload", "--config", str(config)],
                                cwd=REPO, stderr=err)
    try:
        handle = Workload(proc, ready, control, stderr)
        wait_until(handle._ready, "ready file")
        yield handle
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def probe(*ports: int, requests: int = 1) -> list[dict[str, Any]]:
    targets = [f"127.0.0.1:{port}" for port in ports]
    return asyncio.run(run_probe(targets, requests=requests, concurrency=4, timeout=2.0))["records"]


def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    """Raw GET on a new connection; returns (head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_each_pod_answers_with_what_it_saw(tmp_path: Path) -> None:
    with workload(tmp_path, [listener("web-a"), listener("web-b")]) as wl:
        ports = wl.ports()
        done = subprocess.run(
            [sys.executable, "-m", "lab.measure.probe", "--targets", f"127.0.0.1:{ports['web-a']}",
             f"127.0.0.1:{ports['web-b']}", "--requests", "6", "--path", "/hello?x=1"],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)["records"]
    assert len(records) == 6
    for record in records:
        pod = "web-a" if record["target"].endswith(f":{ports['web-a']}") else "web-b"
        assert record["ok"], record
        assert record["response"] == {
            "pod": pod, "namespace": "default", "node": "node1", "podIP": "10.244.1.2", "port": ports[pod],
            "source": {"ip": "127.0.0.1", "port": int(record["local"].rsplit(":", 1)[1])},
            "synTTL": DEFAULT_TTL, "path": "/hello?x=1",
            "headers": {"host": f"127.0.0.1:{ports[pod]}", "connection": "close"}}


def test_a_kept_alive_connection_gets_an_answer_per_request(tmp_path: Path) -> None:
    from lab.measure.held import request

    with workload(tmp_path, [listener("web-a")]) as wl:
        with socket.create_connection(("127.0.0.1", wl.ports()["web-a"]), timeout=5) as sock:
            answers = [request(sock, "x") for _ in range(3)]
            head, _ = http_get(wl.ports()["web-a"], "/")  # without keep-alive: one answer, then close
    assert answers == [{"ok": True, "error": None, "pod": "web-a"}] * 3
    assert b"Connection: close" in head


def test_ready_file_lists_actual_ports(tmp_path: Path) -> None:
    with workload(tmp_path, [listener("web-a"), listener("web-b")]) as wl:
        ready = json.loads(wl.ready.read_text())
    assert ready["pid"] == wl.proc.pid
    assert [item["pod"] for item in ready["listeners"]] == ["web-a", "web-b"]
    assert all(item["port"] > 0 for item in ready["listeners"])


def test_bulk_sends_the_requested_bytes(tmp_path: Path) -> None:
    with workload(tmp_path, [listener("web-a")]) as wl:
        head, body = http_get(wl.ports()["web-a"], "/bulk?bytes=300000")
        bad_head, _ = http_get(wl.ports()["web-a"], "/bulk?bytes=100000001")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: application/octet-stream" in head
    assert len(body) == 300000
    assert bad_head.startswith(b"HTTP/1.1 400")


def test_control_adds_and_removes_pods(tmp_path: Path) -> None:
    with workload(tmp_path, [listener("web-a")]) as wl:
        [added] = wl.command({"op": "add", "listener": listener("web-c")})
        assert added["ok"], added
        [record] = probe(added["port"])
        assert record["response"]["pod"] == "web-c"

        assert wl.command({"op": "remove", "pod": "web-c"}) == [{"ok": True, "closed": 1}]
        assert [r["error"] for r in probe(added["port"])] == ["refused"]
        assert probe(wl.ports()["web-a"])[0]["ok"], "removing web-c must leave web-a alone"

        errors = wl.command({"op": "remove", "pod": "web-c"}, b"not json\n", {"op": "reboot"},
                            {"op": "add", "listener": {"pod": "no-port"}})
        assert [e["ok"] for e in errors] == [False] * 4
        assert "no listeners for pod 'web-c'" in errors[0]["error"]


def test_remove_lets_established_connections_finish(tmp_path: Path) -> None:
    with workload(tmp_path, [listener("web-a")]) as wl:
        port = wl.ports()["web-a"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as early:
            # The server accepts its backlog in order, so once a later connection has been answered,
            # `early` has been accepted too and belongs to the server, not to the listening socket.
            assert probe(port)[0]["ok"]
            wl.command({"op": "remove", "pod": "web-a"})
            early.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b"".join(iter(lambda: early.recv(65536), b""))
    assert data.startswith(b"HTTP/1.1 200 OK"), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["path"] == "/late"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly(tmp_path: Path, signum: int) -> None:
    with workload(tmp_path, [listener("web-a")]) as wl:
        with socket.create_connection(("127.0.0.1", wl.ports()["web-a"]), timeout=5):
            wl.proc.send_signal(signum)  # with a connection open, which must not hold up the exit
            assert wl.proc.wait(timeout=10) == 0, wl.stderr.read_text()
        assert not wl.ready.exists() and not wl.control.exists()
        assert wl.stderr.read_text() == ""


def test_port_in_use_fails_before_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with (pytest.raises(AssertionError, match=r"workload exited 1: .*Address already in use"),
              workload(tmp_path, [listener("web-a", port=taken.getsockname()[1])])):
            pass
    assert not (tmp_path / "ready.json").exists()


def test_parse_saved_syn() -> None:
    ipv4 = bytes([0x45, 0, 0, 60, 0, 0, 0x40, 0, 61, 6, 0, 0, 10, 244, 1, 1, 10, 244, 1, 2]) + bytes(40)
    ipv6 = bytes([0x60, 0, 0, 0, 0, 40, 6, 55]) + bytes(32) + bytes(40)
    assert parse_saved_syn(ipv4) == 61
    assert parse_saved_syn(ipv6) == 55
    assert parse_saved_syn(b"") is None
    assert parse_saved_syn(ipv4[:19]) is None
    assert parse_saved_syn(bytes([0x15]) + ipv4[1:]) is None


def test_render_response() -> None:
    assert render_response(200, b'{"a": 1}\n') == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n"
        b"Connection: close\r\n\r\n" + b'{"a": 1}\n')


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="creating a network namespace needs root, unshare and nsenter")
def test_listener_lives_in_the_pods_namespace(tmp_path: Path) -> None:
    # A namespace of our own, held open by a sleeping process: the "pod". Its lo starts down.
    pod = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 60"])
    try:
        wait_until(lambda: ",UP" in subprocess.run(
            ["nsenter", f"--net=/proc/{pod.pid}/ns/net", "ip", "-o", "link", "show", "lo"],
            capture_output=True, text=True, check=False).stdout, "lo up in the pod namespace")
        with workload(tmp_path, [listener("web-ns", netns_pid=pod.pid, bind="0.0.0.0")]) as wl:
            port = wl.ports()["web-ns"]
            inside = subprocess.run(
                ["nsenter", f"--net=/proc/{pod.pid}/ns/net", sys.executable, "-m", "lab.measure.probe",
                 "--targets", f"127.0.0.1:{port}", "--requests", "1"],
                cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
            listening = subprocess.run(["nsenter", f"--net=/proc/{pod.pid}/ns/net", "ss", "-Htln"],
                                       capture_output=True, text=True, check=True).stdout
        [record] = json.loads(inside.stdout)["records"]
        assert record["ok"] and record["response"]["pod"] == "web-ns", record
        assert f"0.0.0.0:{port}" in listening
    finally:
        pod.kill()
        pod.wait()
