"""``spec.clusterIP``: the virtual address of every Service that is not headless.

kube-apiserver allocates it from ``--service-cluster-ip-range`` (kubeadm: 10.96.0.0/12) unless the
manifest names one, which must lie in the range and be free; ``clusterIP: None`` makes a headless
Service, which gets no address and no kube-proxy rules. Since v1.27 (KEP-3070) dynamic addresses come
from the upper part of the range first, leaving the lower band (min(max(16, size/16), 256) addresses)
for static ones; the first address (10.96.0.1) is the ``kubernetes`` Service's.

The lab differs on purpose in one way, as for nodePorts: the "random" address comes from sha256 of
``namespace/name``, probing forward on a collision, so the same manifests always get the same
addresses. Explicit addresses are reserved first, so no manifest order changes them.
"""

from __future__ import annotations

import hashlib
import ipaddress

from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.model import Cluster, Service

_SIZE = addr.SERVICE_CIDR.num_addresses
_STATIC_BAND = min(max(16, _SIZE // 16), 256)


# Addresses the lab itself uses: a clusterIP there would be ambiguous on the wire.
_TAKEN = {"the pod network": addr.CLUSTER_CIDR, "the node network": addr.UNDERLAY_CIDR,
          "the outside client's network": addr.CLIENT_CIDR, "the load balancer pool": addr.LB_POOL,
          "loopback": ipaddress.ip_network("127.0.0.0/8")}


def check_cluster_ip(service: Service) -> str | None:
    """The problem with an explicit ``spec.clusterIP``, or None. Exports from a live cluster carry the
    address its own service CIDR gave (EKS, for one, uses 10.100.0.0/16 or 172.20.0.0/16), so any unicast
    address is kept that the lab's own networks do not use."""
    if service.cluster_ip in (None, "", "None"):
        return None
    try:
        ip = ipaddress.IPv4Address(service.cluster_ip)
    except ValueError:
        return f'"{service.cluster_ip}" is not an IPv4 address'
    if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{ip} is not a unicast address"
    for what, net in _TAKEN.items():
        if ip in net:
            return f"{ip} is in {what} ({net}), which the lab uses"
    return None


_LAST: list = [None, {}]  # the last Services' (namespace, name, clusterIP), and what they were given


def cluster_ips(cluster: Cluster) -> dict[tuple[str, str], str]:
    """(namespace, name) -> clusterIP for every Service that has one (headless ones have none).

    The answer depends on nothing but the Services' names and explicit addresses, and the lab asks at
    every state it publishes: the last one is kept (a pod change with 1,000 Services: 3 ms -> 0.1)."""
    key = tuple((svc.namespace, svc.name, svc.cluster_ip) for svc in cluster.services)
    if key != _LAST[0]:
        _LAST[:] = [key, _cluster_ips(cluster)]
    return dict(_LAST[1])


def _cluster_ips(cluster: Cluster) -> dict[tuple[str, str], str]:
    taken: dict[str, Service] = {}
    result: dict[tuple[str, str], str] = {}
    for svc in cluster.services:
        problem = check_cluster_ip(svc)
        if problem:
            raise LabError(f"Service {svc.namespace}/{svc.name}: spec.clusterIP {problem}",
                           f"use an address of the Service CIDR ({addr.SERVICE_CIDR}) or omit it")
        if svc.cluster_ip not in (None, "", "None"):
            other = taken.get(svc.cluster_ip)
            if other is not None:
                raise LabError(f"Service {svc.namespace}/{svc.name}: spec.clusterIP {svc.cluster_ip} is already "
                               f"allocated to {other.namespace}/{other.name}", "pick another address or omit it")
            taken[svc.cluster_ip] = svc
            result[(svc.namespace, svc.name)] = svc.cluster_ip
    taken[str(addr.SERVICE_CIDR.network_address + 1)] = Service("kubernetes", [])
    for svc in cluster.services:
        if svc.cluster_ip not in (None, ""):
            continue
        ip = _allocate(f"{svc.namespace}/{svc.name}", taken)
        taken[ip] = svc
        result[(svc.namespace, svc.name)] = ip
    return result


def _allocate(key: str, taken) -> str:
    dynamic = _SIZE - _STATIC_BAND - 1  # the upper band, without the broadcast address
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % dynamic
    for step in range(dynamic):
        ip = str(addr.SERVICE_CIDR.network_address + _STATIC_BAND + (start + step) % dynamic)
        if ip not in taken:
            return ip
    raise LabError("the service CIDR is full", "use fewer Services")
