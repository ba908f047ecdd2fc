"""Local behind a load balancer splits traffic per node, not per pod: the seed's 3+1 pods, and the remedy.

The cloud load balancer spreads connections evenly over healthy nodes. With ``externalTrafficPolicy:
Local`` each node then spreads its half over its own pods only, so with 3 pods on node-a and 1 on node-b
the lone pod gets 1/2 of the connections and each of the others 1/6: three times as much. Under Cluster
every pod gets 1/4 (at the price of SNAT and a second hop). The remedy keeps Local and fixes placement:
the same Deployment with ``topologySpreadConstraints`` (maxSkew 1 on kubernetes.io/hostname), or with a
required ``podAntiAffinity``, is placed evenly by the lab's scheduler, and the shares even out. Every
share is measured over real connections through the load balancer's address and compared with the
expected one by a chi-square goodness-of-fit test.

Manifests: ``examples/imbalance/`` (nodes, skewed pods, spread and anti-affinity Deployments, Service).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.kube.manifests import load_manifests
from lab.measure.experiment import probe_load_balancer, set_policy
from lab.measure.report import format_table
from lab.measure.stats import chi_square
from lab.scenarios import Outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "imbalance"
CASES = [  # (case, placement manifest, policies to measure)
    ("skewed", "skewed.yaml", ("Local", "Cluster")),
    ("topology spread", "spread.yaml", ("Local",)),
    ("anti-affinity", "anti-affinity.yaml", ("Local",)),
]
FIT_P = 0.001  # below this, the measured shares do not fit the expected ones


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=1200,
                        help="connections through the load balancer per case (default 1200)")
    parser.add_argument("--profile", default="gce", help="load balancer health-check profile (default gce)")


def expected_shares(placement: dict[str, list[str]], policy: str) -> dict[str, float]:
    """Per pod: Local = 1/(nodes with pods) x 1/(pods on its node); Cluster = 1/(all pods)."""
    pods = [p for ps in placement.values() for p in ps]
    if policy == "Cluster":
        return {p: 1 / len(pods) for p in pods}
    nodes = [n for n, ps in placement.items() if ps]
    return {p: 1 / len(nodes) / len(ps) for n, ps in placement.items() for p in ps}


def measure_case(lab: LabNetwork, case: str, policy: str, connections: int, client_ttl: int) -> dict:
    service = lab.cluster.services[0]
    placement = {n.name: [p.name for p in lab.cluster.pods_on(n.name)] for n in lab.cluster.nodes}
    result = probe_load_balancer(lab, service, service.ports[0], connections, client_ttl)
    expected = expected_shares(placement, policy)
    ok = result["ok"]
    pods = sorted(expected)
    counts = [result["servedBy"].get(p, 0) for p in pods]
    stat, p_value = chi_square(counts, [expected[p] for p in pods]) if ok else (None, None)
    return {
        "case": case, "policy": policy, "placement": placement, "connections": connections, "ok": ok,
        "failed": result["failed"],
        "shares": {p: {"count": c, "measured": round(c / ok, 4) if ok else None, "expected": round(expected[p], 4)}
                   for p, c in zip(pods, counts, strict=True)},
        "chiSquare": None if stat is None else round(stat, 2),
        "pValue": None if p_value is None else float(f"{p_value:.3g}"),
        "fits": p_value is not None and p_value >= FIT_P,
        "sourcesSeen": result["sourcesSeen"], "nodeHops": result["nodeHops"],
        "interNodeBytes": result["interNodeBytes"], "loadBalancerIP": result["loadBalancerIP"],
    }


def run(args, progress) -> Outcome:
    cases, warnings = [], []
    for case, placement_file, policies in CASES:
        cluster = load_manifests([str(EXAMPLES / "nodes.yaml"), str(EXAMPLES / placement_file),
                                  str(EXAMPLES / "service.yaml")])
        warnings += cluster.warnings
        with LabNetwork(cluster, log=progress, lb_profile=args.profile) as lab:
            warnings += lab.warnings
            client_ttl = lab.client_ttl()
            for policy in policies:
                set_policy(lab, cluster.services[0], policy)
                progress(f"{case}, {policy}: {args.connections} connections through the load balancer")
                cases.append(measure_case(lab, case, policy, args.connections, client_ttl))
    report = {"scenario": "imbalance", "profile": args.profile, "fitThresholdP": FIT_P, "cases": cases}
    return Outcome(report=report, table=render(cases), verdict=verdict(cases), warnings=warnings,
                   plot=lambda path: plot(cases, path))


def _node_of(case: dict, pod: str) -> str:
    return next(n for n, ps in case["placement"].items() if pod in ps)


def render(cases: list[dict]) -> str:
    rows = []
    for c in cases:
        for pod, share in c["shares"].items():
            rows.append([c["case"], c["policy"], pod, _node_of(c, pod), str(share["count"]),
                         f"{share['measured']:.1%}" if share["measured"] is not None else "-",
                         f"{share['expected']:.1%}"])
        rows.append(["", "", "fit", "", f"{c['ok']}/{c['connections']}",
                     f"chi2 {c['chiSquare']}", f"p {c['pValue']}" + ("" if c["fits"] else " (no fit)")])
    return format_table(["case", "policy", "pod", "node", "connections", "measured", "expected"], rows)


def verdict(cases: list[dict]) -> list[str]:
    lines = []
    for c in cases:
        shares = {p: s["measured"] for p, s in c["shares"].items() if s["measured"] is not None}
        if not shares:
            continue
        ratio = max(shares.values()) / min(shares.values())
        busiest = max(shares, key=shares.get)
        fit = "fits" if c["fits"] else "does not fit"
        lines.append(f"{c['case']}, {c['policy']}: the busiest pod ({busiest} on {_node_of(c, busiest)}) got "
                     f"{ratio:.1f}x the connections of the least busy; the split {fit} the expected one "
                     f"(chi-square p = {c['pValue']}).")
    return lines


def plot(cases: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 3.6), sharey=True)
    for ax, c in zip(axes, cases, strict=True):
        pods = sorted(c["shares"], key=lambda p: (_node_of(c, p), p))
        measured = [c["shares"][p]["measured"] or 0 for p in pods]
        expected = [c["shares"][p]["expected"] for p in pods]
        xs = range(len(pods))
        ax.bar([x - 0.2 for x in xs], measured, width=0.4, label="measured")
        ax.bar([x + 0.2 for x in xs], expected, width=0.4, label="expected", alpha=0.6)
        short = [p if len(p) <= 12 else "…" + p[-5:] for p in pods]  # a replica's random suffix names it
        ax.set_xticks(list(xs), [f"{s}\n({_node_of(c, p)})" for s, p in zip(short, pods, strict=True)], fontsize=7)
        ax.set_title(f"{c['case']}, {c['policy']}\np = {c['pValue']}", fontsize=9)
    axes[0].set_ylabel("share of connections")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
