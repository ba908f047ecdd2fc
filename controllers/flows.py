"""The values a bridge's program is made of: tables, cookies, registers, flows, groups (pure data).

``controllers.pipeline`` and ``controllers.services`` build them, ``controllers.ofwire`` writes them as
OpenFlow 1.3 messages, and ``Flow.__str__``/``Group.__str__`` print them in ``ovs-ofctl`` syntax for
tests and debugging. The table numbers follow kube-proxy's iptables chains (see the pipeline docstring).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

# Node bridge tables.
T_CLASSIFY = 0
T_ARP = 5
T_DSR = 7  # a DSR packet from another entry node, its frontend label popped: restore the frontend, DNAT
T_CONNTRACK = 10
T_FIREWALL = 15  # KUBE-FW / KUBE-PROXY-FIREWALL: loadBalancerSourceRanges
T_SERVICE = 20  # KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXT: which chain, masquerade or not
T_AFFINITY = 21  # learned sessionAffinity flows (iptables' ``recent`` lists), looked up by resubmit
T_STICKY = 22  # the endpoint a learned flow named, if the chain still has it; else the chain's group
T_UDP_PICK = 23  # UDP chains: the endpoint by the client's source port (see controllers.services)
T_MAGLEV = 24  # Maglev chains: one flow per (chain, lookup table slot) (see controllers.pipeline_maglev)
T_REMEMBER = 25  # after an affinity chain's DNAT: learn (or refresh) client -> endpoint
T_ENDPOINT = 30
T_SNAT = 40
T_ROUTING = 50
T_OUTPUT = 60

# Underlay bridge tables.
U_CLASSIFY = 0
U_INTERNODE = 10
U_LB = 12
U_DELIVER = 15  # established connections of the load balancer, to the node its ct_mark names ("vip")
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
COOKIE_FIREWALL = 0x15
COOKIE_AFFINITY = 0x16  # flows learned for sessionAffinity (the controller never installs these)
COOKIE_CLUSTER_IP = 0x17
COOKIE_DSR = 0x18

# conntrack state bits (ovs-fields(7)).
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NEW = (CT_NEW | CT_TRK, CT_NEW | CT_TRK | CT_RPL)  # first packet of a connection, original direction
MASQ_MARK = 0x1  # ct_mark bit: this connection is masqueraded (KUBE-MARK-MASQ's 0x4000)
# ct_mark of a DSR connection on its entry node: DSR_MARK, and its frontend's label in bits 8-27
# (controllers.pipeline_dsr); 28 bits of reg0 are committed into ct_mark by a DSR Service's buckets.
DSR_MARK = 0x2
DSR_LABEL_SHIFT, DSR_LABEL_BITS = 8, 20
ETH_MPLS = 0x8847

# Registers. reg0 bit 0: KUBE-MARK-MASQ for the connection being chosen (committed into ct_mark by the
# endpoint's DNAT); reg3: output port; reg4: the chain (group) being walked, reg5/reg6: the endpoint
# (IP, port) a learned affinity flow names, reg7: the Service port (the affinity key's first half);
# reg1: the Maglev lookup table slot a connection hashed to; reg2: on a DSR backend's node, the frontend
# label the packet came with.
REG_MASQ, REG_OUT, REG_CHAIN, REG_EP_IP, REG_EP_PORT, REG_SVC = "reg0", "reg3", "reg4", "reg5", "reg6", "reg7"
REG_SLOT = "reg1"
# reg8[0..15]: the node's DNAT zone, set once per packet in T_CONNTRACK; the endpoint DNATs of a group's
# buckets take their zone from it, so one Service's group is the same on every node, compiled and
# packed once for all of them (at 10,000 Services, a million buckets were built ten times over).
REG_ZONE = "reg8"
# reg8 bit 16, set beside the zone in T_CONNTRACK: the packet is addressed to this node's own IP. The
# nodePort flows match it, not the address (nftables mode's ``ip daddr @nodeport-ips`` before its
# ``service-nodeports`` map, iptables' ``addrtype --dst-type LOCAL`` before KUBE-NODEPORTS), so a
# Service's nodePort flow is one object on every node, built and packed once; with the address in
# the match it was 100,000 distinct flows at 10,000 Services on 10 nodes, a fifth of an install.
TO_NODE_BIT = 1 << 16
TO_NODE = {REG_ZONE: (TO_NODE_BIT, TO_NODE_BIT)}
REG_DSR = "reg2"

UPLINK_PORT = 1
NODE_HOST_PORT = 2
UNDERLAY_NODE_PORT_BASE = 100

CLUSTER_CIDR_NET, CLUSTER_CIDR_MASK = "10.244.0.0", "255.255.0.0"  # --cluster-cidr
LOCALHOST = "127.0.0.1"
L4_DST = {"TCP": "tcp_dst", "UDP": "udp_dst"}
L4_SRC = {"TCP": "tcp_src", "UDP": "udp_src"}
IP_PROTO = {"TCP": 6, "UDP": 17}


@dataclass(frozen=True)
class Ct:
    """The ``ct`` action. ``nat`` is None (no NAT), "" (apply existing NAT) or ``dst=ip:port``/``src=ip``;
    ``mark`` sets ct_mark at commit, ``mark_from`` copies that register's low ``mark_bits`` bits (bit 0
    unless told) into ct_mark's."""

    zone: int | str  # a zone, or the register whose bits 0-15 hold it (REG_ZONE)
    table: int | None = None
    commit: bool = False
    nat: str | None = None
    mark: int | None = None
    mark_from: str | None = None
    mark_bits: int = 1


