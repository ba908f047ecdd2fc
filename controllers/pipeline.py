"""kube-proxy's NodePort data path, compiled into OpenFlow flows and groups (pure: data in, data out).

Each Kubernetes node is an Open vSwitch bridge. Its pipeline does what the node's netfilter does for
kube-proxy in iptables mode, table by table (conntrack zones per node, because one Open vSwitch
datapath holds the conntrack of every emulated node, while real nodes each have their own)::

    0  CLASSIFY     ARP -> 5; IP to the node or pod-gateway address first un-SNATs (replies of
                    masqueraded connections), then everything goes to conntrack
    5  ARP          answers for the pod gateway and local pods; the node's own host talks to the underlay
    10 CONNTRACK    ct(zone=dnat, nat): established connections get their DNAT (or its reverse) here
    20 SERVICE      new connections to nodeIP:nodePort -> select group (KUBE-SVC/KUBE-SVL: one bucket per
                    endpoint, equal weights), or drop (Local, no local endpoint), or reject (no endpoints).
                    Each bucket is the endpoint's KUBE-SEP DNAT: ct(commit, nat(dst=pod:port)), with
                    ct_mark=1 (KUBE-MARK-MASQ) in the groups of Cluster Services
    30 ENDPOINT     hairpin: a pod that reached itself through the Service is masqueraded too (KUBE-SEP's
                    ``-s podIP -j KUBE-MARK-MASQ``): one flow per endpoint address; a new connection
                    whose DNAT failed is dropped, as netfilter drops a packet it cannot NAT
    40 SNAT         marked connections leave with the node-side source: the pod gateway address towards a
                    local pod, the node IP towards a remote one (what MASQUERADE picks by egress device)
    50 ROUTING      host-gw routing: set MACs, dec_ttl once per node that forwards, choose the port
    60 OUTPUT       output, or IN_PORT when the packet leaves where it came in

The underlay bridge is one L2 segment between nodes plus the edge router towards outside hosts, and
the data plane of the cloud load balancer in front of LoadBalancer Services::

    0  CLASSIFY     ARP responder for node and router addresses; frames to a router MAC go through the
                    load balancer's conntrack zone (which reverses its NAT on replies) -> 12;
                    frames from a node port -> 10
    10 INTERNODE    L2 switching between nodes by destination MAC; these flows' counters are the bytes
                    that crossed between nodes (cookie COOKIE_INTERNODE)
    12 LB           new connections to a Service's external address:port -> a select group over the
                    nodes the load balancer's health checks consider healthy (all nodes when none is:
                    cloud load balancers fail open); each bucket passes the connection through, as an
                    AWS NLB with instance targets: ct(commit, nat(dst=nodeIP:nodePort)), the client's
                    address untouched
    20 ROUTE        the edge router: dec_ttl, rewrite MACs, forward to the node (its IP or its pod CIDR)
                    or the outside host

Flows are plain ``Flow``/``Group`` values; ``controllers.ofwire`` writes them as OpenFlow 1.3 messages and
``Flow.__str__`` prints them in ``ovs-ofctl`` syntax for tests and debugging.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controllers.state import NodeInfo, ProxyState, ServicePortInfo

# Node bridge tables.
T_CLASSIFY = 0
T_ARP = 5
T_CONNTRACK = 10
T_SERVICE = 20
T_ENDPOINT = 30
T_SNAT = 40
T_ROUTING = 50
T_OUTPUT = 60

# Underlay bridge tables.
U_CLASSIFY = 0
U_INTERNODE = 10
U_LB = 12
U_ROUTE = 20
LB_ZONE = 3000

# Cookies say which part of the pipeline a flow belongs to (and let the lab read counters by purpose).
COOKIE_ARP = 0x1
COOKIE_CLASSIFY = 0x2
COOKIE_SERVICE = 0x3
COOKIE_REJECT = 0x4
COOKIE_ENDPOINT = 0x5
COOKIE_SNAT = 0x6
COOKIE_ROUTING = 0x7
COOKIE_OUTPUT = 0x8
COOKIE_INTERNODE = 0x10
COOKIE_EDGE = 0x11
COOKIE_DROP_LOCAL = 0x12
COOKIE_LB = 0x13
COOKIE_NAT_FAILED = 0x14

# conntrack state bits (ovs-fields(7)).
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MASQ_MARK = 0x1  # ct_mark bit: this connection is masqueraded (KUBE-MARK-MASQ's 0x4000)

UPLINK_PORT = 1
NODE_HOST_PORT = 2
UNDERLAY_NODE_PORT_BASE = 100

CLUSTER_CIDR_NET, CLUSTER_CIDR_MASK = "10.244.0.0", "255.255.0.0"  # --cluster-cidr


def dnat_zone(node: NodeInfo) -> int:
    return 1000 + node.index


def snat_zone(node: NodeInfo) -> int:
    return 2000 + node.index


@dataclass(frozen=True)
class Ct:
    """The ``ct`` action. ``nat`` is None (no NAT), "" (apply existing NAT) or ``dst=ip:port``/``src=ip``."""

    zone: int
    table: int | None = None
    commit: bool = False
    nat: str | None = None
    mark: int | None = None  # set ct_mark at commit


Action = tuple[Any, ...]


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: tuple[tuple[str, Any], ...]
    actions: tuple[Action, ...]
    cookie: int = 0

    @property
    def key(self) -> tuple:
        return (self.table, self.priority, self.match)

    def __str__(self) -> str:
        match = ",".join(_fmt_match(k, v) for k, v in self.match)
        acts = ",".join(_fmt_action(a) for a in self.actions) or "drop"
        return (f"cookie={self.cookie:#x},table={self.table},priority={self.priority}"
                f"{',' + match if match else ''} actions={acts}")


@dataclass(frozen=True)
class Group:
    group_id: int
    buckets: tuple[tuple[Action, ...], ...]
    type: str = "select"

    def __str__(self) -> str:
        buckets = ",".join(
            "bucket=weight:100," + ",".join(_fmt_action(a) for a in b) for b in self.buckets)
        return f"group_id={self.group_id},type={self.type},{buckets}"


@dataclass
class Program:
    """Everything one bridge should hold."""

    flows: dict[tuple, Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)

    def add(self, table: int, priority: int, match: dict, actions: list, cookie: int) -> None:
        flow = Flow(table, priority, tuple(match.items()), tuple(actions), cookie)
        if flow.key in self.flows:
            raise ValueError(f"two flows with one match: {flow}")
        self.flows[flow.key] = flow

    def dump(self) -> list[str]:
        return sorted(str(f) for f in self.flows.values()) + sorted(str(g) for g in self.groups.values())


def group_id(node_port: int, local: bool) -> int:
    """Stable ids: one group of all endpoints (KUBE-SVC) and one of local endpoints (KUBE-SVL) per nodePort."""
    return node_port * 2 + (1 if local else 0)


def compile_state(state: ProxyState, lb_healthy: dict[str, list[str]] | None = None) -> dict[int, Program]:
    """The program of every bridge in the lab, keyed by datapath id.

    ``lb_healthy`` maps a LoadBalancer Service (``namespace/name``) to the nodes its load balancer's
    health checks pass; a Service missing from it is sent to every node."""
    programs = {node.dpid: compile_node(state, node) for node in state.nodes}
    programs[state.underlay.dpid] = compile_underlay(state, lb_healthy or {})
    return programs


def service_port_piece(node: NodeInfo, sp: ServicePortInfo) -> Program:
    """What one Service port adds to one node's program: ``compile_node`` is its program without
    Service ports plus one of these per port (flows two ports share, such as an endpoint's hairpin
    flow, appear in both). ``controllers.incremental`` recompiles only the pieces that changed;
    tests/unit/test_incremental.py checks the sum equals ``compile_node``."""
    prog = Program()
    _service(prog, node, sp)
    for ip in {ep.ip for ep in sp.endpoints}:
        _hairpin_flow(prog, node, ip)
    return prog


def underlay_service_port_piece(state: ProxyState, sp: ServicePortInfo,
                                lb_healthy: dict[str, list[str]]) -> Program:
    """What one Service port adds to the underlay's program (its load balancer, if it has one)."""
    prog = Program()
    _load_balancer(prog, state, sp, lb_healthy)
    return prog


