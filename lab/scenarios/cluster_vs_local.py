"""The seed: one NodePort Service on three nodes, one without a pod; Cluster first, then Local.

Shows the three costs of ``externalTrafficPolicy: Cluster`` (extra hop, lost client IP, bytes between
nodes) and what Local does instead (client IP kept, no detour, silent drops on the pod-less node).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.kube.manifests import load_manifests
from lab.measure.experiment import set_policy
from lab.measure.measurements import measure_all
from lab.measure.report import new_report, render_table, verdict
from lab.scenarios import Outcome


def plot_results(results: list[dict], path: str) -> None:
    from lab.measure.drawing import plot_results as draw  # matplotlib only when a picture is asked for

    draw(results, path)

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", action="append", help="manifests to use instead of examples/seed")


def run(args, progress) -> Outcome:
    cluster = load_manifests(args.file or [str(SEED)])
    report = new_report(cluster)
    with LabNetwork(cluster, log=progress) as lab:
        report.warnings += cluster.warnings + lab.warnings
        report.timings.update({k: round(v, 3) for k, v in lab.timings.items()})
        for policy in ("Cluster", "Local"):
            for service in cluster.services:
                if service.node_ports:  # externalTrafficPolicy is for Services reached from outside
                    set_policy(lab, service, policy)
            report.results += measure_all(lab, args.requests, progress=progress)
    return Outcome(report=report.to_dict(), table=render_table(report, cluster), verdict=verdict(report, cluster),
                   warnings=report.warnings, plot=partial(plot_results, report.results))
