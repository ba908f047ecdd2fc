"""From Kubernetes YAML to a ``Cluster``: the lab's API server, controllers and scheduler in one pass.

The lab reads ordinary manifests (what ``kubectl apply -f`` takes: files or folders, multi-document
YAML, ``kind: List``) and does what the control plane would do with them, once and deterministically:

- validate like the API server (names, required fields, ports, one-line errors naming object, field and
  fix), plus the lab's own limits (every Node and Pod becomes a Mininet host);
- Node: ``metadata.name`` and ``labels``; its index (addresses, ``lab.addressing``) is its order of
  appearance, 1-based. At least one Node is required: the lab does not invent machines;
- Pod: placed by ``lab.scheduler`` (``spec.nodeName`` honoured, otherwise scheduled like a replica);
- Deployment (apps/v1): the Deployment + ReplicaSet controllers' result, ``spec.replicas`` pods named
  ``<deployment>-<pod-template-hash>-<suffix>`` like real ones, but derived from sha256 instead of random
  so every run builds the same network;
- Service of type NodePort or LoadBalancer: nodePorts (and, for LoadBalancer + Local, the
  healthCheckNodePort) allocated by ``lab.allocation``; ClusterIP and ExternalName Services are ignored
  with a warning, and so is any other kind.

Pods are created in manifest order (``Pod.serial``) and get ``10.244.<node>.2`` upwards in the order
they land on their node. Files are read in the order given; a folder contributes its ``*.yaml`` and
``*.yml`` files (not sub-folders) in name order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import addressing, names
from lab.allocation import PortConflict, PortRange, PortRequest, allocate
from lab.endpoints import selected_pods
from lab.errors import ManifestError, Origin
from lab.model import (
    NODE_PORT_RANGE,
    Cluster,
    ContainerPort,
    Node,
    Pod,
    Service,
    ServicePort,
)
from lab.scheduler import PodSpec, Unschedulable, place

MODELLED_KINDS = ("Node", "Pod", "Deployment", "Service")
API_VERSIONS = {"Node": "v1", "Pod": "v1", "Deployment": "apps/v1", "Service": "v1"}
SERVICE_TYPES = ("NodePort", "LoadBalancer")
IGNORED_SERVICE_TYPES = ("ClusterIP", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
CONTAINER_PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_NAMESPACE = "default"
SEED_NODES = "examples/seed/nodes.yaml"

# Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words) and no look-alike 0/1/3.
POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH_LEN = 10
POD_SUFFIX_LEN = 5
# names.SimpleNameGenerator: the generateName base is cut to 63 - 5 so the pod name stays a DNS label.
GENERATED_BASE_MAX = 58
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
HEALTH_CHECK_KEY = "healthCheckNodePort"  # never a port name: those are lowercase


@dataclass(frozen=True)
class _Doc:
    kind: str
    body: dict[str, Any]
    source: str


@dataclass(frozen=True)
class _Template:
    """The parts of a pod spec the lab uses (a bare Pod's spec or a Deployment's template.spec)."""

    labels: dict[str, str]
    node_name: str | None
    node_selector: dict[str, str]
    ports: tuple[ContainerPort, ...]


@dataclass(frozen=True)
class _PortDraft:
    name: str | None
    port: int
    target_port: int | str
    node_port: int | None  # None: allocate one


@dataclass
class _ServiceDraft:
    """A Service before allocation: explicit ports known, omitted ones still to be chosen."""

    origin: Origin
    name: str
    namespace: str
    type: str
    policy: str
    selector: dict[str, str]
    ports: list[_PortDraft]
    health_check_node_port: int | None
    needs_health_check: bool


@dataclass
class _Builder:
    """Pods placed so far and which object holds each host name (pod and node names share one space)."""

    nodes: list[Node]
    pods: list[Pod] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    deployments: dict[tuple[str, str], str] = field(default_factory=dict)


def load_manifests(paths: Sequence[str | Path], *, node_port_range: PortRange = NODE_PORT_RANGE) -> Cluster:
    """The cluster that manifest files and folders describe; raises ``ManifestError`` (one line)."""
    docs = [doc for path in _expand(paths) for doc in _read(path)]
    warnings = [_ignored_kind(doc) for doc in docs if doc.kind not in MODELLED_KINDS]
    nodes, hosts = _nodes(_of(docs, "Node"), paths)
    builder = _Builder(nodes=nodes, hosts=hosts)
    for doc in docs:
        if doc.kind == "Pod":
            _add_pod(builder, doc)
        elif doc.kind == "Deployment":
            _add_deployment(builder, doc)
    drafts = [draft for doc in _of(docs, "Service") if (draft := _service_draft(doc, warnings))]
    _check_unique_services(drafts)
    services = _allocate(drafts, node_port_range)
    cluster = Cluster(nodes=nodes, pods=builder.pods, services=services, warnings=warnings)
    for draft, service in zip(drafts, services, strict=True):
        _check_named_target_ports(cluster, draft, service)
    return cluster


# --- reading files -----------------------------------------------------------------------------------


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise ManifestError(
            "", "", "", "no manifest files given", "pass YAML files or folders, e.g. examples/seed"
        )
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ManifestError(
                    "", "", "", "folder has no *.yaml or *.yml files", "check the path", str(raw)
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError("", "", "", "does not exist", "check the path", str(raw))
    return files


def _read(path: Path) -> list[_Doc]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError("", "", "", f"cannot be read ({exc})", "check the file", source) from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    docs: list[_Doc] = []
    for number, body in enumerate(documents, start=1):
        if body is not None:
            docs.extend(_unpack(body, f"document {number}", source))
    return docs


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    detail = getattr(exc, "problem", None) or str(exc)
    return ManifestError(
        "",
        "",
        "",
        f"{where}YAML syntax error: {detail}",
        "fix the YAML there (indentation, ':' or '-')",
        source,
    )


def _unpack(body: Any, what: str, source: str) -> Iterator[_Doc]:
    """One document, or the items of a ``kind: List``."""
    if not isinstance(body, dict):
        raise ManifestError(
            "",
            "",
            "",
            f"{what} is {_what(body)}, not a Kubernetes object",
            "write a mapping with kind:",
            source,
        )
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(
            "", "", "", f"{what} has no kind", "add kind: Node, Pod, Deployment or Service", source
        )
    if kind != "List":
        yield _Doc(kind, body, source)
        return
    items = body.get("items") or []
    if not isinstance(items, list):
        raise ManifestError(
            "",
            "",
            "",
            f"{what} (kind List) has items that are not a list",
            "write items: as a list of objects",
            source,
        )
    for number, item in enumerate(items):
        yield from _unpack(item, f"{what} items[{number}]", source)


def _of(docs: list[_Doc], kind: str) -> list[_Doc]:
    return [doc for doc in docs if doc.kind == kind]


def _ignored_kind(doc: _Doc) -> str:
    metadata = doc.body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"ignored kind {doc.kind}/{name or '<unnamed>'} (lab models {', '.join(MODELLED_KINDS)})"


# --- field access with API-server-style errors ---------------------------------------------------------

_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "empty",
}


def _what(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _mapping(parent: dict, key: str, origin: Origin, field: str, *, required: bool = False) -> dict:
    value = parent.get(key)
    if value is None:
        if required:
            raise origin.error(field, "is required", f"add {field}")
        return {}
    if not isinstance(value, dict):
        raise origin.error(field, f"is {_what(value)}, not a mapping", f"write {field} as key: value pairs")
    return value


def _list(parent: dict, key: str, origin: Origin, field: str, *, required: bool = False) -> list:
    value = parent.get(key)
    if value is None or value == []:
        if required:
            raise origin.error(field, "is required", f"add at least one entry to {field}")
        return []
    if not isinstance(value, list):
        raise origin.error(field, f"is {_what(value)}, not a list", f"write {field} as a list ('- ' items)")
    return value


def _string(parent: dict, key: str, origin: Origin, field: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise origin.error(field, f"is {_what(value)}, not a string", f'quote it: {key}: "{value}"')
    return value


def _integer(parent: dict, key: str, origin: Origin, field: str) -> int | None:
    value = parent.get(key)
    # bool is an int in Python but not in YAML/JSON: replicas: true is a type error for the API too.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise origin.error(field, f"is {_what(value)}, not an integer", f"write {field} as a whole number")
    return value


def _port_number(value: int, origin: Origin, field: str) -> int:
    if not 1 <= value <= 65535:
        raise origin.error(field, f"{value} is outside 1-65535", "use a port number from 1 to 65535")
    return value


def _string_map(parent: dict, key: str, origin: Origin, field: str) -> dict[str, str]:
    """Labels and selectors: string to string, validated as Kubernetes label syntax."""
    raw = _mapping(parent, key, origin, field)
    result: dict[str, str] = {}
    for label, value in raw.items():
        if not isinstance(label, str):
            raise origin.error(f"{field} key", f'"{label}" is not a string', "quote the key")
        if value is None:
            value = ""
        if not isinstance(value, str):
            # YAML reads `tier: 1` or `canary: true` as a number or boolean; the API wants strings.
            raise origin.error(
                f"{field}[{label}]", f"is {_what(value)}, not a string", f'quote it: {label}: "{value}"'
            )
        result[label] = value
    names.validate_labels(result, origin, field)
    return result


# --- objects -----------------------------------------------------------------------------------------


def _labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}={value}" for key, value in labels.items()) + "}"


def _display(name: str, namespace: str | None) -> str:
    return name if namespace in (None, DEFAULT_NAMESPACE) else f"{namespace}/{name}"


def _describe(kind: str, name: str, source: str) -> str:
    return f'{kind} "{name}" ({source})'


def _metadata(doc: _Doc, *, namespaced: bool) -> tuple[Origin, str, str, dict]:
    """Check apiVersion and metadata; return (origin, name, namespace, metadata)."""
    meta = doc.body.get("metadata")
    raw_name = meta.get("name") if isinstance(meta, dict) else None
    name = raw_name if isinstance(raw_name, str) else ""
    raw_namespace = meta.get("namespace") if isinstance(meta, dict) else None
    namespace = raw_namespace if isinstance(raw_namespace, str) and raw_namespace else DEFAULT_NAMESPACE
    origin = Origin(doc.kind, _display(name, namespace if namespaced else None), doc.source)
    _check_api_version(doc, origin)
    meta = _mapping(doc.body, "metadata", origin, "metadata", required=True)
    if _string(meta, "name", origin, "metadata.name") is None:
        raise origin.error("metadata.name", "is required", f"give the {doc.kind} a name")
    names.validate_object_name(doc.kind, name, origin)
    if namespaced:
        _string(meta, "namespace", origin, "metadata.namespace")
        names.validate_namespace(namespace, origin)
    return origin, name, namespace, meta


def _check_api_version(doc: _Doc, origin: Origin) -> None:
    expected = API_VERSIONS[doc.kind]
    version = doc.body.get("apiVersion")
    if version is None:
        raise origin.error("apiVersion", "is missing", f"add apiVersion: {expected}")
    if version != expected:
        raise origin.error(
            "apiVersion", f'"{version}" does not serve {doc.kind}', f"use apiVersion: {expected}"
        )


def _nodes(docs: list[_Doc], paths: Sequence[str | Path]) -> tuple[list[Node], dict[str, str]]:
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
        origin, name, _, meta = _metadata(doc, namespaced=False)
        if name in seen:
            raise origin.error(
                "metadata.name", f'"{name}" is already used by {seen[name]}', "rename one of them"
            )
        if index > addressing.MAX_NODES:
            raise origin.error(
                "",
                f"is Node number {index}, but the lab addresses at most {addressing.MAX_NODES} Nodes",
                f"remove Nodes to keep {addressing.MAX_NODES} or fewer",
            )
        seen[name] = _describe("Node", name, doc.source)
        labels = _string_map(meta, "labels", origin, "metadata.labels")
        nodes.append(Node(name=name, index=index, labels=labels))
    return nodes, seen


def _template(spec: dict, labels: dict[str, str], origin: Origin, prefix: str) -> _Template:
    node_name = _string(spec, "nodeName", origin, f"{prefix}.nodeName")
    selector = _string_map(spec, "nodeSelector", origin, f"{prefix}.nodeSelector")
    ports: list[ContainerPort] = []
    containers = _list(spec, "containers", origin, f"{prefix}.containers", required=True)
    container_names: set[str] = set()
    for c_index, container in enumerate(containers):
        c_field = f"{prefix}.containers[{c_index}]"
        if not isinstance(container, dict):
            raise origin.error(
                c_field, f"is {_what(container)}, not a mapping", "write name:, image:, ports:"
            )
        c_name = _string(container, "name", origin, f"{c_field}.name")
        if not c_name:
            raise origin.error(f"{c_field}.name", "is required", "name the container")
        names.validate_dns1123_label(c_name, origin, f"{c_field}.name")
        if c_name in container_names:
            raise origin.error(
                f"{c_field}.name", f'"{c_name}" is used twice', "give each container its own name"
            )
        container_names.add(c_name)
        if not _string(container, "image", origin, f"{c_field}.image"):
            # The lab runs no image, but the API requires one, so the manifest stays valid for a cluster.
            raise origin.error(f"{c_field}.image", "is required", "add an image, e.g. image: nginx")
        ports.extend(_container_ports(container, origin, c_field))
    return _Template(labels, node_name, selector, tuple(ports))


def _container_ports(container: dict, origin: Origin, c_field: str) -> list[ContainerPort]:
    ports: list[ContainerPort] = []
    for p_index, entry in enumerate(_list(container, "ports", origin, f"{c_field}.ports")):
        p_field = f"{c_field}.ports[{p_index}]"
        if not isinstance(entry, dict):
            raise origin.error(p_field, f"is {_what(entry)}, not a mapping", "write containerPort: <number>")
        number = _integer(entry, "containerPort", origin, f"{p_field}.containerPort")
        if number is None:
            raise origin.error(f"{p_field}.containerPort", "is required", "add containerPort: <number>")
        _port_number(number, origin, f"{p_field}.containerPort")
        name = _string(entry, "name", origin, f"{p_field}.name")
        if name is not None:
            names.validate_port_name(name, origin, f"{p_field}.name")
            if any(port.name == name for port in ports):
                raise origin.error(
                    f"{p_field}.name",
                    f'"{name}" is used twice in this container',
                    "give each port its own name",
                )
        protocol = _string(entry, "protocol", origin, f"{p_field}.protocol") or "TCP"
        if protocol not in CONTAINER_PROTOCOLS:
            raise origin.error(
                f"{p_field}.protocol", f'"{protocol}" is not a protocol', "use TCP, UDP or SCTP"
            )
        ports.append(ContainerPort(port=number, name=name, protocol=protocol))
    return ports


def _claim_host(builder: _Builder, name: str, owner: str, origin: Origin, field: str) -> None:
    holder = builder.hosts.get(name)
    if holder is not None:
        raise origin.error(
            field,
            f'"{name}" is already used by {holder}',
            "rename it: every Node and Pod becomes a Mininet host, so their names are unique cluster-wide",
        )
    builder.hosts[name] = owner


def _place(builder: _Builder, spec: PodSpec, origin: Origin, prefix: str) -> Node:
    try:
        node_name = place(builder.nodes, builder.pods, spec)
    except Unschedulable as exc:
        where = f"{prefix}.{exc.field}" if exc.field else ""
        raise origin.error(where, exc.problem, exc.fix) from exc
    return next(node for node in builder.nodes if node.name == node_name)


def _create_pod(
    builder: _Builder,
    name: str,
    namespace: str,
    template: _Template,
    owner: str | None,
    origin: Origin,
    prefix: str,
) -> None:
    spec = PodSpec(name, namespace, template.labels, template.node_name, template.node_selector)
    node = _place(builder, spec, origin, prefix)
    # Addresses follow placement order on the node: the first pod there is .2 (lab.addressing).
    host_number = 2 + sum(1 for pod in builder.pods if pod.node == node.name)
    builder.pods.append(
        Pod(
            name=name,
            node=node.name,
            namespace=namespace,
            labels=dict(template.labels),
            ports=template.ports,
            owner=owner,
            ip=addressing.pod_ip(node.index, host_number),
            serial=len(builder.pods) + 1,
        )
    )


def _add_pod(builder: _Builder, doc: _Doc) -> None:
    origin, name, namespace, meta = _metadata(doc, namespaced=True)
    labels = _string_map(meta, "labels", origin, "metadata.labels")
    spec = _mapping(doc.body, "spec", origin, "spec", required=True)
    template = _template(spec, labels, origin, "spec")
    _claim_host(builder, name, _describe("Pod", name, doc.source), origin, "metadata.name")
    _create_pod(builder, name, namespace, template, None, origin, "spec")


def _safe_encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(POD_NAME_ALPHABET))
        chars.append(POD_NAME_ALPHABET[digit])
    return "".join(chars)


def pod_template_hash(namespace: str, deployment: str) -> str:
    """The ReplicaSet's ``pod-template-hash``: 10 safe characters, fixed per Deployment."""
    return _safe_encode(hashlib.sha256(f"{namespace}/{deployment}".encode()).digest(), POD_TEMPLATE_HASH_LEN)


