"""Benchmark 3, the control plane: from a cluster state to the switches obeying it.

One network of 10 nodes x 10 pods (``bench.clusters.control_plane_cluster``), then pod changes,
then installs:

- install: publish S Services of 10 endpoints (S = 1, 100, 1,000, 10,000) onto the running cluster and time
  ``publish`` until every switch has acknowledged a barrier for that generation (the controller sends
  the barrier after the flows and groups, so the ack means the switch holds them); then read the
  flows and groups back from every bridge and compare with what the controller compiled. Removing
  the S Services again is timed the same way (except after the last run of the largest S, which the
  teardown removes faster). The controller's own compile step
  (``controllers.pipeline.compile_state``, pure, with the cyclic collector off as in the controller)
  is timed apart in this process, and the CPU time of Open vSwitch and of the controller during each
  install is read, so the split between compiling, sending and the switch shows. The floor beside it:
  Open vSwitch alone taking in the largest state's programs (``bench.ovs_ingest``).
- pod change: a Service with one endpoint whose pod alternates between node-1 and node-2 (a pod
  leaving the endpoints and another joining, as a readiness change does). From the start of
  ``publish`` to the first connection through node-1's nodePort that reaches the new pod, seen by a
  prober in the client namespace sending a request every few milliseconds (``bench/tools/watch.py``),
  with 0 and 1,000 other Services installed: the controller compiles only the Service port that
  changed (``controllers.incremental``), so the figure should not grow with the other Services. Its
  parts are reported too: the switches' ack, the lab building the state (the API server's part) and
  the controller's reading, compiling and sending (from its status file).
- per node: the flows and groups one node's bridge holds beside the iptables rules kube-proxy would
  write on that node for the same state (``bench.iptables_rules``).
"""

from __future__ import annotations

import gc
import json
import time

from bench import ovs_ingest
from bench.clusters import (
    FLIP_NODE_PORT,
    control_plane_cluster,
    control_plane_services,
    expected_counts,
    flip_service,
    set_flip,
)
from bench.iptables_rules import node_rules
from bench.labtools import bridge_counts, host_process, publish, publish_split, time_lock, tool_argv
from bench.machine import cpu_seconds, ovs_pid
from bench.report import BenchResult, Figure, Goal
from bench.stats import median, percentile
from controllers.pipeline import compile_state
from lab.cloud.network import LabNetwork
from lab.emulation.proxy_state import build_proxy_state
from lab.errors import LabError
from lab.kube import addressing as addr
from topologies.cluster import bridge_names

INSTALL_GOAL = Goal("<=", 5.0)  # for 10,000 Services (a large real cluster)
CHANGE_GOAL = Goal("<=", 30.0)  # ms, p99, with 1,000 other Services
GOAL_SERVICES = 10000
GOAL_BACKGROUND = 1000
PUBLISH_TIMEOUT_S = 900


def compile_seconds(cluster, runs: int) -> tuple[list[float], int, int, int, dict]:
    """Times of ``compile_state`` on this cluster's state, (flows, groups, state JSON bytes), and one
    node's figures: its flows and groups beside the iptables rules kube-proxy would write there."""
    state = build_proxy_state(cluster, 1)
    times = []
    for _ in range(runs):
        programs = None
        gc.collect()
        gc.disable()  # as the controller compiles (controllers.collector)
        try:
            started = time.perf_counter()
            programs = compile_state(state)
            times.append(time.perf_counter() - started)
        finally:
            gc.enable()
    flows, groups = expected_counts(programs)
    node = state.nodes[0]
    per_node = {"node": node.name, "flows": len(programs[node.dpid].flows),
                "groups": len(programs[node.dpid].groups), "iptablesRules": node_rules(state, node)}
    return times, flows, groups, len(json.dumps(state.to_dict(), separators=(",", ":"))), per_node


