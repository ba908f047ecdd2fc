"""kube-proxy's NodePort data path, compiled into OpenFlow flows and groups (pure: data in, data out).

Each Kubernetes node is an Open vSwitch bridge. Its pipeline does what the node's netfilter does for
kube-proxy in iptables mode, table by table (conntrack zones per node, because one Open vSwitch
datapath holds the conntrack of every emulated node, while real nodes each have their own)::

    0  CLASSIFY     ARP -> 5; IP to the node or pod-gateway address first un-SNATs (replies of
                    masqueraded connections), then everything goes to conntrack
    5  ARP          answers for the pod gateway and local pods; the node's own host talks to the underlay
    7  DSR          a DSR packet from an entry node (its MPLS label popped in 0): the frontend restored,
                    then DNATed in this node's zone (``controllers.pipeline_dsr``)
    10 CONNTRACK    ct(zone=dnat, nat): established connections get their DNAT (or its reverse) here;
                    reg8 = the node's DNAT zone, and TO_NODE_BIT for packets to the node's own IP
    15 FIREWALL     loadBalancerSourceRanges: new connections to a load balancer address from outside
                    its ranges are dropped (KUBE-FW)
    20 SERVICE      new connections to a clusterIP, a load balancer address (served by the client's own
                    node), nodeIP:nodePort (TO_NODE_BIT and the port, as nftables' nodeport-ips set
                    and service-nodeports map) or, from the node itself, 127.0.0.1:nodePort: the chains of
                    ``controllers.services`` (KUBE-SERVICES, KUBE-EXT, KUBE-SVC/KUBE-SVL): masquerade or
                    not (reg0), then a select group with one bucket per endpoint (its KUBE-SEP DNAT,
                    ct(commit, nat(dst=pod:port)), committing reg0 into ct_mark), or drop (Local, no
                    local endpoint), or reject (no endpoints)
    21 AFFINITY     sessionAffinity: flows learned by earlier choices, (Service port, client IP) ->
                    endpoint, idle_timeout = timeoutSeconds; looked up by resubmit
    22 STICKY       the remembered endpoint if the chain still has it, else the chain's group
    23 UDP_PICK     UDP chains: the endpoint by the client's source port
    24 MAGLEV       Maglev chains (Cilium's loadBalancer.algorithm=maglev): the endpoint by the slot the
                    connection's 5-tuple hashed to (``multipath``), one flow per slot; the table depends
                    only on the endpoints, so it is the same on every node (``controllers.pipeline_maglev``)
    25 REMEMBER     after an affinity chain's DNAT: learn (Service port, client IP) -> the new destination
    30 ENDPOINT     hairpin: a pod that reached itself through the Service is masqueraded too (KUBE-SEP's
                    ``-s podIP -j KUBE-MARK-MASQ``): one flow per endpoint address; a new connection
                    whose DNAT failed is dropped, as netfilter drops a packet it cannot NAT
    40 SNAT         marked connections leave with the node-side source: the pod gateway address towards a
                    local pod, the node IP towards a remote one (what MASQUERADE picks by egress device)
    50 ROUTING      host-gw routing: set MACs, dec_ttl once per node that forwards, choose the port; a DSR
                    connection towards another node's pod gets its frontend's label pushed
    60 OUTPUT       output, or IN_PORT when the packet leaves where it came in

The underlay bridge is one L2 segment between nodes plus the edge router towards outside hosts, and
the data plane of the cloud load balancer in front of LoadBalancer Services::

    0  CLASSIFY     ARP responder for node and router addresses; frames to a router MAC go through the
                    load balancer's conntrack zone (which reverses its NAT on replies) -> 12;
                    frames from a node port -> 10
    10 INTERNODE    L2 switching between nodes by destination MAC; these flows' counters are the bytes
                    that crossed between nodes (cookie COOKIE_INTERNODE); across zones, a node's port is
                    its zone's link, and these are the bytes that crossed between zones
    12 LB           new connections to a Service's external address:port -> a select group over the
                    nodes the load balancer's health checks consider healthy (all nodes when none is:
                    cloud load balancers fail open), less those taken out by hand (``controllers.rotation``);
                    each bucket passes the connection through, the client's address untouched: with
                    "node-port" delivery as an AWS NLB with instance targets, ct(commit, nat(dst=
                    nodeIP:nodePort)); with "vip" delivery (GCP passthrough, MetalLB BGP) still addressed to
                    the LB IP, ct(commit) with the node's index in ct_mark. Established packets -> 15
    15 DELIVER      an established connection whose ct_mark names a node goes there ("vip"); the rest -> 20
    20 ROUTE        the edge router: dec_ttl, rewrite MACs, forward to the node (its IP or its pod CIDR)
                    or the outside host

Flows are plain ``Flow``/``Group`` values; ``controllers.ofwire`` writes them as OpenFlow 1.3 messages and
``Flow.__str__`` prints them in ``ovs-ofctl`` syntax for tests and debugging.
"""

