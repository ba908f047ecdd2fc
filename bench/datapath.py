"""Benchmark 2, what the NodePort data path costs: nodePort paths against plain routing, side by side.

One pod on node-a, one network, four ways from the client to that same pod (``bench.clusters``):

    routed            client -> edge router -> node-a's bridge -> pod IP         (no NAT: the baseline)
    dnat              client -> node-a IP:nodePort, Local: DNAT to the pod        (client IP kept)
    dnat-snat         client -> node-a IP:nodePort, Cluster: DNAT + SNAT           (masquerade, same node)
    dnat-snat-remote  client -> node-b IP:nodePort, Cluster: DNAT + SNAT, then across to node-a

Each run measures every path's short TCP connections per second (``bench/tools/connrate.py``:
connect, one byte back, close), then every path's iperf3 throughput (one TCP stream, client to pod),
each time in an order rotated from run to run. A ratio is path / routed within the same run;
figures are medians over runs. Open vSwitch's CPU time per connection and per megabyte is read for
each path too: on a busy machine it is a steadier measure of cost than a rate.
"""

from __future__ import annotations

import contextlib

from bench.clusters import DATAPATH_PATHS, DATAPATH_POD, datapath_cluster, datapath_services, datapath_target
from bench.labtools import host_process, publish, run_json, tool_argv, wait_listening
from bench.machine import cpu_seconds, ovs_pid
from bench.report import BenchResult, Figure, Goal
from bench.stats import median, paired_ratios, rotate
from lab.errors import LabError
from lab.network import LabNetwork

GOAL_RATIO = 0.9
GOALS = {"dnat": Goal(">=", GOAL_RATIO), "dnat-snat-remote": Goal(">=", GOAL_RATIO)}


def parse_iperf(doc: dict) -> dict:
    """Throughput the receiver saw, retransmits, and all bytes moved (omitted warm-up seconds included)."""
    if doc.get("error"):
        raise LabError(f"iperf3: {doc['error']}")
    end = doc["end"]
    moved = sum(i["sum"]["bytes"] for i in doc.get("intervals", []))
    return {"bitsPerSecond": end["sum_received"]["bits_per_second"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"), "bytesMoved": moved,
            "cpuPercent": {"client": end.get("cpu_utilization_percent", {}).get("host_total"),
                           "server": end.get("cpu_utilization_percent", {}).get("remote_total")}}


def _measure(lab: LabNetwork, argv: list[str], timeout: float) -> tuple[dict, float | None]:
    ovs = ovs_pid()
    before = cpu_seconds(ovs)
    doc, _cpu = run_json(lab, "client", argv, timeout=timeout)
    after = cpu_seconds(ovs)
    return doc, (after - before) if before is not None and after is not None else None


def iperf(lab: LabNetwork, cfg, path) -> dict:
    ip, port = datapath_target(lab.cluster, path, "iperf")
    omit = 1 if cfg.iperf_seconds >= 2 else 0
    argv = ["iperf3", "-c", ip, "-p", str(port), "-t", str(cfg.iperf_seconds), "-O", str(omit), "-J"]
    doc, ovs_cpu = _measure(lab, argv, timeout=cfg.iperf_seconds + omit + 30)
    out = parse_iperf(doc)
    out["ovsCpuS"] = ovs_cpu
    out["ovsCpuUsPerMB"] = ovs_cpu / (out["bytesMoved"] / 1e6) * 1e6 if ovs_cpu and out["bytesMoved"] else None
    return out


def conn_rate(lab: LabNetwork, cfg, path) -> dict:
    ip, port = datapath_target(lab.cluster, path, "conn")
    argv = tool_argv("connrate", "client", "--target", f"{ip}:{port}", "--seconds", str(cfg.conn_seconds),
                     "--concurrency", str(cfg.conn_concurrency))
    doc, ovs_cpu = _measure(lab, argv, timeout=cfg.conn_seconds + 30)
    doc["ovsCpuS"] = ovs_cpu
    total = doc.get("allConnections") or doc["connections"]
    doc["ovsCpuUsPerConnection"] = ovs_cpu / total * 1e6 if ovs_cpu and total else None
    return doc


def run(cfg, log) -> BenchResult:
    result = BenchResult()
    paths = DATAPATH_PATHS
    runs: list[dict[str, dict]] = []
    cluster = datapath_cluster()
    with LabNetwork(cluster) as lab, contextlib.ExitStack() as servers:
        cluster.services = datapath_services(paths)
        publish(lab)
        servers.enter_context(host_process(
            lab, DATAPATH_POD, tool_argv("connrate", "server", "--ports", *[str(p.conn_port) for p in paths]),
            "bench connection-rate server", ready_line=True))
        for path in paths:
            servers.enter_context(host_process(lab, DATAPATH_POD, ["iperf3", "-s", "-p", str(path.iperf_port)],
                                               f"bench iperf3 server :{path.iperf_port}"))
        for path in paths:
            wait_listening(lab, DATAPATH_POD, path.iperf_port)
        for i in range(cfg.runs):
            measured: dict[str, dict] = {p.name: {} for p in paths}
            # All paths' connection rates back to back, then all throughputs: the two sides of each
            # ratio are measured seconds apart, on a machine in the same state.
            for path in rotate(paths, i):
                measured[path.name]["conn"] = conn_rate(lab, cfg, path)
            for path in rotate(paths, i):
                measured[path.name]["iperf"] = iperf(lab, cfg, path)
            runs.append(measured)
            log(f"run {i + 1}/{cfg.runs}: " + ", ".join(
                f"{name} {m['iperf']['bitsPerSecond'] / 1e9:.2f} Gbit/s {m['conn']['rate']:.0f} conn/s"
                for name, m in measured.items()))
    gbps = {p.name: [r[p.name]["iperf"]["bitsPerSecond"] / 1e9 for r in runs] for p in paths}
    rate = {p.name: [r[p.name]["conn"]["rate"] for r in runs] for p in paths}
    base = paths[0]
    result.figures.append(Figure(f"iperf3, {base.label}", "Gbit/s", gbps[base.name]))
    for p in paths[1:]:
        result.figures.append(Figure(f"iperf3 ratio, {p.label}", "", paired_ratios(gbps[p.name], gbps[base.name]),
                                     GOALS.get(p.name)))
    result.figures.append(Figure(f"connections/s, {base.label}", "conn/s", rate[base.name]))
    for p in paths[1:]:
        result.figures.append(Figure(f"connections/s ratio, {p.label}", "",
                                     paired_ratios(rate[p.name], rate[base.name]), GOALS.get(p.name)))
    errors = {p.name: sum(sum(r[p.name]["conn"]["errors"].values()) for r in runs) for p in paths}
    for name, n in errors.items():
        if n:
            result.warnings.append(f"{name}: {n} short connections failed (see details)")
    result.details = {
        "paths": [{"name": p.name, "label": p.label, "entryNode": p.entry_node, "policy": p.policy}
                  for p in paths],
        "runs": runs,
        "ovsCpuUsPerConnection": {p.name: median(r[p.name]["conn"]["ovsCpuUsPerConnection"] for r in runs)
                                  for p in paths},
        "ovsCpuUsPerMB": {p.name: median(r[p.name]["iperf"]["ovsCpuUsPerMB"] for r in runs) for p in paths},
        "retransmits": {p.name: [r[p.name]["iperf"]["retransmits"] for r in runs] for p in paths},
    }
    return result