def install(lab: LabNetwork, services: int, runs: int, log, remove_last: bool = True) -> dict:
    """Install ``services`` Services ``runs`` times, removing them after each run (but the last one
    when ``remove_last`` is false: tearing the network down removes them faster)."""
    cluster = lab.cluster
    bridges = bridge_names(cluster)
    rows = []
    for i in range(runs):
        cluster.services = control_plane_services(services)
        ovs, ctl = ovs_pid(), lab.controller.proc.pid
        cpu0 = (cpu_seconds(ovs), cpu_seconds(ctl))
        t0 = time.monotonic()
        built, seconds = publish_split(lab, timeout=PUBLISH_TIMEOUT_S)
        cpu1 = (cpu_seconds(ovs), cpu_seconds(ctl))
        split = install_split(t0, built, seconds, lab.controller.status().get("lastChange", {}))
        held = bridge_counts(bridges)
        cluster.services = []
        removal = publish(lab, timeout=PUBLISH_TIMEOUT_S) if remove_last or i < runs - 1 else None
        rows.append({"installS": seconds, "removeS": removal, "held": {"flows": held[0], "groups": held[1]},
                     "ovsCpuS": _delta(cpu0[0], cpu1[0]), "controllerCpuS": _delta(cpu0[1], cpu1[1]), **split})
        removed = "" if removal is None else f", removed in {removal:.2f} s"
        log(f"{services} Services, run {i + 1}/{runs}: installed in {seconds:.2f} s ({held[0]:,} flows, "
            f"{held[1]:,} groups held){removed}")
    return {"runs": rows}


def install_split(t0: float, built: float, total: float, change: dict) -> dict:
    """Where an install's seconds went, from the controller's moments of the change (``lastChange``, on
    the clock of ``time.monotonic``, which every process shares): the lab building the state and
    writing its change line, until the controller saw it; the controller reading it; compiling and
    packing the first bridge, until which the switches had nothing to do; and from then on to the last
    barrier answered, the switches' time. {} if the controller did not say."""
    if not {"startedAt", "readAt", "firstSentAt"} <= change.keys():
        return {}
    return {"labS": round(change["startedAt"] - t0, 4), "labBuildS": round(built, 4),
            "controllerReadS": round(change["readAt"] - change["startedAt"], 4),
            "firstBridgeS": round(change["firstSentAt"] - change["readAt"], 4),
            "afterFirstBridgeS": round(t0 + total - change["firstSentAt"], 4)}


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def changes(lab: LabNetwork, background: int, count: int, log) -> dict:
    cluster = lab.cluster
    first, second = cluster.pods_on("node-1")[0].name, cluster.pods_on("node-2")[0].name
    cluster.services = control_plane_services(background) + [flip_service()]
    set_flip(cluster, first, second)
    publish(lab, timeout=PUBLISH_TIMEOUT_S)
    target = f"{addr.node_ip(cluster.node('node-1').index)}:{FLIP_NODE_PORT}"
    seen, acked, samples = [], [], []
    with host_process(lab, addr.CLIENT_NAME, tool_argv("watch"), "bench change watcher",
                      interactive=True) as watcher:
        for i in range(count):
            want, other = (second, first) if i % 2 == 0 else (first, second)
            watcher.stdin.write(json.dumps({"target": target, "want": want, "timeout": 30}) + "\n")
            watcher.stdin.flush()
            if "armed" not in json.loads(watcher.stdout.readline() or "{}"):
                raise LabError(f"the change watcher did not start; see {lab.run.file('bench-stderr.log')}")
            t0 = time.monotonic()
            set_flip(cluster, want, other)
            build, ack = publish_split(lab, timeout=PUBLISH_TIMEOUT_S)
            spent = lab.controller.status().get("lastChange", {})
            answer = json.loads(watcher.stdout.readline() or "{}")
            if not answer.get("seen"):
                raise LabError(f"change {i + 1}: {want} never answered through {target} ({answer})")
            seen.append((answer["seenAt"] - t0) * 1000)
            acked.append(ack * 1000)
            samples.append({"seenMs": round(seen[-1], 2), "ackMs": round(acked[-1], 2),
                            "sentAfterMs": round((answer["sentAt"] - t0) * 1000, 2),
                            "labBuildMs": round(build * 1000, 2), "controllerMs": spent.get("applyMs"),
                            "attempts": answer["attempts"], "errors": answer["errors"]})
    cluster.services = []
    publish(lab, timeout=PUBLISH_TIMEOUT_S)
    log(f"{count} pod changes with {background} other Services: p50 {percentile(seen, 50):.1f} ms, "
        f"p99 {percentile(seen, 99):.1f} ms (switches acked: p50 {percentile(acked, 50):.1f} ms)")
    return {"background": background, "seenMs": seen, "ackMs": acked, "samples": samples}