@dataclass(frozen=True)
class Learn:
    """The ``learn`` action: add (or refresh) a flow in ``table``. ``specs`` are ``("match", field)``
    (the new flow matches this packet's value of the field), ``("match", field, value)`` and
    ``("load", register, field)`` (the new flow loads this packet's value of ``field`` into the register)."""

    table: int
    specs: tuple[tuple, ...]
    idle_timeout: int = 0
    hard_timeout: int = 0
    priority: int = 100
    cookie: int = 0


@dataclass(frozen=True)
class Multipath:
    """The Nicira ``multipath`` action: hash the packet's ``fields`` with ``basis``, reduce the hash to
    ``0 .. n_links - 1`` by ``algorithm`` and write it into the low ``bits`` bits of ``dst``.
    ``symmetric_l3l4+udp`` hashes IP addresses, protocol and TCP/UDP ports, never MAC addresses (which
    differ from node to node), so one connection hashes alike on every node."""

    n_links: int
    dst: str
    fields: str = "symmetric_l3l4+udp"
    algorithm: str = "modulo_n"
    basis: int = 0
    arg: int = 0
    bits: int = 16


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
    """Everything one bridge should hold (or a fragment of it: one Service port's chains)."""

    flows: dict[tuple, Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    # A fragment's flows held in common with other fragments, as the very dicts they share (read only):
    # an endpoint set's hairpin flows, one dict for every Service port those pods back. Counted once per
    # dict (``controllers.incremental``), not once per flow per fragment: 10,000 Services held 1,000,000.
    shared: list[dict[tuple, Flow]] = field(default_factory=list)

    def add(self, table: int, priority: int, match: dict, actions: list, cookie: int) -> None:
        fields = tuple(match.items())
        key = (table, priority, fields)  # Flow.key, built once (100,000s of adds per install)
        flow = Flow(table, priority, fields, tuple(actions), cookie)
        if key in self.flows:
            raise ValueError(f"two flows with one match: {flow}")
        self.flows[key] = flow

    def merge(self, other: Program) -> None:
        for key, flow in other.flows.items():
            if key in self.flows:
                raise ValueError(f"two flows with one match: {flow}")
            self.flows[key] = flow
        for gid, group in other.groups.items():
            if gid in self.groups and self.groups[gid] != group:
                raise ValueError(f"two groups with id {gid}")
            self.groups[gid] = group

    def dump(self) -> list[str]:
        return sorted(str(f) for f in self.flows.values()) + sorted(str(g) for g in self.groups.values())


def net_mask(cidr: str) -> tuple[str, str]:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address), str(net.netmask)


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