def replica_pod_name(namespace: str, deployment: str, index: int, attempt: int = 0) -> str:
    """``<deployment>-<pod-template-hash>-<5 chars>``, as the ReplicaSet controller names pods.

    ``index`` is the 0-based replica number; ``attempt`` > 0 re-draws the suffix after a name clash, as
    the API server's generateName retry would.
    """
    seed = f"{namespace}/{deployment}/{index}" + (f"#{attempt}" if attempt else "")
    suffix = _safe_encode(hashlib.sha256(seed.encode()).digest(), POD_SUFFIX_LEN)
    base = f"{deployment}-{pod_template_hash(namespace, deployment)}-"
    return base[:GENERATED_BASE_MAX] + suffix


def _add_deployment(builder: _Builder, doc: _Doc) -> None:
    origin, name, namespace, meta = _metadata(doc, namespaced=True)
    _string_map(meta, "labels", origin, "metadata.labels")
    if (namespace, name) in builder.deployments:
        raise origin.error(
            "metadata.name",
            f'"{name}" is already used by {builder.deployments[namespace, name]}',
            "rename one of them",
        )
    builder.deployments[namespace, name] = _describe("Deployment", _display(name, namespace), doc.source)
    spec = _mapping(doc.body, "spec", origin, "spec", required=True)
    replicas = _integer(spec, "replicas", origin, "spec.replicas")
    replicas = 1 if replicas is None else replicas
    if replicas < 0:
        raise origin.error("spec.replicas", f"{replicas} is negative", "use 0 or more replicas")
    selector = _mapping(spec, "selector", origin, "spec.selector", required=True)
    template_doc = _mapping(spec, "template", origin, "spec.template", required=True)
    template_meta = _mapping(template_doc, "metadata", origin, "spec.template.metadata")
    labels = _string_map(template_meta, "labels", origin, "spec.template.metadata.labels")
    _check_selector(selector, labels, origin)
    template_spec = _mapping(template_doc, "spec", origin, "spec.template.spec", required=True)
    template = _template(template_spec, labels, origin, "spec.template.spec")
    pod_labels = {**labels, POD_TEMPLATE_HASH_LABEL: pod_template_hash(namespace, name)}
    template = _Template(pod_labels, template.node_name, template.node_selector, template.ports)
    for index in range(replicas):
        pod_name = _free_replica_name(builder, namespace, name, index)
        _claim_host(
            builder, pod_name, _describe("Pod", pod_name, f"from Deployment {name}"), origin, "metadata.name"
        )
        _create_pod(builder, pod_name, namespace, template, name, origin, "spec.template.spec")


