"""The bandwidth scenario's pure parts: iperf3 output, CPU gauges, the latency probe, the analysis, the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from lab.emulation.iperf3 import iperf3_client_argv, listening
from lab.kube.endpoints import endpoints, real_server_ports, workload_ports
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort
from lab.measure.bulk import (
    CpuSample,
    cpu_usage,
    expected_goodput_mbit,
    parse_iperf3,
    per_byte,
)
from lab.measure.latency import measure, summarize
from lab.scenarios import bandwidth as bw

# --- iperf3 and counters -------------------------------------------------------------------------------

IPERF3_OK = """{"start": {"connected": [{"socket": 5}]}, "intervals": [],
  "end": {"sum_sent": {"start": 0, "end": 4.0, "seconds": 4.0, "bytes": 47972352,
                       "bits_per_second": 95944704.0, "retransmits": 3, "sender": true},
          "sum_received": {"start": 0, "end": 4.0007, "seconds": 4.0007, "bytes": 47841280,
                           "bits_per_second": 95665600.0, "sender": true}}}"""
IPERF3_ERROR = """{"start": {"connected": []}, "intervals": [], "end": {},
  "error": "unable to connect to server: Connection timed out"}"""


def test_iperf3_goodput_is_the_receivers_and_retransmits_the_senders():
    result = parse_iperf3(IPERF3_OK)
    assert result == {"ok": True, "error": None, "mbps": 95.67, "bytes": 47841280, "sentBytes": 47972352,
                      "retransmits": 3, "seconds": 4.001}


def test_iperf3_errors_are_results_not_exceptions():
    assert parse_iperf3(IPERF3_ERROR)["error"] == "unable to connect to server: Connection timed out"
    garbled = parse_iperf3("", "iperf3: error - the server is busy running a test")
    assert not garbled["ok"] and "server is busy" in garbled["error"] and garbled["bytes"] == 0


def test_iperf3_client_runs_for_the_asked_time_and_gives_up_connecting_after_a_second():
    argv = iperf3_client_argv("172.18.0.11", 30201, 4.0)
    assert argv[:5] == ["iperf3", "-c", "172.18.0.11", "-p", "30201"]
    assert argv[argv.index("-t") + 1] == "4" and "--json" in argv
    assert argv[argv.index("--connect-timeout") + 1] == "1000"


def test_tcp_carries_1448_of_every_1514_bytes_a_shaped_link_counts():
    assert expected_goodput_mbit(100) == pytest.approx(95.64, abs=0.01)
    assert per_byte(1071, 1000) == 1.071
    assert per_byte(5, 0) is None


def test_cpu_usage_is_idle_share_of_all_cores_and_ovs_share_of_one():
    before = CpuSample(total=1000, idle=600, ovs=50, at=10.0)
    after = CpuSample(total=1400, idle=800, ovs=250, at=12.0)  # 2 cores x 2 s = 400 jiffies at 100 Hz
    assert cpu_usage(before, after, clock_ticks=100) == {"idlePct": 50.0, "ovsCpuPct": 100.0}
    unknown = CpuSample(total=1400, idle=800, ovs=None, at=12.0)
    assert cpu_usage(before, unknown, clock_ticks=100)["ovsCpuPct"] is None


def test_a_listening_socket_is_seen_in_the_namespace_of_a_pid():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        assert not listening(os.getpid(), port)
        listener.listen()
        assert listening(os.getpid(), port)


# --- pods with a real iperf3 ---------------------------------------------------------------------------

def test_the_http_server_leaves_iperf3_ports_to_iperf3_however_they_are_reached():
    pod = Pod("p", "node-a", labels={"app": "x"}, ip="10.244.1.2",
              ports=(ContainerPort(8080, "http"), ContainerPort(5201, "iperf3")))
    numeric = Service("s", [ServicePort(5201, 30201, 5201)], selector={"app": "x"})
    cluster = Cluster(nodes=[Node("node-a", 1)], pods=[pod], services=[numeric])
    assert real_server_ports(pod) == {"iperf3": 5201}
    assert workload_ports(cluster, pod) == [8080]


def test_the_scenario_cluster_has_one_iperf3_pod_behind_the_service():
    cluster = bw.bandwidth_cluster()
    service = cluster.service(bw.SERVICE)
    for sp in service.ports:
        assert [(e.pod, e.node) for e in endpoints(cluster, service, sp)] == [(bw.SERVER_POD, bw.POD_NODE)]
    server = cluster.pod(bw.SERVER_POD)
    assert workload_ports(cluster, server) == [8080, bw.DIRECT_PORT]
    assert real_server_ports(server) == {"iperf3": bw.IPERF3_PORT}
    assert cluster.pod(bw.BYSTANDER_TX).node == bw.OTHER_NODE
    assert cluster.pod(bw.BYSTANDER_RX).node not in (bw.OTHER_NODE, bw.POD_NODE)
    assert {sp.node_port for sp in service.ports} == {bw.IPERF3_NODE_PORT, bw.HTTP_NODE_PORT}


def test_arguments_refuse_rates_the_lab_cannot_shape():
    parser = argparse.ArgumentParser()
    bw.add_arguments(parser)
    assert parser.parse_args([]).underlay_mbit == bw.DEFAULT_MBIT
    assert parser.parse_args(["--underlay-mbit", "50", "--delay-ms", "5"]).delay_ms == 5.0
    for bad in (["--underlay-mbit", "0"], ["--seconds", "0.5"], ["--delay-ms", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


# --- the latency probe ---------------------------------------------------------------------------------

@contextlib.contextmanager
def http_server() -> Iterator[int]:
    """A loopback server answering every connection with a short HTTP response; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_latency_probe_times_handshake_and_first_byte_per_path_in_turns():
    with http_server() as port:
        out = measure({"up": ("127.0.0.1", port), "down": ("127.0.0.1", free_port())}, requests=20, warmup=1)
    up, down = out["records"]["up"], out["records"]["down"]
    assert len(up) == len(down) == 20
    assert all(r["ok"] and r["connectMs"] > 0 and r["ttfbMs"] > 0 for r in up)
    assert {r["error"] for r in down} == {"refused"}
    summary = summarize(up + down)
    assert (summary["ok"], summary["failed"], summary["errors"]) == (20, 20, {"refused": 20})
    assert summary["connectMs"]["p50"] <= summary["connectMs"]["p90"] <= summary["connectMs"]["p99"]


