"""The bandwidth scenario's measurements on a running lab: iperf3 flows side by side, and round trips.

Every window of flows is bracketed by the counters that say what it cost (the underlay's node-to-node
flow counters, the nodes' link interfaces) and by the CPU gauges that say whether the machine kept up;
what those numbers mean is ``lab.scenarios.bandwidth_analysis``'s business.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from controllers.pipeline import U_INTERNODE
from lab.emulation.iperf3 import iperf3_client_argv, start_client
from lab.emulation.resources import stop_process
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.measure.bulk import (
    clock_ticks,
    cpu_sample,
    cpu_usage,
    interface_bytes,
    ovs_vswitchd_pid,
    parse_iperf3,
    per_byte,
)
from lab.measure.experiment import set_policy
from lab.measure.latency import summarize
from lab.scenarios.bandwidth_cluster import (
    BYSTANDER_RX,
    BYSTANDER_TX,
    DIRECT_PORT,
    HTTP_NODE_PORT,
    IPERF3_NODE_PORT,
    IPERF3_PORT,
    LATENCY_PATHS,
    OTHER_NODE,
    POD_NODE,
    SERVER_POD,
    SERVICE,
)


@dataclass(frozen=True)
class FlowSpec:
    role: str  # "nodePort" or "bystander"
    host: str  # where the iperf3 client runs
    ip: str
    port: int


def nodeport_flow(lab, entry: str) -> FlowSpec:
    return FlowSpec("nodePort", addr.CLIENT_NAME, addr.node_ip(lab.cluster.node(entry).index), IPERF3_NODE_PORT)


def bystander_flow(lab) -> FlowSpec:
    return FlowSpec("bystander", BYSTANDER_TX, lab.cluster.pod(BYSTANDER_RX).ip, IPERF3_PORT)


def run_flows(lab, flows: list[FlowSpec], seconds: float) -> dict:
    """Run iperf3 clients side by side; the counters and CPU gauges cover exactly this window."""
    links = [addr.node_uplink_intf(n.index)[0] for n in lab.cluster.nodes]
    ovs_pid = ovs_vswitchd_pid()
    inter_before = lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    links_before = interface_bytes(links)
    cpu_before = cpu_sample(ovs_pid, time.monotonic())
    procs, outputs = {}, {}
    try:
        for flow in flows:
            argv = iperf3_client_argv(flow.ip, flow.port, seconds)
            procs[flow.role] = start_client(lab.run, lab.host(flow.host), argv, f"iperf3 client ({flow.role})")
        for role, proc in procs.items():
            outputs[role] = proc.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        raise LabError(f"an iperf3 client ran far past its {seconds:g} s; it was stopped") from None
    finally:
        for proc in procs.values():
            stop_process(lab.run, proc)
    cpu_after = cpu_sample(ovs_pid, time.monotonic())
    links_after = interface_bytes(links)
    inter_after = lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    return {"flows": {role: parse_iperf3(*out) for role, out in outputs.items()},
            "interNodeBytes": inter_after - inter_before, "nodeLinkBytes": links_after - links_before,
            **cpu_usage(cpu_before, cpu_after, clock_ticks())}


def bulk_case(lab, policy: str, entry: str, seconds: float) -> dict:
    flow = nodeport_flow(lab, entry)
    window = run_flows(lab, [flow], seconds)
    result = window["flows"]["nodePort"]
    return {"policy": policy, "entry": entry, "entryHasPod": entry == POD_NODE,
            "target": f"{flow.ip}:{flow.port}", **result,
            "interNodeBytes": window["interNodeBytes"],
            "interNodePerByte": per_byte(window["interNodeBytes"], result["bytes"]),
            "nodeLinkBytes": window["nodeLinkBytes"],
            "nodeLinkPerByte": per_byte(window["nodeLinkBytes"], result["bytes"]),
            "cpuIdlePct": window["idlePct"], "ovsCpuPct": window["ovsCpuPct"]}


def contention_case(lab, policy: str | None, entry: str | None, seconds: float) -> dict:
    flows = [bystander_flow(lab)] + ([nodeport_flow(lab, entry)] if entry else [])
    window = run_flows(lab, flows, seconds)
    return {"case": policy or "alone", "policy": policy, "entry": entry,
            "detour": entry is not None and entry != POD_NODE,
            "bystander": window["flows"]["bystander"], "nodePort": window["flows"].get("nodePort"),
            "cpuIdlePct": window["idlePct"], "ovsCpuPct": window["ovsCpuPct"]}


def latency_targets(lab) -> dict[str, str]:
    pod_ip = lab.cluster.pod(SERVER_POD).ip
    return {"direct": f"{pod_ip}:{DIRECT_PORT}",
            "podNode": f"{addr.node_ip(lab.cluster.node(POD_NODE).index)}:{HTTP_NODE_PORT}",
            "forwarded": f"{addr.node_ip(lab.cluster.node(OTHER_NODE).index)}:{HTTP_NODE_PORT}"}


def measure_latency(lab, requests: int) -> dict[str, dict]:
    targets = latency_targets(lab)
    argv = [sys.executable, "-m", "lab.measure.latency", "--requests", str(requests),
            "--targets", *(f"{name}={target}" for name, target in targets.items())]
    done = lab.run_in(addr.CLIENT_NAME, argv, timeout=60 + requests * len(targets) * 0.1)
    if done.returncode != 0:
        raise LabError(f"the latency probe failed (code {done.returncode}): {done.stderr.strip()[-300:]}")
    records = json.loads(done.stdout)["records"]
    return {name: {**LATENCY_PATHS[name], "target": targets[name], **summarize(records[name])} for name in targets}


def measure(lab, seconds: float, requests: int, progress=lambda s: None) -> dict:
    """Everything the scenario measures, on a running lab built from ``bandwidth_cluster()``."""
    service = lab.cluster.service(SERVICE)
    bulk = []

    def bulk_runs(policy: str) -> None:
        for entry in (POD_NODE, OTHER_NODE):
            progress(f"bulk: iperf3 via {entry} under {policy} ({seconds:g} s)")
            bulk.append(bulk_case(lab, policy, entry, seconds))

    progress(f"contention: the bystander flow alone ({seconds:g} s)")
    contention = [contention_case(lab, None, None, seconds)]
    set_policy(lab, service, "Cluster")
    bulk_runs("Cluster")
    progress(f"contention: the bystander flow while the nodePort flow detours via {OTHER_NODE} (Cluster)")
    contention.append(contention_case(lab, "Cluster", OTHER_NODE, seconds))
    progress(f"latency: {requests} requests per path: direct, via {POD_NODE}, via {OTHER_NODE}")
    paths = measure_latency(lab, requests)
    set_policy(lab, service, "Local")
    bulk_runs("Local")
    progress(f"contention: the bystander flow while the nodePort flow enters {POD_NODE} (Local)")
    contention.append(contention_case(lab, "Local", POD_NODE, seconds))
    return {"bulk": bulk, "contention": contention, "latencyPaths": paths}
