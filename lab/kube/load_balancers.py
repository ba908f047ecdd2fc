"""``status.loadBalancer.ingress``: the external address each LoadBalancer Service is given.

In a cluster the service controller (the cloud's) writes it and the API server stores it; kube-proxy
reads it from there. The lab gives addresses from the pool in ``lab.kube.addressing`` in manifest
order, so every run of the same manifests gets the same addresses.
"""

from __future__ import annotations

from lab.kube import addressing as addr
from lab.kube.model import Cluster, Service


def load_balancer_services(cluster: Cluster) -> list[Service]:
    return [s for s in cluster.services if s.type == "LoadBalancer"]


def load_balancer_ips(cluster: Cluster) -> dict[tuple[str, str], str]:
    """(namespace, name) -> external address, from the pool in manifest order."""
    return {(s.namespace, s.name): addr.load_balancer_ip(i) for i, s in enumerate(load_balancer_services(cluster))}
