"""Stale UDP conntrack: what kube-proxy deletes when a UDP endpoint goes away.

A UDP "connection" has no end: its conntrack entry lives as long as datagrams keep coming (30 s, or
120 s once seen both ways), so a client that keeps sending from one source port to a Service would keep
being DNATed to an endpoint that no longer exists, a black hole; TCP connections end, so they need no
such care. kube-proxy therefore deletes the conntrack entries of every UDP endpoint that stops being
used (``conntrack -D -p udp --reply-src <endpoint>``; its ``pkg/proxy/conntrack``), after the new rules
are in place. Here the entries live in each node's conntrack zones of the one Open vSwitch datapath:
the DNAT zone (whose reply tuple comes from the endpoint) and the SNAT zone (whose original tuple goes
to it). ``stale_udp_endpoints`` is the decision; ``flush_commands`` the ``ovs-appctl`` calls that do it.
"""

from __future__ import annotations

from controllers.services import dnat_zone, snat_zone, usable
from controllers.state import ProxyState


def stale_udp_endpoints(old: ProxyState | None, new: ProxyState) -> set[tuple[str, int]]:
    """(IP, port) of UDP endpoints that the old state used and the new one does not."""
    if old is None:
        return set()

    def used(state: ProxyState) -> set[tuple[str, int]]:
        return {(e.ip, e.port) for sp in state.service_ports if sp.protocol == "UDP"
                for e in set(usable(sp.endpoints)) | {e for n in state.nodes for e in usable(sp.endpoints, n.name)}}
    return used(old) - used(new)


def flush_commands(state: ProxyState, stale: set[tuple[str, int]]) -> list[list[str]]:
    commands = []
    for ip, port in sorted(stale):
        for node in state.nodes:
            commands.append(["ovs-appctl", "dpctl/flush-conntrack", f"zone={dnat_zone(node)}", "",
                             f"ct_nw_src={ip},ct_nw_proto=17,ct_tp_src={port}"])
            commands.append(["ovs-appctl", "dpctl/flush-conntrack", f"zone={snat_zone(node)}",
                             f"ct_nw_dst={ip},ct_nw_proto=17,ct_tp_dst={port}"])
    return commands
