"""The lab as a Python API, for notebooks and scripts: bring a cluster up, measure, change it, get data.

::

    from lab.api import EXAMPLES, LOAD_BALANCER, Lab
    from lab.measure.drawing import draw_entry

    lab = Lab(EXAMPLES / "seed")              # manifests (files, folders) or Lab(yaml=TEXT); validated now
    with lab:                                 # builds the network; always tears it down, also on error
        lab.set_policy("my-app-service", "Local")                  # as kubectl patch would
        r = lab.probe("my-app-service", via="node-a", requests=50)  # real requests from the client
        lab.move_pod(lab.pods()[0]["name"], "node-c")
    lab.table()                               # every probe so far, as a table; lab.results as plain dicts
    draw_entry(r)                             # the cluster with the path the requests took

``probe(service, via=LOAD_BALANCER)`` goes through a LoadBalancer Service's external address instead of
a node; ``probe(service, via=CLUSTER_IP, client=POD)`` from a pod inside the cluster to the clusterIP;
``health_checks()`` and ``load_balancer()`` say what the nodes answer to the load balancer's
health checks and which nodes it keeps in rotation. While the block runs, ``lab.net`` is the running
``LabNetwork``, for the scenarios' own measuring functions.

Everything measured stays usable after the network is gone: results are the report's plain dicts
(``lab.measure.report.entry_result``, the JSON contract) with the links' bytes, the requests' paths and
the topology added (``lab.measure.measurements``).

This is a thin layer: the lifecycle is ``LabNetwork``, one measurement is ``lab.measure.experiment.probe_entry``
or ``probe_load_balancer``, the table and verdict come from ``lab.measure.report``. What it adds is reading the
notebook-facing object around them.
"""

from __future__ import annotations

import html
import logging
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.kube.manifests import load_manifests
from lab.kube.model import Cluster
from lab.measure.experiment import health_checks, set_policy
from lab.measure.measurements import (
    in_cluster_clients,
    measure_all,
    measure_cluster_ip,
    measure_entry,
    measure_load_balancer,
    topology,
)
from lab.measure.report import address_owners, format_table, new_report, verdict
from topologies.cluster import LinkShape

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOAD_BALANCER = "loadBalancer"  # Lab.probe(via=LOAD_BALANCER): through the Service's external address
CLUSTER_IP = "clusterIP"  # Lab.probe(via=CLUSTER_IP, client=pod): from a pod to the Service's clusterIP


# --- the notebook-facing object --------------------------------------------------------------------------

