"""Nodes: the ones the manifests give, or, when they give none (real manifests never do), ones the lab makes.

A Node's index (addresses, ``lab.kube.addressing``) is its order of appearance, 1-based. Made nodes are
``DEFAULT_NODES`` unless asked otherwise and are named ``node-a``, ``node-b``, ... ``node-z``,
``node-aa``, ... (spreadsheet columns), so every run of the same manifests gets the same cluster.

Every node carries the labels kubelet registers it with (``kubernetes.io/hostname``, ``kubernetes.io/os:
linux``, ``kubernetes.io/arch: amd64``, and the deprecated ``beta.kubernetes.io/os`` and ``/arch``), then
the Node's own. ``spec.taints`` are read for the scheduler,
and ``spec.unschedulable: true`` (a cordoned node) adds the ``node.kubernetes.io/unschedulable``
NoSchedule taint, as the node lifecycle controller does.

Zones (``topology.kubernetes.io/zone``) are the Nodes' own labels, or, with ``zones`` (``--zones N``), the
lab's: made nodes are dealt round-robin to ``zone-a``, ``zone-b``, ... (``lab.kube.topology``).
``status.allocatable.cpu`` (``4``, ``3500m``, ``0.5``) weighs a zone for topology-aware hints; without
it a node has ``DEFAULT_NODE_CPU_MILLI``.
"""

from __future__ import annotations

import math

from lab.errors import ManifestError, Origin, shown
from lab.kube import addressing, names, topology
from lab.kube.manifests.fields import (
    boolean,
    describe,
    label_key,
    mapping,
    object_metadata,
    sequence,
    string,
    string_map,
)
from lab.kube.manifests.reader import Doc
from lab.kube.model import DEFAULT_NODE_CPU_MILLI, ZONE_LABEL, Node, Taint
from lab.kube.scheduler import TAINT_EFFECTS, kubelet_labels

DEFAULT_NODES = 3
UNSCHEDULABLE_TAINT = Taint("node.kubernetes.io/unschedulable", "", "NoSchedule")


def default_node_name(index: int) -> str:
    """1 -> node-a, 26 -> node-z, 27 -> node-aa."""
    return f"node-{topology.letters(index)}"


def read_nodes(docs: list[Doc], count: int | None, zones: int | None = None) -> tuple[list[Node], dict[str, str]]:
    """The Nodes in order, and who holds each name (Pods may not take a Node's name).

    ``count`` asks for that many made nodes (None: ``DEFAULT_NODES``); it is for manifests without Nodes.
    ``zones`` spreads the nodes over that many zones (for nodes whose manifests give no zone).
    """
    if count is not None and not 1 <= count <= addressing.MAX_NODES:
        raise ManifestError("", "", "", f"asks for {count} nodes", f"use 1 to {addressing.MAX_NODES}", "--nodes")
    nodes, holders = _nodes(docs, count)
    if zones is not None:
        _check_zones(nodes, zones)
        topology.spread_zones(nodes, zones)
    return nodes, holders


def _check_zones(nodes: list[Node], zones: int) -> None:
    if not 1 <= zones <= len(nodes):
        raise ManifestError("", "", "", f"asks for {zones} zones over {len(nodes)} nodes",
                            f"use 1 to {len(nodes)} zones (a zone holds at least one node)", "--zones")
    labelled = [n.name for n in nodes if n.zone]
    if labelled:
        raise ManifestError("", "", "", f"asks for {zones} zones, but Node {labelled[0]!r} has a "
                            f"{ZONE_LABEL} label", "drop --zones, or drop the Nodes' zone labels", "--zones")


def _nodes(docs: list[Doc], count: int | None) -> tuple[list[Node], dict[str, str]]:
    if not docs:
        made = [default_node_name(index) for index in range(1, (count or DEFAULT_NODES) + 1)]
        nodes = [Node(name=name, index=index, labels=kubelet_labels(name)) for index, name in enumerate(made, 1)]
        return nodes, {node.name: f'Node "{node.name}" (made by the lab)' for node in nodes}
    if count is not None:
        raise ManifestError(
            "", "", "", f"asks for {count} nodes, but the manifests define {len(docs)} Node objects",
            "drop --nodes, or drop the Node objects to let the lab make them", "--nodes",
        )
    nodes: list[Node] = []
    seen: dict[str, str] = {}
    for index, doc in enumerate(docs, start=1):
        origin, name, _, meta = object_metadata(doc, namespaced=False)
        if name in seen:
            raise origin.error("metadata.name", f"{shown(name)} is already used by {seen[name]}", "rename one of them")
        if index > addressing.MAX_NODES:
            raise origin.error(
                "",
                f"is Node number {index}, but the lab addresses at most {addressing.MAX_NODES} Nodes",
                f"remove Nodes to keep {addressing.MAX_NODES} or fewer",
            )
        seen[name] = describe("Node", name, doc.source)
        labels = {**kubelet_labels(name), **string_map(meta, "labels", origin, "metadata.labels")}
        spec = mapping(doc.body, "spec", origin, "spec")
        nodes.append(Node(name=name, index=index, labels=labels, taints=_taints(spec, origin),
                          allocatable_cpu_milli=_allocatable_cpu(doc.body, origin)))
    return nodes, seen


def _allocatable_cpu(body: dict, origin: Origin) -> int:
    """``status.allocatable.cpu`` in millicores: ``4``, ``3500m``, ``0.5`` (a quantity, as the API takes it)."""
    status = mapping(body, "status", origin, "status")
    raw = mapping(status, "allocatable", origin, "status.allocatable").get("cpu")
    if raw is None:
        return DEFAULT_NODE_CPU_MILLI
    text = str(raw).strip() if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else ""
    try:
        milli = float(text[:-1]) if text.endswith("m") else float(text) * 1000
    except ValueError:
        milli = -1.0
    if not milli >= 0 or milli == float("inf"):
        raise origin.error("status.allocatable.cpu", f"{shown(raw)} is not a CPU quantity",
                           'write cores ("4", "0.5") or millicores ("3500m")')
    return math.ceil(milli)


def _taints(spec: dict, origin: Origin) -> tuple[Taint, ...]:
    taints: list[Taint] = []
    for number, raw in enumerate(sequence(spec, "taints", origin, "spec.taints")):
        field = f"spec.taints[{number}]"
        if not isinstance(raw, dict):
            raise origin.error(field, "is not a mapping", "write key:, value:, effect:")
        key = label_key(raw, "key", origin, f"{field}.key", "dedicated")
        value = string(raw, "value", origin, f"{field}.value") or ""
        problem = names.label_value_problem(value)
        if problem:
            raise origin.error(f"{field}.value", f"{shown(value)} {problem}", "fix the value")
        effect = string(raw, "effect", origin, f"{field}.effect")
        if effect not in TAINT_EFFECTS:
            raise origin.error(f"{field}.effect", f"{shown(effect)} is not a taint effect",
                               "use NoSchedule, PreferNoSchedule or NoExecute")
        taints.append(Taint(key, value, effect))
    if boolean(spec, "unschedulable", origin, "spec.unschedulable") and UNSCHEDULABLE_TAINT not in taints:
        taints.append(UNSCHEDULABLE_TAINT)
    return tuple(taints)
