"""Which of the load balancer's connections a reroute moves, read from its conntrack (pure).

The load balancer's data plane keeps each connection on its node with a conntrack entry in the
``LB_ZONE`` of the underlay (``controllers.pipeline``): with "node-port" delivery its NAT to
nodeIP:nodePort names the node (the reply tuple's source), with "vip" delivery its ct_mark holds the
node's index. When a target leaves the rotation and its live connections are moved to other nodes (as
routers' ECMP rehashes flows when MetalLB's BGP withdraws a node's next hop, its documented limitation),
those entries are deleted: the next packet of each is new to the load balancer, which picks another
node from the rotation (Open vSwitch's conntrack accepts a mid-flow TCP packet as new; an ECMP hash
keeps no state at all).

``dpctl/dump-conntrack`` lines look like ``tcp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40512,
dport=80),reply=(src=...,dst=...,sport=...,dport=...),zone=3000,mark=2,protoinfo=(state=ESTABLISHED)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TUPLE = re.compile(r"(orig|reply)=\(src=([\d.]+),dst=([\d.]+),sport=(\d+),dport=(\d+)")
_PROTO_NUMBERS = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class Entry:
    protocol: str  # "tcp" | "udp"
    orig: Tuple
    reply: Tuple
    mark: int = 0
    state: str | None = None  # TCP's conntrack state (ESTABLISHED, TIME_WAIT, ...); None for UDP

    @property
    def live(self) -> bool:
        """Still carrying a connection: UDP's entries, TCP's until it closes."""
        return self.state in (None, "ESTABLISHED", "SYN_SENT", "SYN_RECV")


def parse_conntrack(text: str) -> list[Entry]:
    entries = []
    for line in text.splitlines():
        protocol = line.split(",", 1)[0].strip()
        tuples = {kind: Tuple(src, dst, int(sport), int(dport))
                  for kind, src, dst, sport, dport in _TUPLE.findall(line)}
        if protocol not in _PROTO_NUMBERS or len(tuples) != 2:
            continue
        mark = re.search(r"\bmark=(\d+)", line)
        state = re.search(r"\bstate=(\w+)", line)
        entries.append(Entry(protocol, tuples["orig"], tuples["reply"], int(mark.group(1)) if mark else 0,
                             state.group(1) if state else None))
    return entries


def on_node(entries: list[Entry], protocol: str, lb_ip: str, port: int, delivery: str, node_index: int,
            node_ip: str, node_port: int) -> list[Entry]:
    """The Service port's live connections the load balancer has sent to one node."""
    def sent_there(e: Entry) -> bool:
        if delivery == "vip":
            return e.mark == node_index
        return (e.reply.src, e.reply.sport) == (node_ip, node_port)
    return [e for e in entries if e.protocol == protocol.lower() and (e.orig.dst, e.orig.dport) == (lb_ip, port)
            and e.live and sent_there(e)]


def flush_argv(zone: int, e: Entry) -> list[str]:
    """Delete one entry, by its zone and original 5-tuple."""
    o = e.orig
    return ["ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}",
            f"ct_nw_src={o.src},ct_nw_dst={o.dst},ct_nw_proto={_PROTO_NUMBERS[e.protocol]},"
            f"ct_tp_src={o.sport},ct_tp_dst={o.dport}"]
