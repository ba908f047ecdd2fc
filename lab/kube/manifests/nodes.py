"""Node objects: ``metadata.name`` and ``labels``; a Node's index (addresses, ``lab.kube.addressing``)
is its order of appearance, 1-based."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.errors import ManifestError, shown
from lab.kube import addressing
from lab.kube.manifests.fields import describe, object_metadata, string_map
from lab.kube.manifests.reader import Doc
from lab.kube.model import Node

SEED_NODES = "examples/seed/nodes.yaml"


def read_nodes(docs: list[Doc], paths: Sequence[str | Path]) -> tuple[list[Node], dict[str, str]]:
    """The Nodes in order, and who holds each name (Pods may not take a Node's name)."""
    if not docs:
        raise ManifestError(
            "",
            "",
            "",
            "no Node objects: the lab builds one host per Node and invents none",
            f"add Node objects, e.g. {SEED_NODES}",
            ", ".join(str(p) for p in paths),
        )
    nodes: list[Node] = []
    seen: dict[str, str] = {}
    for index, doc in enumerate(docs, start=1):
        origin, name, _, meta = object_metadata(doc, namespaced=False)
        if name in seen:
            raise origin.error(
                "metadata.name", f'{shown(name)} is already used by {seen[name]}', "rename one of them"
            )
        if index > addressing.MAX_NODES:
            raise origin.error(
                "",
                f"is Node number {index}, but the lab addresses at most {addressing.MAX_NODES} Nodes",
                f"remove Nodes to keep {addressing.MAX_NODES} or fewer",
            )
        seen[name] = describe("Node", name, doc.source)
        labels = string_map(meta, "labels", origin, "metadata.labels")
        nodes.append(Node(name=name, index=index, labels=labels))
    return nodes, seen
