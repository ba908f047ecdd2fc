"""``python -m lab``: the command line. Parses arguments, validates manifests, runs, prints.

Everything that can be wrong with the input is found before the network is built, so a typo never
leaves a half-built lab behind; errors are one line on stderr and a non-zero exit.

    python -m lab                        the default scenario: the seed Service under Cluster, then Local
    python -m lab run NAME               a named scenario (lab.scenarios)
    python -m lab apply -f PATH ...      build a cluster from manifests, probe every Service every way in
                                         (-f FILE|FOLDER|-, -R, -k DIR, --nodes N, --strict: as kubectl takes them;
                                         --lb-algorithm random|maglev: Cilium's loadBalancer.algorithm)
    python -m lab cli -f PATH ...        the same cluster, then the Mininet CLI (hosts named after objects)
    python -m lab clean                  remove what a crashed run left behind, and nothing else
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from lab import scenarios
from lab.errors import LabError, ManifestError
from lab.kube.manifests import DEFAULT_NODES, load_manifests
from lab.measure.zones import add_price_argument
from lab.scenarios import Outcome

# Start-up imports only what reading the command line and the manifests needs: a refused manifest
# answers before Mininet, Open vSwitch helpers, the measuring code or matplotlib are loaded (bench/
# time_to_result.py times it, tests/unit/test_startup.py checks it). Each command imports what it runs.

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REQUESTS = 200


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def machine_facts() -> dict:
    from lab.emulation.environment import datapath, has_netem

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    return {"cores": os.cpu_count(), "kernel": platform.release(), "ovsDatapath": datapath(),
            "netem": has_netem(), "commit": commit}


def _load(args):
    """The cluster of ``-f``/``-R``/``-k``/``--nodes``; warnings printed now, before the network is built."""
    cluster = load_manifests(args.file or [], recursive=args.recursive, kustomize=args.kustomize or [],
                             nodes=args.nodes, zones=args.zones)
    if args.zone_delay is not None and not 0 <= args.zone_delay < 10_000:
        raise LabError(f"--zone-delay {args.zone_delay} is not a delay", "give milliseconds, e.g. 2")
    cluster.zone_delay_ms = args.zone_delay
    cluster.lb_algorithm = args.lb_algorithm
    for warning in cluster.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if cluster.nodes_made:
        shown = ", ".join(n.name for n in cluster.nodes[:3]) + (", ..." if len(cluster.nodes) > 3 else "")
        progress(f"no Node objects in the manifests: the lab made {len(cluster.nodes)} nodes ({shown}); "
                 "--nodes N for another number")
    if getattr(args, "strict", False) and cluster.strict_problems:
        first = cluster.strict_problems[0]
        more = len(cluster.strict_problems) - 1
        raise LabError(f"--strict: {len(cluster.strict_problems)} warning(s) about workload kinds or fields the lab "
                       f"does not honour (first: {first}{f'; +{more} more' if more else ''})",
                       "change the manifests, or run without --strict")
    return cluster


def _finish(outcome: Outcome, args, started: float) -> None:
    outcome.report["machine"] = machine_facts()
    outcome.report.setdefault("timings", {})["totalS"] = round(time.monotonic() - started, 2)
    print(outcome.table)
    if outcome.verdict:
        print()
        for line in outcome.verdict:
            print(f"- {line}")
    for warning in dict.fromkeys(outcome.warnings):
        if warning not in getattr(args, "printed_warnings", ()):
            print(f"warning: {warning}", file=sys.stderr)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(outcome.report, f, indent=2)
        print(f"\nreport written to {args.json}", file=sys.stderr)
    if getattr(args, "plot", None):
        if outcome.plot is None:
            print("warning: this scenario draws no plot", file=sys.stderr)
        else:
            outcome.plot(args.plot)
            print(f"plot written to {args.plot}", file=sys.stderr)


def cmd_run(args) -> int:
    started = time.monotonic()
    outcome = scenarios.load(args.scenario or scenarios.DEFAULT).run(args, progress)
    _finish(outcome, args, started)
    return 0


def cmd_apply(args) -> int:
    started = time.monotonic()
    via = parse_via(args.via)
    cluster = _load(args)
    args.printed_warnings = set(cluster.warnings)
    if not cluster.services:
        raise LabError("the manifests define no Service, so there is nothing to probe",
                       f"add a Service (see {REPO / 'examples' / 'seed' / 'service.yaml'})")
    if via == ("nodePort",) and not any(s.node_ports for s in cluster.services):
        raise LabError("the manifests define no NodePort or LoadBalancer Service, so --via nodePort has nothing "
                       "to probe", "add --via clusterIP, or a Service of type NodePort")
    from lab.cloud.load_balancer import load_balancer_ips
    from lab.cloud.network import LabNetwork
    from lab.measure.experiment import health_checks, probe_all_load_balancers, settle_load_balancers
    from lab.measure.measurements import measure_all, measure_cluster_ips, topology
    from lab.measure.report import new_report, render_health_checks, render_table, verdict
    from lab.measure.routes import http_route_statuses, measure_routes, render_routes
    from lab.measure.zones import check_price, cluster_zones, render_zones, zones_report

    check_price(args.cross_zone_price)

    report = new_report(cluster)
    report.warnings += cluster.warnings
    cluster.proxy_mode = args.proxy_mode
    with LabNetwork(cluster, log=progress, grace_scale=args.grace_scale, lb_delivery=args.lb_delivery) as lab:
        report.warnings += lab.warnings
        report.timings.update({k: round(v, 3) for k, v in lab.timings.items()})
        if "nodePort" in via:
            report.results += measure_all(lab, args.requests, progress=progress)
        if {"loadBalancer", "ingress", "gateway"} & set(via):
            waited = settle_load_balancers(lab, progress)
            if waited is not None:
                report.timings["loadBalancersSettledS"] = round(waited, 3)
        if "loadBalancer" in via:
            probe_all_load_balancers(lab, report, args.requests, progress=progress)
        if "clusterIP" in via:
            report.results += measure_cluster_ips(lab, args.requests, progress=progress)
        routes = [r for r in measure_routes(lab, args.requests, proxy_lb=lab.ingress_entry_lb, progress=progress)
                  if r["via"] in via]
        checks = health_checks(lab)
    outcome = Outcome(report=report.to_dict(), table=render_table(report, cluster),
                      verdict=verdict(report, cluster), warnings=report.warnings,
                      plot=partial(_plot_results, report.results, topology=topology(cluster)))
    if any("crossZoneBytes" in r for r in report.results):
        outcome.report["zones"] = zones_report(cluster_zones(cluster), report.results, args.cross_zone_price)
        outcome.table += "\n\n" + render_zones(outcome.report["zones"])
    if checks:
        outcome.report["healthChecks"] = checks
        outcome.report["loadBalancers"] = [
            {"service": s.name, "namespace": s.namespace, "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
            for (ns, name), ip in load_balancer_ips(cluster).items() for s in [cluster.service(name, ns)]]
        outcome.table += "\n\n" + render_health_checks(checks)
    if routes:
        outcome.report["routes"] = routes
        outcome.table += "\n\n" + render_routes(routes, cluster)
    if cluster.http_routes:
        outcome.report["httpRouteStatus"] = http_route_statuses(cluster)
    _finish(outcome, args, started)
    return 0


VIAS = ("nodePort", "clusterIP", "loadBalancer", "ingress", "gateway")


def parse_via(text: str | None) -> tuple[str, ...]:
    """``--via nodePort,clusterIP,loadBalancer,ingress,gateway``: which ways in to probe (default: all)."""
    if not text:
        return VIAS
    chosen = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    unknown = [w for w in chosen if w not in VIAS]
    if unknown or not chosen:
        raise LabError(f"--via {text!r}: {', '.join(unknown) or 'nothing'} is not a way in",
                       f"use a comma-separated list of {', '.join(VIAS)}")
    return chosen


def cmd_cli(args) -> int:
    from lab.cloud.network import LabNetwork
    from lab.shell import LabShell

    cluster = _load(args)
    cluster.proxy_mode = args.proxy_mode
    with LabNetwork(cluster, log=progress, grace_scale=args.grace_scale, lb_delivery=args.lb_delivery) as lab:
        print("Hosts are named after the Kubernetes objects; the outside client is 'client'. Type 'help' for "
              "pods, services, delete-pod, add-pod, move-pod, ready-pod, unready-pod, cordon, delete-node "
              "and lb; 'exit' tears everything down.", file=sys.stderr)
        LabShell(lab)
    return 0


def cmd_clean(args) -> int:
    from lab.emulation.resources import MachineLock, clean_stale_runs

    if os.geteuid() != 0:
        raise LabError("cleaning removes network interfaces and bridges, so it must run as root", "use sudo")
    lock = MachineLock()  # a live network holds it: its resources are never touched
    lock.acquire()
    try:
        report = clean_stale_runs()
    finally:
        lock.release()
    print("\n".join(report) if report else "nothing to clean: no run of the lab left anything behind")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests per entry (default 200)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")


def _inputs(p: argparse.ArgumentParser) -> None:
    """The manifests, as ``kubectl apply`` takes them."""
    p.add_argument("-f", "--file", action="append", metavar="PATH",
                   help="YAML or JSON file, folder, or - for standard input (repeatable)")
    p.add_argument("-R", "--recursive", action="store_true", help="also read the sub-folders of -f folders")
    p.add_argument("-k", "--kustomize", action="append", metavar="DIR",
                   help="render a kustomization folder with `kubectl kustomize` (repeatable)")
    p.add_argument("--nodes", type=int, metavar="N",
                   help=f"nodes to make when the manifests have no Node objects (default {DEFAULT_NODES}: "
                        "node-a, node-b, node-c)")
    p.add_argument("--strict", action="store_true",
                   help="fail on warnings about workload kinds or fields the lab does not honour (for CI)")
    p.add_argument("--lb-algorithm", choices=("random", "maglev"), default="random",
                   help="endpoint choice for every Service, as Cilium's loadBalancer.algorithm (default random; "
                        "a Service's service.cilium.io/lb-algorithm annotation overrides it)")
    p.add_argument("--zones", type=int, metavar="N",
                   help="spread the nodes round-robin over N zones (zone-a, zone-b, ...; topology.kubernetes.io/"
                        "zone) unless the manifests' Nodes carry that label: one switch per zone")
    p.add_argument("--zone-delay", type=float, metavar="MS",
                   help="one-way delay between two zones (netem on the inter-zone links, where the kernel has it)")


def _forwarding(p: argparse.ArgumentParser) -> None:
    """How north-south traffic is forwarded (lab.kube.forwarding) and handed over by the load balancer."""
    p.add_argument("--proxy-mode", choices=("snat", "dsr"), default="snat",
                   help="Cilium's loadBalancer.mode for every Service (default snat); a Service's annotation "
                        "service.cilium.io/forwarding-mode overrides it")
    p.add_argument("--lb-delivery", choices=("node-port", "vip"), default="node-port",
                   help="the load balancer DNATs to nodeIP:nodePort (node-port, AWS NLB instance targets; default) "
                        "or delivers still addressed to its IP (vip: GCP passthrough, MetalLB BGP)")


def _plot_results(*args, **kwargs) -> None:
    from lab.measure.drawing import plot_results  # matplotlib only when a picture is asked for

    plot_results(*args, **kwargs)


def _summary(name: str) -> str:
    """A scenario's first docstring line, read from its source without importing it."""
    spec = importlib.util.find_spec(scenarios.SCENARIOS[name])
    with open(spec.origin) as f:
        return (ast.get_docstring(ast.parse(f.read())) or "").strip().splitlines()[0]


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Only the scenario named in ``argv`` (default: the command line) gets its own arguments added."""
    words = sys.argv[1:] if argv is None else argv
    chosen = {w for w in words if w in scenarios.SCENARIOS} if "run" in words else set()
    ap = argparse.ArgumentParser(prog="python -m lab", description="Kubernetes NodePort, shown with real "
                                 "packets in Mininet and Open vSwitch. Without a command: the default "
                                 f"scenario ({scenarios.DEFAULT}).")
    _common(ap)
    ap.add_argument("--plot", metavar="FILE", help="also draw the cluster with the measured paths as a PNG")
    ap.set_defaults(command="run", scenario=None, plot=None, file=None)
    sub = ap.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a named scenario: " + ", ".join(scenarios.SCENARIOS))
    run_sub = run.add_subparsers(dest="scenario", metavar="NAME", required=True)
    for name in scenarios.SCENARIOS:
        sp = run_sub.add_parser(name, help=_summary(name))
        _common(sp)
        sp.add_argument("--plot", metavar="FILE", help="also draw the results as a PNG")
        if name in chosen:  # only the scenario being run is imported (the bandwidth one loads a lot)
            scenarios.load(name).add_arguments(sp)
    apply = sub.add_parser("apply", help="build a cluster from Kubernetes YAML and probe every Service")
    _inputs(apply)
    _common(apply)
    apply.add_argument("--plot", metavar="FILE", help="also draw the cluster with the measured paths as a PNG")
    add_price_argument(apply)
    apply.add_argument("--via", metavar="WAYS", help="comma-separated: nodePort, clusterIP, loadBalancer, "
                       "ingress, gateway (default: all that apply)")
    cli = sub.add_parser("cli", help="bring the cluster up and open the Mininet CLI")
    _inputs(cli)
    for p in (apply, cli):
        p.add_argument("--grace-scale", type=float, default=1.0, metavar="X",
                       help="deleted pods stay Terminating for terminationGracePeriodSeconds x X (default 1)")
        _forwarding(p)
    sub.add_parser("clean", help="remove what a crashed run of the lab left behind")
    return ap


COMMANDS = {"run": cmd_run, "apply": cmd_apply, "cli": cmd_cli, "clean": cmd_clean}


def main(argv: list[str] | None = None) -> int:
    args = parser(argv).parse_args(argv)
    # Python leaves SIGINT alone when it starts ignored (a script's `python -m lab &`), and then
    # `kill -INT` would not tear the network down: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if getattr(args, "requests", 1) < 1:
        print("error: --requests must be at least 1", file=sys.stderr)
        return 2
    if args.command in ("apply", "cli") and not (args.file or args.kustomize):
        print(f"error: {args.command} needs manifests: -f FILE|FOLDER|- or -k DIR", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command or "run"](args)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Reached only once every network of this run has been torn down completely: a teardown that
        # left anything raises LabError instead (lab.emulation.network), printed above as an error.
        print("interrupted: nothing of this run is left (every network it built was torn down)", file=sys.stderr)
        return 130