# --- analysis and report -------------------------------------------------------------------------------

def q(p50: float, p90: float | None = None, p99: float | None = None) -> dict:
    return {"p50": p50, "p90": p90 or p50 * 1.2, "p99": p99 or p50 * 2}


def latency_paths(direct: float, pod_node: float, forwarded: float) -> dict:
    return {name: {**bw.LATENCY_PATHS[name], "target": "x:1", "requests": 100, "ok": 100, "failed": 0,
                   "errors": {}, "connectMs": q(value), "ttfbMs": q(value + 0.1)}
            for name, value in (("direct", direct), ("podNode", pod_node), ("forwarded", forwarded))}


def test_each_delayed_link_each_way_adds_d_so_the_detour_should_add_4d_per_round_trip():
    analysis = bw.latency_analysis(latency_paths(10.2, 10.3, 30.5), delay_ms=5.0)
    assert analysis["expectedExtraRttMs"] == 20.0  # node-a's link twice more, each way
    assert analysis["measuredExtraRttMs"] == pytest.approx(20.3)


def test_without_delay_only_processing_is_reported_never_an_expected_delay():
    analysis = bw.latency_analysis(latency_paths(0.22, 0.25, 0.45), delay_ms=None)
    assert analysis["expectedExtraRttMs"] is None and analysis["delayPerLinkMs"] is None
    assert analysis["detourMs"] == pytest.approx(0.2)
    assert analysis["perExtraSwitchMs"] == pytest.approx(0.1)  # two more switches each way
    assert analysis["natMs"] == pytest.approx(0.03)


