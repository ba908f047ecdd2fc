"""The bandwidth and latency bill of Cluster: bulk flows, contention between nodes, and round trips.

::

            client ── iperf3 -c nodeIP:30201, short requests to :30080
               │
         ┌─────┴──────┐  npl-<tag>-ul (underlay + edge router)
         └──┬───┬───┬─┘  every node's link to it is shaped: --underlay-mbit (HTB), --delay-ms each way (netem)
        node-a node-b node-c
   bystander-tx  bulk-server  bystander-rx
   (iperf3 -c)   (iperf3 -s, HTTP)  (iperf3 -s)

Service ``bulk`` (NodePort 30201 -> iperf3, 30080 -> HTTP) has exactly one pod, on node-b: iperf3's control
and data connections are separate connections, so with two pods they could land on different ones.

- **Bulk**: iperf3 from the outside client (it sends) through node-b (the pod's node) and through node-a
  (no pod), under Cluster and under Local. Per run: goodput, the sender's retransmits, bytes that crossed
  between nodes (the underlay's node-to-node flow counters) per payload byte delivered, and bytes on the
  nodes' links (their interface counters, both directions) per payload byte delivered.
- **Contention**: a pod-to-pod bulk flow, bystander-tx (node-a) -> bystander-rx (node-c), shares node-a's
  uplink with the nodePort flow's detour under Cluster (entering node-a, forwarded to node-b), and shares no
  shaped link with it under Local (entering node-b): what the bystander keeps, against running alone.
- **Latency**: sequential short requests (``lab.measure.latency``), the paths taking turns: direct to the pod IP
  (the edge router routes pod CIDRs; a second pod port, so that these connections never share a 4-tuple
  with the nodePort's in conntrack), the nodePort on the pod's node, and the nodePort forwarded from node-a.
  With netem, each shaped link carries D each way; the forwarded path crosses node-a's link twice more each
  way (in, then back out to node-b), so it should take 4·D more per round trip. Without netem no delay is
  configured and what remains is processing: two more switch traversals each way (node-a's bridge and the
  underlay again).
- **Fidelity** (Mininet-HiFi's advice): CPU idle and ovs-vswitchd's CPU during every bulk run, and every flow
  that had a shaped path to itself compared with what TCP can carry at the configured rate; a warning when
  the machine did not keep up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from controllers.pipeline import U_INTERNODE
from lab.cloud.network import LabNetwork
from lab.emulation.environment import has_netem
from lab.emulation.iperf3 import iperf3_client_argv, start_client
from lab.emulation.resources import stop_process
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.kube.model import Cluster
from lab.measure.bulk import (
    clock_ticks,
    cpu_sample,
    cpu_usage,
    expected_goodput_mbit,
    interface_bytes,
    ovs_vswitchd_pid,
    parse_iperf3,
    per_byte,
)
from lab.measure.experiment import set_policy
from lab.measure.latency import summarize
from lab.measure.report import format_table, new_report
from lab.scenarios import Outcome
from topologies.cluster import LinkShape

POD_NODE, OTHER_NODE, RX_NODE = "node-b", "node-a", "node-c"  # the pod; the detour's entry; the bystander's receiver
SERVICE, SERVER_POD = "bulk", "bulk-server"
BYSTANDER_TX, BYSTANDER_RX = "bystander-tx", "bystander-rx"
IPERF3_PORT, IPERF3_NODE_PORT = 5201, 30201
HTTP_NODE_PORT, DIRECT_PORT = 30080, 8081

MANIFESTS = f"""
apiVersion: v1
kind: Node
metadata: {{name: {OTHER_NODE}}}
---
apiVersion: v1
kind: Node
metadata: {{name: {POD_NODE}}}
---
apiVersion: v1
kind: Node
metadata: {{name: {RX_NODE}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {SERVER_POD}, labels: {{app: {SERVICE}}}}}
spec:
  nodeName: {POD_NODE}
  containers:
    - name: server
      image: networkstatic/iperf3
      ports:
        - {{name: iperf3, containerPort: {IPERF3_PORT}}}
        - {{name: http, containerPort: 8080}}
        - {{name: http-direct, containerPort: {DIRECT_PORT}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {BYSTANDER_TX}, labels: {{app: bystander-tx}}}}