def split_figures(services: int, runs: list[dict]) -> list[Figure]:
    """The largest install in its parts (``install_split``), and how busy Open vSwitch was once it had
    something to do: its CPU over the install (it has nothing before the first bridge) against the
    seconds from the first bridge sent to the ack. Near 1.0, the rest of the install is the switch's."""
    runs = [r for r in runs if "labS" in r]
    if not runs:
        return []
    parts = (("the lab building the state and its change line, until the controller saw it", "labS"),
             ("the controller reading the change", "controllerReadS"),
             ("compiling and packing the first bridge (the switches idle until then)", "firstBridgeS"),
             ("from the first bridge sent to every barrier answered", "afterFirstBridgeS"))
    figures = [Figure(f"    {services:,} Services: {what}", "s", [r[key] for r in runs]) for what, key in parts]
    busy = [round(r["ovsCpuS"] / r["afterFirstBridgeS"], 2) for r in runs
            if r.get("ovsCpuS") is not None and r["afterFirstBridgeS"] > 0]
    figures.append(Figure(f"    {services:,} Services: Open vSwitch's CPU / the seconds after the first bridge", "x",
                          busy, note="1.0: its main thread busy all that time (bench/ovs_ingest.py: its own floor)"))
    return figures


def _services_cluster(cfg, services: int):
    cluster = control_plane_cluster(cfg.cp_nodes, cfg.cp_pods_per_node)
    cluster.services = control_plane_services(services)
    return cluster


