"""The underlay across zones: one switch per zone, and inter-zone links up to the core (pure).

::

              client   lb
                 │      │
            ┌────┴──────┴────┐  npl-ul: the core (edge router, cloud load balancer, switching between zones)
            └─┬────────────┬─┘
     port 1001│            │port 1002      (1000 + zone index)   inter-zone links: netem delay, if any
        port 1│            │port 1
          ┌───┴───┐    ┌───┴───┐
          │npl-z1 │    │npl-z2 │   one switch per zone (zone-a, zone-b): static flows, no controller
          └┬─────┬┘    └┬─────┬┘
     port 101 102│      103   104   (100 + node index)
        node-a node-c node-b node-d

With nodes in two or more zones each zone gets a switch its nodes attach to; the underlay bridge stays the
core and sees a zone's nodes behind that zone's port (kube-proxy's controller switches node MACs to it,
routes and load-balances as before). With one zone (or none) the topology is the flat one of
``topologies.cluster``. Nodes without a zone, in a cluster whose other nodes have one, share one more
switch (a zone of their own, ``Zone.name`` None), so that every node is behind a zone port.

A zone switch only forwards by destination MAC, so its flows follow from the cluster alone and are
installed once at build (``zone_flows``, in ``ovs-ofctl`` syntax; the switch is fail-secure and has no
controller): a frame from one of its nodes to another goes straight there (it never leaves the zone), one
from the core to a node goes down to it, everything else from a node goes up to the core (other zones,
the router, ARP). So the core's zone ports carry exactly the traffic that crosses zones or leaves the
cluster, and bytes between nodes split into those that stay in a zone and those that cross
(``inter_node_bytes``, ``cross_zone_bytes``, from port counters).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.kube import addressing as addr
from lab.kube.model import Cluster, Node
from lab.kube.topology import zones

COOKIE_ZONE_LOCAL = 0x5A01  # node to node inside the zone: the bytes between nodes that never cross
COOKIE_ZONE_DOWN = 0x5A02  # from the core to one of the zone's nodes
COOKIE_ZONE_UP = 0x5A03  # from a node up to the core


@dataclass(frozen=True)
class Zone:
    index: int  # 1-based, in order of first appearance among the nodes: names its bridge and ports
    name: str | None  # None: the nodes without a zone
    nodes: tuple[Node, ...]

    @property
    def bridge(self) -> str:
        return addr.zone_bridge(self.index)


def zone_layout(cluster: Cluster) -> list[Zone]:
    """The zone switches the underlay has: one per zone when the nodes span two or more, else none."""
    names: list[str | None] = list(zones(cluster.nodes))
    if any(not n.zone for n in cluster.nodes):
        names.append(None)
    if len(names) < 2:
        return []
    return [Zone(i, name, tuple(n for n in cluster.nodes if n.zone == name)) for i, name in enumerate(names, 1)]


def zone_of(layout: list[Zone], node: Node) -> Zone | None:
    return next((z for z in layout if node in z.nodes), None)


def node_attachment(cluster: Cluster, node: Node, layout: list[Zone] | None = None) -> tuple[str, int]:
    """(bridge, port) where the node's uplink attaches: its zone's switch, or the core."""
    zone = zone_of(zone_layout(cluster) if layout is None else layout, node)
    return (zone.bridge if zone else addr.underlay_bridge()), addr.underlay_node_port(node.index)


def core_ports(cluster: Cluster) -> dict[str, int]:
    """Node name -> the core's port towards it: its zone's inter-zone link, or its own link."""
    layout = zone_layout(cluster)
    ports = {}
    for node in cluster.nodes:
        zone = zone_of(layout, node)
        ports[node.name] = addr.underlay_zone_port(zone.index) if zone else addr.underlay_node_port(node.index)
    return ports


def zone_flows(zone: Zone) -> list[str]:
    """The static program of one zone switch, as ``ovs-ofctl add-flows`` lines."""
    up = addr.ZONE_UPLINK_PORT
    flows = []
    for node in zone.nodes:
        port = addr.underlay_node_port(node.index)
        mac = addr.mac_for(addr.node_ip(node.index))
        for other in zone.nodes:
            if other is not node:
                flows.append(f"cookie={COOKIE_ZONE_LOCAL:#x},priority=100,in_port={addr.underlay_node_port(other.index)},"
                             f"dl_dst={mac},actions=output:{port}")
        flows.append(f"cookie={COOKIE_ZONE_DOWN:#x},priority=100,in_port={up},dl_dst={mac},actions=output:{port}")
        flows.append(f"cookie={COOKIE_ZONE_UP:#x},priority=50,in_port={port},actions=output:{up}")
    flows.append(f"cookie={COOKIE_ZONE_UP:#x},priority=0,actions=drop")
    return flows


def zone_bridges(cluster: Cluster) -> list[str]:
    return [z.bridge for z in zone_layout(cluster)]


def zone_interfaces(cluster: Cluster) -> list[str]:
    return [name for z in zone_layout(cluster) for name in addr.zone_uplink_intf(z.index)]


Counters = dict[str, dict[int, tuple[int, int]]]  # bridge -> port -> (received, sent) bytes


def counted_bridges(cluster: Cluster) -> list[str]:
    """The bridges whose port counters ``inter_node_bytes`` and ``cross_zone_bytes`` read."""
    return [addr.underlay_bridge()] + zone_bridges(cluster)


def _to_outside(cluster: Cluster, core: dict[int, tuple[int, int]]) -> int:
    """What the core sent to hosts outside the cluster (client, load balancer)."""
    node_side = set(core_ports(cluster).values())
    return sum(tx for port, (_, tx) in core.items() if port not in node_side)


def inter_node_bytes(cluster: Cluster, counters: Counters) -> int:
    """Bytes between nodes: every frame a node sends (received by the port its uplink attaches to) goes
    to another node or, through the edge router, outside; nothing else sends outside. So what the nodes
    sent less what the core sent outside."""
    layout = zone_layout(cluster)
    from_nodes = 0
    for node in cluster.nodes:
        bridge, port = node_attachment(cluster, node, layout)
        from_nodes += counters[bridge].get(port, (0, 0))[0]
    return from_nodes - _to_outside(cluster, counters[addr.underlay_bridge()])


def cross_zone_bytes(cluster: Cluster, counters: Counters) -> int:
    """Bytes between nodes of different zones: what the core received from the zones' links (the only
    frames a zone switch sends up are those it cannot deliver inside the zone) less what it sent outside.
    0 with a single zone."""
    layout = zone_layout(cluster)
    core = counters[addr.underlay_bridge()]
    zone_ports = {addr.underlay_zone_port(z.index) for z in layout}
    from_zones = sum(rx for port, (rx, _) in core.items() if port in zone_ports)
    return from_zones - _to_outside(cluster, core) if layout else 0