def _free_replica_name(builder: _Builder, namespace: str, deployment: str, index: int) -> str:
    attempt = 0
    while (candidate := replica_pod_name(namespace, deployment, index, attempt)) in builder.hosts:
        attempt += 1
    return candidate


def _check_selector(selector: dict, labels: dict[str, str], origin: Origin) -> None:
    """apps/v1 requires a non-empty selector that selects the template's own labels."""
    match_labels = _string_map(selector, "matchLabels", origin, "spec.selector.matchLabels")
    expressions = _list(selector, "matchExpressions", origin, "spec.selector.matchExpressions")
    if not match_labels and not expressions:
        raise origin.error(
            "spec.selector", "is empty", "add spec.selector.matchLabels with the template's labels"
        )
    if any(labels.get(key) != value for key, value in match_labels.items()):
        raise origin.error(
            "spec.template.metadata.labels",
            f"{_labels_text(labels)} do not match spec.selector.matchLabels {_labels_text(match_labels)}",
            "make the template labels include every matchLabels entry",
        )
    for number, expression in enumerate(expressions):
        if not _expression_matches(expression, labels, origin, f"spec.selector.matchExpressions[{number}]"):
            raise origin.error(
                "spec.template.metadata.labels",
                f"{_labels_text(labels)} do not match spec.selector.matchExpressions[{number}]",
                "make the template labels satisfy the selector",
            )


