"""The cloud around the cluster: external addresses for LoadBalancer Services and how their load balancer
health-checks the nodes (pure data; ``lab.cloud.health_checker`` runs the checks).

The emulated load balancer is pass-through, like an AWS NLB with instance targets or a GCP network load
balancer: the client's address reaches the node unchanged, new connections are split evenly over the
nodes that pass health checks (per node: the load balancer knows nothing about pods). Its data plane is
the edge router, programmed by the controller (``controllers.pipeline``); its health checker is a real
HTTP client in the ``lb`` host outside the cluster. What it checks is what cloud controllers configure:
``/healthz`` on the Service's healthCheckNodePort for ``externalTrafficPolicy: Local`` and kube-proxy's
``:10256/healthz`` for Cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lab.kube import addressing as addr
from lab.kube.endpoints import endpoints
from lab.kube.load_balancers import load_balancer_ips, load_balancer_services
from lab.kube.model import Cluster, Service

__all__ = ["PROFILES", "HealthCheckProfile", "checker_config", "expected_rotation", "health_check_target",
           "load_balancer_ips", "load_balancer_services"]

PROXY_HEALTH_PORT = 10256


@dataclass(frozen=True)
class HealthCheckProfile:
    name: str
    interval_s: float
    timeout_s: float
    healthy_threshold: int
    unhealthy_threshold: int
    source: str
    initially_healthy: bool = True  # a node is in rotation until its checks say otherwise

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def removal_bound_s(self) -> float:
        """Longest time from a node turning unhealthy to the load balancer seeing it: a check that just
        missed the change, then ``unhealthy_threshold`` failed checks, each taking up to the timeout."""
        return self.interval_s * self.unhealthy_threshold + self.timeout_s + self.interval_s


PROFILES = {
    "gce": HealthCheckProfile("gce", 3.0, 1.0, 1, 2,
                              "GCE L4 (ingress-gce) health check for Local: every 3 s, timeout 1 s, 1/2"),
    "gce-cluster": HealthCheckProfile("gce-cluster", 8.0, 1.0, 1, 3,
                                      "GCE L4 shared check of kube-proxy :10256 for Cluster: every 8 s, 1/3"),
    "aws-nlb": HealthCheckProfile("aws-nlb", 10.0, 10.0, 2, 2,
                                  "AWS NLB (in-tree cloud provider) for Local: every 10 s, timeout 10 s, 2/2"),
    "fast": HealthCheckProfile("fast", 0.5, 0.4, 1, 2,
                               "not a cloud's: every 0.5 s, timeout 0.4 s, 1/2, for quick demos and tests"),
}


def health_check_target(service: Service) -> tuple[int, str]:
    """The port and path a cloud load balancer checks on every node for this Service."""
    if service.external_traffic_policy == "Local" and service.health_check_node_port:
        return service.health_check_node_port, "/healthz"
    return PROXY_HEALTH_PORT, "/healthz"


def expected_rotation(cluster: Cluster, service: Service) -> set[str]:
    """Where the Service's health checks pass once they have caught up: every node under Cluster
    (kube-proxy's :10256), the nodes with a ready endpoint under Local (the healthCheckNodePort counts
    them over all ports)."""
    if service.external_traffic_policy != "Local":
        return {n.name for n in cluster.nodes}
    return {e.node for sp in service.ports for e in endpoints(cluster, service, sp) if e.ready}


def checker_config(cluster: Cluster, profile: HealthCheckProfile, out_path: str) -> dict:
    """What the health checker process needs: every (Service, node) pair to check, and where to write."""
    targets = []
    for svc in load_balancer_services(cluster):
        port, path = health_check_target(svc)
        targets.append({"service": f"{svc.namespace}/{svc.name}", "port": port, "path": path,
                        "nodes": [{"name": n.name, "ip": addr.node_ip(n.index)} for n in cluster.nodes]})
    return {"profile": profile.to_dict(), "targets": targets, "out": out_path}
