"""Benchmark 4, scale: from nothing to every pod answering through its NodePort, for growing clusters.

For N nodes x 10 pods (``bench.clusters.scale_cluster``: 10 Services with ``externalTrafficPolicy:
Local``, Service k reaching exactly the k-th pod of the entry node), "up" is the time from
``LabNetwork.start`` (less any queueing for the machine lock) until one request through every
(Service, node) pair has been answered by the one pod that must answer there: every pod reachable
through its NodePort. Memory is read once up: Open vSwitch's resident set (which carries what
earlier networks left, so its own count of rules and ports is kept beside it), the proportional set
size of every process of the lab (controller, pod servers, one shell per Mininet host and switch)
and of the bench itself, and the machine's available memory before and after (kernel memory for
namespaces and veths included, other engineers' work too). Teardown is timed too.
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.clusters import scale_cluster, scale_targets
from bench.labtools import bridge_counts, lab_pids, time_lock
from bench.machine import meminfo, ovs_pid, pss_mib, rss_mib
from bench.ovs_removal import measure
from bench.report import BenchResult, Figure, Goal
from lab.cloud.network import LabNetwork
from lab.errors import LabError
from topologies.cluster import bridge_names, root_interfaces

UP_GOAL = Goal("<=", 40.0)
GOAL_NODES = 100
TEARDOWN_GOAL = Goal("<=", 5.0)
TEARDOWN_GOAL_NODES = 50
REACH_DEADLINE_S = 120
REACH_CHUNK = 200  # targets probed at once (reach_all)
HEAVY_NODES = 20


def ovs_memory_show() -> dict[str, int]:
    """Open vSwitch's own accounting (``ovs-appctl memory/show``): rules, ports, datapath flow keys..."""
    out = subprocess.run(["ovs-appctl", "memory/show"], capture_output=True, text=True).stdout
    return {k: int(v) for k, _, v in (item.partition(":") for item in out.split()) if v.isdigit()}


def reach_all(lab: LabNetwork, targets: dict[str, str], deadline_s: float = REACH_DEADLINE_S) -> dict:
    """Probe every target once, then again only the ones that failed, until all answer as expected.
    REACH_CHUNK targets at a time: a 100-node cluster's 1,000 connections opened at once overran the
    one process serving every pod and the switches' first-packet path, and half of them timed out
    (2.2 s, then rounds again: 3.4-7.2 s to reach all); 200 at a time all answered in 3.0 s."""
    pending = dict(targets)
    rounds, wrong = 0, {}
    deadline = time.monotonic() + deadline_s
    while pending:
        if time.monotonic() > deadline:
            raise LabError(f"{len(pending)} of {len(targets)} (Service, node) pairs never answered with their "
                           f"pod, e.g. {next(iter(pending))}; wrong answers: {dict(list(wrong.items())[:3])}")
        rounds += 1
        names = list(pending)
        records = []
        for i in range(0, len(names), REACH_CHUNK):
            chunk = names[i:i + REACH_CHUNK]
            records += lab.probe(chunk, len(chunk), concurrency=8, timeout=2.0)["records"]
        for target, record in zip(names, records, strict=True):
            pod = (record.get("response") or {}).get("pod") if record["ok"] else None
            if pod == pending[target]:
                del pending[target]
            else:
                wrong[target] = pod or record["error"]
    return {"rounds": rounds, "firstRoundFailures": len(wrong)}


def one_cluster(nodes: int, pods_per_node: int, log) -> dict:
    cluster = scale_cluster(nodes, pods_per_node)
    targets = scale_targets(cluster)
    ovs = ovs_pid()
    ovs_before, avail_before = rss_mib(ovs), meminfo()["MemAvailable"] / 1024
    lab = LabNetwork(cluster)
    lock = time_lock(lab)
    row: dict = {"nodes": nodes, "pods": len(cluster.pods), "services": len(cluster.services),
                 "targets": len(targets)}
    t0 = time.monotonic()
    try:
        lab.start()
        started = time.monotonic()
        row["reach"] = reach_all(lab, targets)
        up = time.monotonic()
        row.update({"lockWaitS": lock.get("lockWaitS", 0.0), "timings": dict(lab.timings),
                    "startS": started - t0 - lock.get("lockWaitS", 0.0), "reachS": up - started})
        row["upS"] = row["startS"] + row["reachS"]
        flows, groups = bridge_counts(bridge_names(cluster))
        row["ovsMemoryShow"] = ovs_memory_show()
        pss = {pid: pss_mib(pid) for pid in lab_pids(lab)}
        row.update({
            "ovsPorts": len(root_interfaces(cluster)), "ovsBridges": len(bridge_names(cluster)),
            "flows": flows, "groups": groups,
            "processes": len(pss), "labPssMiB": round(sum(v for v in pss.values() if v), 1),
            "benchPssMiB": pss_mib(os.getpid()),
            "ovsRssMiB": rss_mib(ovs), "ovsRssBeforeMiB": ovs_before,
            "machineMemUsedMiB": round(avail_before - meminfo()["MemAvailable"] / 1024, 1),
        })
    finally:
        t_stop = time.monotonic()
        lab.stop()
        row["teardownS"] = time.monotonic() - t_stop
        row["teardownBridgesS"] = lab.timings.get("teardownBridges")
    log(f"{nodes} nodes x {pods_per_node} pods: up in {row['upS']:.1f} s (build {row['startS']:.1f}, reach "
        f"{row['reachS']:.1f}), teardown {row['teardownS']:.1f} s, lab {row['labPssMiB']:.0f} MiB, OVS "
        f"{row['ovsRssMiB']:.0f} MiB (was {row['ovsRssBeforeMiB']:.0f})")
    return row


