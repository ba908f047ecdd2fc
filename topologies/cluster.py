"""A Kubernetes cluster as a Mininet topology: pure data, built from a placed ``Cluster``.

::

          client (203.0.113.10)   lb (203.0.113.2: the cloud load balancer's health checker)
                         │ port 1   │ port 2
                    ┌────┴──────────┴┐  npl-<tag>-ul: the underlay between nodes, the edge router and the
                    │                │  load balancer's data plane (LoadBalancer addresses 198.51.100.x)
                    └┬───────┬───────┘
            port 101 │       │ port 102  (100 + node index)
             port 1  │       │ port 1
              ┌──────┴──┐  ┌─┴───────┐
              │ ...-n1  │  │ ...-n2  │   one bridge per node (npl-<tag>-n1 ...): the node's datapath
              └┬───┬───┬┘  └┬───┬────┘
         port 2│   │   │    │   │        port 2: the node's own stack (host named after the node)
          node-a  pod pod node-b pod     port 100 + last octet of the pod IP: the pod (host named after it)

Hosts are named after the Kubernetes objects, so ``mininet> my-app-xxxxx curl ...`` reads as it would
with kubectl exec; bridges and root-namespace interfaces carry the run's tag. Every name and address
comes from ``lab.kube.addressing``. Links carry optional HTB bandwidth limits (``underlay_bw``, on the
node-to-underlay links) and netem delay where the kernel has it.
When the nodes span two or more zones, each zone has a switch between its nodes and the underlay
(``topologies.zones``); the inter-zone links carry ``zone_link``'s delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from mininet.link import Link, TCLink
from mininet.topo import Topo

from lab.kube import addressing as addr
from lab.kube.model import Cluster, Pod
from topologies.zones import node_attachment, zone_bridges, zone_interfaces, zone_layout


@dataclass(frozen=True)
class LinkShape:
    """Limits for the links between nodes and the underlay (None: unshaped)."""

    bw_mbit: float | None = None
    delay_ms: float | None = None

    @property
    def shaped(self) -> bool:
        return self.bw_mbit is not None or self.delay_ms is not None

    def params(self) -> dict:
        params = {}
        if self.bw_mbit is not None:
            params["bw"] = self.bw_mbit
        if self.delay_ms is not None:
            params["delay"] = f"{self.delay_ms}ms"
        return params


class ClusterTopo(Topo):
    def build(self, cluster: Cluster, underlay: LinkShape = LinkShape(),  # noqa: B008
              zone_link: LinkShape = LinkShape()) -> None:  # noqa: B008
        ul = self.addSwitch(addr.underlay_bridge(), dpid=addr.dpid_hex(addr.underlay_dpid()))
        layout = zone_layout(cluster)
        for zone in layout:
            self.addSwitch(zone.bridge, dpid=addr.dpid_hex(addr.zone_dpid(zone.index)))
            up, ul_side = addr.zone_uplink_intf(zone.index)
            self.addLink(zone.bridge, ul, port1=addr.ZONE_UPLINK_PORT, port2=addr.underlay_zone_port(zone.index),
                         intfName1=up, intfName2=ul_side, cls=TCLink if zone_link.shaped else Link,
                         **zone_link.params())
        client = self.addHost(addr.CLIENT_NAME, ip=f"{addr.CLIENT_IP}/24", mac=addr.mac_for(addr.CLIENT_IP),
                              defaultRoute=f"via {addr.ROUTER_CLIENT_IP}")
        self.addLink(client, ul, port2=addr.UNDERLAY_CLIENT_PORT, intfName1="eth0",
                     intfName2=addr.client_intf(), cls=Link)
        lb = self.addHost(addr.LB_NAME, ip=f"{addr.LB_HOST_IP}/24", mac=addr.mac_for(addr.LB_HOST_IP),
                          defaultRoute=f"via {addr.ROUTER_CLIENT_IP}")
        self.addLink(lb, ul, port2=addr.UNDERLAY_LB_PORT, intfName1="eth0", intfName2=addr.lb_intf(), cls=Link)
        for node in cluster.nodes:
            br = self.addSwitch(addr.node_bridge(node.index), dpid=addr.dpid_hex(addr.node_dpid(node.index)))
            up, ul_side = addr.node_uplink_intf(node.index)
            link_cls = TCLink if underlay.shaped else Link
            attached, port = node_attachment(cluster, node, layout)
            self.addLink(br, attached, port1=addr.NODE_UPLINK_PORT, port2=port,
                         intfName1=up, intfName2=ul_side, cls=link_cls, **underlay.params())
            ip = addr.node_ip(node.index)
            host = self.addHost(node.name, ip=f"{ip}/24", mac=addr.mac_for(ip),
                                defaultRoute=f"via {addr.ROUTER_UNDERLAY_IP}")
            self.addLink(host, br, port2=addr.NODE_HOST_PORT, intfName1="eth0",
                         intfName2=addr.node_host_intf(node.index), cls=Link)
        for pod in cluster.pods:
            self.add_pod(cluster, pod)

    def add_pod(self, cluster: Cluster, pod: Pod) -> None:
        node = cluster.node(pod.node)
        self.addHost(pod.name, **pod_host_params(node.index, pod))
        self.addLink(pod.name, addr.node_bridge(node.index), port2=addr.pod_ofport(pod.ip),
                     intfName1="eth0", intfName2=addr.pod_intf(pod.serial), cls=Link)


def pod_host_params(node_index: int, pod: Pod) -> dict:
    return {"ip": f"{pod.ip}/24", "mac": addr.mac_for(pod.ip),
            "defaultRoute": f"via {addr.pod_gateway_ip(node_index)}"}


def static_neighbours(cluster: Cluster) -> dict[str, list[tuple[str, str]]]:
    """Per host on the underlay, the (IP, MAC) of every neighbour it may send to there.

    With these as permanent ARP entries no host ever resolves a neighbour across the underlay, so the
    underlay's port counters carry only IP traffic, and bytes between nodes can be read from them at
    once (``ClusterNetwork.inter_node_bytes``) instead of waiting for flow counters. The underlay still
    answers ARP (a user's ``ip neigh flush`` keeps working); it is just never needed."""
    router = (addr.ROUTER_UNDERLAY_IP, addr.mac_for(addr.ROUTER_UNDERLAY_IP))
    edge = (addr.ROUTER_CLIENT_IP, addr.mac_for(addr.ROUTER_CLIENT_IP))
    nodes = [(n.name, addr.node_ip(n.index)) for n in cluster.nodes]
    table = {addr.CLIENT_NAME: [edge], addr.LB_NAME: [edge]}
    for name, _ in nodes:
        table[name] = [router] + [(ip, addr.mac_for(ip)) for other, ip in nodes if other != name]
    return table


def bridge_names(cluster: Cluster) -> list[str]:
    return [addr.underlay_bridge()] + [addr.node_bridge(n.index) for n in cluster.nodes] + zone_bridges(cluster)


def root_interfaces(cluster: Cluster) -> list[str]:
    """Every interface the topology puts in the root namespace (the rest live and die with their hosts)."""
    names = [addr.client_intf(), addr.lb_intf()] + zone_interfaces(cluster)
    for node in cluster.nodes:
        names += list(addr.node_uplink_intf(node.index)) + [addr.node_host_intf(node.index)]
    names += [addr.pod_intf(p.serial) for p in cluster.pods]
    return names
