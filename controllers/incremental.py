"""Every bridge's program kept up to date piece by piece, so a change costs what changed.

kube-proxy's nftables mode made an update cost the rules that changed, not the whole ruleset; this
does the same for the compiled programs. A bridge's program is its base (``compile_node`` /
``compile_underlay`` of the state without Service ports: ARP, conntrack, routing) plus one piece per
Service port (``pipeline.service_port_piece``, ``pipeline.underlay_service_port_piece``). A piece is
kept as long as its ``ServicePortInfo`` (immutable: endpoints included) and, on the underlay, its load
balancer's healthy nodes are the same; the base is recompiled only when nodes, pods or the underlay
change, and every piece when the nodes do (a piece depends on its node). Flows two pieces share (an
endpoint's hairpin flow) are counted, so one leaves when the last piece holding it does.

``update`` returns, per bridge, what each touched flow and group was before (``Touched``), from which
``controllers.diff.diff_touched`` makes the messages without walking the unchanged program. The
whole program is compiled only when the controller starts; a switch that connects gets it all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from controllers.pipeline import (
    Flow,
    Group,
    Program,
    compile_node,
    compile_underlay,
    service_port_piece,
    underlay_service_port_piece,
)
from controllers.state import ProxyState


@dataclass
class Touched:
    """What touched flows (by key) and groups (by id) were before an update; None: they did not exist."""

    flows: dict[tuple, Flow | None] = field(default_factory=dict)
    groups: dict[int, Group | None] = field(default_factory=dict)
    # how many of the first flows and groups (in the order they were touched) were sent already, in the
    # parts of an install (``IncrementalPrograms.update``'s ``on_part``): the rest is still to be sent
    sent: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.flows) + len(self.groups)


PART_PIECES = 2000  # Service ports per part of an install (10,000 messages, 3 MB)


@dataclass
class _Adding:
    """A bridge with pieces still to add in this update."""

    dpid: int
    counted: _Counted
    mine: Touched
    pieces: dict
    node: object
    changed: list
    in_parts: bool


class _Counted:
    """One bridge's program as the sum of pieces: each flow and group with the number of pieces holding it."""

    def __init__(self) -> None:
        self.program = Program()
        self.flow_refs: dict[tuple, int] = {}
        self.group_refs: dict[int, int] = {}
        # id of a shared flow dict (``Program.shared``) -> [the dict, pieces holding it]: its flows are
        # counted in once, when its first holder comes, and out when its last one goes
        self.shared_refs: dict[int, list] = {}

    def add(self, piece: Program, touched: Touched) -> None:
        _add(piece.flows, self.program.flows, self.flow_refs, touched.flows)
        _add(piece.groups, self.program.groups, self.group_refs, touched.groups)
        for flows in piece.shared:
            held = self.shared_refs.get(id(flows))
            if held is not None and held[0] is flows:
                held[1] += 1
            else:
                self.shared_refs[id(flows)] = [flows, 1]
                _add(flows, self.program.flows, self.flow_refs, touched.flows)

    def remove(self, piece: Program, touched: Touched) -> None:
        _remove(piece.flows, self.program.flows, self.flow_refs, touched.flows)
        _remove(piece.groups, self.program.groups, self.group_refs, touched.groups)
        for flows in piece.shared:
            held = self.shared_refs[id(flows)]
            held[1] -= 1
            if not held[1]:
                del self.shared_refs[id(flows)]
                _remove(flows, self.program.flows, self.flow_refs, touched.flows)


def _add(items: dict, held: dict, refs: dict, touched: dict) -> None:
    """Count ``items`` (flows by key, or groups by id) in; the first holder makes one appear."""
    get = held.get
    for key, item in items.items():
        old = get(key)
        if old is None:
            touched.setdefault(key, None)
            held[key] = item
            refs[key] = 1
        elif old is item or old == item:  # shared flows (hairpins) are one object: no field-wise compare
            refs[key] += 1
        else:
            raise ValueError(f"two pieces compile different values for one match or id: {old} / {item}")


def _remove(items: dict, held: dict, refs: dict, touched: dict) -> None:
    """Count ``items`` out; the last holder leaving makes one disappear (``touched`` keeps what it was)."""
    for key in items:
        refs[key] -= 1
        if not refs[key]:
            touched.setdefault(key, held[key])
            del held[key], refs[key]