class Lab:
    """A cluster from manifests, brought up by ``with lab:`` and always torn down when the block ends.

    The manifests are read and validated when the object is made, so mistakes show before anything
    is built, and ``topology()`` can be drawn before the network exists. Probes, pod changes and
    policy changes need the network (inside ``with``); results and tables do not.
    """

    def __init__(self, *manifests: str | Path, yaml: str | None = None, underlay: LinkShape = LinkShape(),  # noqa: B008
                 log: Callable[[str], None] | None = None, requests: int = 50, lb_profile: str = "gce",
                 nodes: int | None = None, grace_scale: float = 1.0, zones: int | None = None):
        # nodes: how many nodes the lab makes when the manifests have no Node objects (default 3);
        # zones: spread the nodes over that many zones (topology.kubernetes.io/zone, one switch each)
        if yaml is not None:
            with tempfile.TemporaryDirectory(prefix="npl-manifests-") as folder:
                path = Path(folder) / "manifests.yaml"
                path.write_text(textwrap.dedent(yaml))
                self.cluster = load_manifests([*map(str, manifests), str(path)], nodes=nodes, zones=zones)
        elif manifests:
            self.cluster = load_manifests([str(m) for m in manifests], nodes=nodes, zones=zones)
        else:
            raise ValueError("give manifests (files or folders) or yaml=TEXT")
        self.underlay = underlay
        self.lb_profile = lb_profile  # how the cloud load balancer health-checks nodes (lab.cloud.PROFILES)
        self.grace_scale = grace_scale  # terminationGracePeriodSeconds x this, for demos
        self._clients: dict[str, str] = {}  # node -> the lab's in-cluster client pod there
        self.log = log or (lambda message: None)
        self.requests = requests
        self.results: list[dict] = []
        self.warnings: list[str] = list(self.cluster.warnings)
        self.timings: dict[str, float] = {}
        self.net: LabNetwork | None = None
        self._client_ttl: int | None = None

    # lifecycle

    def __enter__(self) -> Lab:
        if self.net is not None:
            raise RuntimeError("this lab is already up")
        _quiet_htb_quantum_notice()
        self.net = LabNetwork(self.cluster, underlay=self.underlay, log=self.log, lb_profile=self.lb_profile,
                              grace_scale=self.grace_scale)
        self.net.start()  # tears down what it built if it fails
        self.warnings += self.net.warnings
        self.timings.update({k: round(v, 3) for k, v in self.net.timings.items()})
        return self

    def __exit__(self, *exc) -> None:
        net, self.net, self._client_ttl = self.net, None, None
        self._clients = {}
        if net is not None:
            net.stop()
            self.log("cluster torn down")

    def _up(self) -> LabNetwork:
        if self.net is None:
            raise RuntimeError("the network is not up: do this inside 'with lab:'")
        return self.net

    # what is there (plain data)

    def topology(self) -> dict:
        return topology(self.cluster)

    def pods(self) -> list[dict]:
        return self.topology()["pods"]

    def services(self) -> list[dict]:
        return [{"name": s.name, "namespace": s.namespace, "type": s.type, "policy": s.external_traffic_policy,
                 "ports": [{"port": p.port, "nodePort": p.node_port, "targetPort": p.target_port} for p in s.ports]}
                for s in self.cluster.services]

    # measuring

    def probe(self, service: str, via: str, requests: int | None = None, port: int | str | None = None,
              timeout: float = 1.0, rate: float | None = None, client: str | None = None) -> dict:
        """Send ``requests`` new connections from the client to node ``via``'s IP and the Service's nodePort,
        or, with ``via=LOAD_BALANCER``, to the Service's external address (``rate``: connections per second,
        spread evenly, instead of as fast as answers come), or, with ``via=CLUSTER_IP``, from pod ``client``
        (default: a lab-made client pod on the first node) to the Service's clusterIP."""
        net = self._up()
        svc = self.cluster.service(service)
        if self._client_ttl is None:
            self._client_ttl = net.client_ttl()
        n = requests or self.requests
        if via == CLUSTER_IP:
            if client is None:
                client = self._clients.get(self.cluster.nodes[0].name) or next(iter(self._in_cluster().values()))
            self.log(f"probing {service} clusterIP from {client}, {n} requests")
            result = measure_cluster_ip(net, svc, client, n, port, timeout)
        elif via == LOAD_BALANCER:
            self.log(f"probing {service} ({svc.external_traffic_policy}) through its load balancer "
                     f"{net.load_balancer_ip(service)}, {n} requests")
            result = measure_load_balancer(net, svc, n, self._client_ttl, port, timeout, rate)
        else:
            self.log(f"probing {service} ({svc.external_traffic_policy}) via {via}, {n} requests")
            result = measure_entry(net, svc, via, n, self._client_ttl, port, timeout)
        self.results.append(result)
        return result

    def _in_cluster(self) -> dict[str, str]:
        if not self._clients:
            self._clients = in_cluster_clients(self._up())
        return self._clients

    def probe_all(self, requests: int | None = None, timeout: float = 1.0) -> list[dict]:
        """Every port of every NodePort Service through every node."""
        results = measure_all(self._up(), requests or self.requests, timeout, progress=self.log)
        self.results += results
        return results

    def health_checks(self) -> list[dict]:
        """What every node answers to the load balancer's health check now (a real GET from its host)."""
        return health_checks(self._up())

    def load_balancer(self) -> dict:
        """The load balancer's view: per Service, the nodes in rotation, and every change with its time."""
        return self._up().lb_health()

    # changing the cluster

    def set_policy(self, service: str, policy: str) -> None:
        """externalTrafficPolicy Cluster or Local, as ``kubectl patch`` would; returns once switches obey."""
        if policy not in ("Cluster", "Local"):
            raise ValueError("externalTrafficPolicy is Cluster or Local")
        set_policy(self._up(), self.cluster.service(service), policy)

    def add_pod(self, name: str, node: str, labels: dict[str, str], ports: tuple[int, ...] = (8080,)) -> dict:
        pod = self._up().add_pod(name, node, labels=labels, ports=ports)
        return {"name": pod.name, "node": pod.node, "ip": pod.ip}

    def delete_pod(self, name: str, grace_s: float | None = None) -> None:
        """Delete a pod: Terminating for its grace period (or ``grace_s``), then gone; returns at once."""
        self._up().delete_pod(name, grace_s)

    def set_pod_ready(self, name: str, ready: bool) -> None:
        """Make a pod fail (False) or pass (True) readiness: its real server fails its httpGet probe, or
        the condition is set directly for pods without one."""
        self._up().set_pod_ready(name, ready)

    def cordon_node(self, name: str, cordoned: bool = True) -> None:
        self._up().cordon_node(name, cordoned)

    def delete_node(self, name: str) -> None:
        """Mark a node for deletion: its kube-proxy /healthz answers 503 from now on."""
        self._up().delete_node(name)

    def move_pod(self, name: str, node: str) -> dict:
        pod = self._up().move_pod(name, node)
        return {"name": pod.name, "node": pod.node, "ip": pod.ip}

    # results

    def report(self) -> dict:
        """Everything probed so far, as the ``--json`` report (``lab.measure.report.Report``)."""
        return self._report().to_dict()

    def verdict(self) -> list[str]:
        """Plain sentences with the measured numbers (``lab.measure.report.verdict``)."""
        return verdict(self._report(), self.cluster)

    def table(self, results: list[dict] | None = None) -> Table:
        return results_table(self.results if results is None else results, self.cluster)

    def _report(self):
        report = new_report(self.cluster)
        report.results, report.warnings, report.timings = list(self.results), list(self.warnings), dict(self.timings)
        return report