def _expression_matches(expression: Any, labels: dict[str, str], origin: Origin, field: str) -> bool:
    if not isinstance(expression, dict):
        raise origin.error(field, f"is {_what(expression)}, not a mapping", "write key:, operator:, values:")
    key = _string(expression, "key", origin, f"{field}.key")
    operator = _string(expression, "operator", origin, f"{field}.operator")
    values = _list(expression, "values", origin, f"{field}.values")
    if not key:
        raise origin.error(f"{field}.key", "is required", "name the label key")
    if operator in ("In", "NotIn"):
        if not values:
            raise origin.error(f"{field}.values", f"is required for operator {operator}", "list the values")
        inside = labels.get(key) in [str(value) for value in values]
        return inside if operator == "In" else not inside
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise origin.error(f"{field}.values", f"must be empty for operator {operator}", "remove values")
        return (key in labels) == (operator == "Exists")
    raise origin.error(
        f"{field}.operator", f'"{operator}" is not an operator', "use In, NotIn, Exists or DoesNotExist"
    )


# --- Services ----------------------------------------------------------------------------------------


def _service_draft(doc: _Doc, warnings: list[str]) -> _ServiceDraft | None:
    origin, name, namespace, _ = _metadata(doc, namespaced=True)
    spec = _mapping(doc.body, "spec", origin, "spec", required=True)
    service_type = _string(spec, "type", origin, "spec.type") or "ClusterIP"
    if service_type in IGNORED_SERVICE_TYPES:
        warnings.append(
            f"ignored Service/{_display(name, namespace)} of type {service_type} "
            "(the lab probes NodePort and LoadBalancer Services)"
        )
        return None
    if service_type not in SERVICE_TYPES:
        raise origin.error(
            "spec.type",
            f'"{service_type}" is not a Service type',
            "use NodePort or LoadBalancer (ClusterIP and ExternalName are ignored)",
        )
    policy = _string(spec, "externalTrafficPolicy", origin, "spec.externalTrafficPolicy") or "Cluster"
    if policy not in TRAFFIC_POLICIES:
        raise origin.error(
            "spec.externalTrafficPolicy", f'"{policy}" is not a policy', "use Cluster or Local"
        )
    if service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False:
        raise origin.error(
            "spec.allocateLoadBalancerNodePorts",
            "is false, but the lab reaches Services through nodePorts",
            "remove it or set it to true",
        )
    needs_health_check = service_type == "LoadBalancer" and policy == "Local"
    health = _integer(spec, "healthCheckNodePort", origin, "spec.healthCheckNodePort") or None
    if health is not None and not needs_health_check:
        raise origin.error(
            "spec.healthCheckNodePort",
            "may only be set when type is LoadBalancer and externalTrafficPolicy is Local",
            "remove it, or use type LoadBalancer with externalTrafficPolicy Local",
        )
    return _ServiceDraft(
        origin=origin,
        name=name,
        namespace=namespace,
        type=service_type,
        policy=policy,
        selector=_string_map(spec, "selector", origin, "spec.selector"),
        ports=_service_ports(spec, origin),
        health_check_node_port=health,
        needs_health_check=needs_health_check,
    )