def removal_floor(rows: dict[int, list[dict]], nodes: int, log) -> list[Figure]:
    """The same number of ports on as many bridges, removed by Open vSwitch with no lab (bench.ovs_removal)."""
    row = rows[nodes][0]
    found = measure(row["ovsBridges"], row["ovsPorts"], runs=1)
    rows[nodes][0]["ovsRemovalAlone"] = found
    figures = []
    for expedited in (False, True):
        done = [r for r in found if r["expedited"] == expedited]
        waits = done[0]["mainThreadStacks"]
        where = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(waits.items())[:2])
        label = "expedited RCU (as the lab's teardown)" if expedited else "normal RCU"
        figures.append(Figure(f"    Open vSwitch alone removing {row['ovsPorts']} ports, {row['ovsBridges']} bridges "
                              f"(no lab), {label}", "s", [r["seconds"] for r in done],
                              note=f"{done[0]['msPerPort']:.1f} ms/port, vswitchd CPU {done[0]['vswitchdCpuS']:.2f} s; "
                                   f"its main thread waits in {where}"))
        log(f"Open vSwitch alone, {label}: {done[0]['seconds']:.1f} s for {row['ovsPorts']} ports ({where})")
    return figures


def run(cfg, log) -> BenchResult:
    result = BenchResult()
    rows: dict[int, list[dict]] = {}
    for nodes in cfg.scale_nodes:
        rows[nodes] = [one_cluster(nodes, cfg.scale_pods_per_node, log)
                       for _ in range(cfg.runs_for(heavy=nodes >= HEAVY_NODES))]
    ppn = cfg.scale_pods_per_node
    col = lambda n, key: [r[key] for r in rows[n]]  # noqa: E731
    for n in rows:
        result.figures.append(Figure(f"cluster up, {n} nodes x {ppn} pods (all reachable via NodePort)", "s",
                                     col(n, "upS"), UP_GOAL if n == GOAL_NODES else None,
                                     note=f"{rows[n][0]['ovsPorts']} OVS ports, {rows[n][0]['flows']:,} flows"))
    for n in rows:
        result.figures.append(Figure(f"  teardown, {n} nodes", "s", col(n, "teardownS"),
                                     TEARDOWN_GOAL if n == TEARDOWN_GOAL_NODES else None))
        result.figures.append(Figure(f"    of which Open vSwitch removing the bridges' ports, {n} nodes", "s",
                                     col(n, "teardownBridgesS"), note=f"{rows[n][0]['ovsPorts']} ports"))
    result.figures += removal_floor(rows, TEARDOWN_GOAL_NODES if TEARDOWN_GOAL_NODES in rows else max(rows), log)
    for n in rows:
        result.figures.append(Figure(f"  lab processes memory (PSS), {n} nodes", "MiB", col(n, "labPssMiB"),
                                     note=f"{rows[n][0]['processes']} processes"))
    largest = max(rows)
    big = rows[largest]
    result.figures += [
        Figure(f"  lab memory per node (PSS / nodes, {largest} nodes, its {ppn} pods included)", "MiB",
               [r["labPssMiB"] / r["nodes"] for r in big]),
        Figure(f"  lab memory per pod (PSS / pods, {largest} nodes)", "MiB", [r["labPssMiB"] / r["pods"] for r in big]),
        Figure(f"  Open vSwitch memory growth per node ({largest} nodes)", "MiB",
               [(r["ovsRssMiB"] - r["ovsRssBeforeMiB"]) / r["nodes"]
                if r.get("ovsRssMiB") and r.get("ovsRssBeforeMiB") else None for r in big]),
    ]
    largest = max(rows)
    counts = rows[largest][0].get("ovsMemoryShow", {})
    seen = [r[key] for rs in rows.values() for r in rs for key in ("ovsRssBeforeMiB", "ovsRssMiB") if r.get(key)]
    result.figures.append(Figure(
        f"  Open vSwitch memory (RSS) with {largest} nodes up", "MiB", col(largest, "ovsRssMiB"),
        note=f"{counts.get('rules', '?')} rules, {counts.get('ports', '?')} ports by its own count; its RSS "
             f"carries what earlier networks left ({min(seen):.0f}-{max(seen):.0f} MiB during this benchmark)"))
    result.details = {"lockWaitS": sum(r["lockWaitS"] for rs in rows.values() for r in rs),
                      "clusters": {str(n): r for n, r in rows.items()}}
    return result
