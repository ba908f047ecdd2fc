"""What one probe measured, with the links' counters around it and the paths the requests took.

``measure_entry`` (through a node's nodePort) and ``measure_load_balancer`` (through a LoadBalancer
Service's external address) wrap one probe of ``lab.measure.experiment`` between two readings of every
link's byte counters, and add three keys to the report's result (``lab.measure.report.entry_result``):

- ``linkBytes``: ``{name: bytes}``, what each link carried during this probe, both directions, read
  from Open vSwitch port counters before and after. A link is named after what it attaches: the
  client (to the edge router), a node (to the underlay), a pod (to its node's bridge).
- ``paths``: where the requests went: ``{entry, podNode, pod, nodes, requests}`` per pod that answered
  (``nodes`` lists the nodes crossed: the entry node, then the pod's node if it is another one), and
  one ``{pod: None, requests, errors}`` for the requests that got no answer.
- ``topology``: the cluster when it was measured (client, nodes, pods, load balancer addresses), so a
  result can be drawn on its own even after pods moved.
- across zones only: ``crossZoneBytes`` and ``crossZoneBytesPerRequest`` (``lab.measure.zones``).
"""

from __future__ import annotations

from collections.abc import Callable

from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips
from lab.kube.endpoints import leads_to_l7_proxy
from lab.kube.load_balancers import load_balancer_ips
from lab.kube.model import Cluster, Service
from lab.measure.experiment import probe_cluster_ip, probe_entry, probe_load_balancer
from lab.measure.report import request_paths
from lab.measure.zones import cross_zone_fields
from topologies.zones import zone_layout


def topology(cluster: Cluster) -> dict:
    """The cluster as plain data, for drawings: who is where, with which address."""
    return {
        "client": {"name": addr.CLIENT_NAME, "ip": addr.CLIENT_IP},
        "nodes": [{"name": n.name, "ip": addr.node_ip(n.index), "podCIDR": addr.pod_cidr(n.index),
                   "podGateway": addr.pod_gateway_ip(n.index)} for n in cluster.nodes],
        "pods": [{"name": p.name, "node": p.node, "ip": p.ip} for p in cluster.pods],
        "loadBalancers": [{"service": f"{ns}/{name}", "ip": ip}
                          for (ns, name), ip in load_balancer_ips(cluster).items()],
    }


def link_bytes(net: LabNetwork) -> dict[str, int]:
    """Bytes every link has carried so far, by the name of what the link attaches: the counters of the
    link's bridge-side interface, read from the kernel at once (``lab.emulation.counters``)."""
    links = {addr.CLIENT_NAME: addr.client_intf()}
    for node in net.cluster.nodes:
        links[node.name] = addr.node_uplink_intf(node.index)[1]  # its port on the underlay
        for pod in net.cluster.pods_on(node.name):
            links[pod.name] = addr.pod_intf(pod.serial)
    counters = net.interface_bytes(list(links.values()))
    return {link: counters[name] for link, name in links.items()}


def measure_entry(net: LabNetwork, service: Service, node: str, requests: int, client_ttl: int,
                  port: int | str | None = None, timeout: float = 1.0) -> dict:
    """``probe_entry`` for one (Service port, node), plus the bytes per link and the requests' paths."""
    sp = service_port(service, port)
    return _measured(net, lambda: probe_entry(net, service, sp, node, requests, client_ttl, timeout))


def measure_load_balancer(net: LabNetwork, service: Service, requests: int, client_ttl: int,
                          port: int | str | None = None, timeout: float = 1.0, rate: float | None = None) -> dict:
    """``probe_load_balancer``: requests to the Service's external address, the load balancer picks nodes."""
    sp = service_port(service, port)
    return _measured(net, lambda: probe_load_balancer(net, service, sp, requests, client_ttl, timeout, rate=rate))