def run(cfg, log) -> BenchResult:
    result = BenchResult()
    cluster = control_plane_cluster(cfg.cp_nodes, cfg.cp_pods_per_node)
    installs, change_runs = {}, []
    lab = LabNetwork(cluster)
    lock = time_lock(lab)
    with lab:
        base_flows, base_groups = bridge_counts(bridge_names(cluster))
        for background in cfg.change_backgrounds:
            change_runs.append(changes(lab, background, cfg.changes, log))
        largest = max(cfg.cp_services)
        for s in sorted(cfg.cp_services):
            installs[s] = install(lab, s, cfg.runs_for(s > 1000), log, remove_last=s != largest)
    # Compiled here in this process, after the lab: before it, the compiled programs' memos (a few
    # hundred thousand objects) made every pass of the collector during the pod changes' state builds
    # longer (the lab's part of a change, p50: 7.2 ms with them, 3.3 ms without).
    compiled = {}
    for s in cfg.cp_services:
        times, flows, groups, size, per_node = compile_seconds(_services_cluster(cfg, s), cfg.runs_for(s > 1000))
        compiled[s] = {"compileS": times, "flows": flows, "groups": groups, "stateBytes": size, "perNode": per_node}
        want = flows, groups
        for row in installs[s]["runs"]:
            if (row["held"]["flows"], row["held"]["groups"]) != want:
                result.warnings.append(f"{s} Services: switches held {row['held']} after the ack, the "
                                       f"controller compiled {want[0]} flows, {want[1]} groups")
    for s in cfg.cp_services:
        result.figures.append(Figure(
            f"install {s:,} Service{'s' if s > 1 else ''} x 10 endpoints, 10 nodes (barrier acked)", "s",
            [r["installS"] for r in installs[s]["runs"]], INSTALL_GOAL if s == GOAL_SERVICES else None,
            note=f"{compiled[s]['flows']:,} flows, {compiled[s]['groups']:,} groups"))
    floor = ovs_ingest.measure(build_proxy_state(_services_cluster(cfg, largest), 1), runs=1)
    log(f"Open vSwitch alone taking in the {largest:,}-Service programs: {floor[0]['seconds']:.2f} s "
        f"(its CPU {floor[0]['vswitchdCpuS']:.2f} s)")
    result.figures += split_figures(largest, installs[largest]["runs"])
    for s in [s for s in cfg.cp_services if s >= 1000]:
        runs = installs[s]["runs"]
        for what, key in (("Open vSwitch's CPU (its main thread takes in every message)", "ovsCpuS"),
                          ("the controller's CPU (compiling, packing, sending)", "controllerCpuS")):
            values = [r[key] for r in runs if r[key] is not None]
            if values:
                result.figures.append(Figure(f"  {s:,} Services: {what}", "s", values))
    result.figures.append(Figure(
        f"  Open vSwitch alone taking in the {largest:,}-Service programs (no lab: bench/ovs_ingest.py)", "s",
        [r["seconds"] for r in floor], note=f"its CPU {floor[0]['vswitchdCpuS']:.2f} s, every bridge fed at once"))
    # The same machine can be three times slower on another day (a shared host): the ratio holds.
    result.figures.append(Figure(
        f"  install {largest:,} Services / Open vSwitch alone (same run, same machine)", "x",
        [round(r["installS"] / floor[0]["seconds"], 2) for r in installs[largest]["runs"]],
        note="1.0 would be the lab adding nothing to Open vSwitch's own time"))
    for s in cfg.cp_services:
        result.figures.append(Figure(f"  of which compiling {s:,} Services in full (controller, pure; only at "
                                     "switch connect now)", "s", compiled[s]["compileS"]))
    for s in cfg.cp_services:
        per = compiled[s]["perNode"]
        result.figures.append(Figure(
            f"  {s:,} Services: flows + groups on one node ({per['flows']:,} + {per['groups']:,})", "",
            [per["flows"] + per["groups"]], note=f"kube-proxy would write {per['iptablesRules']:,} iptables rules "
                                                 "there (bench/iptables_rules.py)"))
    for c in change_runs:
        n, other = len(c["seenMs"]), f"{c['background']:,} other Services"
        result.figures.append(Figure(f"pod change seen by a probe, p50 of {n} changes ({other})", "ms",
                                     [percentile(c["seenMs"], 50)]))
        result.figures.append(Figure(f"pod change seen by a probe, p99 of {n} changes ({other})", "ms",
                                     [percentile(c["seenMs"], 99)],
                                     CHANGE_GOAL if c["background"] == GOAL_BACKGROUND else None))
        result.figures.append(Figure(f"  of which every switch acked, p50 / p99 ({other})", "ms",
                                     [percentile(c["ackMs"], 50)], note=f"p99 {percentile(c['ackMs'], 99):.1f} ms"))
        parts = {"lab building the state": "labBuildMs", "controller reading, compiling and sending": "controllerMs"}
        for what, field_ in parts.items():
            values = [x[field_] for x in c["samples"] if x.get(field_) is not None]
            if values:
                result.figures.append(Figure(f"    {what}, p50 / p99 ({other})", "ms", [percentile(values, 50)],
                                             note=f"p99 {percentile(values, 99):.2f} ms"))
    result.details = {
        "lockWaitS": lock.get("lockWaitS"),
        "nodes": cfg.cp_nodes, "podsPerNode": cfg.cp_pods_per_node,
        "emptyCluster": {"flows": base_flows, "groups": base_groups},
        "compiled": {str(k): v for k, v in compiled.items()},
        "install": {str(k): v for k, v in installs.items()},
        "medianRemoveS": {str(k): median(r["removeS"] for r in v["runs"]) for k, v in installs.items()},
        "ovsAlone": floor,
        "ackMsP50": {str(c["background"]): percentile(c["ackMs"], 50) for c in change_runs},
        "changes": change_runs,
    }
    return result
