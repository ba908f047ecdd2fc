"""The lab as API server: turn a placed ``Cluster`` into the ``ProxyState`` that kube-proxy watches.

This is where Services become EndpointSlices (``lab.kube.endpoints``) and where every address and port
number comes from ``lab.kube.addressing``; the controller receives finished facts.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from controllers.collector import paused
from controllers.state import (
    EndpointInfo,
    ExternalHost,
    NodeInfo,
    PodInfo,
    ProxyState,
    ServicePortInfo,
    UnderlayInfo,
)
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips
from lab.kube.endpoints import endpoints, label_index
from lab.kube.forwarding import forwarding_mode
from lab.kube.lb_algorithm import service_algorithm
from lab.kube.load_balancers import load_balancer_ips
from lab.kube.model import Cluster
from lab.kube.topology import endpoint_hints
from topologies.zones import core_ports


def node_info(node, netns_pid: int | None = None) -> NodeInfo:
    gw = addr.pod_gateway_ip(node.index)
    ip = addr.node_ip(node.index)
    return NodeInfo(name=node.name, index=node.index, ip=ip, mac=addr.mac_for(ip),
                    pod_cidr=addr.pod_cidr(node.index), gateway_ip=gw, gateway_mac=addr.mac_for(gw),
                    dpid=addr.node_dpid(node.index), netns_pid=netns_pid, deleting=node.deleting, zone=node.zone)


def external_hosts() -> tuple[ExternalHost, ...]:
    return (ExternalHost(name=addr.CLIENT_NAME, ip=addr.CLIENT_IP, mac=addr.mac_for(addr.CLIENT_IP),
                         ofport=addr.UNDERLAY_CLIENT_PORT),
            ExternalHost(name=addr.LB_NAME, ip=addr.LB_HOST_IP, mac=addr.mac_for(addr.LB_HOST_IP),
                         ofport=addr.UNDERLAY_LB_PORT))


# A Service's ports as kube-proxy gets them, by everything they are made of: the Service and the pods
# its selector's first label picks (a Service can select no pod outside them). A pod change then
# recomputes the Services whose candidate pods changed, not all of them: 1,000 Services, 20 ms -> ~3.
_PORTS: dict[tuple, list[ServicePortInfo]] = {}
# What a selector bucket's pods are, as a number: hashed once per build, not once per Service in the key
# (a bucket of 100 pods is 800 values; 1,000 Services sharing it hashed 800,000 of them per pod change).
# A bucket's pods carry only the labels its selector reads: relabelling a pod for one Service leaves the
# other Services that pick it alone (a readiness flip in a 1,000-Service cluster recomputed 200 of them).
_BUCKETS: dict[tuple, int] = {}


def _pods_key(pods, selector_keys: tuple[str, ...]) -> int:
    """A selector bucket's pods, as far as endpoints depend on them, as a number (``_BUCKETS``)."""
    return _BUCKETS.setdefault(
        tuple((p.name, p.node, p.ip, p.serial, p.ports, tuple(p.labels.get(k) for k in selector_keys), p.ready,
               p.terminating) for p in pods),
        len(_BUCKETS))


def _service_key(svc) -> tuple:
    """Everything of a Service its ports are made of (its pods and the cluster's part aside)."""
    return (svc.name, svc.namespace, svc.type, svc.external_traffic_policy, svc.health_check_node_port,
            svc.internal_traffic_policy, svc.session_affinity_timeout, tuple(svc.load_balancer_source_ranges),
            tuple(svc.ports), tuple(svc.selector.items()), tuple(sorted(svc.annotations.items())),
            svc.traffic_distribution, svc.publish_not_ready)


def _service_port(cluster: Cluster, svc, sp, index, ready_pods: set[str] | None, lb_ip: str | None,
                  vip: str | None) -> ServicePortInfo:
    found = [e for e in endpoints(cluster, svc, sp, index) if ready_pods is None or e.pod in ready_pods]
    zone_of = {n.name: n.zone for n in cluster.nodes}
    eps = tuple(EndpointInfo(pod=e.pod, node=e.node, ip=e.ip, port=e.port, ready=e.ready, serving=e.serving,
                             terminating=e.terminating, zone=zone_of.get(e.node), for_zones=h.for_zones,
                             for_nodes=h.for_nodes)
                for e, h in zip(found, endpoint_hints(svc, found, cluster.nodes), strict=True))
    return ServicePortInfo(
        service=svc.name, namespace=svc.namespace, port_name=sp.name or "", protocol=sp.protocol, port=sp.port,
        node_port=sp.node_port or 0, policy=svc.external_traffic_policy, endpoints=eps,
        health_check_node_port=svc.health_check_node_port, service_type=svc.type, load_balancer_ip=lb_ip,
        cluster_ip=vip, internal_policy=svc.internal_traffic_policy, affinity_timeout=svc.session_affinity_timeout,
        source_ranges=tuple(svc.load_balancer_source_ranges), algorithm=service_algorithm(cluster, svc),
        forwarding=forwarding_mode(cluster.proxy_mode, svc))