# --- ovs-ofctl text -------------------------------------------------------------------------------------

_OFCTL_FIELDS = {"eth_type": "dl_type", "ipv4_dst": "nw_dst", "ipv4_src": "nw_src", "ip_proto": "nw_proto",
                 "tcp_dst": "tp_dst", "udp_dst": "tp_dst", "udp_src": "tp_src", "tcp_src": "tp_src",
                 "eth_dst": "dl_dst", "eth_src": "dl_src"}


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
    if key in ("reg5",) and isinstance(value, int):  # an endpoint address
        return f"{name}={ipaddress.IPv4Address(value)}"
    return f"{name}={value}"


def _fmt_learn(learn: Learn) -> str:
    parts = [f"table={learn.table}"]
    if learn.idle_timeout:
        parts.append(f"idle_timeout={learn.idle_timeout}")
    if learn.hard_timeout:
        parts.append(f"hard_timeout={learn.hard_timeout}")
    parts += [f"priority={learn.priority}", f"cookie={learn.cookie:#x}"]
    for spec in learn.specs:
        if spec[0] == "match" and len(spec) == 2:
            parts.append(f"{spec[1]}")
        elif spec[0] == "match":
            parts.append(f"{spec[1]}={spec[2]:#x}")
        else:
            parts.append(f"load:{spec[2]}->{spec[1]}")
    return f"learn({','.join(parts)})"


def _fmt_action(action: Action) -> str:
    kind = action[0]
    if kind == "output":
        return "IN_PORT" if action[1] == "in_port" else f"output:{action[1]}"
    if kind == "set_field":
        value = action[2]
        return f"set_field:{value:#x}->{action[1]}" if isinstance(value, int) else f"set_field:{value}->{action[1]}"
    if kind == "move":
        if len(action) == 6:  # ("move", src, dst, n_bits, src_ofs, dst_ofs)
            n, so, do = action[3], action[4], action[5]
            return f"move:{action[1]}[{so}..{so + n - 1}]->{action[2]}[{do}..{do + n - 1}]"
        return f"move:{action[1]}->{action[2]}"
    if kind == "push_mpls":
        return f"push_mpls:{action[1]:#06x}"
    if kind == "pop_mpls":
        return f"pop_mpls:{action[1]:#06x}"
    if kind == "goto":
        return f"goto_table:{action[1]}"
    if kind == "resubmit":
        return f"resubmit(,{action[1]})"
    if kind == "group":
        return f"group:{action[1]}"
    if kind == "dec_ttl":
        return "dec_ttl"
    if kind == "controller":
        return "CONTROLLER"
    if kind == "learn":
        return _fmt_learn(action[1])
    if kind == "multipath":
        mp: Multipath = action[1]
        return (f"multipath({mp.fields},{mp.basis},{mp.algorithm},{mp.n_links},{mp.arg},"
                f"{mp.dst}[0..{mp.bits - 1}])")
    if kind == "ct":
        ct: Ct = action[1]
        zone = f"NXM_NX_{ct.zone.upper()}[0..15]" if isinstance(ct.zone, str) else ct.zone
        parts = (["commit"] if ct.commit else []) + [f"zone={zone}"]
        if ct.nat is not None:
            parts.append(f"nat({ct.nat})" if ct.nat else "nat")
        if ct.mark is not None:
            parts.append(f"exec(set_field:{ct.mark:#x}->ct_mark)")
        if ct.mark_from is not None and ct.mark_bits == 1:
            parts.append(f"exec(move:{ct.mark_from}[0]->ct_mark[0])")
        elif ct.mark_from is not None:
            parts.append(f"exec(move:{ct.mark_from}[0..{ct.mark_bits - 1}]->ct_mark[0..{ct.mark_bits - 1}])")
        if ct.table is not None:
            parts.append(f"table={ct.table}")
        return f"ct({','.join(parts)})"
    raise ValueError(f"unknown action {action!r}")
