"""One Service port's chains on one node, as kube-proxy's iptables proxier writes them (pure).

``compile_service_port(node, sp)`` returns the flows and groups of one Service port on one node, so a
controller may cache them per (node, Service port) and recompile only what changed. The chains:

- ``KUBE-SERVICES``: ``-d clusterIP --dport port -j KUBE-SVC-X`` (``KUBE-SVL-X`` with
  ``internalTrafficPolicy: Local``); ``-d lbIP --dport port -j KUBE-EXT-X`` (through ``KUBE-FW-X`` when
  ``loadBalancerSourceRanges`` is set), so a pod or node reaching a load balancer's address is served by
  its own node and never goes through the cloud; last, ``addrtype LOCAL -j KUBE-NODEPORTS``: the node's
  IP and, as in iptables mode, 127.0.0.1 from the node itself.
- ``KUBE-SVC-X``/``KUBE-SVL-X`` (the clusterIP rule): ``! -s clusterCIDR -j KUBE-MARK-MASQ`` (a node's
  own processes and off-cluster clients of the VIP are masqueraded), then the endpoint choice.
- ``KUBE-EXT-X``: Cluster masquerades everything; Local sends pod-sourced traffic to all endpoints
  unmasqueraded, node-sourced (``addrtype --src-type LOCAL``: here, what enters from the node's own
  stack) masqueraded to all endpoints, and the rest to local endpoints only, or drops it.
- Endpoints as ``CategorizeEndpoints`` picks them: the ready ones; when there are none, the serving
  terminating ones (KEP-1669), separately for the cluster-wide and the node-local set. No usable
  endpoint anywhere: REJECT (ICMP port unreachable, from the controller); none local where Local asks
  for local ones: DROP.
- The choice is a select group with one bucket per endpoint (its ``KUBE-SEP`` DNAT); the KUBE-MARK-MASQ
  decision travels in reg0 and is committed into ct_mark by the bucket. With ``sessionAffinity:
  ClientIP`` every choice also ``learn``s a flow keyed on (Service port, client IP) naming the endpoint,
  with ``idle_timeout = timeoutSeconds`` (in ``T_REMEMBER``, after the DNAT, from the packet's new
  destination): the next new connection from that client finds it (by resubmit to ``T_AFFINITY``) and
  goes to the same endpoint while the chain still has it (``T_STICKY``). Only new
  connections walk these tables, so the timeout runs from the client's last new connection: iptables'
  ``recent --rcheck --seconds T`` with ``--set`` on each, a sliding window. The key is the Service port,
  not the entry, as kube-proxy's ``recent`` lists are per endpoint: a client keeps its endpoint whether
  it comes by clusterIP, nodePort or load balancer address, on one node.
- ``algorithm: maglev`` (Cilium's ``loadBalancer.algorithm``): the choice is a Maglev lookup table
  instead of the group, the same on every node (``controllers.pipeline_maglev``); affinity still comes first.
- UDP: Open vSwitch's select groups hash UDP by addresses only (its symmetric L3/L4 hash leaves UDP
  ports out), which would send every datagram of one client to one endpoint. kube-proxy's choice is
  random per new conntrack entry, i.e. per client socket, so UDP chains choose by the low bits of the
  client's source port instead (random for ephemeral ports): ``udp_slots(n)`` slots, one flow each, in
  ``T_UDP_PICK``, dealt round-robin to the endpoints (at most 1/16 of a share of bias).
"""

from __future__ import annotations

from controllers import pipeline_dsr as dsr
from controllers.flows import (
    CLUSTER_CIDR_MASK,
    CLUSTER_CIDR_NET,
    COOKIE_AFFINITY,
    COOKIE_CLUSTER_IP,
    COOKIE_DROP_LOCAL,
    COOKIE_FIREWALL,
    COOKIE_REJECT,
    COOKIE_SERVICE,
    IP_PROTO,
    L4_DST,
    L4_SRC,
    LOCALHOST,
    NEW,
    NODE_HOST_PORT,
    REG_CHAIN,
    REG_EP_IP,
    REG_EP_PORT,
    REG_MASQ,
    REG_SVC,
    REG_ZONE,
    T_AFFINITY,
    T_ENDPOINT,
    T_FIREWALL,
    T_REMEMBER,
    T_SERVICE,
    T_STICKY,
    T_UDP_PICK,
    TO_NODE,
    Action,
    Ct,
    Group,
    Learn,
    Program,
    ip_int,
    net_mask,
)
from controllers.memo import LIMIT, ByIdentity
from controllers.pipeline_maglev import MAGLEV, maglev_chain, maglev_pick
from controllers.state import EndpointInfo, NodeInfo, ServicePortInfo
from controllers.topology import by_topology