def _service_ports(spec: dict, origin: Origin) -> list[_PortDraft]:
    entries = _list(spec, "ports", origin, "spec.ports", required=True)
    ports: list[_PortDraft] = []
    for index, entry in enumerate(entries):
        field = f"spec.ports[{index}]"
        if not isinstance(entry, dict):
            raise origin.error(
                field, f"is {_what(entry)}, not a mapping", "write port:, targetPort:, nodePort:"
            )
        name = _string(entry, "name", origin, f"{field}.name") or None
        if name is None and len(entries) > 1:
            raise origin.error(
                f"{field}.name",
                "is required when a Service has more than one port",
                "name every port, e.g. http",
            )
        if name is not None:
            names.validate_dns1123_label(name, origin, f"{field}.name")
            for other, taken in enumerate(ports):
                if taken.name == name:
                    raise origin.error(
                        f"{field}.name",
                        f'"{name}" is already used by spec.ports[{other}]',
                        "give each port its own name",
                    )
        protocol = _string(entry, "protocol", origin, f"{field}.protocol") or "TCP"
        if protocol in ("UDP", "SCTP"):
            raise origin.error(
                f"{field}.protocol",
                f"{protocol} is not supported (the lab sends and forwards TCP only)",
                "remove this port or use TCP",
            )
        if protocol != "TCP":
            raise origin.error(f"{field}.protocol", f'"{protocol}" is not a protocol', "use TCP")
        number = _integer(entry, "port", origin, f"{field}.port")
        if number is None:
            raise origin.error(f"{field}.port", "is required", "add port: <number>")
        _port_number(number, origin, f"{field}.port")
        for other, taken in enumerate(ports):
            if taken.port == number:
                raise origin.error(
                    f"{field}.port",
                    f"{number} is already used by spec.ports[{other}]",
                    "give each Service port its own number",
                )
        node_port = _integer(entry, "nodePort", origin, f"{field}.nodePort") or None  # 0 means "allocate"
        ports.append(_PortDraft(name, number, _target_port(entry, number, origin, field), node_port))
    return ports