def flow(mbps: float | None, retransmits: int = 0, nbytes: int = 47_800_000) -> dict:
    if mbps is None:
        return {"ok": False, "error": "unable to connect to server: Connection timed out", "mbps": None,
                "bytes": 0, "sentBytes": 0, "retransmits": None, "seconds": None}
    return {"ok": True, "error": None, "mbps": mbps, "bytes": nbytes, "sentBytes": nbytes,
            "retransmits": retransmits, "seconds": 4.0}


def bulk_row(policy: str, entry: str, mbps: float | None, inter: float, links: float, idle: float = 45.0) -> dict:
    f = flow(mbps)
    return {"policy": policy, "entry": entry, "entryHasPod": entry == bw.POD_NODE, "target": "t", **f,
            "interNodeBytes": int(inter * f["bytes"]), "interNodePerByte": inter if f["ok"] else None,
            "nodeLinkBytes": int(links * f["bytes"]), "nodeLinkPerByte": links if f["ok"] else None,
            "cpuIdlePct": idle, "ovsCpuPct": 97.0}


def contention_row(policy: str | None, entry: str | None, bystander: float, nodeport: float | None) -> dict:
    return {"case": policy or "alone", "policy": policy, "entry": entry,
            "detour": entry == bw.OTHER_NODE, "bystander": flow(bystander),
            "nodePort": None if entry is None else flow(nodeport), "cpuIdlePct": 44.0, "ovsCpuPct": 98.0}


def measured(bystander_cluster: float = 22.8, lone: float = 95.6, idle: float = 45.0) -> dict:
    return {
        "bulk": [bulk_row("Cluster", bw.POD_NODE, lone, 0.0, 1.07, idle), bulk_row("Cluster", bw.OTHER_NODE, 93.2,
                                                                                  1.071, 3.214, idle),
                 bulk_row("Local", bw.POD_NODE, lone, 0.0, 1.07, idle), bulk_row("Local", bw.OTHER_NODE, None, 0, 0)],
        "contention": [contention_row(None, None, 95.5, None),
                       contention_row("Cluster", bw.OTHER_NODE, bystander_cluster, 95.5 - bystander_cluster),
                       contention_row("Local", bw.POD_NODE, 95.2, 95.4)],
        "latencyPaths": latency_paths(0.22, 0.25, 0.45),
    }


def report(delay_requested: float | None = None, **kwargs) -> dict:
    base = {"client": {"name": "client"}, "nodes": [], "pods": []}
    result = bw.build_report(base, measured(**kwargs), rate_mbit=100, seconds=4, requests=200,
                             delay_requested=delay_requested, delay_applied=None, warnings=[], timings={})
    result["underlay"]["netem"] = False
    return result


def test_a_run_where_every_lone_flow_got_the_link_kept_up():
    fid = report()["fidelity"]
    assert fid["keptUp"] and fid["problems"] == []
    assert set(fid["goodputRatios"]) == {"bulk Cluster via node-b", "bulk Cluster via node-a",
                                         "bulk Local via node-b", "bystander alone",
                                         "bystander during Local contention", "nodePort during Local contention"}


def test_a_starved_lone_flow_or_a_busy_cpu_is_a_warning():
    slow = report(lone=70.0)
    assert not slow["fidelity"]["keptUp"]
    assert any("did not keep up" in w and "2 of 6 flows" in w and "only 73% of" in w for w in slow["warnings"])
    busy = report(idle=3.0)
    assert any("CPU idle fell to 3%" in p for p in busy["fidelity"]["problems"])


def test_table_and_verdict_carry_the_measured_numbers():
    r = report(delay_requested=5.0)
    table = bw.render(r)
    assert "node-a (no pod)  93.2" in table and "1.07" in table and "3.21" in table
    assert "unable to connect to server" in table
    text = "\n".join(bw.verdict(r))
    assert "1.07 bytes crossed between nodes per byte delivered" in text
    assert "kept 22.8 Mbit/s" in text and "95.2 under Local" in text
    assert "no netem qdisc" in text and "none is faked" in text
    assert "kept up" in text


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "bandwidth.png"
    bw.plot(report(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
