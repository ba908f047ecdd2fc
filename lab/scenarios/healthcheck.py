"""How long a load balancer keeps sending connections to a node that drops them, and what that costs.

Under ``externalTrafficPolicy: Local`` a node without a local pod drops NodePort connections silently;
the cloud load balancer stops sending it traffic only once its health checks (``/healthz`` on the
Service's healthCheckNodePort, 503 on such a node) have failed ``unhealthy_threshold`` times. Until
then clients time out. The scenario measures that window for real health-check profiles: at start
(node-c has no pod from the beginning), and after the pod on node-b is deleted, with clients sending
new connections at a steady rate the whole time. Then the same with ``Cluster``: the load balancer
checks kube-proxy's ``:10256/healthz``, every node stays in rotation, and no connection fails (the
price is SNAT and the extra hop instead).

Manifests: ``examples/healthcheck/`` (three nodes, two replicas, so node-c has none).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import datetime
from pathlib import Path

from lab.cloud.load_balancer import PROFILES
from lab.cloud.network import LabNetwork
from lab.kube.manifests import load_manifests
from lab.measure.experiment import probe_load_balancer, set_policy
from lab.measure.report import format_table
from lab.scenarios import Outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "healthcheck"
RATE = 20.0  # new connections per second from the client population
ACTION_AT_S = 1.0  # the pod is deleted this long after the clients start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", default="gce,aws-nlb",
                        help=f"comma-separated health-check profiles ({', '.join(PROFILES)}); default gce,aws-nlb")
    parser.add_argument("--rate", type=float, default=RATE, help="new client connections per second (default 20)")


def run(args, progress) -> Outcome:
    phases, warnings = [], []
    for name in args.profiles.split(","):
        profile = PROFILES[name.strip()]
        for policy in ("Local", "Cluster"):
            cluster = load_manifests([str(EXAMPLES)])
            warnings += cluster.warnings
            with LabNetwork(cluster, log=progress, lb_profile=profile) as lab:
                warnings += lab.warnings
                if policy != cluster.services[0].external_traffic_policy:
                    set_policy(lab, cluster.services[0], policy)
                phases.append(measure(lab, profile, policy, "start", None, args.rate, progress))
                victim = lab.cluster.pods_on("node-b")[0].name
                phases.append(measure(lab, profile, policy, f"pod on node-b deleted ({victim})",
                                      lambda v=victim: lab.delete_pod(v), args.rate, progress))
    report = {"scenario": "healthcheck", "ratePerS": args.rate,
              "profiles": {n.strip(): PROFILES[n.strip()].to_dict() for n in args.profiles.split(",")},
              "phases": phases}
    return Outcome(report=report, table=render(phases), verdict=verdict(phases), warnings=warnings)


def measure(lab: LabNetwork, profile, policy: str, phase: str, action, rate: float, progress) -> dict:
    """Clients send ``rate`` connections/s for the profile's removal bound plus a margin; ``action`` runs
    ``ACTION_AT_S`` into it. Returns what the load balancer's checker decided and what clients saw."""
    duration = profile.removal_bound_s + 2 * profile.interval_s + ACTION_AT_S
    requests = int(duration * rate)
    service = lab.cluster.services[0]
    progress(f"{profile.name}, {policy}, {phase}: {requests} connections over {duration:.0f} s")
    start = lab.checker_started_at if action is None else None
    holder: dict = {}
    prober = threading.Thread(target=lambda: holder.update(result=probe_load_balancer(
        lab, service, service.ports[0], requests, lab.client_ttl(), timeout=1.0, rate=rate)))
    prober.start()
    if action is not None:
        time.sleep(ACTION_AT_S)  # the experiment's script: act at a fixed point of the clients' timeline
        start = time.time()
        action()
    prober.join()
    result = holder["result"]
    origin = datetime.fromisoformat(result["startedAt"]).timestamp()
    events = [e for e in lab.lb_health()["events"] if e["t"] >= start - 0.001]
    records = result["records"]
    removals = {e["node"]: round(e["t"] - start, 2) for e in events if not e["healthy"]}
    joins = {e["node"]: round(e["t"] - start, 2) for e in events if e["healthy"]}
    failed = [r for r in records if not r["ok"]]
    last_failure = max((origin + r["t"] - start for r in failed), default=None)
    return {
        "profile": profile.name, "policy": policy, "phase": phase,
        "removalBoundS": round(profile.removal_bound_s, 1),
        "leftRotationAfterS": removals, "joinedRotationAfterS": joins,
        "connections": len(records), "failed": len(failed),
        "errors": result["errors"], "lastFailureAfterS": None if last_failure is None else round(last_failure, 2),
        "nodesServed": result["nodesServed"], "sourcesSeen": result["sourcesSeen"],
    }


def render(phases: list[dict]) -> str:
    rows = []
    for p in phases:
        left = ", ".join(f"{n} +{t:.1f} s" for n, t in p["leftRotationAfterS"].items()) or "-"
        last = "-" if p["lastFailureAfterS"] is None else f"+{p['lastFailureAfterS']:.1f} s"
        rows.append([p["profile"], p["policy"], p["phase"], left, f"{p['removalBoundS']:.0f} s",
                     f"{p['failed']}/{p['connections']}", last])
    return format_table(["profile", "policy", "event", "left LB rotation", "bound", "failed connections",
                         "last failure"], rows)


def verdict(phases: list[dict]) -> list[str]:
    lines = []
    for p in phases:
        if p["policy"] == "Local" and p["leftRotationAfterS"]:
            node, after = next(iter(p["leftRotationAfterS"].items()))
            lines.append(f"{p['profile']}, Local, {p['phase']}: the load balancer kept sending to {node} for "
                         f"{after:.1f} s, and {p['failed']} of {p['connections']} client connections failed.")
        elif p["policy"] == "Cluster":
            lines.append(f"{p['profile']}, Cluster, {p['phase']}: {p['failed']} of {p['connections']} "
                         "connections failed; every node stayed in rotation (kube-proxy's :10256 answers 200).")
    return lines