def _target_port(entry: dict, port: int, origin: Origin, field: str) -> int | str:
    value = entry.get("targetPort")
    if value is None:
        return port  # the API defaults targetPort to port
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise origin.error(f"{field}.targetPort", f"is {_what(value)}", "use a port number or a port name")
    if isinstance(value, int):
        return _port_number(value, origin, f"{field}.targetPort")
    if value.isdigit():
        # IntOrString: a quoted "8080" is a *name* to the API, and an invalid one.
        raise origin.error(
            f"{field}.targetPort",
            f'"{value}" is a quoted number, which the API reads as a port name',
            f"write it unquoted: targetPort: {value}",
        )
    names.validate_port_name(value, origin, f"{field}.targetPort")
    return value


def _check_unique_services(drafts: list[_ServiceDraft]) -> None:
    seen: dict[tuple[str, str], _ServiceDraft] = {}
    for draft in drafts:
        first = seen.setdefault((draft.namespace, draft.name), draft)
        if first is not draft:
            raise draft.origin.error(
                "metadata.name",
                f'"{draft.name}" is already used by Service "{first.origin.name}" ({first.origin.source})',
                "rename one of them",
            )


def _port_key(draft: _ServiceDraft, port_name: str | None) -> str:
    return f"{draft.namespace}/{draft.name}:{port_name or ''}"