# (group id, table, mark bits, the endpoints' ids) -> (the endpoints, their Group): see _Chooser._group
_GROUPS: dict[tuple, tuple[tuple, Group]] = {}
AFFINITY_MAX_TIMEOUT = 65535  # an OpenFlow idle_timeout is 16 bits (Antrea caps it the same way)
POD_SOURCE = {"ipv4_src": (CLUSTER_CIDR_NET, CLUSTER_CIDR_MASK)}


def dnat_zone(node: NodeInfo) -> int:
    return 1000 + node.index


def snat_zone(node: NodeInfo) -> int:
    return 2000 + node.index


def group_id(sp_id: int, local: bool) -> int:
    """Stable ids per Service port: its KUBE-SVC group (all endpoints) and its KUBE-SVL group (local ones)."""
    return sp_id * 2 + (1 if local else 0)


def udp_slots(endpoints: int) -> int:
    """How many source-port slots a UDP chain deals out: a power of two, 16 or more per endpoint."""
    slots = 16
    while slots < 16 * endpoints and slots < 4096:
        slots *= 2
    return slots


def usable(endpoints, node: str | None = None, here: NodeInfo | None = None) -> tuple[EndpointInfo, ...]:
    """kube-proxy's ``CategorizeEndpoints``: the ready endpoints (of ``node`` only, if given; else, seen
    from node ``here``, those its topology hints leave, ``controllers.topology``); if there are none,
    the serving terminating ones (ProxyTerminatingEndpoints, KEP-1669)."""
    eps = endpoints if node is None else [e for e in endpoints if e.node == node]
    ready = tuple([e for e in eps if e.ready])  # (a list first: a generator costs more, 200,000 calls)
    if node is None and here is not None:
        ready = by_topology(ready, eps, here.name, here.zone)
    return ready or tuple(e for e in eps if e.serving and e.terminating)


def new_to(sp: ServicePortInfo, ip: str | None, port: int, **extra) -> dict:
    """The first packet of a connection to ``ip:port`` over the Service port's protocol (``ip`` None: to
    this node's own IP, matched as ``TO_NODE``)."""
    to = TO_NODE if ip is None else {"ipv4_dst": ip}
    return {"eth_type": 0x0800, "ct_state": NEW, **extra, **to, "ip_proto": IP_PROTO[sp.protocol],
            L4_DST[sp.protocol]: port}


def compile_service_port(node: NodeInfo, sp: ServicePortInfo, nodes: tuple[NodeInfo, ...] = ()) -> Program:
    """``nodes``: every node of the cluster (a DSR backend answers for every node's nodeIP:nodePort)."""
    alike = _ALIKE.get(sp)
    if alike is not None:  # compiled for another node: the very same flows and groups
        return Program(*alike)
    prog = _compile_service_port(node, sp, nodes)
    if _alike_on_every_node(sp):
        _ALIKE.put(sp, (dict(prog.flows), dict(prog.groups)))
    return prog


# a ServicePortInfo -> its flows and groups, the same on every node (see _alike_on_every_node). Every
# node's piece holds these two dicts: read only, as Program.shared's are.
_ALIKE = ByIdentity()


def _alike_on_every_node(sp: ServicePortInfo) -> bool:
    """Whether the Service port compiles to the same flows and groups on every node (its nodePort flow
    matches ``TO_NODE``, not the node's address): both policies Cluster, TCP, the random choice (a select
    group, whose buckets take the node's zone from reg8), SNAT, no affinity (its flows carry the zone),
    no source ranges, no topology hints, an endpoint usable (else REJECT flows, also alike but rare).
    Most Services of a real cluster; at 10,000 Services x 10 nodes, 90,000 pieces are then a copy."""
    return (sp.policy == "Cluster" and sp.internal_policy == "Cluster" and sp.protocol == "TCP"
            and sp.algorithm != MAGLEV and sp.forwarding != "dsr" and sp.affinity_timeout is None
            and not sp.source_ranges and bool(usable(sp.endpoints))
            and not any(e.for_nodes or e.for_zones for e in sp.endpoints))


