"""The bench's in-namespace tools against servers on 127.0.0.1 only (no root, no network of the lab)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.tools import connrate, watch

TOOLS = Path(__file__).resolve().parents[2] / "bench" / "tools"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connrate_counts_complete_short_connections_and_errors():
    port = free_port()
    server = subprocess.Popen([sys.executable, str(TOOLS / "connrate.py"), "server", "--ports", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(server.stdout.readline())["ready"] is True
        out = connrate.run_client("127.0.0.1", port, seconds=0.3, concurrency=4, warmup=0.05)
        assert out["connections"] > 50 and out["errors"] == {}
        assert out["rate"] == round(out["connections"] / 0.3, 1)
        assert out["allConnections"] >= out["connections"]
        assert 0 < out["latencyMs"]["p50"] <= out["latencyMs"]["p99"]
    finally:
        server.kill()
        server.wait()
    refused = connrate.run_client("127.0.0.1", port, seconds=0.2, concurrency=2, warmup=0.0)
    assert refused["connections"] == 0 and refused["errors"].get("refused", 0) > 0


class _PodServer(BaseHTTPRequestHandler):
    """Answers as the lab's pod server does: JSON naming the pod (switchable while it runs)."""

    pod = "old"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"pod": type(self).pod}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_watch_reports_when_the_wanted_pod_first_answers():
    handler = type("Handler", (_PodServer,), {"pod": "old"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = f"127.0.0.1:{server.server_address[1]}"
        assert watch.request("127.0.0.1", server.server_address[1], 1.0)[0] == "old"
        switch_at = time.monotonic() + 0.1
        threading.Timer(0.1, lambda: setattr(handler, "pod", "new")).start()
        out = watch.watch({"target": target, "want": "new", "timeout": 5, "interval": 0.001})
        assert out["seen"] is True and out["attempts"] > 1
        assert out["seenAt"] >= switch_at - 0.01 and out["lastOtherAt"] <= out["seenAt"]
        missing = watch.watch({"target": target, "want": "never", "timeout": 0.1})
        assert missing["seen"] is False and missing["seenAt"] is None
    finally:
        server.shutdown()
        server.server_close()


def test_ovs_ingest_feeds_every_flow_and_group_of_every_bridge():
    """bench.ovs_ingest's floor is only a floor if Open vSwitch is given the whole program: one OpenFlow
    message per flow and per group of every bridge, as the controller sends a new switch."""
    import struct

    from bench.clusters import control_plane_cluster, control_plane_services
    from bench.ovs_ingest import program_bytes
    from controllers.pipeline import compile_state
    from lab.emulation.proxy_state import build_proxy_state

    cluster = control_plane_cluster(10, 2)
    cluster.services = control_plane_services(20)
    state = build_proxy_state(cluster, 1)
    programs = compile_state(state)
    buffers = program_bytes(state)
    assert len(buffers) == len(programs) == 11
    for data, program in zip(buffers, programs.values(), strict=True):
        kinds, at = [], 0
        while at < len(data):
            version, kind, length, _ = struct.unpack_from("!BBHI", data, at)
            assert version == 4 and length >= 8
            kinds.append(kind)
            at += length
        assert at == len(data)
        assert kinds.count(14) == len(program.flows) and kinds.count(15) == len(program.groups)  # FLOW_MOD, GROUP_MOD