def _allocate(drafts: list[_ServiceDraft], port_range: PortRange) -> list[Service]:
    requests: list[PortRequest] = []
    owners: dict[str, tuple[_ServiceDraft, str]] = {}  # key -> (service, field), for error messages
    for draft in drafts:
        for index, port in enumerate(draft.ports):
            key = _port_key(draft, port.name)
            requests.append(PortRequest(key, port.node_port))
            owners[key] = (draft, f"spec.ports[{index}].nodePort")
        if draft.needs_health_check:
            key = _port_key(draft, HEALTH_CHECK_KEY)
            requests.append(PortRequest(key, draft.health_check_node_port))
            owners[key] = (draft, "spec.healthCheckNodePort")
    try:
        ports = allocate(requests, port_range)
    except PortConflict as exc:
        draft, field = owners[exc.request.key]
        problem = exc.problem
        if exc.holder is not None:
            holder, holder_field = owners[exc.holder.key]
            problem = f'{exc.port} is already allocated to Service "{holder.origin.name}" {holder_field}'
        raise draft.origin.error(field, problem, exc.fix) from exc
    return [_service(draft, ports) for draft in drafts]


def _service(draft: _ServiceDraft, node_ports: dict[str, int]) -> Service:
    health_key = _port_key(draft, HEALTH_CHECK_KEY)
    return Service(
        name=draft.name,
        namespace=draft.namespace,
        type=draft.type,
        selector=draft.selector,
        external_traffic_policy=draft.policy,
        health_check_node_port=node_ports[health_key] if draft.needs_health_check else None,
        ports=[
            ServicePort(
                port=port.port,
                node_port=node_ports[_port_key(draft, port.name)],
                target_port=port.target_port,
                name=port.name,
            )
            for port in draft.ports
        ],
    )


def _check_named_target_ports(cluster: Cluster, draft: _ServiceDraft, service: Service) -> None:
    """A name no selected pod declares is almost always a typo; the API cannot see it, the lab can."""
    pods = selected_pods(cluster, service)
    if not pods:
        return
    for index, service_port in enumerate(service.ports):
        wanted = service_port.target_port
        if isinstance(wanted, int):
            continue
        if any(
            port.name == wanted and port.protocol == service_port.protocol
            for pod in pods
            for port in pod.ports
        ):
            continue
        shown = ", ".join(pod.name for pod in pods[:3]) + (", ..." if len(pods) > 3 else "")
        raise draft.origin.error(
            f"spec.ports[{index}].targetPort",
            f'"{wanted}" is not a port name of any selected pod ({shown})',
            f'name a containerPort "{wanted}" in those pods, or use a port number',
        )
