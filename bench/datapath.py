"""Benchmark 2, what the NodePort data path costs: nodePort paths against plain routing, side by side.

One pod on node-a, one network, four ways from the client to that same pod (``bench.clusters``):

    routed            client -> edge router -> node-a's bridge -> pod IP         (no NAT: the baseline)
    dnat              client -> node-a IP:nodePort, Local: DNAT to the pod        (client IP kept)
    dnat-snat         client -> node-a IP:nodePort, Cluster: DNAT + SNAT           (masquerade, same node)
    dnat-snat-remote  client -> node-b IP:nodePort, Cluster: DNAT + SNAT, then across to node-a

Each run measures short TCP connections per second (``bench/tools/connrate.py``: connect, one byte
back, close), then iperf3 throughput (one TCP stream, client to pod), each time as routed, path 1,
routed, path 2, routed, path 3, routed (the paths' order rotated from run to run): a path's ratio is
its figure over the mean of the routed figures measured just before and after it, seconds apart.
Each run's connection rates use ports of their own (``bench.clusters.conn_ports``) and the client its
whole source-port range, so no measurement reuses a 4-tuple that conntrack still holds from another.
Figures are medians over runs. Open vSwitch's CPU time per connection and per megabyte is read for
each path too: on a busy machine it is a steadier measure of cost than a rate. In the same runs the
same traffic crosses the kernel alone (``bench.kernel_path``: forwarding and netfilter DNAT+MASQUERADE
in plain namespaces, no Open vSwitch), so every figure also reads as a fraction of the machine's limit.
"""

from __future__ import annotations

import contextlib

from bench import kernel_path as kernel
from bench.clusters import (
    DATAPATH_PATHS,
    DATAPATH_POD,
    MAX_RUNS,
    conn_ports,
    datapath_cluster,
    datapath_services,
    datapath_target,
)
from bench.labtools import host_process, publish, run_json, time_lock, tool_argv, wait_listening
from bench.machine import cpu_seconds, ovs_pid
from bench.report import BenchResult, Figure, Goal
from bench.stats import median, ratio, rotate, sandwich, sandwich_ratios
from lab.cloud.network import LabNetwork
from lab.errors import LabError

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


def conn_rate(lab: LabNetwork, cfg, path, run: int) -> dict:
    ip, port = datapath_target(lab.cluster, path, "conn", run)
    argv = tool_argv("connrate", "client", "--target", f"{ip}:{port}", "--seconds", str(cfg.conn_seconds),
                     "--concurrency", str(cfg.conn_concurrency))
    doc, ovs_cpu = _measure(lab, argv, timeout=cfg.conn_seconds + 30)
    doc["ovsCpuS"] = ovs_cpu
    total = doc.get("allConnections") or doc["connections"]
    doc["ovsCpuUsPerConnection"] = ovs_cpu / total * 1e6 if ovs_cpu and total else None
    return doc


def _base(measured: list[tuple[str, dict]], base: str, key: str = "bitsPerSecond") -> float | None:
    """The baseline's value in one run: the median of its measurements between the other paths."""
    return median(m[key] for n, m in measured if n == base)