from __future__ import annotations

import functools
import ipaddress

from controllers import pipeline_dsr
from controllers.flows import (  # noqa: F401 (re-exported: the pipeline's vocabulary)
    CLUSTER_CIDR_MASK,
    CLUSTER_CIDR_NET,
    COOKIE_ARP,
    COOKIE_CLASSIFY,
    COOKIE_EDGE,
    COOKIE_ENDPOINT,
    COOKIE_FIREWALL,
    COOKIE_INTERNODE,
    COOKIE_LB,
    COOKIE_NAT_FAILED,
    COOKIE_OUTPUT,
    COOKIE_REJECT,
    COOKIE_ROUTING,
    COOKIE_SERVICE,
    COOKIE_SNAT,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    IP_PROTO,
    L4_DST,
    LB_ZONE,
    MASQ_MARK,
    NEW,
    NODE_HOST_PORT,
    REG_ZONE,
    T_AFFINITY,
    T_ARP,
    T_CLASSIFY,
    T_CONNTRACK,
    T_ENDPOINT,
    T_FIREWALL,
    T_OUTPUT,
    T_ROUTING,
    T_SERVICE,
    T_SNAT,
    T_STICKY,
    TO_NODE_BIT,
    U_CLASSIFY,
    U_DELIVER,
    U_INTERNODE,
    U_LB,
    U_ROUTE,
    UPLINK_PORT,
    Action,
    Ct,
    Flow,
    Group,
    Learn,
    Program,
    net_mask,
)
from controllers.services import compile_service_port, dnat_zone, group_id, snat_zone  # noqa: F401
from controllers.state import NodeInfo, ProxyState, ServicePortInfo

_net_mask = net_mask


def compile_state(state: ProxyState, lb_healthy: dict[str, list[str]] | None = None) -> dict[int, Program]:
    """The program of every bridge in the lab, keyed by datapath id.

    ``lb_healthy`` maps a LoadBalancer Service (``namespace/name``) to the nodes its load balancer's
    health checks pass; a Service missing from it is sent to every node."""
    programs = {node.dpid: compile_node(state, node) for node in state.nodes}
    programs[state.underlay.dpid] = compile_underlay(state, lb_healthy or {})
    return programs


def service_port_piece(node: NodeInfo, sp: ServicePortInfo, nodes: tuple[NodeInfo, ...] = ()) -> Program:
    """What one Service port adds to one node's program: ``compile_node`` is its program without
    Service ports plus one of these per port (its endpoints' hairpin flows, which other ports share,
    in ``Program.shared``). ``controllers.incremental`` recompiles only the pieces that changed;
    tests/unit/test_incremental.py checks the sum equals ``compile_node``."""
    prog = compile_service_port(node, sp, nodes)
    hairpins = _hairpins_of(dnat_zone(node), tuple([ep.ip for ep in sp.endpoints]))
    if not hairpins.keys().isdisjoint(prog.flows):
        raise ValueError(f"two flows with one match: {next(f for k, f in hairpins.items() if k in prog.flows)}")
    prog.shared.append(hairpins)
    return prog