def _compile_service_port(node: NodeInfo, sp: ServicePortInfo, nodes: tuple[NodeInfo, ...]) -> Program:
    prog = Program()
    cluster = usable(sp.endpoints, here=node)
    local = usable(sp.endpoints, node.name)
    entries = external_entries(node, sp)
    if not cluster and not local:
        # KUBE-SERVICES / KUBE-EXTERNAL-SERVICES: REJECT "has no endpoints".
        for ip, port, extra in entries + ([(sp.cluster_ip, sp.port, {})] if sp.cluster_ip else []):
            prog.add(T_SERVICE, 100, new_to(sp, ip, port, **extra), [("controller",)], COOKIE_REJECT)
        return prog
    chooser = _Chooser(prog, node, sp, cluster, local)
    if sp.cluster_ip:
        _cluster_ip(prog, sp, chooser, cluster, local)
    for entry in entries:
        _external(prog, sp, chooser, entry, local)
    if sp.load_balancer_ip and sp.source_ranges:
        _firewall(prog, sp)
    dsr.backend_flows(prog, node, sp, cluster, nodes, dnat_zone(node))
    return prog


def external_entries(node: NodeInfo, sp: ServicePortInfo) -> list[tuple[str | None, int, dict]]:
    """Where KUBE-EXT-X is entered on this node, as (address, port, extra match): nodeIP:nodePort (address
    None, ``new_to``'s for this node's own IP), 127.0.0.1:nodePort (from the node itself), the load balancer's
    address:port."""
    entries: list[tuple[str | None, int, dict]] = []
    if sp.node_port:
        entries.append((None, sp.node_port, {}))
        entries.append((LOCALHOST, sp.node_port, {"in_port": NODE_HOST_PORT}))
    if sp.load_balancer_ip:
        entries.append((sp.load_balancer_ip, sp.port, {}))
    return entries


def _cluster_ip(prog: Program, sp: ServicePortInfo, chooser: _Chooser, cluster, local) -> None:
    match = new_to(sp, sp.cluster_ip, sp.port)
    if sp.internal_policy == "Local":
        if not local:  # "has no local endpoints": DROP
            prog.add(T_SERVICE, 100, match, [], COOKIE_DROP_LOCAL)
            return
        eps, is_local = local, True
    else:
        eps, is_local = cluster, False
    from_pods, from_others = chooser.choose(eps, is_local, masquerade=False), chooser.choose(eps, is_local, True)

    def build(part: Program) -> None:
        part.add(T_SERVICE, 100, new_to(sp, sp.cluster_ip, sp.port, **POD_SOURCE), from_pods, COOKIE_CLUSTER_IP)
        part.add(T_SERVICE, 90, match, from_others, COOKIE_CLUSTER_IP)
    if is_local:  # (which endpoints are local differs from node to node)
        build(prog)
    else:
        _node_free(prog, sp, "clusterIP", build)


def _external(prog: Program, sp: ServicePortInfo, chooser: _Chooser, entry: tuple, local) -> None:
    ip, port, extra = entry
    match = new_to(sp, ip, port, **extra)
    everyone = chooser.choose(chooser.cluster, False, masquerade=True)
    if sp.policy == "Cluster" and dsr.is_dsr_entry(sp, extra):
        # DSR: pods and the node's own processes as under SNAT; everyone else DNATed, not masqueraded.
        prog.add(T_SERVICE, 110, new_to(sp, ip, port, **POD_SOURCE), everyone, COOKIE_SERVICE)
        prog.add(T_SERVICE, 105, new_to(sp, ip, port, in_port=NODE_HOST_PORT), everyone, COOKIE_SERVICE)
        prog.add(T_SERVICE, 100, match, chooser.choose(chooser.cluster, False, masquerade=False,
                                                       mark=dsr.entry_mark(sp, chooser.node, ip)), COOKIE_SERVICE)
        return
    if sp.policy == "Cluster" or extra.get("in_port") == NODE_HOST_PORT:  # the same on every node
        _node_free(prog, sp, ip or "nodePort", lambda part: part.add(T_SERVICE, 100, match, everyone, COOKIE_SERVICE))
        return
    # Local: pods short-circuit to all endpoints, client IP kept; the node's own processes are
    # masqueraded to all endpoints; everyone else gets a local endpoint or nothing.
    prog.add(T_SERVICE, 110, new_to(sp, ip, port, **POD_SOURCE),
             chooser.choose(chooser.cluster, False, masquerade=False), COOKIE_SERVICE)
    prog.add(T_SERVICE, 105, new_to(sp, ip, port, in_port=NODE_HOST_PORT), everyone, COOKIE_SERVICE)
    if local:
        prog.add(T_SERVICE, 100, match, chooser.choose(local, True, masquerade=False), COOKIE_SERVICE)
    else:
        prog.add(T_SERVICE, 100, match, [], COOKIE_DROP_LOCAL)