def run(cfg, log) -> BenchResult:
    if cfg.runs > MAX_RUNS:
        raise LabError(f"datapath: at most {MAX_RUNS} runs (--runs)")
    result = BenchResult()
    paths = DATAPATH_PATHS
    base = paths[0]
    runs: list[dict] = []
    cluster = datapath_cluster()
    lab = LabNetwork(cluster)
    lock = time_lock(lab)
    with lab, contextlib.ExitStack() as servers:
        servers.enter_context(kernel.kernel_path(cfg.runs))
        cluster.services = datapath_services(paths, cfg.runs)
        publish(lab)
        ports = [str(conn_ports(p, run)[0]) for run in range(cfg.runs) for p in paths]
        servers.enter_context(host_process(lab, DATAPATH_POD, tool_argv("connrate", "server", "--ports", *ports),
                                           "bench connection-rate server", ready_line=True))
        for path in paths:
            servers.enter_context(host_process(lab, DATAPATH_POD, ["iperf3", "-s", "-p", str(path.iperf_port)],
                                               f"bench iperf3 server :{path.iperf_port}"))
        for path in paths:
            wait_listening(lab, DATAPATH_POD, path.iperf_port)
        # The client's whole port range (in its own namespace only): 64,000 source ports, not 28,000,
        # so that one measurement's ~20,000 connections never reuse one.
        widened = lab.run_in("client", ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"], timeout=10)
        if widened.returncode != 0:
            raise LabError(f"datapath: could not widen the client's port range: {widened.stderr.strip()}")
        for i in range(cfg.runs):
            # Every nodePort path between two measurements of the routed baseline, the others' order
            # rotated from run to run; connection rates first, then throughputs.
            order = sandwich(base, rotate(paths[1:], i))
            conns = [(p.name, conn_rate(lab, cfg, p, i)) for p in order]
            iperfs = [(p.name, iperf(lab, cfg, p)) for p in order]
            kconns = [(n, kernel.conn_rate(n == "nat", i, cfg.conn_seconds, cfg.conn_concurrency))
                      for n in ("routed", "nat", "routed")]
            kiperfs = [(n, kernel.iperf(n == "nat", cfg.iperf_seconds)) for n in ("routed", "nat", "routed")]
            runs.append({"kernelConn": kconns, "kernelIperf": kiperfs,
                         "kernelConnRatio": sandwich_ratios([(n, m["rate"]) for n, m in kconns], "routed")["nat"],
                         "kernelIperfRatio": sandwich_ratios([(n, m["bitsPerSecond"]) for n, m in kiperfs],
                                                             "routed")["nat"]})
            runs[-1].update({"conn": conns, "iperf": iperfs,
                         "connRatios": sandwich_ratios([(n, m["rate"]) for n, m in conns], base.name),
                         "iperfRatios": sandwich_ratios([(n, m["bitsPerSecond"]) for n, m in iperfs], base.name)})
            log(f"run {i + 1}/{cfg.runs}: routed {_base(iperfs, base.name) / 1e9:.2f} Gbit/s, "
                f"{_base(conns, base.name, 'rate'):.0f} conn/s; ratios " + ", ".join(
                    f"{p.name} {runs[-1]['iperfRatios'][p.name]:.2f}/{runs[-1]['connRatios'][p.name]:.2f}"
                    for p in paths[1:]))
    result.figures.append(Figure(f"iperf3, {base.label}", "Gbit/s",
                                 [_base(r["iperf"], base.name) / 1e9 for r in runs]))
    for p in paths[1:]:
        result.figures.append(Figure(f"iperf3 ratio, {p.label}", "", [r["iperfRatios"][p.name] for r in runs],
                                     GOALS.get(p.name)))
    result.figures.append(Figure(f"connections/s, {base.label}", "conn/s",
                                 [_base(r["conn"], base.name, "rate") for r in runs]))
    for p in paths[1:]:
        result.figures.append(Figure(f"connections/s ratio, {p.label}", "", [r["connRatios"][p.name] for r in runs],
                                     GOALS.get(p.name)))
    # The machine's own limit, measured in the same runs (bench.kernel_path): every lab figure as a fraction.
    k_iperf = [_base(r["kernelIperf"], "routed") for r in runs]
    k_conn = [_base(r["kernelConn"], "routed", "rate") for r in runs]
    result.figures += [
        Figure("kernel, no OVS: iperf3 routed (the machine's limit)", "Gbit/s", [v / 1e9 for v in k_iperf]),
        Figure("kernel: iperf3 ratio, netfilter DNAT+MASQUERADE / routed", "", [r["kernelIperfRatio"] for r in runs]),
        Figure("lab routed iperf3 / kernel routed iperf3", "",
               [ratio(_base(r["iperf"], base.name), k) for r, k in zip(runs, k_iperf, strict=True)]),
        Figure("kernel, no OVS: connections/s routed (the machine's limit)", "conn/s", k_conn),
        Figure("kernel: connections/s ratio, netfilter DNAT+MASQUERADE / routed", "",
               [r["kernelConnRatio"] for r in runs]),
        Figure("lab routed connections/s / kernel routed", "",
               [ratio(_base(r["conn"], base.name, "rate"), k) for r, k in zip(runs, k_conn, strict=True)]),
        Figure("lab nodePort DNAT+SNAT (entry node) connections/s / kernel DNAT+MASQUERADE", "",
               [ratio(median(m["rate"] for n, m in r["conn"] if n == "dnat-snat"),
                      median(m["rate"] for n, m in r["kernelConn"] if n == "nat")) for r in runs]),
    ]
    per_path = lambda kind, key: {  # noqa: E731  median over every measurement of each path
        p.name: median(m[key] for r in runs for n, m in r[kind] if n == p.name) for p in paths}
    errors = {p.name: sum(sum(m["errors"].values()) for r in runs for n, m in r["conn"] if n == p.name)
              for p in paths}
    for name, n in errors.items():
        if n:
            result.warnings.append(f"{name}: {n} short connections failed (see details)")
    hop = [ratio(r["iperfRatios"]["dnat-snat-remote"], r["iperfRatios"]["dnat-snat"]) for r in runs]
    hop_conn = [ratio(r["connRatios"]["dnat-snat-remote"], r["connRatios"]["dnat-snat"]) for r in runs]
    result.details = {
        "lockWaitS": lock.get("lockWaitS"),
        "paths": [{"name": p.name, "label": p.label, "entryNode": p.entry_node, "policy": p.policy}
                  for p in paths],
        "runs": runs,
        "ovsCpuUsPerConnection": per_path("conn", "ovsCpuUsPerConnection"),
        "ovsCpuUsPerMB": per_path("iperf", "ovsCpuUsPerMB"),
        "retransmits": per_path("iperf", "retransmits"),
        # The remote path crosses two more bridges than the others: its cost beyond DNAT+SNAT on the entry
        # node is the extra node hop, on the one Open vSwitch thread that forwards for every emulated node.
        "extraHopRatio": {"iperf": median(hop), "conn": median(hop_conn)},
    }
    return result