@functools.lru_cache(maxsize=1 << 12)
def _hairpins_of(zone: int, ips: tuple[str, ...]) -> dict[tuple, Flow]:
    """The hairpin flows of a set of endpoint addresses on one node, by key: Service ports backed by
    the same pods share them (10,000 Services name a few hundred such sets), added in one update.
    (Read only: the dict is shared.)"""
    prog = Program()
    for ip in {ip for ip in ips}:
        _hairpin_flow(prog, zone, ip)
    return prog.flows


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
    to_firewall = ("ct", Ct(zone=dnat_zone(node), nat="", table=T_FIREWALL))
    prog.add(T_CONNTRACK, 60, {"eth_type": 0x0800, "ipv4_dst": node.ip},
             [("set_field", REG_ZONE, dnat_zone(node) | TO_NODE_BIT), to_firewall], COOKIE_CLASSIFY)
    prog.add(T_CONNTRACK, 50, {"eth_type": 0x0800}, [("set_field", REG_ZONE, dnat_zone(node)), to_firewall],
             COOKIE_CLASSIFY)
    for sp in state.service_ports:
        prog.merge(compile_service_port(node, sp, state.nodes))
    pipeline_dsr.node_flows(prog, node, state.nodes)
    prog.add(T_FIREWALL, 0, {}, [("goto", T_SERVICE)], COOKIE_FIREWALL)
    prog.add(T_SERVICE, 0, {}, [("goto", T_SNAT)], COOKIE_SERVICE)
    prog.add(T_AFFINITY, 0, {}, [], COOKIE_SERVICE)  # no learned flow: no endpoint remembered
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


def _hairpin(prog: Program, node: NodeInfo, service_ports) -> None:
    """KUBE-SEP-Y's ``-s podIP -j KUBE-MARK-MASQ``: after DNAT a hairpin connection has its own address
    as both source and destination. The mark is added to the connection the bucket committed, so its
    later packets are masqueraded as well. (A pod on another node can hairpin through this one too.)"""
    zone = dnat_zone(node)
    for ip in sorted({ep.ip for sp in service_ports for ep in sp.endpoints}, key=ipaddress.IPv4Address):
        _hairpin_flow(prog, zone, ip)
    prog.add(T_ENDPOINT, 0, {}, [("goto", T_SNAT)], COOKIE_ENDPOINT)


def _hairpin_flow(prog: Program, zone: int, ip: str) -> None:
    key, flow = _hairpin_of(zone, ip)
    if key in prog.flows:
        raise ValueError(f"two flows with one match: {flow}")
    prog.flows[key] = flow


