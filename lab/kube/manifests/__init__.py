"""From Kubernetes YAML to a ``Cluster``: the lab's API server, controllers and scheduler in one pass.

The lab reads ordinary manifests (what ``kubectl apply`` takes, as Helm, kustomize and ``kubectl get -o
yaml`` write them) and does what the control plane would do with them, once and deterministically:
validate like the API server (names, required fields, ports; one-line errors naming object, field and
fix), plus the lab's own limits (every Node and Pod becomes a Mininet host), then make nodes if the
manifests have none, run the workload controllers, the scheduler and the nodePort allocator.

One module per part of the story:

- ``reader``: inputs (files, folders, ``-``, ``-R``, ``-k``), bounded YAML/JSON parsing, ``kind: List``;
- ``fields``: typed field readers and object metadata, with API-server-style errors;
- ``objects``: which kinds are modelled, the one grouped warning for the others, exported dependents;
- ``unhonoured``: the table of fields read past with a warning;
- ``nodes``: Node objects, or the nodes the lab makes; kubelet labels and taints;
- ``pods``: a pod spec (``Template``), tolerations, placement and addresses; ``affinity``: its rules;
- ``workloads``: the controllers that make pods (Deployment, ReplicaSet, ReplicationController,
  StatefulSet, DaemonSet) and the HorizontalPodAutoscaler's bounds;
- ``services``: Services, their nodePorts, and the endpoints they would lack.
- ``routing``: Ingress, IngressClass, TLS Secrets (``ingress``), GatewayClass, Gateway, HTTPRoute
  (``gateway``), and the proxies the lab adds for them (``provisioning``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

from lab.kube import names
from lab.kube.allocation import PortRange
from lab.kube.manifests.fields import object_metadata, string_map
from lab.kube.manifests.nodes import DEFAULT_NODES, default_node_name, read_nodes
from lab.kube.manifests.objects import (
    MODELLED_KINDS,
    WORKLOAD_KINDS,
    ignored_objects,
    meta_of,
    without_helm_hooks,
    without_owned,
)
from lab.kube.manifests.pods import Builder, add_pod
from lab.kube.manifests.reader import Doc, Inputs, parse, read_inputs
from lab.kube.manifests.routing import provision, read_routing
from lab.kube.manifests.services import (
    allocate_node_ports,
    check_endpoints,
    check_unique_services,
    service_draft,
)
from lab.kube.manifests.unhonoured import unhonoured
from lab.kube.manifests.workloads import (
    add_workload,
    pod_template_hash,
    replica_pod_name,
    scale_targets,
    workload_key,
)
from lab.kube.model import NODE_PORT_RANGE, Cluster

__all__ = [
    "DEFAULT_NODES",
    "MODELLED_KINDS",
    "Inputs",
    "build_cluster",
    "default_node_name",
    "load_manifests",
    "parse",
    "pod_template_hash",
    "replica_pod_name",
]


def load_manifests(
    paths: Sequence[str | Path] = (),
    *,
    node_port_range: PortRange = NODE_PORT_RANGE,
    nodes: int | None = None,
    zones: int | None = None,
    recursive: bool = False,
    kustomize: Sequence[str | Path] = (),
    stdin: IO[str] | None = None,
) -> Cluster:
    """The cluster that manifest files, folders (``recursive``: with sub-folders), ``-`` (standard input)
    and kustomizations describe; ``nodes``: how many nodes to make when they define none (default 3);
    ``zones``: spread the nodes over that many zones. Raises ``ManifestError`` (one line)."""
    inputs = Inputs(files=[str(p) for p in paths], recursive=recursive,
                    kustomizations=[str(k) for k in kustomize], stdin=stdin)
    docs, warnings = read_inputs(inputs)
    return build_cluster(docs, warnings, node_port_range=node_port_range, nodes=nodes, zones=zones)


def build_cluster(
    docs: list[Doc], warnings: list[str] | None = None, *, node_port_range: PortRange = NODE_PORT_RANGE,
    nodes: int | None = None, zones: int | None = None,
) -> Cluster:
    """What the control plane makes of these objects, in order."""
    warnings = list(warnings or [])
    strict: list[str] = []
    docs = without_helm_hooks(without_owned(docs, warnings), warnings)
    ignored = ignored_objects(docs, warnings, strict)
    namespaces = _namespaces([doc for doc in docs if doc.kind == "Namespace"])
    node_docs = [doc for doc in docs if doc.kind == "Node"]
    node_list, hosts = read_nodes(node_docs, nodes, zones)
    builder = Builder(nodes=node_list, hosts=hosts, warnings=warnings, strict=strict)
    routing = read_routing(docs, warnings, namespaces)
    targets = {workload_key(doc.kind, meta_of(doc)[1] or "default", meta_of(doc)[0])
               for doc in docs if doc.kind in WORKLOAD_KINDS}
    scaled = scale_targets([doc for doc in docs if doc.kind == "HorizontalPodAutoscaler"], targets, warnings)
    for doc in docs:
        if doc.kind == "Pod":
            add_pod(builder, doc)
        elif doc.kind in WORKLOAD_KINDS:
            add_workload(builder, doc, scaled)
    added = provision(routing, node_list, builder.pods, warnings)
    for doc in added:
        if doc.kind in WORKLOAD_KINDS:
            add_workload(builder, doc, scaled)
    drafts = []
    for doc in docs + [doc for doc in added if doc.kind == "Service"]:
        if doc.kind == "Service" and (draft := service_draft(doc, warnings, strict)):
            found = unhonoured("Service", doc.body, draft.origin)
            warnings += found
            strict += found
            drafts.append(draft)
    check_unique_services(drafts)
    services = allocate_node_ports(drafts, node_port_range)
    cluster = Cluster(nodes=node_list, pods=builder.pods, services=services, warnings=warnings,
                      pending=builder.pending, ignored=ignored, strict_problems=strict, namespaces=namespaces,
                      nodes_made=not node_docs)
    routing.into(cluster)
    for draft, service in zip(drafts, services, strict=True):
        check_endpoints(cluster, draft, service, warnings)
    return cluster


def _namespaces(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """Namespace objects are accepted (``kubectl create namespace`` output, Helm's): name -> labels."""
    result: dict[str, dict[str, str]] = {}
    for doc in docs:
        origin, name, _, meta = object_metadata(doc, namespaced=False)
        names.validate_namespace(name, origin, "metadata.name")
        result[name] = string_map(meta, "labels", origin, "metadata.labels")
    return result
