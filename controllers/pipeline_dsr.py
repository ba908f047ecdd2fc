"""Direct server return (Cilium's ``loadBalancer.mode=dsr``) on the node bridges (pure: data in, flows out).

Under DSR a north-south connection (to nodeIP:nodePort or to a load balancer address) is DNATed by its
entry node to the endpoint the Service's group picks, as under SNAT, but never masqueraded: the pod sees
the client's address, and its reply goes from the backend's node straight to the client through the
router, never back through the entry node. For that the backend's node must know the *frontend* (the
address:port the client reached), to give the reply that source. Cilium carries it to the backend's
node in an IPv4 option or a Geneve option. Here::

    entry node                                           backend's node
    T_SERVICE  new to a DSR frontend: reg0 = DSR_MARK |   T_CLASSIFY  MPLS from the uplink: the label
               label << 8, the Service's group: its                   -> reg2, pop it, -> T_DSR
               bucket DNATs to the endpoint and commits  T_DSR       per (frontend, local endpoint):
               reg0[0..27] into ct_mark                              set the destination back to the
    T_ROUTING  a DSR connection (ct_mark) whose endpoint              frontend, ct(commit, nat(dst=
               is on another node: push an MPLS header                pod:port)) in this node's zone:
               whose label is ct_mark[8..27], to that                 its conntrack reverses replies to
               node (every packet of the connection)                  the frontend, which leave by the
                                                                      default route, to the client

**The header is the lab's stand-in for Cilium's DSR option.** Open vSwitch can do Geneve (with TLV
options) or IPIP, but in the userspace datapath a tunnel port needs routed IP addresses on an OVS
bridge port (``ovs/route``, ``tnl/arp``, tunnel termination on the bridge's LOCAL port), with one route
table for the whole ``ovs-vswitchd``: every emulated node would need an address in the machine's root
namespace, and one table could not tell the nodes' tunnels apart. So the frontend travels as one pushed
MPLS label (4 bytes, like Cilium's 8-byte IPv4 option it is overhead on every request packet between
nodes, and visible in the underlay's byte counts); its 20 bits name the frontend:
``entry << 12 | nodePort mod 4096``, ``entry`` 0 for the Service's load balancer address and the entry
node's index for its nodeIP:nodePort. The nodePort names the Service port (nodePorts are unique; a
range of at most 4,096 ports, as the default 30000-32767 is, keeps them unique mod 4096); the backend's
flows also match the endpoint and protocol.

Cilium puts the option on the SYN only and keeps the frontend in the backend's conntrack; here every
packet carries it, because this backend restores the frontend before its conntrack lookup. The
consequence Cilium users meet (cilium/cilium#27730) is the same: a connection moved mid-flow to another
entry node is DNATed afresh there, and unless that node picks the same endpoint (Maglev does), another
pod's kernel answers its first packet with a reset.

The entry node's conntrack sees one direction only (the replies bypass it): Open vSwitch's userspace
conntrack keeps such a connection in SYN_SENT and forgets it after 30 s; its next packet then walks the
Service again, and the select group, which hashes the packet, picks the same endpoint on the same node.
"""

from __future__ import annotations

from controllers.flows import (
    COOKIE_DSR,
    CT_RPL,
    CT_TRK,
    DSR_LABEL_BITS,
    DSR_LABEL_SHIFT,
    DSR_MARK,
    ETH_MPLS,
    IP_PROTO,
    L4_DST,
    NODE_HOST_PORT,
    REG_DSR,
    T_CLASSIFY,
    T_DSR,
    T_OUTPUT,
    T_ROUTING,
    UPLINK_PORT,
    Ct,
    Program,
    net_mask,
)
from controllers.state import EndpointInfo, NodeInfo, ServicePortInfo

LB_ENTRY = 0  # the label's entry field for the load balancer's address
NODE_PORT_BITS = 12
MARK_BITS = DSR_LABEL_SHIFT + DSR_LABEL_BITS  # how much of reg0 a DSR bucket commits into ct_mark