def build_proxy_state(cluster: Cluster, generation: int, ready_pods: set[str] | None = None,
                      netns_pids: dict[str, int] | None = None) -> ProxyState:
    """``ready_pods`` limits endpoints to pods whose server is up (None: all placed pods); ``netns_pids``
    names, per node, a process in the node's own network namespace (where health servers listen).
    (With the cyclic collector paused: every object made here is acyclic.)"""
    with paused():
        return _build(cluster, generation, ready_pods, netns_pids)


def _build(cluster: Cluster, generation: int, ready_pods: set[str] | None,
           netns_pids: dict[str, int] | None) -> ProxyState:
    pids = netns_pids or {}
    if len(_BUCKETS) > 100_000:  # before any key is made: numbers restart only with no key left using them
        _BUCKETS.clear()
        _PORTS.clear()
    nodes = tuple(node_info(n, pids.get(n.name)) for n in cluster.nodes)
    lb_ips = load_balancer_ips(cluster)
    vips = cluster_ips(cluster)
    pods = tuple(
        PodInfo(name=p.name, namespace=p.namespace, node=p.node, ip=p.ip, mac=addr.mac_for(p.ip),
                ofport=addr.pod_ofport(p.ip))
        for p in cluster.pods if p.ip)
    index = label_index(cluster.pods) if ready_pods is None else None
    buckets: dict[tuple, int] = {}  # (namespace, key, value, selector keys) -> what its pods are, for _PORTS keys
    # What every Service's ports also depend on: the nodes' topology and the cluster-wide modes (a number,
    # like a bucket: one tuple of ten nodes hashed once per build, not once per Service).
    nodes_topology = tuple((n.name, n.zone, n.allocatable_cpu_milli, tuple(sorted(n.labels))) for n in cluster.nodes)
    shared = _BUCKETS.setdefault(("cluster", nodes_topology, cluster.lb_algorithm, cluster.proxy_mode), len(_BUCKETS))
    service_ports: list[ServicePortInfo] = []
    slots: list[tuple[tuple, int, int]] = []  # cache key, and where its ports are in service_ports
    for svc in cluster.services:
        if svc.headless and not svc.node_ports:
            continue  # a headless Service gets no kube-proxy rules
        key = (svc.namespace, svc.name)
        lb_ip, vip = lb_ips.get(key), vips.get(key)
        cache_key = None
        if index is not None and svc.selector:
            selector_keys = tuple(svc.selector)
            bucket = (svc.namespace, selector_keys[0], svc.selector[selector_keys[0]], selector_keys)
            pods_key = buckets.get(bucket)
            if pods_key is None:
                pods_key = buckets[bucket] = _pods_key(index.get(bucket[:3], ()), selector_keys)
            cache_key = (_service_key(svc), lb_ip, vip, pods_key, shared)
            known = _PORTS.get(cache_key)
            if known is not None:
                slots.append((cache_key, len(service_ports), len(service_ports) + len(known)))
                service_ports += known
                continue
        ports = [_service_port(cluster, svc, sp, index, ready_pods, lb_ip, vip)
                 for sp in svc.ports]
        if cache_key is not None:
            slots.append((cache_key, len(service_ports), len(service_ports) + len(ports)))
        service_ports += ports
    service_ports = _with_ids(service_ports)
    if len(_PORTS) > 2 * len(slots) + 1000:
        # Mostly what earlier states used and this one does not (the bench's 10,000-Service state, then a
        # 1,000-Service one): kept, they were a quarter of a million objects that every pass of the
        # cyclic collector went over (a pod change's build, p99 of 200: 6.4 ms with them, 2.2 without).
        _PORTS.clear()
    for cache_key, start, end in slots:  # remembered with their ids: the next build reuses these very objects
        _PORTS[cache_key] = service_ports[start:end]
    underlay = UnderlayInfo(
        dpid=addr.underlay_dpid(), router_ip=addr.ROUTER_UNDERLAY_IP,
        router_mac=addr.mac_for(addr.ROUTER_UNDERLAY_IP), external_gateway_ip=addr.ROUTER_CLIENT_IP,
        external_gateway_mac=addr.mac_for(addr.ROUTER_CLIENT_IP),
        node_ports=core_ports(cluster))
    return ProxyState(generation=generation, nodes=nodes, pods=pods, service_ports=tuple(service_ports),
                      underlay=underlay, externals=external_hosts())


ID_BITS = 26  # group ids are id * 2 + 1: well inside OpenFlow's group id space


_IDS: list = [None, {}]  # the last build's Service port keys, and the ids they got


def _with_ids(service_ports: list[ServicePortInfo]) -> list[ServicePortInfo]:
    """Give every Service port a stable id (its groups' and affinity flows' name): a hash of its key,
    the next free number on a collision (in key order), so adding a Service renames no other's groups.
    The same keys as the last build get the same ids without sorting them again."""
    keys = [f"{sp.key}/{sp.protocol}" for sp in service_ports]
    if keys != _IDS[0]:
        taken: set[int] = set()
        ids: dict[str, int] = {}
        for key in sorted(keys):
            number = zlib.crc32(key.encode()) % (1 << ID_BITS) or 1
            while number in taken:
                number = number % ((1 << ID_BITS) - 1) + 1
            taken.add(number)
            ids[key] = number
        _IDS[:] = [keys, ids]
    ids = _IDS[1]
    return [sp if sp.id == ids[key] else replace(sp, id=ids[key]) for sp, key in zip(service_ports, keys, strict=True)]