_NODE_FREE = ByIdentity()  # (a ServicePortInfo, which entry) -> its flows there as (key, Flow) pairs


def _node_free(prog: Program, sp: ServicePortInfo, entry: str, build) -> None:
    """Flows a Service port compiles alike on every node (its clusterIP pair, nodePort, 127.0.0.1:nodePort,
    the load balancer's address under Cluster: all four flows of a NodePort Service), built by
    ``build(program)`` for the first node and then the very same objects on the others, so they are
    made once and packed once (``ofwire.flow_mod`` remembers a flow object's bytes). The chain they
    point at is still built on each node, by the ``choose`` calls made before."""
    held = _NODE_FREE.get(sp, entry)
    if held is None:
        part = Program()
        build(part)
        held = _NODE_FREE.put(sp, tuple(part.flows.items()), entry)
    flows = prog.flows
    for key, flow in held:
        if key in flows:
            raise ValueError(f"two flows with one match: {flow}")
        flows[key] = flow


def _firewall(prog: Program, sp: ServicePortInfo) -> None:
    """KUBE-FW-X: connections to the load balancer's address from outside its source ranges are dropped
    (the NodePort stays open to all, as in kube-proxy)."""
    match = new_to(sp, sp.load_balancer_ip, sp.port)
    for cidr in sp.source_ranges:
        prog.add(T_FIREWALL, 200, new_to(sp, sp.load_balancer_ip, sp.port, ipv4_src=net_mask(cidr)),
                 [("goto", T_SERVICE)], COOKIE_FIREWALL)
    prog.add(T_FIREWALL, 100, match, [], COOKIE_FIREWALL)