class _HtbQuantumNotice(logging.Filter):
    """Mininet prints the kernel's "sch_htb: quantum of class ... is big" as an error for every shaped link.
    It is a notice about HTB's default r2q on fast links (the rate is still enforced); in a notebook it
    would bury the output, so it is dropped, and nothing else is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sch_htb: quantum of class" not in record.getMessage()


def _quiet_htb_quantum_notice() -> None:
    from mininet.log import lg

    if not any(isinstance(f, _HtbQuantumNotice) for f in lg.filters):
        lg.addFilter(_HtbQuantumNotice())


# --- tables ------------------------------------------------------------------------------------------------

@dataclass
class Table:
    """Rows for people: plain text in a terminal (``print``), HTML in a notebook."""

    header: list[str]
    rows: list[list[str]]

    def __str__(self) -> str:
        return format_table(self.header, self.rows)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def results_table(results: list[dict], cluster: Cluster) -> Table:
    owners = address_owners(cluster)

    def counts(counter: dict, label=lambda k: k) -> str:
        return ", ".join(f"{label(k)}: {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "-"

    def who(ip: str) -> str:
        return owners.get(ip, ip).replace("node ", "").replace(" (pod gateway)", " gateway")

    header = ["service", "policy", "entry", "answered", "failed", "served by", "pods saw", "node hops",
              "bytes between nodes", "p50 ms", "p95 ms"]
    rows = []
    for r in results:
        p50, p95 = r["latencyMs"]["p50"], r["latencyMs"]["p95"]
        entry = r["node"] or f"load balancer {r.get('loadBalancerIP', '')}".strip()
        rows.append([r["service"], r["policy"], entry, str(r["ok"]),
                     counts(r["errors"]) if r["failed"] else "0", counts(r["servedBy"]), counts(r["sourcesSeen"], who),
                     counts(r["nodeHops"]), f"{r['interNodeBytes']:,}",
                     "-" if p50 is None else f"{p50:.2f}", "-" if p95 is None else f"{p95:.2f}"])
    return Table(header, rows)