def _measured(net: LabNetwork, probe: Callable[[], dict]) -> dict:
    """Run one probe between two readings of every link's counters; add the links, paths and topology."""
    zoned = bool(zone_layout(net.cluster))
    before, crossed = link_bytes(net), net.cross_zone_bytes() if zoned else 0
    result = probe()
    after = link_bytes(net)
    result["linkBytes"] = {name: after[name] - before.get(name, 0) for name in after}
    if zoned:  # across zones: the share of the bytes between nodes that crossed (lab.measure.zones prices it)
        result.update(cross_zone_fields(net.cross_zone_bytes() - crossed, result["ok"]))
    result["paths"] = request_paths(result, {p.name: p.node for p in net.cluster.pods})
    result["topology"] = topology(net.cluster)
    return result


def measure_all(net: LabNetwork, requests: int, timeout: float = 1.0,
                progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Every port of every NodePort and LoadBalancer Service through every node, in manifest order (a port
    that leads to an L7 proxy's NGINX is probed per route instead, ``lab.measure.routes``)."""
    client_ttl = net.client_ttl()
    results = []
    for service in net.cluster.services:
        for sp in [sp for sp in service.node_ports if not leads_to_l7_proxy(net.cluster, service, sp)]:
            for node in net.cluster.nodes:
                progress(f"probing {service.name}:{sp.node_port} ({service.external_traffic_policy}) "
                         f"via {node.name}, {requests} requests")
                results.append(measure_entry(net, service, node.name, requests, client_ttl, sp.node_port, timeout))
    return results


IN_CLUSTER_CLIENT_LABELS = {"nodeport-lab.io/role": "in-cluster-client"}


def in_cluster_clients(net: LabNetwork) -> dict[str, str]:
    """One client pod per node, added by the lab and selected by no Service: node -> pod name."""
    clients = {}
    taken = {p.name for p in net.cluster.pods} | {n.name for n in net.cluster.nodes}
    for node in net.cluster.nodes:
        if node.unschedulable:
            continue
        name, n = f"probe-{node.name}"[:63], 2
        while name in taken:
            name, n = f"probe-{node.name}"[:59] + f"-{n}", n + 1
        taken.add(name)
        net.add_pod(name, node.name, labels=IN_CLUSTER_CLIENT_LABELS, ports=())
        clients[node.name] = name
    return clients


def measure_cluster_ip(net: LabNetwork, service: Service, client_pod: str, requests: int,
                       port: int | str | None = None, timeout: float = 1.0) -> dict:
    """``probe_cluster_ip`` from one in-cluster pod, plus the bytes per link and the requests' paths."""
    sp = service_port(service, port)
    return _measured(net, lambda: probe_cluster_ip(net, service, sp, client_pod, requests, timeout))


def measure_cluster_ips(net: LabNetwork, requests: int, timeout: float = 1.0,
                        progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Every port of every Service with a clusterIP (NodePort and LoadBalancer ones too), from a client
    pod on each node; a port that leads to an L7 proxy's NGINX is probed per route instead."""
    vips = cluster_ips(net.cluster)
    targets = [(s, sp) for s in net.cluster.services if (s.namespace, s.name) in vips for sp in s.ports
               if not leads_to_l7_proxy(net.cluster, s, sp)]
    if not targets:
        return []
    clients = in_cluster_clients(net)
    results = []
    for service, sp in targets:
        for node, pod in clients.items():
            progress(f"probing {service.name} clusterIP {vips[(service.namespace, service.name)]}:{sp.port}"
                     f"/{sp.protocol} from {pod} on {node}, {requests} requests")
            results.append(measure_cluster_ip(net, service, pod, requests, sp.name or sp.port, timeout))
    return results


def service_port(service: Service, port: int | str | None):
    """A Service port by its port, nodePort or name; the only one when not given."""
    if port is None:
        if len(service.ports) != 1:
            raise ValueError(f"Service {service.name} has {len(service.ports)} ports: say which (port=...)")
        return service.ports[0]
    for sp in service.ports:
        if port in (sp.port, sp.node_port, sp.name):
            return sp
    raise ValueError(f"Service {service.name} has no port {port!r}")