# --- node bridge ---------------------------------------------------------------------------------------

def compile_node(state: ProxyState, node: NodeInfo) -> Program:
    prog = Program()
    local_pods = [p for p in state.pods if p.node == node.name]
    _node_classify(prog, node)
    _node_arp(prog, node, local_pods)
    prog.add(T_CONNTRACK, 50, {"eth_type": 0x0800},
             [("ct", Ct(zone=dnat_zone(node), nat="", table=T_SERVICE))], COOKIE_CLASSIFY)
    for sp in state.service_ports:
        _service(prog, node, sp)
    prog.add(T_SERVICE, 0, {}, [("goto", T_SNAT)], COOKIE_SERVICE)
    _hairpin(prog, node, state.service_ports)
    _nat_failed(prog, node)
    _snat(prog, node)
    _routing(prog, state, node, local_pods)
    _output(prog, [UPLINK_PORT, NODE_HOST_PORT] + [p.ofport for p in local_pods])
    return prog


def _node_classify(prog: Program, node: NodeInfo) -> None:
    prog.add(T_CLASSIFY, 200, {"eth_type": 0x0806}, [("goto", T_ARP)], COOKIE_CLASSIFY)
    # Replies to masqueraded connections come back to one of the two addresses SNAT uses, and from a
    # pod: SNAT is only applied towards endpoints. So the client's own packets to nodeIP:nodePort skip
    # the SNAT zone, as on a real node, where one conntrack entry holds both NATs and one lookup
    # serves both; an extra conntrack pass per packet would be a cost of the emulation, not of NodePort.
    for addr in (node.ip, node.gateway_ip):
        prog.add(T_CLASSIFY, 100,
                 {"eth_type": 0x0800, "ipv4_src": (CLUSTER_CIDR_NET, CLUSTER_CIDR_MASK), "ipv4_dst": addr},
                 [("ct", Ct(zone=snat_zone(node), nat="", table=T_CONNTRACK))], COOKIE_CLASSIFY)
    prog.add(T_CLASSIFY, 50, {"eth_type": 0x0800}, [("goto", T_CONNTRACK)], COOKIE_CLASSIFY)
    prog.add(T_CLASSIFY, 0, {}, [], COOKIE_CLASSIFY)  # IPv6 and the rest: this cluster is IPv4 only