@functools.lru_cache(maxsize=1 << 17)
def _hairpin_of(zone: int, ip: str) -> tuple[tuple, Flow]:
    """One endpoint address's hairpin flow on one node (by its DNAT zone, all it depends on), with its
    key; the same for every Service it backs, so it is built once (100,000 endpoint-Service pairs name
    100 pods), and looked up by an (int, str) key, not by hashing the whole node."""
    new_unmarked = {"ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL), "ct_mark": (0, MASQ_MARK)}
    mark = ("ct", Ct(zone=zone, commit=True, mark=MASQ_MARK, table=T_SNAT))
    match = {"eth_type": 0x0800, **new_unmarked, "ipv4_src": ip, "ipv4_dst": ip}
    flow = Flow(T_ENDPOINT, 100, tuple(match.items()), (mark,), COOKIE_ENDPOINT)
    return flow.key, flow


def _nat_failed(prog: Program, node: NodeInfo) -> None:
    """A bucket's DNAT can fail: Open vSwitch's userspace conntrack finds no free tuple when a client
    reuses a source port whose earlier connection it still holds. The packet then comes out new and
    still addressed to the node, and would reach the node's own stack, which answers RST ("connection
    refused"), a failure a real node never shows. netfilter drops a packet it cannot NAT; so does this."""
    prog.add(T_ENDPOINT, 90, {"eth_type": 0x0800, "ct_state": (CT_NEW | CT_TRK, CT_NEW | CT_TRK), "ipv4_dst": node.ip},
             [], COOKIE_NAT_FAILED)
    # The node's own processes reach their own address through here when it is not a Service (the
    # node's routing sends NodePort-range connections to its own IP into the bridge): back they go.
    prog.add(T_ENDPOINT, 95, {"eth_type": 0x0800, "in_port": NODE_HOST_PORT, "ipv4_dst": node.ip},
             [("goto", T_SNAT)], COOKIE_NAT_FAILED)


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
    # A zone's nodes share one port (its inter-zone link, topologies/zones.py): one classify flow a port.
    for port in sorted(set(ul.node_ports.values())):
        prog.add(U_CLASSIFY, 50, {"in_port": port}, [("goto", U_INTERNODE)], COOKIE_INTERNODE)
    for node in state.nodes:
        port = ul.node_ports[node.name]
        prog.add(U_INTERNODE, 100, {"eth_dst": node.mac}, [("output", port)], COOKIE_INTERNODE)
        to_node = [("dec_ttl",), ("set_field", "eth_src", ul.router_mac), ("set_field", "eth_dst", node.mac),
                   ("output", port)]
        prog.add(U_ROUTE, 100, {"eth_type": 0x0800, "ipv4_dst": node.ip}, to_node, COOKIE_EDGE)
        # "vip" delivery: an established connection goes to the node its conntrack entry names.
        prog.add(U_DELIVER, 100, {"eth_type": 0x0800, "ct_mark": node.index}, to_node, COOKIE_LB)
        # The router also knows each node's pod CIDR (as with BGP-advertised pod routes), so an outside
        # host can reach a pod directly: the plain routed path that NodePort's cost is measured against.
        prog.add(U_ROUTE, 90, {"eth_type": 0x0800, "ipv4_dst": _net_mask(node.pod_cidr)}, to_node, COOKIE_EDGE)
    for ext in state.externals:
        prog.add(U_ROUTE, 100, {"eth_type": 0x0800, "ipv4_dst": ext.ip},
                 [("dec_ttl",), ("set_field", "eth_src", ul.external_gateway_mac),
                  ("set_field", "eth_dst", ext.mac), ("output", ext.ofport)], COOKIE_EDGE)
    for table in (U_CLASSIFY, U_INTERNODE, U_ROUTE):
        prog.add(table, 0, {}, [], COOKIE_EDGE)
    prog.add(U_DELIVER, 0, {}, [("goto", U_ROUTE)], COOKIE_LB)  # "node-port": its NAT already chose
    return prog


def _load_balancers(prog: Program, state: ProxyState, lb_healthy: dict[str, list[str]]) -> None:
    """The cloud load balancer: per Service port, new connections to its external address are spread
    evenly over healthy nodes (per node, not per pod: it does not know about pods), each bucket DNATing
    to its nodeIP:nodePort; conntrack in ``LB_ZONE`` keeps each connection on its node (a draining node
    keeps the connections it has) and reverses the NAT."""
    for sp in state.service_ports:
        _load_balancer(prog, state, sp, lb_healthy)
    prog.add(U_LB, 50, {"ct_state": (CT_TRK, CT_TRK | CT_NEW | CT_RPL)}, [("goto", U_DELIVER)], COOKIE_LB)
    prog.add(U_LB, 0, {}, [("goto", U_ROUTE)], COOKIE_LB)


def _load_balancer(prog: Program, state: ProxyState, sp: ServicePortInfo, lb_healthy: dict[str, list[str]]) -> None:
    if sp.service_type != "LoadBalancer" or not sp.load_balancer_ip:
        return
    healthy = set(lb_healthy.get(sp.service_key, ())) or {n.name for n in state.nodes}
    if state.underlay.lb_delivery == "vip":  # passthrough: the node is remembered, the address kept
        buckets = tuple((("ct", Ct(zone=LB_ZONE, commit=True, mark=n.index, table=U_DELIVER)),)
                        for n in state.nodes if n.name in healthy)
    else:
        buckets = tuple(
            (("ct", Ct(zone=LB_ZONE, commit=True, nat=f"dst={n.ip}:{sp.node_port}", table=U_ROUTE)),)
            for n in state.nodes if n.name in healthy)
    gid = group_id(sp.id, local=False)
    prog.groups[gid] = Group(gid, buckets)
    match = {"eth_type": 0x0800, "ct_state": NEW, "ipv4_dst": sp.load_balancer_ip,
             "ip_proto": IP_PROTO[sp.protocol], L4_DST[sp.protocol]: sp.port}
    # loadBalancerSourceRanges: the cloud's firewall in front of the load balancer (a GCE firewall
    # rule, an AWS security group) lets only those sources in.
    for cidr in sp.source_ranges:
        prog.add(U_LB, 110, {**match, "ipv4_src": net_mask(cidr)}, [("group", gid)], COOKIE_LB)
    prog.add(U_LB, 100, match, [] if sp.source_ranges else [("group", gid)],
             COOKIE_FIREWALL if sp.source_ranges else COOKIE_LB)
