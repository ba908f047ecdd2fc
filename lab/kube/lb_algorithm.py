"""Which endpoint choice a Service's ports get: kube-proxy's random one, or Maglev (pure).

Cilium's kube-proxy replacement chooses backends by ``loadBalancer.algorithm`` for the whole cluster
(``random``, the default, or ``maglev``), and since 1.16, with ``bpf-lb-algorithm-annotation``, per
Service by the annotation ``service.cilium.io/lb-algorithm``. The lab takes both: ``Cluster.lb_algorithm``
(``--lb-algorithm``) for every Service, the annotation over it for one.
"""

from __future__ import annotations

from lab.errors import LabError, shown
from lab.kube.model import Cluster, Service

ANNOTATION = "service.cilium.io/lb-algorithm"
RANDOM, MAGLEV = "random", "maglev"
ALGORITHMS = (RANDOM, MAGLEV)


def problem(value: str) -> str | None:
    """What is wrong with ``value`` as an algorithm, or None."""
    return None if value in ALGORITHMS else f"{shown(value)} is not a load-balancing algorithm"


def check_cluster(cluster: Cluster) -> str:
    if (wrong := problem(cluster.lb_algorithm)) is not None:
        raise LabError(f"Cluster.lb_algorithm: {wrong}", f"use {' or '.join(ALGORITHMS)}")
    return cluster.lb_algorithm


def service_algorithm(cluster: Cluster, svc: Service) -> str:
    """The Service's annotation if it has one, else the cluster's algorithm."""
    value = svc.annotations.get(ANNOTATION)
    if value is None:
        return check_cluster(cluster)
    if (wrong := problem(value)) is not None:
        raise LabError(f'Service "{svc.namespace}/{svc.name}": annotation {ANNOTATION} {wrong}',
                       f"use {' or '.join(ALGORITHMS)}")
    return value