def frontend_label(sp: ServicePortInfo, entry: int = LB_ENTRY) -> int:
    """The 20-bit label naming a frontend: ``entry`` is LB_ENTRY or the entry node's index."""
    if not 0 <= entry < 1 << (DSR_LABEL_BITS - NODE_PORT_BITS):
        raise ValueError(f"node index {entry} does not fit a DSR label")
    return entry << NODE_PORT_BITS | (sp.node_port & ((1 << NODE_PORT_BITS) - 1))


def is_dsr_entry(sp: ServicePortInfo, extra: dict) -> bool:
    """Only north-south entries use DSR (as in Cilium), and only for clients that are not the node itself
    (127.0.0.1:nodePort and the node's own connections stay masqueraded)."""
    return sp.forwarding == "dsr" and bool(sp.node_port) and extra.get("in_port") != NODE_HOST_PORT


def entry_mark(sp: ServicePortInfo, node: NodeInfo, ip: str) -> int:
    """reg0 for a new connection entering by ``ip``: DSR, and the label of its frontend."""
    entry = LB_ENTRY if ip == sp.load_balancer_ip else node.index
    return DSR_MARK | frontend_label(sp, entry) << DSR_LABEL_SHIFT


def node_flows(prog: Program, node: NodeInfo, nodes) -> None:
    """The Service-independent part (every node has it, whatever the mode; without a DSR Service it never
    matches): pop the label of what arrives, push it on what leaves towards another node's pod."""
    prog.add(T_CLASSIFY, 150, {"in_port": UPLINK_PORT, "eth_type": ETH_MPLS},
             [("move", "mpls_label", REG_DSR, DSR_LABEL_BITS), ("pop_mpls", 0x0800), ("goto", T_DSR)], COOKIE_DSR)
    prog.add(T_DSR, 0, {}, [], COOKIE_DSR)  # a label no local endpoint answers to
    dsr_out = {"ct_state": (CT_TRK, CT_TRK | CT_RPL), "ct_mark": (DSR_MARK, DSR_MARK)}
    for other in nodes:
        if other.name == node.name:
            continue
        prog.add(T_ROUTING, 105, {"eth_type": 0x0800, **dsr_out, "ipv4_dst": net_mask(other.pod_cidr)},
                 [("set_field", "eth_src", node.mac), ("set_field", "eth_dst", other.mac), ("dec_ttl",),
                  ("push_mpls", ETH_MPLS),
                  ("move", "ct_mark", "mpls_label", DSR_LABEL_BITS, DSR_LABEL_SHIFT, 0),
                  ("set_field", "reg3", UPLINK_PORT), ("goto", T_OUTPUT)], COOKIE_DSR)


def backend_flows(prog: Program, node: NodeInfo, sp: ServicePortInfo, endpoints: tuple[EndpointInfo, ...],
                  nodes, zone: int) -> None:
    """One flow per (frontend, endpoint on this node): the packet's destination becomes the frontend again,
    then this node's conntrack DNATs it to the endpoint, so the reply leaves with the frontend as source."""
    if sp.forwarding != "dsr" or not sp.node_port:
        return
    frontends = [(frontend_label(sp, n.index), n.ip, sp.node_port) for n in nodes if n.name != node.name]
    if sp.load_balancer_ip:
        frontends.append((frontend_label(sp), sp.load_balancer_ip, sp.port))
    l4 = L4_DST[sp.protocol]
    for e in (e for e in endpoints if e.node == node.name):
        for label, ip, port in frontends:
            prog.add(T_DSR, 100, {"eth_type": 0x0800, REG_DSR: label, "ipv4_dst": e.ip,
                                  "ip_proto": IP_PROTO[sp.protocol], l4: e.port},
                     [("set_field", "ipv4_dst", ip), ("set_field", l4, port),
                      ("ct", Ct(zone=zone, commit=True, nat=f"dst={e.ip}:{e.port}", table=T_ROUTING))], COOKIE_DSR)
