"""Zones, and the EndpointSlice hints kube-controller-manager writes for topology-aware routing (pure).

A node's zone is its ``topology.kubernetes.io/zone`` label: from the manifests' Nodes, or given by the lab
(``spread_zones``: ``--zones N`` deals the nodes round-robin to ``zone-a``, ``zone-b``, ...). An
endpoint's zone is its node's (the EndpointSlice controller's ``podToEndpoint``).

Hints come from one of two heuristics, as in ``k8s.io/endpointslice`` (``reconciler.go``):

- ``service.kubernetes.io/topology-mode: Auto`` (or the older ``service.kubernetes.io/topology-aware-hints:
  Auto``, which wins when both are set): ``topologycache.AddHints``. Each zone should get endpoints in
  proportion to its nodes' allocatable CPU (``cpu_ratios``; a node with a control-plane role label is left
  out, and one node without a zone or CPU disables hints everywhere, as do nodes in fewer than two zones).
  ``allocations``: zone ``z`` wants ``ratio(z) x endpoints`` and needs at least ``ceil(wanted / (1 + 0.2))``
  (the overload threshold: no endpoint should carry more than 20% over its share); fewer ready endpoints
  than zones, or minimums that add up to more than the endpoints there are, and no endpoint gets a hint.
  Otherwise every ready endpoint is first hinted for its own zone, then zones holding more than they want
  give endpoints (in endpoint order) to zones holding less, one at a time, while both sides differ by at
  least half an endpoint: a zone without endpoints of its own receives some from the others. An endpoint
  without a zone removes every hint.
- ``spec.trafficDistribution`` (ignored when the annotation asks for Auto): ``trafficdist.ReconcileHints``.
  ``PreferClose`` (the older name of ``PreferSameZone``) and ``PreferSameZone`` hint each ready endpoint
  for its own zone, nothing proportional; ``PreferSameNode`` adds a hint for its own node.

Endpoints that are not ready get no hints. kube-proxy reads them (``controllers.topology``).

Where the Go code walks a map (random order: which zone gives or receives first when two tie), the lab
takes zones in sorted order, so the same cluster always gets the same hints. The controller also keeps
hints of EndpointSlices it does not rewrite while they stay valid; the lab computes them afresh for each
state, as for slices being created. Hints are per Service port here (the controller allocates over all
ready endpoints of the Service's slices; the same whenever its pods expose the same ports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.kube.model import ZONE_LABEL, Endpoint, Node, Service

TOPOLOGY_MODE = "service.kubernetes.io/topology-mode"
TOPOLOGY_AWARE_HINTS = "service.kubernetes.io/topology-aware-hints"  # before 1.27; wins when both are set
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
OVERLOAD_THRESHOLD = 0.2  # topologycache's overloadThreshold
EXCLUDED_NODE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


@dataclass(frozen=True)
class Hints:
    """One endpoint's ``hints``: ``forZones`` and ``forNodes`` names (None: no hints of that kind)."""

    for_zones: tuple[str, ...] | None = None
    for_nodes: tuple[str, ...] | None = None


NO_HINTS = Hints()


@dataclass(frozen=True)
class Allocation:
    minimum: int
    maximum: int
    desired: float


def letters(index: int) -> str:
    """1 -> a, 26 -> z, 27 -> aa (spreadsheet columns): the lab's node and zone names."""
    text = ""
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("a") + rest) + text
    return text


def zone_name(index: int) -> str:
    return f"zone-{letters(index)}"


def spread_zones(nodes: Sequence[Node], count: int) -> None:
    """``--zones N``: node ``i`` (1-based, in order) goes to zone ``(i - 1) mod N``, labelled as a cloud's
    kubelet labels it."""
    for position, node in enumerate(nodes):
        node.labels[ZONE_LABEL] = zone_name(position % count + 1)


def zones(nodes: Sequence[Node]) -> list[str]:
    """The zones the nodes are in, in order of first appearance (the lab's zone switches are numbered so)."""
    return list(dict.fromkeys(n.zone for n in nodes if n.zone))


def topology_mode_auto(annotations: dict[str, str]) -> bool:
    """The reconciler's ``hintsEnabled``: the older annotation first, then ``topology-mode``, ``Auto``/``auto``."""
    value = annotations.get(TOPOLOGY_AWARE_HINTS, annotations.get(TOPOLOGY_MODE))
    return value in ("Auto", "auto")


def cpu_ratios(nodes: Sequence[Node]) -> dict[str, float] | None:
    """``TopologyCache.SetNodes``: each zone's share of the allocatable CPU; None when hints cannot be
    given (a node without zone or CPU, or fewer than two zones). Nodes are Ready in the lab."""
    cpu: dict[str, int] = {}
    for node in nodes:
        if any(label in node.labels for label in EXCLUDED_NODE_LABELS):
            continue
        if not node.zone or node.allocatable_cpu_milli <= 0:
            return None
        cpu[node.zone] = cpu.get(node.zone, 0) + node.allocatable_cpu_milli
    total = sum(cpu.values())
    if total == 0 or len(cpu) < 2:
        return None
    return {zone: milli / total for zone, milli in cpu.items()}