def arp_responder(ip: str, mac: str) -> list[Action]:
    """Turn an ARP request into the reply, in place, and send it back (OVS's classic ARP responder)."""
    return [
        ("move", "eth_src", "eth_dst", 48),
        ("set_field", "eth_src", mac),
        ("set_field", "arp_op", 2),
        ("move", "arp_sha", "arp_tha", 48),
        ("move", "arp_spa", "arp_tpa", 32),
        ("set_field", "arp_sha", mac),
        ("set_field", "arp_spa", ip),
        ("output", "in_port"),
    ]


def _node_arp(prog: Program, node: NodeInfo, local_pods: list) -> None:
    answers = [(node.gateway_ip, node.gateway_mac)] + [(p.ip, p.mac) for p in local_pods]
    for ip, mac in answers:
        prog.add(T_ARP, 200, {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": ip},
                 arp_responder(ip, mac), COOKIE_ARP)
    # The node's own network stack (kubelet, health servers) resolves its underlay neighbours itself.
    prog.add(T_ARP, 150, {"in_port": NODE_HOST_PORT, "eth_type": 0x0806},
             [("output", UPLINK_PORT)], COOKIE_ARP)
    prog.add(T_ARP, 150, {"in_port": UPLINK_PORT, "eth_type": 0x0806, "arp_op": 2},
             [("output", NODE_HOST_PORT)], COOKIE_ARP)
    prog.add(T_ARP, 100, {"in_port": UPLINK_PORT, "eth_type": 0x0806, "arp_tpa": node.ip},
             [("output", NODE_HOST_PORT)], COOKIE_ARP)
    prog.add(T_ARP, 0, {}, [], COOKIE_ARP)


def _new_to_nodeport(node: NodeInfo, sp: ServicePortInfo, **extra: Any) -> dict:
    return {"eth_type": 0x0800, "ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL), **extra,
            "ipv4_dst": node.ip, "ip_proto": 6, "tcp_dst": sp.node_port}


def _service(prog: Program, node: NodeInfo, sp: ServicePortInfo) -> None:
    """KUBE-NODEPORTS -> KUBE-EXT-X -> KUBE-SVC-X / KUBE-SVL-X for one service port on one node."""
    reject = [("controller",)]
    if not sp.endpoints:
        # KUBE-EXTERNAL-SERVICES: REJECT "has no endpoints" (ICMP port unreachable, sent by the controller).
        prog.add(T_SERVICE, 100, _new_to_nodeport(node, sp), reject, COOKIE_REJECT)
        return
    all_gid = group_id(sp.node_port, local=False)
    if sp.policy == "Cluster":
        # KUBE-EXT-X: KUBE-MARK-MASQ for every external connection, then KUBE-SVC-X.
        all_group = _select_group(prog, node, all_gid, sp.endpoints, masquerade=True)
        prog.add(T_SERVICE, 100, _new_to_nodeport(node, sp), [("group", all_group)], COOKIE_SERVICE)
        return
    # Local. Pod-sourced traffic short-circuits to all endpoints without masquerade (KUBE-EXT rule 1).
    all_group = _select_group(prog, node, all_gid, sp.endpoints, masquerade=False)
    prog.add(T_SERVICE, 110, _new_to_nodeport(node, sp, ipv4_src=(CLUSTER_CIDR_NET, CLUSTER_CIDR_MASK)),
             [("group", all_group)], COOKIE_SERVICE)
    local = tuple(e for e in sp.endpoints if e.node == node.name)
    if local:
        local_group = _select_group(prog, node, group_id(sp.node_port, local=True), local, masquerade=False)
        prog.add(T_SERVICE, 100, _new_to_nodeport(node, sp), [("group", local_group)], COOKIE_SERVICE)
    else:
        # "has no local endpoints": DROP, silently. The client sees nothing and times out.
        prog.add(T_SERVICE, 100, _new_to_nodeport(node, sp), [], COOKIE_DROP_LOCAL)


def _select_group(prog: Program, node: NodeInfo, gid: int, endpoints, masquerade: bool) -> int:
    """One bucket per endpoint, each its KUBE-SEP DNAT: the choice and the NAT in one step, as OVN did
    before ct_lb, so a Service costs one group per node however many endpoints it has."""
    mark = MASQ_MARK if masquerade else None
    zone = dnat_zone(node)
    prog.groups[gid] = Group(gid, tuple(_dnat_bucket(zone, e.ip, e.port, mark) for e in endpoints))
    return gid


@functools.lru_cache(maxsize=1 << 17)
def _dnat_bucket(zone: int, ip: str, port: int, mark: int | None) -> tuple[Action, ...]:
    return (("ct", Ct(zone=zone, commit=True, nat=f"dst={ip}:{port}", mark=mark, table=T_ENDPOINT)),)


def _hairpin(prog: Program, node: NodeInfo, service_ports) -> None:
    """KUBE-SEP-Y's ``-s podIP -j KUBE-MARK-MASQ``: after DNAT a hairpin connection has its own address
    as both source and destination. The mark is added to the connection the bucket committed, so its
    later packets are masqueraded as well. (A pod on another node can hairpin through this one too.)"""
    for ip in sorted({ep.ip for sp in service_ports for ep in sp.endpoints}, key=ipaddress.IPv4Address):
        _hairpin_flow(prog, node, ip)
    prog.add(T_ENDPOINT, 0, {}, [("goto", T_SNAT)], COOKIE_ENDPOINT)


def _hairpin_flow(prog: Program, node: NodeInfo, ip: str) -> None:
    flow = _hairpin_of(node, ip)
    if flow.key in prog.flows:
        raise ValueError(f"two flows with one match: {flow}")
    prog.flows[flow.key] = flow


@functools.lru_cache(maxsize=1 << 17)
def _hairpin_of(node: NodeInfo, ip: str) -> Flow:
    """One endpoint address's hairpin flow on one node; the same for every Service it backs, so it is
    built once (100,000 endpoint-Service pairs name 100 pods)."""
    new_unmarked = {"ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL), "ct_mark": (0, MASQ_MARK)}
    mark = ("ct", Ct(zone=dnat_zone(node), commit=True, mark=MASQ_MARK, table=T_SNAT))
    match = {"eth_type": 0x0800, **new_unmarked, "ipv4_src": ip, "ipv4_dst": ip}
    return Flow(T_ENDPOINT, 100, tuple(match.items()), (mark,), COOKIE_ENDPOINT)


def _nat_failed(prog: Program, node: NodeInfo) -> None:
    """A bucket's DNAT can fail: Open vSwitch's userspace conntrack finds no free tuple when a client
    reuses a source port whose earlier connection it still holds. The packet then comes out new and
    still addressed to the node, and would reach the node's own stack, which answers RST ("connection
    refused"), a failure a real node never shows. netfilter drops a packet it cannot NAT; so does this."""
    prog.add(T_ENDPOINT, 90, {"eth_type": 0x0800, "ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK), "ipv4_dst": node.ip},
             [], COOKIE_NAT_FAILED)


def _snat(prog: Program, node: NodeInfo) -> None:
    """KUBE-POSTROUTING's MASQUERADE: the source becomes the address of the interface towards the pod."""
    new = (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL)
    marked = (MASQ_MARK, MASQ_MARK)
    net, mask = _net_mask(node.pod_cidr)
    prog.add(T_SNAT, 200, {"eth_type": 0x0800, "ct_state": new, "ct_mark": marked, "ipv4_dst": (net, mask)},
             [("ct", Ct(zone=snat_zone(node), commit=True, nat=f"src={node.gateway_ip}", table=T_ROUTING))],
             COOKIE_SNAT)
    prog.add(T_SNAT, 190, {"eth_type": 0x0800, "ct_state": new, "ct_mark": marked},
             [("ct", Ct(zone=snat_zone(node), commit=True, nat=f"src={node.ip}", table=T_ROUTING))],
             COOKIE_SNAT)
    prog.add(T_SNAT, 180, {"eth_type": 0x0800, "ct_state": (CT_TRK, CT_TRK | CT_NEW | CT_RPL), "ct_mark": marked},
             [("ct", Ct(zone=snat_zone(node), nat="", table=T_ROUTING))], COOKIE_SNAT)
    prog.add(T_SNAT, 0, {}, [("goto", T_ROUTING)], COOKIE_SNAT)


def _routing(prog: Program, state: ProxyState, node: NodeInfo, local_pods: list) -> None:
    router_mac = state.underlay.router_mac

    def to(port: int) -> Action:
        return ("set_field", "reg3", port)

    for pod in local_pods:
        # Same subnet, addressed to the pod's MAC: a bridge would switch it, no router hop.
        prog.add(T_ROUTING, 300, {"eth_type": 0x0800, "ipv4_dst": pod.ip, "eth_dst": pod.mac},
                 [to(pod.ofport), ("goto", T_OUTPUT)], COOKIE_ROUTING)
        prog.add(T_ROUTING, 200, {"eth_type": 0x0800, "ipv4_dst": pod.ip},
                 [("set_field", "eth_src", node.gateway_mac), ("set_field", "eth_dst", pod.mac),
                  ("dec_ttl",), to(pod.ofport), ("goto", T_OUTPUT)], COOKIE_ROUTING)
    # Local delivery to the node's own stack.
    prog.add(T_ROUTING, 200, {"eth_type": 0x0800, "ipv4_dst": node.ip},
             [("set_field", "eth_dst", node.mac), to(NODE_HOST_PORT), ("goto", T_OUTPUT)], COOKIE_ROUTING)
    # What the node's own stack sends has been routed by it already.
    prog.add(T_ROUTING, 150, {"eth_type": 0x0800, "in_port": NODE_HOST_PORT},
             [to(UPLINK_PORT), ("goto", T_OUTPUT)], COOKIE_ROUTING)
    for other in state.nodes:
        if other.name == node.name:
            continue
        via_other = [("set_field", "eth_src", node.mac), ("set_field", "eth_dst", other.mac),
                     ("dec_ttl",), to(UPLINK_PORT), ("goto", T_OUTPUT)]
        prog.add(T_ROUTING, 100, {"eth_type": 0x0800, "ipv4_dst": _net_mask(other.pod_cidr)},
                 via_other, COOKIE_ROUTING)
        prog.add(T_ROUTING, 100, {"eth_type": 0x0800, "ipv4_dst": other.ip}, via_other, COOKIE_ROUTING)
    # Default route: the edge router on the underlay.
    prog.add(T_ROUTING, 10, {"eth_type": 0x0800},
             [("set_field", "eth_src", node.mac), ("set_field", "eth_dst", router_mac),
              ("dec_ttl",), to(UPLINK_PORT), ("goto", T_OUTPUT)], COOKIE_ROUTING)
    prog.add(T_ROUTING, 0, {}, [], COOKIE_ROUTING)


def _output(prog: Program, ports: list[int]) -> None:
    for port in ports:
        prog.add(T_OUTPUT, 200, {"reg3": port, "in_port": port}, [("output", "in_port")], COOKIE_OUTPUT)
        prog.add(T_OUTPUT, 100, {"reg3": port}, [("output", port)], COOKIE_OUTPUT)
    prog.add(T_OUTPUT, 0, {}, [], COOKIE_OUTPUT)


# --- underlay bridge -----------------------------------------------------------------------------------

def compile_underlay(state: ProxyState, lb_healthy: dict[str, list[str]] | None = None) -> Program:
    prog = Program()
    ul = state.underlay
    answers = [(ul.router_ip, ul.router_mac), (ul.external_gateway_ip, ul.external_gateway_mac)]
    answers += [(n.ip, n.mac) for n in state.nodes]
    for ip, mac in answers:
        prog.add(U_CLASSIFY, 200, {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": ip},
                 arp_responder(ip, mac), COOKIE_ARP)
    for router_mac in (ul.router_mac, ul.external_gateway_mac):
        prog.add(U_CLASSIFY, 100, {"eth_type": 0x0800, "eth_dst": router_mac},
                 [("ct", Ct(zone=LB_ZONE, nat="", table=U_LB))], COOKIE_EDGE)
    _load_balancers(prog, state, lb_healthy or {})
    for node in state.nodes:
        port = ul.node_ports[node.name]
        prog.add(U_CLASSIFY, 50, {"in_port": port}, [("goto", U_INTERNODE)], COOKIE_INTERNODE)
        prog.add(U_INTERNODE, 100, {"eth_dst": node.mac}, [("output", port)], COOKIE_INTERNODE)
        to_node = [("dec_ttl",), ("set_field", "eth_src", ul.router_mac), ("set_field", "eth_dst", node.mac),
                   ("output", port)]
        prog.add(U_ROUTE, 100, {"eth_type": 0x0800, "ipv4_dst": node.ip}, to_node, COOKIE_EDGE)
        # The router also knows each node's pod CIDR (as with BGP-advertised pod routes), so an outside
        # host can reach a pod directly: the plain routed path that NodePort's cost is measured against.
        prog.add(U_ROUTE, 90, {"eth_type": 0x0800, "ipv4_dst": _net_mask(node.pod_cidr)}, to_node, COOKIE_EDGE)
    for ext in state.externals:
        prog.add(U_ROUTE, 100, {"eth_type": 0x0800, "ipv4_dst": ext.ip},
                 [("dec_ttl",), ("set_field", "eth_src", ul.external_gateway_mac),
                  ("set_field", "eth_dst", ext.mac), ("output", ext.ofport)], COOKIE_EDGE)
    for table in (U_CLASSIFY, U_INTERNODE, U_ROUTE):
        prog.add(table, 0, {}, [], COOKIE_EDGE)
    return prog


def _load_balancers(prog: Program, state: ProxyState, lb_healthy: dict[str, list[str]]) -> None:
    """The cloud load balancer: per Service port, new connections to its external address are spread
    evenly over healthy nodes (per node, not per pod: it does not know about pods), each bucket DNATing
    to its nodeIP:nodePort; conntrack in ``LB_ZONE`` keeps each connection on its node (a draining node
    keeps the connections it has) and reverses the NAT."""
    for sp in state.service_ports:
        _load_balancer(prog, state, sp, lb_healthy)
    prog.add(U_LB, 0, {}, [("goto", U_ROUTE)], COOKIE_LB)


def _load_balancer(prog: Program, state: ProxyState, sp: ServicePortInfo, lb_healthy: dict[str, list[str]]) -> None:
    if sp.service_type != "LoadBalancer" or not sp.load_balancer_ip:
        return
    healthy = set(lb_healthy.get(sp.service_key, ())) or {n.name for n in state.nodes}
    buckets = tuple(
        (("ct", Ct(zone=LB_ZONE, commit=True, nat=f"dst={n.ip}:{sp.node_port}", table=U_ROUTE)),)
        for n in state.nodes if n.name in healthy)
    gid = group_id(sp.node_port, local=False)
    prog.groups[gid] = Group(gid, buckets)
    prog.add(U_LB, 100, {"eth_type": 0x0800, "ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL),
                         "ipv4_dst": sp.load_balancer_ip, "ip_proto": 6, "tcp_dst": sp.port},
             [("group", gid)], COOKIE_LB)


# --- helpers -------------------------------------------------------------------------------------------

def _net_mask(cidr: str) -> tuple[str, str]:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address), str(net.netmask)


_OFCTL_FIELDS = {"eth_type": "dl_type", "ipv4_dst": "nw_dst", "ipv4_src": "nw_src", "ip_proto": "nw_proto",
                 "tcp_dst": "tp_dst", "eth_dst": "dl_dst", "eth_src": "dl_src"}


def _fmt_ct_state(value: int, mask: int) -> str:
    names = [(CT_NEW, "new"), (CT_EST, "est"), (CT_REL, "rel"), (CT_RPL, "rpl"), (CT_INV, "inv"), (CT_TRK, "trk")]
    return "".join(("+" if value & bit else "-") + name for bit, name in names if mask & bit)


def _fmt_match(key: str, value: Any) -> str:
    if key == "ct_state":
        return "ct_state=" + _fmt_ct_state(*value)
    name = _OFCTL_FIELDS.get(key, key)
    if isinstance(value, tuple):
        v, m = value
        if isinstance(v, str) and "." in v:
            prefix = ipaddress.ip_network(f"{v}/{m}").prefixlen
            return f"{name}={v}/{prefix}"
        return f"{name}={v:#x}/{m:#x}"
    if key == "eth_type":
        return f"{name}={value:#x}"
    return f"{name}={value}"


def _fmt_action(action: Action) -> str:
    kind = action[0]
    if kind == "output":
        return "IN_PORT" if action[1] == "in_port" else f"output:{action[1]}"
    if kind == "set_field":
        value = action[2]
        return f"set_field:{value:#x}->{action[1]}" if isinstance(value, int) else f"set_field:{value}->{action[1]}"
    if kind == "move":
        return f"move:{action[1]}->{action[2]}"
    if kind == "goto":
        return f"goto_table:{action[1]}"
    if kind == "group":
        return f"group:{action[1]}"
    if kind == "dec_ttl":
        return "dec_ttl"
    if kind == "controller":
        return "CONTROLLER"
    if kind == "ct":
        ct: Ct = action[1]
        parts = (["commit"] if ct.commit else []) + [f"zone={ct.zone}"]
        if ct.nat is not None:
            parts.append(f"nat({ct.nat})" if ct.nat else "nat")
        if ct.mark is not None:
            parts.append(f"exec(set_field:{ct.mark:#x}->ct_mark)")
        if ct.table is not None:
            parts.append(f"table={ct.table}")
        return f"ct({','.join(parts)})"
    raise ValueError(f"unknown action {action!r}")