class IncrementalPrograms:
    def __init__(self) -> None:
        self.bridges: dict[int, _Counted] = {}
        self._base_state: ProxyState | None = None
        self._bases: dict[int, Program] = {}
        # dpid -> Service port key -> (what the piece was compiled from, the piece)
        self._pieces: dict[int, dict[str, tuple[tuple, Program]]] = {}
        self._ports: dict[str, object] = {}  # the last update's Service ports by key, and health verdicts
        self._healthy: dict[str, list[str]] = {}

    @property
    def programs(self) -> dict[int, Program]:
        """Every bridge's whole program (the live objects: read, do not change)."""
        return {dpid: counted.program for dpid, counted in self.bridges.items()}

    def update(self, state: ProxyState, lb_healthy: dict[str, list[str]] | None = None,
               on_bridge: Callable[[int, Touched], None] | None = None,
               on_part: Callable[[int, Touched], None] | None = None) -> dict[int, Touched]:
        """Every bridge's pieces brought up to ``state``; what each bridge had touched. ``on_bridge(dpid,
        touched)`` is called as soon as one bridge's program is complete, so the controller can send it
        while the next is compiled: a switch then ingests one bridge while Python builds the next (at
        10,000 Services each side takes seconds).

        An install (a bridge whose update only adds, more than ``PART_PIECES`` Service ports) also goes
        in parts: ``on_part(dpid, touched)`` after each ``PART_PIECES`` of its pieces, every bridge's
        first part before any bridge's second, so every switch has work from the first part on (the
        first bridge costs most: what is alike on every node is compiled and packed there once).
        (The controller runs it with the cyclic collector off: ``controllers.collector``.)"""
        return self._update(state, lb_healthy, on_bridge, on_part)

    def _update(self, state: ProxyState, lb_healthy: dict[str, list[str]] | None,
                on_bridge: Callable[[int, Touched], None] | None,
                on_part: Callable[[int, Touched], None] | None) -> dict[int, Touched]:
        lb_healthy = lb_healthy or {}
        touched: dict[int, Touched] = {}
        base_state = replace(state, generation=0, service_ports=())
        # (a new underlay may change how the load balancer delivers: its pieces are compiled again too)
        nodes_changed = (self._base_state is None or base_state.nodes != self._base_state.nodes
                         or base_state.underlay != self._base_state.underlay)
        if nodes_changed or base_state != self._base_state:
            self._rebase(base_state, state, touched, drop_pieces=nodes_changed)
        nodes = {node.dpid: node for node in state.nodes}
        ports = {sp.key: sp for sp in state.service_ports}
        removed = [k for k in self._ports if k not in ports]
        if nodes_changed:
            candidates = lb_candidates = list(ports)
        else:  # only Service ports that are not the very ones (or equal ones) of the last update
            before = self._ports
            candidates = [k for k, sp in ports.items() if before.get(k) is not sp and before.get(k) != sp]
            lb_changed = {k for k in set(lb_healthy) | set(self._healthy)
                          if lb_healthy.get(k) != self._healthy.get(k)}
            lb_candidates = candidates + [k for k, sp in ports.items() if sp.service_key in lb_changed]
        self._ports, self._healthy = ports, dict(lb_healthy)
        adding: list[_Adding] = []
        for dpid, counted in self.bridges.items():
            mine = touched.setdefault(dpid, Touched())
            pieces = self._pieces.setdefault(dpid, {})
            node = nodes.get(dpid)
            for key in removed:
                if key in pieces:
                    counted.remove(pieces.pop(key)[1], mine)
            changed = []
            for key in dict.fromkeys(candidates if node is not None else lb_candidates):
                sp = ports[key]
                source = (sp,) if node is not None else (sp, tuple(lb_healthy.get(sp.service_key, ())))
                held = pieces.get(key)
                if held is None or held[0] != source:
                    changed.append((key, sp, source))
                    if held is not None:  # all old pieces leave first: a new one may take over what another held
                        counted.remove(held[1], mine)
            if changed:
                in_parts = on_part is not None and not len(mine) and len(changed) > PART_PIECES  # adds only
                adding.append(_Adding(dpid, counted, mine, pieces, node, changed, in_parts))
            elif on_bridge is not None:
                on_bridge(dpid, mine)
        step = PART_PIECES if any(a.in_parts for a in adding) else None
        start = 0
        while adding:
            end = None if step is None else start + step
            for a in list(adding):
                for key, sp, source in a.changed[start:end]:
                    piece = (service_port_piece(a.node, sp, state.nodes) if a.node is not None
                             else underlay_service_port_piece(state, sp, lb_healthy))
                    a.counted.add(piece, a.mine)
                    a.pieces[key] = (source, piece)
                if end is None or end >= len(a.changed):
                    adding.remove(a)
                    if on_bridge is not None:
                        on_bridge(a.dpid, a.mine)
                elif a.in_parts:
                    on_part(a.dpid, a.mine)
            start = end
        return {dpid: t for dpid, t in touched.items() if len(t)}

    def _rebase(self, base_state: ProxyState, state: ProxyState, touched: dict[int, Touched],
                drop_pieces: bool) -> None:
        """New bases for every bridge (and no pieces, when the nodes changed: they are compiled again)."""
        self._base_state = base_state
        dpids = [n.dpid for n in state.nodes] + [state.underlay.dpid]
        for dpid in [d for d in self.bridges if d not in dpids]:
            counted = self.bridges.pop(dpid)
            self._pieces.pop(dpid, None)
            self._bases.pop(dpid, None)
            gone = touched.setdefault(dpid, Touched())
            gone.flows.update({k: f for k, f in counted.program.flows.items()})
            gone.groups.update({g: grp for g, grp in counted.program.groups.items()})
        for node in base_state.nodes:
            self._set_base(node.dpid, compile_node(base_state, node), touched, drop_pieces)
        self._set_base(state.underlay.dpid, compile_underlay(base_state, {}), touched, drop_pieces)

    def _set_base(self, dpid: int, base: Program, touched: dict[int, Touched], drop_pieces: bool) -> None:
        counted = self.bridges.setdefault(dpid, _Counted())
        mine = touched.setdefault(dpid, Touched())
        if drop_pieces:
            for _, piece in self._pieces.pop(dpid, {}).values():
                counted.remove(piece, mine)
        old = self._bases.get(dpid)
        if old is not None:
            counted.remove(old, mine)
        counted.add(base, mine)
        self._bases[dpid] = base