spec: {{nodeName: {OTHER_NODE}, containers: [{{name: client, image: networkstatic/iperf3}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {BYSTANDER_RX}, labels: {{app: bystander-rx}}}}
spec:
  nodeName: {RX_NODE}
  containers: [{{name: server, image: networkstatic/iperf3, ports: [{{name: iperf3, containerPort: {IPERF3_PORT}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}}}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {{app: {SERVICE}}}
  ports:
    - {{name: iperf3, port: {IPERF3_PORT}, targetPort: iperf3, nodePort: {IPERF3_NODE_PORT}}}
    - {{name: http, port: 80, targetPort: http, nodePort: {HTTP_NODE_PORT}}}
"""

# The latency paths, with what each crosses one way: shaped links (each node's link to the underlay) and
# switch traversals (topologies.cluster: the client hangs off the underlay by an unshaped link).
LATENCY_PATHS = {
    "direct": {"label": f"direct to the pod IP ({POD_NODE})", "shapedLinks": 1, "switches": 2},
    "podNode": {"label": f"nodePort via {POD_NODE} (pod's node)", "shapedLinks": 1, "switches": 2},
    "forwarded": {"label": f"nodePort via {OTHER_NODE}, forwarded", "shapedLinks": 3, "switches": 4},
}
KEPT_UP_GOODPUT = 0.90  # a flow alone on its shaped links reaches at least this share of what TCP can carry
KEPT_UP_IDLE_PCT = 10.0  # Mininet-HiFi: the emulation kept up while the CPUs were never all busy
DEFAULT_MBIT, DEFAULT_SECONDS = 100.0, 4.0
MAX_DELAY_MS = 100.0  # the forwarded path's handshake (6 x D) must fit iperf3's 1 s connect timeout


def _in_range(kind, low: float, high: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} is outside {low:g}..{high:g}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--underlay-mbit", type=_in_range(float, 1, 10000), default=DEFAULT_MBIT,
                        help=f"HTB rate of every node's link to the underlay, Mbit/s (default {DEFAULT_MBIT:g})")
    parser.add_argument("--delay-ms", type=_in_range(float, 0, MAX_DELAY_MS), default=None,
                        help="netem delay on those links, each way (default none; needs netem in the kernel)")
    parser.add_argument("--seconds", type=_in_range(float, 1, 60), default=DEFAULT_SECONDS,
                        help=f"length of each iperf3 run (default {DEFAULT_SECONDS:g})")


def bandwidth_cluster() -> Cluster:
    with tempfile.TemporaryDirectory(prefix="npl-bandwidth-") as tmp:
        path = Path(tmp) / "bandwidth.yaml"
        path.write_text(MANIFESTS)
        return load_manifests([str(path)])


# --- measuring ------------------------------------------------------------------------------------------

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


# --- what it means (pure) -------------------------------------------------------------------------------

def latency_analysis(paths: dict[str, dict], delay_ms: float | None) -> dict:
    """Differences of median round trips, and what the configured delay predicts for them."""
    def p50(name: str, key: str) -> float | None:
        return paths[name][key]["p50"]

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    extra_links = paths["forwarded"]["shapedLinks"] - paths["direct"]["shapedLinks"]
    extra_switches = paths["forwarded"]["switches"] - paths["podNode"]["switches"]
    detour = minus(p50("forwarded", "connectMs"), p50("podNode", "connectMs"))
    expected = round(2 * extra_links * delay_ms, 3) if delay_ms else None
    measured = minus(p50("forwarded", "connectMs"), p50("direct", "connectMs"))
    return {
        "delayPerLinkMs": delay_ms or None,
        "extraShapedLinksOneWay": extra_links,
        "expectedExtraRttMs": expected,
        "measuredExtraRttMs": measured,
        "measuredExtraTtfbMs": minus(p50("forwarded", "ttfbMs"), p50("direct", "ttfbMs")),
        "natMs": minus(p50("podNode", "connectMs"), p50("direct", "connectMs")),
        "detourMs": detour,
        "extraSwitchesOneWay": extra_switches,
        "perExtraSwitchMs": None if detour is None else round(detour / extra_switches, 3),
    }


def fidelity(bulk: list[dict], contention: list[dict], rate_mbit: float) -> dict:
    """Did the machine keep up? Flows that had their shaped links to themselves, and idle CPU."""
    expected = expected_goodput_mbit(rate_mbit)
    alone = [(f"bulk {r['policy']} via {r['entry']}", r["mbps"]) for r in bulk if r["ok"]]
    for case in contention:
        if case["case"] == "alone" and case["bystander"]["ok"]:
            alone.append(("bystander alone", case["bystander"]["mbps"]))
        if case["case"] == "Local":  # no shaped link in common: each should get the whole rate
            alone += [(f"{role} during Local contention", case[role]["mbps"])
                      for role in ("bystander", "nodePort") if case[role] and case[role]["ok"]]
    ratios = {label: round(mbps / expected, 3) for label, mbps in alone}
    idle = [w["cpuIdlePct"] for w in bulk + contention if w["cpuIdlePct"] is not None]
    ovs = [w["ovsCpuPct"] for w in bulk + contention if w["ovsCpuPct"] is not None]
    short = sorted(ratio for ratio in ratios.values() if ratio < KEPT_UP_GOODPUT)
    problems = []
    if short:
        low, high = f"{short[0]:.0%}", f"{short[-1]:.0%}"
        span = low if low == high else f"{low}-{high}"
        problems.append(f"{len(short)} of {len(ratios)} flows that had their shaped links to themselves reached only "
                        f"{span} of the {expected:.1f} Mbit/s TCP can carry")
    if idle and min(idle) < KEPT_UP_IDLE_PCT:
        problems.append(f"CPU idle fell to {min(idle):.0f}% during a bulk run")
    return {"expectedGoodputMbit": round(expected, 2), "goodputRatios": ratios,
            "minCpuIdlePct": min(idle) if idle else None, "maxOvsCpuPct": max(ovs) if ovs else None,
            "keptUp": not problems and bool(ratios), "problems": problems}


# --- the scenario ---------------------------------------------------------------------------------------

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


def run(args, progress) -> Outcome:
    cluster = bandwidth_cluster()
    base = new_report(cluster)
    shape = LinkShape(bw_mbit=args.underlay_mbit, delay_ms=args.delay_ms or None)
    with LabNetwork(cluster, underlay=shape, log=progress) as lab:
        warnings = cluster.warnings + lab.warnings
        timings = {k: round(v, 3) for k, v in lab.timings.items()}
        applied_delay = lab.underlay.delay_ms
        started = time.monotonic()
        measured = measure(lab, args.seconds, args.requests, progress)
        timings["measureS"] = round(time.monotonic() - started, 2)
    report = build_report(base.to_dict(), measured, rate_mbit=args.underlay_mbit, seconds=args.seconds,
                          requests=args.requests, delay_requested=args.delay_ms, delay_applied=applied_delay,
                          warnings=warnings, timings=timings)
    return Outcome(report=report, table=render(report), verdict=verdict(report), warnings=report["warnings"],
                   plot=lambda path: plot(report, path))


def build_report(base: dict, measured: dict, *, rate_mbit: float, seconds: float, requests: int,
                 delay_requested: float | None, delay_applied: float | None, warnings: list[str],
                 timings: dict) -> dict:
    bulk, contention = measured["bulk"], measured["contention"]
    fid = fidelity(bulk, contention, rate_mbit)
    warnings = list(warnings)
    if fid["problems"]:
        warnings.append("the machine did not keep up with the emulation (" + "; ".join(fid["problems"]) +
                        "): these throughputs are partly CPU-bound, not link-bound; try a lower --underlay-mbit")
    return {
        **{k: base[k] for k in ("client", "nodes", "pods")},
        "scenario": "bandwidth",
        "underlay": {"bwMbit": rate_mbit, "delayMs": delay_applied, "delayRequestedMs": delay_requested,
                     "netem": has_netem()},
        "seconds": seconds,
        "bulk": bulk,
        "contention": contention,
        "latency": {"requests": requests, "paths": measured["latencyPaths"],
                    "analysis": latency_analysis(measured["latencyPaths"], delay_applied)},
        "fidelity": fid,
        "warnings": warnings,
        "timings": timings,
    }


# --- rendering (pure) ------------------------------------------------------------------------------------

def _num(value, fmt: str = "{:.1f}", missing: str = "-") -> str:
    return missing if value is None else fmt.format(value)


def _pct(value) -> str:
    return _num(value, "{:.0f}%")


def _entry_label(entry: str) -> str:
    return f"{entry} ({'pod' if entry == POD_NODE else 'no pod'})"


def render(report: dict) -> str:
    rate = report["underlay"]["bwMbit"]
    fid = report["fidelity"]
    delay = report["underlay"]["delayMs"]
    shaped = f"{rate:g} Mbit/s" + (f", {delay:g} ms each way" if delay else "")
    rows = []
    for r in report["bulk"]:
        if not r["ok"]:
            rows.append([r["policy"], _entry_label(r["entry"]), "failed", "-", "-", "-", _pct(r["cpuIdlePct"]),
                         _pct(r["ovsCpuPct"]), r["error"]])
            continue
        rows.append([r["policy"], _entry_label(r["entry"]), _num(r["mbps"]), str(r["retransmits"]),
                     _num(r["interNodePerByte"], "{:.2f}"), _num(r["nodeLinkPerByte"], "{:.2f}"),
                     _pct(r["cpuIdlePct"]), _pct(r["ovsCpuPct"]), f"{r['bytes'] / 1e6:.1f} MB delivered"])
    bulk = format_table(["policy", "entry", "Mbit/s", "retransmits", "between nodes /B", "node links /B",
                         "CPU idle", "ovs-vswitchd", "note"], rows)

    rows = []
    for c in report["contention"]:
        nodeport = c["nodePort"]
        what = "none (bystander alone)" if c["entry"] is None else \
            f"{c['policy']}, enters {c['entry']}" + (" (detour over node-a's link)" if c["detour"] else " (no detour)")
        rows.append([what, _flow_mbps(c["bystander"]), _flow_mbps(nodeport) if nodeport else "-",
                     f"{_retrans(c['bystander'])} / {_retrans(nodeport) if nodeport else '-'}",
                     _pct(c["cpuIdlePct"]), _pct(c["ovsCpuPct"])])
    contention = format_table(["nodePort flow", "bystander Mbit/s", "nodePort Mbit/s", "retransmits",
                               "CPU idle", "ovs-vswitchd"], rows)

    rows = []
    for p in report["latency"]["paths"].values():
        rows.append([p["label"], f"{p['ok']}/{p['failed']}", _quantiles(p["connectMs"]), _quantiles(p["ttfbMs"]),
                     f"{p['shapedLinks']} / {p['switches']}"])
    latency = format_table(["path", "ok/failed", "connect ms p50/p90/p99", "TTFB ms p50/p90/p99",
                            "shaped links / switches one way"], rows)
    return "\n".join([
        f"Bulk: iperf3 from the client through nodePort {IPERF3_NODE_PORT} to the Service's one pod on {POD_NODE}, "
        f"{report['seconds']:g} s each; node links shaped to {shaped} (TCP can carry "
        f"{fid['expectedGoodputMbit']:.1f} Mbit/s); per byte delivered",
        bulk, "",
        f"Contention: bystander flow {BYSTANDER_TX} ({OTHER_NODE}) -> {BYSTANDER_RX} ({RX_NODE}), pod to pod, "
        "next to the nodePort flow",
        contention, "",
        f"Latency: {report['latency']['requests']} sequential requests per path, the paths taking turns "
        "(connect = TCP handshake, TTFB = request sent -> first byte)",
        latency,
    ])


def _flow_mbps(flow: dict) -> str:
    return _num(flow["mbps"]) if flow["ok"] else f"failed: {flow['error']}"


def _retrans(flow: dict) -> str:
    return "-" if not flow["ok"] or flow["retransmits"] is None else str(flow["retransmits"])


def _quantiles(q: dict) -> str:
    return "/".join(_num(q[k], "{:.2f}") for k in ("p50", "p90", "p99"))


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def verdict(report: dict) -> list[str]:
    lines = []
    bulk, fid = report["bulk"], report["fidelity"]
    fwd = _find(bulk, policy="Cluster", entry=OTHER_NODE)
    same = _find(bulk, policy="Cluster", entry=POD_NODE)
    local = _find(bulk, policy="Local", entry=POD_NODE)
    dropped = _find(bulk, policy="Local", entry=OTHER_NODE)
    if fwd and fwd["ok"] and same and same["ok"]:
        lines.append(
            f"Bandwidth bill: entering {OTHER_NODE} (no pod) under Cluster, {fwd['interNodePerByte']:.2f} bytes "
            f"crossed between nodes per byte delivered (every payload byte once, plus headers and ACKs); entering "
            f"{POD_NODE} {same['interNodePerByte']:.2f}"
            + (f", and under Local {local['interNodePerByte']:.2f}" if local and local["ok"] else "") + ". "
            f"On the nodes' links the detour used {fwd['nodeLinkPerByte']:.2f} bytes per byte delivered against "
            f"{same['nodeLinkPerByte']:.2f}: {fwd['nodeLinkPerByte'] - same['nodeLinkPerByte']:.2f} more, because "
            f"every byte crosses {OTHER_NODE}'s link twice more (in, and back out to {POD_NODE}).")
        lines.append(
            f"Throughput: alone, the forwarded flow got {fwd['mbps']:.1f} Mbit/s ({fwd['retransmits']} retransmits) "
            f"and the direct one {same['mbps']:.1f} ({same['retransmits']}); TCP can carry "
            f"{fid['expectedGoodputMbit']:.1f} on {report['underlay']['bwMbit']:g} Mbit/s links. "
            + ("A lone flow hardly notices the detour: its cost is the link capacity it takes from other traffic."
               if fwd["mbps"] >= KEPT_UP_GOODPUT * same["mbps"] else
               f"The detour cost this flow {1 - fwd['mbps'] / same['mbps']:.0%} of its rate"
               + ("." if fid["keptUp"] else ", but here the machine, not the links, set the rates (Fidelity).")))
    if dropped and not dropped["ok"]:
        lines.append(f"Local: entering {OTHER_NODE}, which has no pod, iperf3 could not even connect "
                     f"({dropped['error']}): the price of Local is that only nodes with a pod may get traffic.")
    alone = _find(report["contention"], case="alone")
    c_cluster = _find(report["contention"], case="Cluster")
    c_local = _find(report["contention"], case="Local")
    if alone and c_cluster and c_local and all(c["bystander"]["ok"] for c in (alone, c_cluster, c_local)):
        np_cluster = c_cluster["nodePort"]
        lines.append(
            f"Contention: the bystander pod-to-pod flow ({OTHER_NODE} -> {RX_NODE}) kept "
            f"{c_cluster['bystander']['mbps']:.1f} Mbit/s while the Cluster flow detoured over {OTHER_NODE}'s link"
            + (f" (which got {np_cluster['mbps']:.1f})" if np_cluster and np_cluster["ok"] else "")
            + f", against {c_local['bystander']['mbps']:.1f} under Local (no detour) and "
            f"{alone['bystander']['mbps']:.1f} alone.")
    lines += _latency_lines(report)
    if fid["keptUp"]:
        lines.append(
            f"Fidelity: every flow that had its shaped links to itself reached at least "
            f"{min(fid['goodputRatios'].values()):.0%} of what TCP can carry, and CPU idle stayed at or above "
            f"{fid['minCpuIdlePct']:.0f}% (ovs-vswitchd at up to {fid['maxOvsCpuPct']:.0f}% of a core): the machine "
            "kept up, the links were the bottleneck.")
    else:
        lines.append("Fidelity: the machine did not keep up: " + "; ".join(fid["problems"]) + ".")
    return lines


def _latency_lines(report: dict) -> list[str]:
    paths, a = report["latency"]["paths"], report["latency"]["analysis"]
    if a["measuredExtraRttMs"] is None:
        return ["Latency: not every path answered; see the table."]
    direct, fwd = paths["direct"]["connectMs"]["p50"], paths["forwarded"]["connectMs"]["p50"]
    line = (f"Latency: median handshake {direct:.3f} ms direct, {paths['podNode']['connectMs']['p50']:.3f} ms via "
            f"{POD_NODE}'s nodePort, {fwd:.3f} ms forwarded from {OTHER_NODE}: the detour adds "
            f"{a['measuredExtraRttMs']:.3f} ms per round trip over direct (TTFB {a['measuredExtraTtfbMs']:+.3f} ms).")
    if a["expectedExtraRttMs"] is not None:
        line += (f" With {a['delayPerLinkMs']:g} ms on every node link each way, the forwarded path crosses "
                 f"{a['extraShapedLinksOneWay']} more delayed links each way: expected "
                 f"+{a['expectedExtraRttMs']:.3f} ms, measured +{a['measuredExtraRttMs']:.3f} ms.")
    else:
        reason = ("this kernel has no netem qdisc, so no delay was configured (none is faked)"
                  if report["underlay"]["delayRequestedMs"] and not report["underlay"]["netem"]
                  else "no delay was configured (--delay-ms)")
        line += (f" {reason[0].upper()}{reason[1:]}: what is measured is processing, "
                 f"{a['detourMs']:.3f} ms for {a['extraSwitchesOneWay']} more switches each way, about "
                 f"{a['perExtraSwitchMs']:.3f} ms of round trip per switch on the path; NAT on the pod's node "
                 f"costs {a['natMs']:+.3f} ms.")
    return [line]


# --- the plot --------------------------------------------------------------------------------------------

LOCAL_COLOUR, FORWARD_COLOUR, BYSTANDER_COLOUR, FAIL_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"
CONNECT_COLOUR, TTFB_COLOUR = "#4c72b0", "#8c8c8c"


def plot(report: dict, path: str) -> None:
    """Throughput per bulk case, the bystander's throughput per contention case, latency per path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5.6), layout="constrained")
    ax_bulk, ax_cont, ax_lat = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1.1]})
    rate = report["underlay"]["bwMbit"]
    delay = report["underlay"]["delayMs"]
    fig.suptitle(f"The bill of externalTrafficPolicy Cluster: node links shaped to {rate:g} Mbit/s, "
                 + (f"{delay:g} ms each way" if delay else "no delay"), fontsize=12)
    _plot_bulk(ax_bulk, report)
    _plot_contention(ax_cont, report)
    _plot_latency(ax_lat, report)
    for ax in (ax_bulk, ax_cont, ax_lat):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.savefig(path, dpi=110)


def _rate_lines(ax, report: dict) -> list:
    rate, expected = report["underlay"]["bwMbit"], report["fidelity"]["expectedGoodputMbit"]
    ax.set_ylim(0, rate * 1.45)
    ax.set_ylabel("Mbit/s (iperf3 goodput)")
    return [ax.axhline(rate, color="#999999", lw=1, ls=":", label=f"configured {rate:g} Mbit/s"),
            ax.axhline(expected, color="#555555", lw=1, ls="--", label=f"TCP can carry {expected:.1f}")]


def _plot_bulk(ax, report: dict) -> None:
    from matplotlib.patches import Patch

    lines = _rate_lines(ax, report)
    rate = report["underlay"]["bwMbit"]
    for x, r in enumerate(report["bulk"]):
        if not r["ok"]:
            ax.bar(x, rate * 0.04, color=FAIL_COLOUR)
            ax.text(x, rate * 0.06, "dropped:\nno pod on\nthis node", ha="center", va="bottom", fontsize=8,
                    color=FAIL_COLOUR)
            continue
        forwarded = (r["interNodePerByte"] or 0) > 0.5
        ax.bar(x, r["mbps"], color=FORWARD_COLOUR if forwarded else LOCAL_COLOUR)
        ax.text(x, r["mbps"] + rate * 0.01, f"{r['mbps']:.1f}", ha="center", va="bottom", fontsize=9)
        ax.text(x, r["mbps"] / 2, f"per byte\ndelivered:\n{r['interNodePerByte']:.2f} B\nbetween nodes\n"
                f"{r['nodeLinkPerByte']:.2f} B\non node links", ha="center", va="center", fontsize=8, color="white")
    ax.set_xticks(range(len(report["bulk"])),
                  [f"{r['policy']}\nvia {_entry_label(r['entry'])}" for r in report["bulk"]])
    kinds = [Patch(color=LOCAL_COLOUR, label="served on the entry node"),
             Patch(color=FORWARD_COLOUR, label="forwarded to the pod's node")]
    ax.legend(handles=kinds + lines, loc="upper center", fontsize=8, ncols=2)
    ax.set_title("Bulk through the nodePort, one flow at a time")


def _plot_contention(ax, report: dict) -> None:
    lines = _rate_lines(ax, report)
    width = 0.38
    for x, c in enumerate(report["contention"]):
        flows = [("bystander", BYSTANDER_COLOUR)] + ([("nodePort", FORWARD_COLOUR)] if c["nodePort"] else [])
        for i, (role, colour) in enumerate(flows):
            dx = 0 if len(flows) == 1 else (i - 0.5) * width
            mbps = c[role]["mbps"] or 0
            ax.bar(x + dx, mbps, width, color=colour)
            ax.text(x + dx, mbps + 1, f"{mbps:.1f}" if c[role]["ok"] else "failed", ha="center", va="bottom",
                    fontsize=9)
    from matplotlib.patches import Patch
    kinds = [Patch(color=BYSTANDER_COLOUR, label=f"bystander: {BYSTANDER_TX} -> {BYSTANDER_RX}"),
             Patch(color=FORWARD_COLOUR, label="nodePort flow from the client")]
    ax.legend(handles=kinds + lines, loc="upper center", fontsize=8, ncols=2)
    ax.set_xticks(range(len(report["contention"])),
                  ["bystander alone" if c["entry"] is None else
                   f"{c['policy']}, client via {c['entry']}:\n"
                   + (f"detour shares\n{OTHER_NODE}'s link" if c["detour"] else "no link\nin common")
                   for c in report["contention"]])
    ax.set_title(f"Contention: a pod-to-pod flow {OTHER_NODE} -> {RX_NODE}")


def _plot_latency(ax, report: dict) -> None:
    paths = list(report["latency"]["paths"].values())
    width = 0.38
    top = 0.0
    for offset, key, colour, name in ((-width / 2, "connectMs", CONNECT_COLOUR, "connect (TCP handshake)"),
                                      (width / 2, "ttfbMs", TTFB_COLOUR, "TTFB (request sent -> first byte)")):
        p50 = [p[key]["p50"] or 0 for p in paths]
        p90 = [max(p50[i], paths[i][key]["p90"] or 0) for i in range(len(paths))]
        top = max([top] + p90)
        ax.bar([x + offset for x in range(len(paths))], p50, width, color=colour, label=name,
               yerr=[[0] * len(paths), [hi - lo for hi, lo in zip(p90, p50, strict=True)]], capsize=3)
        for x, value in enumerate(p50):
            ax.text(x + offset, value / 2, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white")
    a = report["latency"]["analysis"]
    note = (f"expected +{a['expectedExtraRttMs']:.2f} ms forwarded, measured +{a['measuredExtraRttMs']:.2f}"
            if a["expectedExtraRttMs"] is not None else
            f"no delay: +{a['detourMs']:.2f} ms for {a['extraSwitchesOneWay']} more switches each way"
            if a["detourMs"] is not None else "")
    ax.set_ylim(0, top * 1.35 if top else 1)
    ax.text(0.02, 0.80, note, transform=ax.transAxes, fontsize=8, va="top")
    ax.set_xticks(range(len(paths)), [p["label"].replace(" (", "\n(").replace(", ", "\n") for p in paths])
    ax.set_ylabel("ms (bars: median, whiskers: p90)")
    ax.set_title(f"Round trips: {report['latency']['requests']} short requests per path")
    ax.legend(loc="upper left", fontsize=8)
