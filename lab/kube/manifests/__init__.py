"""From Kubernetes YAML to a ``Cluster``: the lab's API server, controllers and scheduler in one pass.

The lab reads ordinary manifests (what ``kubectl apply -f`` takes) and does what the control plane would
do with them, once and deterministically: validate like the API server (names, required fields, ports,
one-line errors naming object, field and fix), plus the lab's own limits (every Node and Pod becomes a
Mininet host), then run the workload controllers, the scheduler and the nodePort allocator.

One module per part of the story:

- ``reader``: files, folders, YAML documents and ``kind: List`` into ``Doc`` objects;
- ``fields``: typed field readers and object metadata, with API-server-style errors;
- ``nodes``: Node objects;
- ``pods``: a pod spec (``Template``), placement and addresses; ``affinity``: its scheduling rules;
- ``workloads``: the controllers that make pods (Deployment);
- ``services``: Services and their nodePorts;
- ``routing``: Ingress, IngressClass, TLS Secrets (``ingress``), GatewayClass, Gateway, HTTPRoute
  (``gateway``), and the proxies the lab adds for them (``provisioning``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.kube.allocation import PortRange
from lab.kube.manifests.nodes import read_nodes
from lab.kube.manifests.pods import Builder, add_pod
from lab.kube.manifests.reader import Doc, Inputs, read_inputs
from lab.kube.manifests.routing import KINDS as ROUTING_KINDS
from lab.kube.manifests.routing import provision, read_routing
from lab.kube.manifests.services import (
    allocate_node_ports,
    check_named_target_ports,
    check_unique_services,
    service_draft,
)
from lab.kube.manifests.workloads import add_deployment, pod_template_hash, replica_pod_name
from lab.kube.model import NODE_PORT_RANGE, Cluster

__all__ = ["MODELLED_KINDS", "load_manifests", "pod_template_hash", "replica_pod_name"]

MODELLED_KINDS = ("Node", "Pod", "Deployment", "Service", *ROUTING_KINDS)


def load_manifests(paths: Sequence[str | Path], *, node_port_range: PortRange = NODE_PORT_RANGE) -> Cluster:
    """The cluster that manifest files and folders describe; raises ``ManifestError`` (one line)."""
    docs, read_warnings = read_inputs(Inputs(files=[str(p) for p in paths]))
    warnings = [_ignored_kind(doc) for doc in docs if doc.kind not in MODELLED_KINDS]
    nodes, hosts = read_nodes(_of(docs, "Node"), paths)
    builder = Builder(nodes=nodes, hosts=hosts, warnings=warnings)
    routing = read_routing(docs, warnings)
    for doc in docs:
        if doc.kind == "Pod":
            add_pod(builder, doc)
        elif doc.kind == "Deployment":
            add_deployment(builder, doc)
    added = provision(routing, nodes, builder.pods, warnings)
    for doc in _of(added, "Deployment"):
        add_deployment(builder, doc)
    service_docs = _of(docs, "Service") + _of(added, "Service")
    drafts = [draft for doc in service_docs if (draft := service_draft(doc, warnings))]
    check_unique_services(drafts)
    services = allocate_node_ports(drafts, node_port_range)
    cluster = Cluster(
        nodes=nodes, pods=builder.pods, services=services, warnings=warnings, pending=builder.pending
    )
    routing.into(cluster)
    for draft, service in zip(drafts, services, strict=True):
        check_named_target_ports(cluster, draft, service)
    return cluster


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.kind == kind]


def _ignored_kind(doc: Doc) -> str:
    metadata = doc.body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"ignored kind {doc.kind}/{name or '<unnamed>'} (lab models {', '.join(MODELLED_KINDS)})"
