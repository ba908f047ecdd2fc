"""A Maglev chain's flows: the endpoint by the connection's hash, from a table every node shares (pure).

Where a ``random`` chain ends in a select group (Open vSwitch picks a bucket per connection, node by
node), a ``maglev`` chain hashes the connection's 5-tuple with the Nicira ``multipath`` action
(``symmetric_l3l4+udp``: IP addresses, protocol, TCP or UDP ports; no MAC address, so the hash is the
same on every node), takes it modulo M into ``REG_SLOT`` and looks the slot up in ``T_MAGLEV``: one flow
per (chain, slot), each doing the slot's endpoint's KUBE-SEP DNAT. The table (``controllers.maglev``)
depends only on the chain's endpoints, so a connection entering any node that has the same endpoints
reaches the same one, and a conntrack entry on the first node is not needed to find it again: what lets
a connection survive a load balancer moving it to another node (with the Service address kept, and no
SNAT state on the way back). UDP is hashed with its ports too, so each client socket is a "connection",
as kube-proxy's per-conntrack-entry choice has it.

Like Cilium (which hashes ``saddr, daddr, ports, protocol``), the destination is part of the hash: a
connection to nodeIP:nodePort hashes differently on each node, as in Cilium; one to the same load
balancer address or clusterIP hashes alike wherever it enters.
"""

from __future__ import annotations

from collections.abc import Callable

from controllers import maglev
from controllers.flows import COOKIE_SERVICE, REG_CHAIN, REG_SLOT, T_MAGLEV, Action, Multipath, Program
from controllers.state import EndpointInfo

MAGLEV = "maglev"
HASH_BASIS = 0  # the multipath hash's basis: the same on every node, like Cilium's maglev.hashSeed


def maglev_pick(gid: int) -> list[Action]:
    """Hash the connection to a slot of chain ``gid``'s table and look it up."""
    mp = Multipath(n_links=maglev.TABLE_SIZE, dst=REG_SLOT, basis=HASH_BASIS)
    return [("set_field", REG_CHAIN, gid), ("multipath", mp), ("goto", T_MAGLEV)]


def maglev_chain(prog: Program, gid: int, endpoints, to: Callable[[EndpointInfo], list[Action]]) -> None:
    """Chain ``gid``'s table: slot -> ``to(endpoint)`` (the endpoint's DNAT), one flow per slot."""
    by_identity = {maglev.identity(e.ip, e.port): e for e in endpoints}
    actions = {name: to(e) for name, e in by_identity.items()}
    for slot, name in enumerate(maglev.lookup_table(by_identity, maglev.TABLE_SIZE)):
        # (ct nat in a flow needs the IP prerequisite)
        prog.add(T_MAGLEV, 100, {"eth_type": 0x0800, REG_CHAIN: gid, REG_SLOT: slot}, actions[name], COOKIE_SERVICE)