def allocations(ratios: dict[str, float], endpoints: int) -> dict[str, Allocation] | None:
    """``getAllocations``: per zone the minimum, maximum and desired number of endpoints; None when the
    overload threshold cannot be kept (fewer endpoints than zones, or minimums beyond the endpoints)."""
    if len(ratios) > endpoints:
        return None
    drafts: dict[str, tuple[int, float]] = {}
    remaining = endpoints
    for zone in sorted(ratios):
        desired = ratios[zone] * endpoints
        minimum = math.ceil(desired * (1 / (1 + OVERLOAD_THRESHOLD)))
        drafts[zone] = (minimum, max(desired, float(minimum)))
        remaining -= minimum
        if remaining < 0:
            return None
    spare = remaining  # endpoints - the minimums' total
    return {zone: Allocation(minimum, minimum + spare, desired) for zone, (minimum, desired) in drafts.items()}


def _most(amounts: dict[str, float]) -> tuple[str, float]:
    """``getMost``: the zone with the largest amount (the first in sorted order among equals)."""
    zone, most = "", 0.0
    for name in sorted(amounts):
        if amounts[name] > most:
            zone, most = name, amounts[name]
    return zone, most


def _giving_and_receiving(wanted: dict[str, Allocation], held: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``getGivingAndReceivingZones``: how many endpoints each zone gives away, and each receives."""
    give_f = {z: held.get(z, 0) - a.desired for z, a in wanted.items() if held.get(z, 0) > a.desired}
    take_f = {z: a.desired - held.get(z, 0) for z, a in wanted.items() if held.get(z, 0) < a.desired}
    give: dict[str, int] = {}
    take: dict[str, int] = {}
    while True:
        giver, to_give = _most(give_f)
        taker, to_take = _most(take_f)
        if not giver or not taker or (to_give < 1 and to_take < 1) or to_give < 0.5 or to_take < 0.5:
            return give, take
        give[giver] = give.get(giver, 0) + 1
        give_f[giver] -= 1
        take[taker] = take.get(taker, 0) + 1
        take_f[taker] -= 1


def auto_zone_hints(endpoint_zones: Sequence[str | None], ready: Sequence[bool],
                    ratios: dict[str, float] | None) -> list[str | None] | None:
    """``AddHints`` for endpoints in order: the zone each ready one is hinted for (None for the others),
    or None when no endpoint gets a hint."""
    if ratios is None:
        return None
    wanted = allocations(ratios, sum(ready))
    if wanted is None:
        return None
    hints: list[str | None] = []
    held: dict[str, int] = {}
    for zone, is_ready in zip(endpoint_zones, ready, strict=True):
        if not is_ready:
            hints.append(None)
            continue
        if not zone:
            return None
        held[zone] = held.get(zone, 0) + 1
        hints.append(zone)
    give, take = _giving_and_receiving(wanted, held)
    for i, (zone, is_ready) in enumerate(zip(endpoint_zones, ready, strict=True)):  # redistributeHints
        if not is_ready:
            continue
        if not give or not take:
            break
        if give.get(zone, 0) > 0:
            receiver = next(z for z in sorted(take) if take[z] > 0)
            hints[i] = receiver
            for counts, name in ((give, zone), (take, receiver)):
                counts[name] -= 1
                if not counts[name]:
                    del counts[name]
            held[receiver] = held.get(receiver, 0) + 1
            held[zone] -= 1
    if not held:
        return None
    return hints


def endpoint_hints(service: Service, endpoints: Sequence[Endpoint], nodes: Sequence[Node]) -> list[Hints]:
    """The hints of a Service port's endpoints, in their order, as kube-controller-manager writes them."""
    zone_of = {n.name: n.zone for n in nodes}
    zones_ = [zone_of.get(e.node) for e in endpoints]
    if topology_mode_auto(service.annotations):
        auto = auto_zone_hints(zones_, [e.ready for e in endpoints], cpu_ratios(nodes))
        if auto is None:
            return [NO_HINTS] * len(endpoints)
        return [Hints(for_zones=(z,)) if z else NO_HINTS for z in auto]
    if service.traffic_distribution in TRAFFIC_DISTRIBUTIONS:
        same_node = service.traffic_distribution == "PreferSameNode"
        return [Hints(for_zones=(zone,) if zone else None, for_nodes=(e.node,) if same_node else None)
                if e.ready else NO_HINTS for e, zone in zip(endpoints, zones_, strict=True)]
    return [NO_HINTS] * len(endpoints)