class _Chooser:
    """Builds the endpoint choice of a chain (its group, and its affinity flows) on first use."""

    def __init__(self, prog: Program, node: NodeInfo, sp: ServicePortInfo, cluster, local):
        self.prog, self.node, self.sp, self.cluster, self.local = prog, node, sp, cluster, local
        # What every endpoint's DNAT shares (``_to``), worked out once per chain, not per endpoint.
        self.zone = dnat_zone(node)
        self.table = T_ENDPOINT if sp.affinity_timeout is None else T_REMEMBER
        self.bits = dsr.MARK_BITS if sp.forwarding == "dsr" else 1
        self.remembered: set[tuple[int, int]] = set()
        self.chains: set[int] = set()

    def choose(self, endpoints, is_local: bool, masquerade: bool, mark: int = 0) -> list[Action]:
        """``mark``: what else reg0 carries into ct_mark (a DSR entry's frontend, controllers.pipeline_dsr)."""
        gid = group_id(self.sp.id, is_local)
        if gid not in self.chains:
            self.chains.add(gid)
            self._chain(gid, endpoints)
        reg0 = (1 if masquerade else 0) | mark
        actions: list[Action] = [("set_field", REG_MASQ, reg0)] if reg0 else []
        if self.sp.affinity_timeout is None:
            return actions + self._pick(gid)
        return actions + [("set_field", REG_CHAIN, gid), ("set_field", REG_SVC, self.sp.id), self._exact_port(),
                          ("resubmit", T_AFFINITY), ("goto", T_STICKY)]

    def _pick(self, gid: int) -> list[Action]:
        if self.sp.algorithm == MAGLEV:
            return maglev_pick(gid)
        if self.sp.protocol == "UDP":
            return [("set_field", REG_CHAIN, gid), ("goto", T_UDP_PICK)]
        return [("group", gid)]

    def _chain(self, gid: int, endpoints) -> None:
        if self.sp.algorithm == MAGLEV:
            maglev_chain(self.prog, gid, endpoints, self._to)
        elif self.sp.protocol == "UDP":
            slots = udp_slots(len(endpoints))
            for slot in range(slots):
                self.prog.add(T_UDP_PICK, 100, {"eth_type": 0x0800, "ip_proto": 17, REG_CHAIN: gid,
                                                "udp_src": (slot, slots - 1)},
                              self._to(endpoints[slot % len(endpoints)]), COOKIE_SERVICE)
        else:
            self.prog.groups[gid] = self._group(gid, endpoints)
        if self.sp.affinity_timeout is None:
            return
        for e in endpoints:
            # (ct nat in a flow needs the IP prerequisite; in a group bucket it does not)
            self.prog.add(T_STICKY, 100, {"eth_type": 0x0800, REG_CHAIN: gid, REG_EP_IP: ip_int(e.ip),
                                          REG_EP_PORT: e.port},
                          self._to(e), COOKIE_AFFINITY)
        self.prog.add(T_STICKY, 10, {REG_CHAIN: gid}, self._pick(gid), COOKIE_AFFINITY)
        if (T_REMEMBER, self.sp.id) not in self.remembered:
            self.remembered.add((T_REMEMBER, self.sp.id))
            proto = {"eth_type": 0x0800, "ip_proto": IP_PROTO[self.sp.protocol], REG_SVC: self.sp.id}
            self.prog.add(T_REMEMBER, 100, proto, [self._exact_port(), ("learn", self.learn()), ("goto", T_ENDPOINT)],
                          COOKIE_AFFINITY)

    def _exact_port(self) -> Action:
        """The client's source port moved onto itself: a no-op on the packet, but it makes the datapath
        flow match every bit of the port, so each new connection is translated afresh. The affinity
        lookup then sees what the last connection learned, and the learn (``recent --set``) runs at once,
        not when a cached flow's statistics are next pushed. (A never-matching flow on port 0 does not do
        this: the classifier's port trie un-wildcards only the port's top bit, one datapath flow for
        every ephemeral port, which kept sending new connections where the first one, not the learned
        flow, went.)"""
        port = L4_SRC[self.sp.protocol]
        return ("move", port, port, 16)

    def _group(self, gid: int, endpoints) -> Group:
        """KUBE-SVC-X as a select group. Its buckets take the node's DNAT zone from REG_ZONE, so the group
        does not depend on the node: the same endpoints give the very same Group on every node, made
        once (``_GROUPS``, by the endpoints' identities) and packed once (``ofwire.group_mod``)."""
        key = (gid, self.table, self.bits, tuple([id(e) for e in endpoints]))
        held = _GROUPS.get(key)
        if held is not None and all(a is b for a, b in zip(held[0], endpoints, strict=True)):
            return held[1]
        group = Group(gid, tuple([(self._bucket_dnat(e),) for e in endpoints]))
        if len(_GROUPS) >= LIMIT:
            _GROUPS.clear()
        _GROUPS[key] = (tuple(endpoints), group)  # the endpoints kept: their ids are not reused meanwhile
        return group

    def _bucket_dnat(self, e: EndpointInfo) -> Action:
        return ("ct", Ct(REG_ZONE, self.table, True, f"dst={e.ip}:{e.port}", None, REG_MASQ, self.bits))

    def learn(self) -> Learn:
        """``recent --set``: after the DNAT, remember (Service port, client IP) -> the endpoint it got."""
        return Learn(table=T_AFFINITY, idle_timeout=min(self.sp.affinity_timeout, AFFINITY_MAX_TIMEOUT),
                     priority=100, cookie=COOKIE_AFFINITY,
                     specs=(("match", REG_SVC), ("match", "eth_type", 0x0800), ("match", "ipv4_src"),
                            ("load", REG_EP_IP, "ipv4_dst"), ("load", REG_EP_PORT, L4_DST[self.sp.protocol])))

    def _to(self, e: EndpointInfo) -> list[Action]:
        """KUBE-SEP-Y: DNAT to the endpoint, committing the masquerade decision (then, with affinity,
        remember the choice)."""
        return [self._dnat(e)]

    def _dnat(self, e: EndpointInfo) -> Action:
        # positional: Ct(zone, table, commit, nat, mark, mark_from, mark_bits), a million of them at 10,000 Services
        return ("ct", Ct(self.zone, self.table, True, f"dst={e.ip}:{e.port}", None, REG_MASQ, self.bits))
