"""Every remedy for the seed's problem on one cluster and one traffic mix, side by side in one table.

``examples/remedies``: six nodes in three zones, an app of five replicas that prefers on-demand nodes and
so lands unevenly (node-a1 2, node-a2, node-b1, node-c1 one each, the spot nodes node-b2 and node-c2
none: zone-a holds 3 of 5), its LoadBalancer Service, a client pod in every zone, and ingress-nginx's
controller (Local, on node-a2 and node-b2) with an Ingress for the app::

    client ── edge router / load balancer ──┬── zone-a: node-a1 (web x2), node-a2 (web, ingress, loadgen)
                                            ├── zone-b: node-b1 (web), node-b2 (ingress, loadgen)
                                            └── zone-c: node-c1 (web), node-c2 (loadgen)

One network; between rows the Service is patched as kubectl would (``lab.scenarios.remedies_changes``):
Cluster, Local, Local with the app rolled out as its topology-spread variant, DSR and Maglev + DSR
(Cilium's per-Service annotations), Ingress with Local (the external requests through the ingress
controller's load balancer instead), PreferClose (``spec.trafficDistribution``). The mix, per row: N
requests from the client through the load balancer's address, and N more split over the zones' client
pods to the clusterIP; then, held keep-alive connections through the load balancer while a node leaves
its rotation and the load balancer moves its connections elsewhere. ``lab.measure.remedies`` turns the
records and counters into the row, and ranks the rows for ``--priority``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.kube.model import Service
from lab.measure.experiment import wait_rotation
from lab.measure.held import broken_on_reroute
from lab.measure.remedies import (
    PRIORITIES,
    REMEDIES,
    Part,
    RowInput,
    rank,
    render,
    row,
    verdict,
)
from lab.measure.report import new_report
from lab.measure.zones import cross_zone_cost
from lab.scenarios import Outcome
from lab.scenarios.remedies_changes import REMEDY_CHANGES, Remedy, apply, roll_out

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "remedies"
BASE_FILES = ("nodes.yaml", "app.yaml", "service.yaml", "clients.yaml", "ingress.yaml")
SPREAD_VARIANT = Path("variants") / "app-spread.yaml"
APP, INGRESS, INGRESS_NAMESPACE = "web", "ingress-nginx-controller", "ingress-nginx"
CLIENT_LABELS = {"app": "loadgen"}
# Measured in this order (one rollout, last; the Cluster-policy rows together), shown in REMEDIES' order.
ORDER = ("Cluster", "DSR", "Maglev + DSR", "PreferClose", "Ingress with Local", "Local", "Local + topology spread")
DEFAULT_PRICE = 0.01  # USD per GB crossing zones, each direction (AWS and GCP list inter-zone transfer so)
HELD = 60  # keep-alive connections held through a reroute


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--priority", choices=PRIORITIES, default="client-ip",
                        help="what the verdict ranks the remedies by (default client-ip)")
    parser.add_argument("--held", type=int, default=HELD,
                        help=f"keep-alive connections held through a reroute (default {HELD})")
    parser.add_argument("--cross-zone-price", type=float, default=DEFAULT_PRICE, metavar="USD_PER_GB",
                        help=f"price of a GB crossing zones, each direction (default {DEFAULT_PRICE})")
    parser.add_argument("--lb-delivery", choices=("node-port", "vip"), default="vip",
                        help="how the load balancer delivers to nodes (default vip: the address kept, as "
                             "GCP's pass-through NLB and MetalLB with BGP do, which DSR and Maglev need)")


# --- one row ---------------------------------------------------------------------------------------


def _counters(net: LabNetwork) -> tuple[int, int | None]:
    return net.inter_node_bytes(), net.cross_zone_bytes()


def _part(net: LabNetwork, target: str, requests: int, client_ttl: int, router_hops: int, host: str,
          l7: bool = False, client: str | None = None) -> Part:
    """One probe between two readings of the counters. The load balancer's health checks fly meanwhile
    (every 0.5 s), so a reading may catch one in flight: a few hundred bytes either way, never below 0."""
    inter0, zone0 = _counters(net)
    records = net.probe([target], requests, timeout=1.0, host=host)["records"]
    inter1, zone1 = _counters(net)
    return Part(records=records, client_ttl=client_ttl, router_hops=router_hops,
                inter_node_bytes=max(0, inter1 - inter0),
                cross_zone_bytes=None if zone0 is None else max(0, zone1 - zone0), l7=l7, client=client)


def _reroute(net: LabNetwork, service: Service, held: int, progress) -> tuple[dict | None, str | None]:
    """Held connections through a node leaving the rotation, then rotation back to the health checks."""
    node = wait_rotation(net, service)[0]
    progress(f"    {held} held connections; the load balancer moves {node}'s away")
    result = broken_on_reroute(net, service.name, node, connections=held, namespace=service.namespace)
    net.restore_rotation(service.name, namespace=service.namespace)
    wait_rotation(net, service)
    return {**result, "node": node}, None


@dataclass
class Mix:
    """The traffic every row gets, and what is known of its senders."""

    requests: int  # from the client through the load balancer; as many again from the zones' client pods
    held: int  # keep-alive connections held through a reroute
    clients: dict[str, int]  # in-cluster client pod -> the TTL its packets start with
    client_ttl: int  # the outside client's
    proxy_ttl: int  # an ingress controller pod's (the sender the app sees behind it)
    annotations: dict[str, str] = field(default_factory=dict)  # the app Service's own, kept across rows

    @property
    def per_client(self) -> int:
        return max(1, self.requests // max(1, len(self.clients)))


def measure_remedy(net: LabNetwork, remedy: Remedy, mix: Mix, progress) -> RowInput:
    """Patch, wait for the load balancer, send the mix, hold connections through a reroute."""
    cluster = net.cluster
    app = cluster.service(APP)
    apply(net, app, remedy, mix.annotations)
    front = cluster.service(INGRESS, INGRESS_NAMESPACE) if remedy.via_ingress else app
    wait_rotation(net, front)
    port = app.ports[0].port
    front_port = front.ports[0].port
    vip = net.load_balancer_ip(front.name, front.namespace)
    progress(f"    {mix.requests} requests from the client to {vip}:{front_port}"
             + (" (the ingress controller's load balancer)" if remedy.via_ingress else ""))
    if remedy.via_ingress:  # the app sees the proxy pod's SYN: hops of the second leg
        external = _part(net, f"{vip}:{front_port}", mix.requests, mix.proxy_ttl, 0, addr.CLIENT_NAME, l7=True)
    else:
        external = _part(net, f"{vip}:{port}", mix.requests, mix.client_ttl, 1, addr.CLIENT_NAME)
    cip = net.cluster_ip(app.name, app.namespace)
    progress(f"    {mix.per_client} requests from each of {', '.join(mix.clients)} to the clusterIP {cip}:{port}")
    in_cluster = [_part(net, f"{cip}:{port}", mix.per_client, ttl, 0, pod, client=pod)
                  for pod, ttl in mix.clients.items()]
    reroute, note = _reroute(net, front, mix.held, progress)
    pods = [p.name for p in cluster.pods if p.namespace == app.namespace
            and all(p.labels.get(k) == v for k, v in app.selector.items())]
    return RowInput(remedy=remedy.name, external=external, in_cluster=in_cluster, pods=pods, reroute=reroute,
                    note=note)


def _mix(net: LabNetwork, args, held: int) -> Mix:
    cluster = net.cluster
    loadgens = [p.name for p in cluster.pods if all(p.labels.get(k) == v for k, v in CLIENT_LABELS.items())]
    proxy = next(p.name for p in cluster.pods if p.namespace == INGRESS_NAMESPACE)
    app = cluster.service(APP)
    return Mix(requests=args.requests, held=held, clients={pod: net.pod_ttl(pod) for pod in loadgens},
               client_ttl=net.client_ttl(), proxy_ttl=net.pod_ttl(proxy),
               annotations=dict(app.annotations))


# --- the run ---------------------------------------------------------------------------------------


def run(args, progress) -> Outcome:
    files = [str(EXAMPLE / f) for f in BASE_FILES]
    cluster = load_manifests(files)
    variant = load_manifests([str(EXAMPLE / SPREAD_VARIANT) if f.endswith("app.yaml") else f for f in files])
    price, priority, held = args.cross_zone_price, args.priority, args.held
    report = new_report(cluster)
    report.warnings += cluster.warnings
    measured: dict[str, dict] = {}
    with LabNetwork(cluster, log=progress, lb_profile="fast", lb_delivery=args.lb_delivery) as net:
        report.warnings += net.warnings
        report.timings.update({k: round(v, 3) for k, v in net.timings.items()})
        app = cluster.service(APP)
        mix = _mix(net, args, held)
        for number, name in enumerate(ORDER, 1):
            remedy = REMEDY_CHANGES[name]
            progress(f"[{number}/{len(ORDER)}] {name}")
            if remedy.spread:
                new = roll_out(net, app, variant, EXAMPLE / SPREAD_VARIANT)
                progress(f"    rolled out {len(new)} spread replicas: "
                         + ", ".join(sorted({cluster.pod(p).node for p in new})))
            measured[name] = row(measure_remedy(net, remedy, mix, progress), price, cross_zone_cost)
    rows = [measured[name] for name in REMEDIES]
    document = report.to_dict()
    document.update({
        "scenario": "remedies", "priority": priority, "crossZonePricePerGB": price,
        "lbDelivery": args.lb_delivery,
        "mix": {"external": mix.requests, "inClusterPerClient": mix.per_client, "clients": list(mix.clients),
                "heldOnReroute": mix.held},
        "remedies": rows,
        "rankings": {p: [r["remedy"] for r in rank(rows, p)] for p in PRIORITIES},
    })
    return Outcome(report=document, table=render(rows), verdict=verdict(rows, priority),
                   warnings=report.warnings, plot=lambda path: _plot(rows, path))


def _plot(rows: list[dict], path: str) -> None:
    from lab.measure.remedies_plot import plot_remedies  # matplotlib only when a picture is asked for

    plot_remedies(rows).savefig(path, dpi=120)
