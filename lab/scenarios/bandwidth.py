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

This module is the scenario as ``python -m lab run bandwidth`` runs it; its parts live beside it: the
cluster (``bandwidth_cluster``), the measurements (``bandwidth_runs``), what they mean
(``bandwidth_analysis``), the tables and the plot (``bandwidth_render``). Notebooks and tests reach
them all through this module.
"""

from __future__ import annotations

import argparse
import time

from lab.cloud.network import LabNetwork
from lab.measure.report import new_report
from lab.scenarios import Outcome
from lab.scenarios.bandwidth_analysis import build_report, latency_analysis, verdict
from lab.scenarios.bandwidth_cluster import (
    BYSTANDER_RX,
    BYSTANDER_TX,
    DIRECT_PORT,
    HTTP_NODE_PORT,
    IPERF3_NODE_PORT,
    IPERF3_PORT,
    LATENCY_PATHS,
    MANIFESTS,
    OTHER_NODE,
    POD_NODE,
    RX_NODE,
    SERVER_POD,
    SERVICE,
    bandwidth_cluster,
)
from lab.scenarios.bandwidth_render import plot, render
from lab.scenarios.bandwidth_runs import measure
from topologies.cluster import LinkShape

__all__ = [  # what notebooks and tests use, wherever it lives
    "BYSTANDER_RX", "BYSTANDER_TX", "DEFAULT_MBIT", "DEFAULT_SECONDS", "DIRECT_PORT", "HTTP_NODE_PORT",
    "IPERF3_NODE_PORT", "IPERF3_PORT", "LATENCY_PATHS", "MANIFESTS", "MAX_DELAY_MS", "OTHER_NODE", "POD_NODE",
    "RX_NODE", "SERVER_POD", "SERVICE", "add_arguments", "bandwidth_cluster", "build_report",
    "latency_analysis", "measure", "plot", "render", "run", "verdict",
]

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
