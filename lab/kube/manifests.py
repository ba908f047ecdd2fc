"""From Kubernetes YAML to a ``Cluster``: the lab's API server, controllers and scheduler in one pass.

The lab reads ordinary manifests (what ``kubectl apply -f`` takes: files or folders, multi-document
YAML, ``kind: List``) and does what the control plane would do with them, once and deterministically:

- validate like the API server (names, required fields, ports, one-line errors naming object, field and
  fix), plus the lab's own limits (every Node and Pod becomes a Mininet host);
- Node: ``metadata.name`` and ``labels``; its index (addresses, ``lab.kube.addressing``) is its order of
  appearance, 1-based. At least one Node is required: the lab does not invent machines;
- Pod: placed by ``lab.kube.scheduler`` (``spec.nodeName`` honoured, otherwise scheduled like a replica),
  which honours ``nodeSelector``, ``affinity`` (nodeAffinity, podAffinity, podAntiAffinity) and
  ``topologySpreadConstraints``. A pod that spread or pod (anti-)affinity keeps off every node is
  Pending in Kubernetes: the lab does not create it, lists it in ``Cluster.pending`` and says why in a
  warning worded as kube-scheduler words it;
- Deployment (apps/v1): the Deployment + ReplicaSet controllers' result, ``spec.replicas`` pods named
  ``<deployment>-<pod-template-hash>-<suffix>`` like real ones, but derived from sha256 instead of random
  so every run builds the same network;
- Service of type NodePort or LoadBalancer: nodePorts (and, for LoadBalancer + Local, the
  healthCheckNodePort) allocated by ``lab.kube.allocation``; ClusterIP and ExternalName Services are ignored
  with a warning, and so is any other kind.

Pods are created in manifest order (``Pod.serial``) and get ``10.244.<node>.2`` upwards in the order
they land on their node. Files are read in the order given; a folder contributes its ``*.yaml`` and
``*.yml`` files (not sub-folders) in name order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lab.errors import ManifestError, Origin
from lab.kube import addressing, names
from lab.kube.allocation import PortConflict, PortRange, PortRequest, allocate
from lab.kube.endpoints import selected_pods
from lab.kube.model import (
    NODE_PORT_RANGE,
    Cluster,
    ContainerPort,
    Node,
    Pod,
    Service,
    ServicePort,
)
from lab.kube.scheduler import (
    DO_NOT_SCHEDULE,
    FIELD_OPERATORS,
    HOSTNAME_LABEL,
    INCLUSION_POLICIES,
    INTEGER,
    LABEL_OPERATORS,
    NODE_NAME_FIELD,
    NODE_OPERATORS,
    WEIGHT_RANGE,
    WHEN_UNSATISFIABLE,
    LabelSelector,
    NodeAffinity,
    NodeSelectorTerm,
    Pending,
    PodAffinity,
    PodAffinityTerm,
    PodSpec,
    PreferredNodeTerm,
    Requirement,
    SpreadConstraint,
    Unschedulable,
    WeightedPodAffinityTerm,
    place,
)

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
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"  # affinity rules that filter
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"  # affinity rules that score


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
    node_affinity: NodeAffinity = field(default_factory=NodeAffinity)
    pod_affinity: PodAffinity = field(default_factory=PodAffinity)
    pod_anti_affinity: PodAffinity = field(default_factory=PodAffinity)
    topology_spread: tuple[SpreadConstraint, ...] = ()


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
    """Pods placed so far (with the specs they were placed by), pods left Pending, warnings, and which
    object holds each host name (pod and node names share one space)."""

    nodes: list[Node]
    pods: list[Pod] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    deployments: dict[tuple[str, str], str] = field(default_factory=dict)
    specs: dict[str, PodSpec] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_manifests(paths: Sequence[str | Path], *, node_port_range: PortRange = NODE_PORT_RANGE) -> Cluster:
    """The cluster that manifest files and folders describe; raises ``ManifestError`` (one line)."""
    docs = [doc for path in _expand(paths) for doc in _read(path)]
    warnings = [_ignored_kind(doc) for doc in docs if doc.kind not in MODELLED_KINDS]
    nodes, hosts = _nodes(_of(docs, "Node"), paths)
    builder = _Builder(nodes=nodes, hosts=hosts, warnings=warnings)
    for doc in docs:
        if doc.kind == "Pod":
            _add_pod(builder, doc)
        elif doc.kind == "Deployment":
            _add_deployment(builder, doc)
    drafts = [draft for doc in _of(docs, "Service") if (draft := _service_draft(doc, warnings))]
    _check_unique_services(drafts)
    services = _allocate(drafts, node_port_range)
    cluster = Cluster(
        nodes=nodes, pods=builder.pods, services=services, warnings=warnings, pending=builder.pending
    )
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


def _template(
    spec: dict, labels: dict[str, str], namespace: str, origin: Origin, prefix: str, warnings: list[str]
) -> _Template:
    node_name = _string(spec, "nodeName", origin, f"{prefix}.nodeName")
    selector = _string_map(spec, "nodeSelector", origin, f"{prefix}.nodeSelector")
    affinity = _mapping(spec, "affinity", origin, f"{prefix}.affinity")
    node_affinity = _node_affinity(affinity, origin, f"{prefix}.affinity.nodeAffinity")
    pod_affinity = _pod_affinity(affinity, "podAffinity", namespace, origin, prefix, warnings)
    pod_anti_affinity = _pod_affinity(affinity, "podAntiAffinity", namespace, origin, prefix, warnings)
    spread = _spread_constraints(spec, origin, f"{prefix}.topologySpreadConstraints", warnings)
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
    return _Template(
        labels, node_name, selector, tuple(ports), node_affinity, pod_affinity, pod_anti_affinity, spread
    )


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


# --- scheduling rules: selectors, affinity, topology spread --------------------------------------------
#
# Validated as the API server validates them (one line naming the field), then handed to lab.kube.scheduler.
# A labelSelector that is left out selects no pods, as the API's nil selector does; the lab warns, since
# the rule then never does anything.


def _choices(options: Sequence[str]) -> str:
    return f"{', '.join(options[:-1])} or {options[-1]}"


def _warn(warnings: list[str], origin: Origin, field: str, problem: str, fix: str) -> None:
    """A warning worded like an error (object, field, problem, advice), for what the API accepts."""
    warnings.append(str(origin.error(field, problem, fix)))


def _entry(raw: Any, origin: Origin, field: str, shape: str) -> dict:
    if not isinstance(raw, dict):
        raise origin.error(field, f"is {_what(raw)}, not a mapping", f"write {shape}")
    return raw


def _label_key(parent: dict, key: str, origin: Origin, field: str, example: str) -> str:
    """A required field that names a label key (topologyKey, a requirement's key)."""
    value = _string(parent, key, origin, field)
    if not value:
        raise origin.error(field, "is required", f"name a label key, e.g. {key}: {example}")
    problem = names.label_key_problem(value)
    if problem:
        raise origin.error(field, f'"{value}" {problem}', "fix the label key")
    return value


def _requirement(raw: Any, origin: Origin, field: str, operators: Sequence[str]) -> Requirement:
    """A matchExpressions entry of a label selector (In, NotIn, Exists, DoesNotExist) or of a node
    selector term (also Gt and Lt, with one integer value)."""
    entry = _entry(raw, origin, field, "key:, operator:, values:")
    key = _label_key(entry, "key", origin, f"{field}.key", "app")
    operator = _string(entry, "operator", origin, f"{field}.operator")
    if operator is None:
        raise origin.error(f"{field}.operator", "is required", f"use {_choices(operators)}")
    if operator not in operators:
        raise origin.error(
            f"{field}.operator", f'"{operator}" is not an operator', f"use {_choices(operators)}"
        )
    values = _list(entry, "values", origin, f"{field}.values")
    for number, value in enumerate(values):
        if not isinstance(value, str):
            raise origin.error(
                f"{field}.values[{number}]", f"is {_what(value)}, not a string", f'quote it: "{value}"'
            )
    if operator in ("In", "NotIn"):
        if not values:
            raise origin.error(f"{field}.values", f"is required for operator {operator}", "list the values")
        for number, value in enumerate(values):
            problem = names.label_value_problem(value)
            if problem:
                raise origin.error(f"{field}.values[{number}]", f'"{value}" {problem}', "fix the value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise origin.error(f"{field}.values", f"must be empty for operator {operator}", "remove values")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not INTEGER.fullmatch(values[0])):
        raise origin.error(
            f"{field}.values", f"must be a single integer for operator {operator}", 'write e.g. values: ["2"]'
        )
    return Requirement(key, operator, tuple(values))


def _label_selector(raw: dict, origin: Origin, field: str) -> LabelSelector:
    expressions = _list(raw, "matchExpressions", origin, f"{field}.matchExpressions")
    return LabelSelector(
        _string_map(raw, "matchLabels", origin, f"{field}.matchLabels"),
        tuple(
            _requirement(entry, origin, f"{field}.matchExpressions[{number}]", LABEL_OPERATORS)
            for number, entry in enumerate(expressions)
        ),
    )


def _optional_selector(parent: dict, key: str, origin: Origin, field: str) -> LabelSelector | None:
    if parent.get(key) is None:
        return None
    return _label_selector(_mapping(parent, key, origin, field), origin, field)


def _weight(entry: dict, origin: Origin, field: str) -> int:
    low, high = WEIGHT_RANGE
    weight = _integer(entry, "weight", origin, f"{field}.weight")
    if weight is None:
        raise origin.error(f"{field}.weight", "is required", f"add weight: <{low}-{high}>")
    if not low <= weight <= high:
        raise origin.error(f"{field}.weight", f"{weight} is outside {low}-{high}", f"use {low} to {high}")
    return weight


def _field_requirement(raw: Any, origin: Origin, field: str) -> Requirement:
    """A matchFields entry: the API allows only metadata.name, In or NotIn, and one value."""
    entry = _entry(raw, origin, field, f"key: {NODE_NAME_FIELD}, operator: In, values: [<node>]")
    key = _string(entry, "key", origin, f"{field}.key")
    if key != NODE_NAME_FIELD:
        raise origin.error(f"{field}.key", f'"{key}" is not a Node field selector', f"use {NODE_NAME_FIELD}")
    operator = _string(entry, "operator", origin, f"{field}.operator")
    if operator not in FIELD_OPERATORS:
        raise origin.error(
            f"{field}.operator",
            f'"{operator}" is not an operator for fields',
            f"use {_choices(FIELD_OPERATORS)}",
        )
    values = _list(entry, "values", origin, f"{field}.values")
    if len(values) != 1 or not isinstance(values[0], str):
        raise origin.error(f"{field}.values", "must be exactly one Node name", "write values: [<node>]")
    return Requirement(key, operator, (values[0],))


def _node_selector_term(raw: Any, origin: Origin, field: str) -> NodeSelectorTerm:
    term = _entry(raw, origin, field, "matchExpressions: or matchFields:")
    expressions = _list(term, "matchExpressions", origin, f"{field}.matchExpressions")
    fields = _list(term, "matchFields", origin, f"{field}.matchFields")
    return NodeSelectorTerm(
        tuple(
            _requirement(entry, origin, f"{field}.matchExpressions[{number}]", NODE_OPERATORS)
            for number, entry in enumerate(expressions)
        ),
        tuple(
            _field_requirement(entry, origin, f"{field}.matchFields[{number}]")
            for number, entry in enumerate(fields)
        ),
    )


def _node_affinity(affinity: dict, origin: Origin, field: str) -> NodeAffinity:
    raw = _mapping(affinity, "nodeAffinity", origin, field)
    required: tuple[NodeSelectorTerm, ...] = ()
    if raw.get(REQUIRED) is not None:
        r_field = f"{field}.{REQUIRED}"
        selector = _mapping(raw, REQUIRED, origin, r_field)
        terms = _list(selector, "nodeSelectorTerms", origin, f"{r_field}.nodeSelectorTerms", required=True)
        required = tuple(
            _node_selector_term(term, origin, f"{r_field}.nodeSelectorTerms[{number}]")
            for number, term in enumerate(terms)
        )
    preferred: list[PreferredNodeTerm] = []
    for number, raw_entry in enumerate(_list(raw, PREFERRED, origin, f"{field}.{PREFERRED}")):
        p_field = f"{field}.{PREFERRED}[{number}]"
        entry = _entry(raw_entry, origin, p_field, "weight:, preference:")
        preference = _mapping(entry, "preference", origin, f"{p_field}.preference", required=True)
        term = _node_selector_term(preference, origin, f"{p_field}.preference")
        preferred.append(PreferredNodeTerm(_weight(entry, origin, p_field), term))
    return NodeAffinity(required, tuple(preferred))


def _namespaces(term: dict, namespace: str, origin: Origin, field: str) -> frozenset[str] | None:
    """The namespaces a pod affinity term looks in: those listed, else the pod's own; None for all."""
    listed: list[str] = []
    for number, value in enumerate(_list(term, "namespaces", origin, f"{field}.namespaces")):
        n_field = f"{field}.namespaces[{number}]"
        if not isinstance(value, str):
            raise origin.error(n_field, f"is {_what(value)}, not a string", f'quote it: "{value}"')
        names.validate_namespace(value, origin, n_field)
        listed.append(value)
    if term.get("namespaceSelector") is None:
        return frozenset(listed or [namespace])
    if _mapping(term, "namespaceSelector", origin, f"{field}.namespaceSelector"):
        raise origin.error(
            f"{field}.namespaceSelector",
            "selects Namespaces by their labels, but the lab has no Namespace objects",
            "list them in namespaces instead, or write namespaceSelector: {} for every namespace",
        )
    return None  # namespaceSelector: {} selects every namespace


def _pod_affinity_term(
    raw: Any, namespace: str, origin: Origin, field: str, warnings: list[str]
) -> PodAffinityTerm:
    term = _entry(raw, origin, field, "labelSelector:, topologyKey:")
    topology_key = _label_key(term, "topologyKey", origin, f"{field}.topologyKey", HOSTNAME_LABEL)
    selector = _optional_selector(term, "labelSelector", origin, f"{field}.labelSelector")
    scope = _namespaces(term, namespace, origin, field)
    for key in ("matchLabelKeys", "mismatchLabelKeys"):
        if term.get(key):
            raise origin.error(
                f"{field}.{key}", "is not modelled by the lab", "put those labels in labelSelector"
            )
    if selector is None:
        _warn(warnings, origin, field, "has no labelSelector, so it selects no pods", "add labelSelector")
    return PodAffinityTerm(selector, topology_key, scope)


def _pod_affinity(
    affinity: dict, key: str, namespace: str, origin: Origin, prefix: str, warnings: list[str]
) -> PodAffinity:
    """podAffinity or podAntiAffinity: required terms, and preferred ones with a weight."""
    field = f"{prefix}.affinity.{key}"
    raw = _mapping(affinity, key, origin, field)
    required = tuple(
        _pod_affinity_term(entry, namespace, origin, f"{field}.{REQUIRED}[{number}]", warnings)
        for number, entry in enumerate(_list(raw, REQUIRED, origin, f"{field}.{REQUIRED}"))
    )
    preferred: list[WeightedPodAffinityTerm] = []
    for number, raw_entry in enumerate(_list(raw, PREFERRED, origin, f"{field}.{PREFERRED}")):
        p_field = f"{field}.{PREFERRED}[{number}]"
        entry = _entry(raw_entry, origin, p_field, "weight:, podAffinityTerm:")
        term = _mapping(entry, "podAffinityTerm", origin, f"{p_field}.podAffinityTerm", required=True)
        parsed = _pod_affinity_term(term, namespace, origin, f"{p_field}.podAffinityTerm", warnings)
        preferred.append(WeightedPodAffinityTerm(_weight(entry, origin, p_field), parsed))
    return PodAffinity(required, tuple(preferred))


def _inclusion_policy(entry: dict, key: str, default: str, origin: Origin, field: str) -> str:
    value = _string(entry, key, origin, f"{field}.{key}") or default
    if value not in INCLUSION_POLICIES:
        raise origin.error(
            f"{field}.{key}", f'"{value}" is not a policy', f"use {_choices(INCLUSION_POLICIES)}"
        )
    return value


def _match_label_keys(
    entry: dict, selector: LabelSelector | None, origin: Origin, field: str
) -> tuple[str, ...]:
    keys: list[str] = []
    for number, key in enumerate(_list(entry, "matchLabelKeys", origin, f"{field}.matchLabelKeys")):
        k_field = f"{field}.matchLabelKeys[{number}]"
        if not isinstance(key, str) or names.label_key_problem(key):
            raise origin.error(
                k_field, f'"{key}" is not a label key', "name a pod label, e.g. pod-template-hash"
            )
        if selector is None:
            raise origin.error(
                f"{field}.labelSelector", "is required when matchLabelKeys is set", "add labelSelector"
            )
        if key in selector.match_labels or any(r.key == key for r in selector.match_expressions):
            raise origin.error(k_field, f'"{key}" is also in labelSelector', "name it in only one of them")
        keys.append(key)
    return tuple(keys)


def _spread_constraint(raw: Any, origin: Origin, field: str, warnings: list[str]) -> SpreadConstraint:
    entry = _entry(raw, origin, field, "maxSkew:, topologyKey:, whenUnsatisfiable:, labelSelector:")
    max_skew = _integer(entry, "maxSkew", origin, f"{field}.maxSkew")
    if max_skew is None:
        raise origin.error(
            f"{field}.maxSkew", "is required", "add maxSkew: 1 (the most two domains may differ by)"
        )
    if max_skew < 1:
        raise origin.error(
            f"{field}.maxSkew", f"{max_skew} must be greater than zero", "use maxSkew: 1 or more"
        )
    topology_key = _label_key(entry, "topologyKey", origin, f"{field}.topologyKey", HOSTNAME_LABEL)
    when = _string(entry, "whenUnsatisfiable", origin, f"{field}.whenUnsatisfiable")
    if when is None:
        raise origin.error(
            f"{field}.whenUnsatisfiable",
            "is required",
            "add whenUnsatisfiable: DoNotSchedule (a rule) or ScheduleAnyway (a preference)",
        )
    if when not in WHEN_UNSATISFIABLE:
        raise origin.error(
            f"{field}.whenUnsatisfiable", f'"{when}" is not supported', f"use {_choices(WHEN_UNSATISFIABLE)}"
        )
    selector = _optional_selector(entry, "labelSelector", origin, f"{field}.labelSelector")
    min_domains = _integer(entry, "minDomains", origin, f"{field}.minDomains")
    if min_domains is not None and min_domains < 1:
        raise origin.error(f"{field}.minDomains", f"{min_domains} must be greater than zero", "use 1 or more")
    if min_domains is not None and when != DO_NOT_SCHEDULE:
        raise origin.error(
            f"{field}.minDomains",
            f"may only be set with whenUnsatisfiable {DO_NOT_SCHEDULE}, not {when}",
            f"remove minDomains or use {DO_NOT_SCHEDULE}",
        )
    affinity_policy = _inclusion_policy(entry, "nodeAffinityPolicy", "Honor", origin, field)
    _inclusion_policy(entry, "nodeTaintsPolicy", "Ignore", origin, field)  # the lab's Nodes have no taints
    keys = _match_label_keys(entry, selector, origin, field)
    if selector is None:
        _warn(
            warnings,
            origin,
            field,
            "has no labelSelector, so it counts no pods and never constrains placement",
            "add labelSelector.matchLabels with the pods' labels",
        )
    return SpreadConstraint(max_skew, topology_key, when, selector, min_domains, affinity_policy, keys)


def _spread_constraints(
    spec: dict, origin: Origin, field: str, warnings: list[str]
) -> tuple[SpreadConstraint, ...]:
    constraints: list[SpreadConstraint] = []
    for number, raw in enumerate(_list(spec, "topologySpreadConstraints", origin, field)):
        constraint = _spread_constraint(raw, origin, f"{field}[{number}]", warnings)
        pair = (constraint.topology_key, constraint.when_unsatisfiable)
        for other, taken in enumerate(constraints):
            if (taken.topology_key, taken.when_unsatisfiable) == pair:
                raise origin.error(
                    f"{field}[{number}]",
                    f"repeats topologyKey {pair[0]} with whenUnsatisfiable {pair[1]} of {field}[{other}]",
                    "merge the two constraints into one",
                )
        constraints.append(constraint)
    return tuple(constraints)



# --- pods and replicas ---------------------------------------------------------------------------------


def _claim_host(builder: _Builder, name: str, owner: str, origin: Origin, field: str) -> None:
    holder = builder.hosts.get(name)
    if holder is not None:
        raise origin.error(
            field,
            f'"{name}" is already used by {holder}',
            "rename it: every Node and Pod becomes a Mininet host, so their names are unique cluster-wide",
        )
    builder.hosts[name] = owner


def _place(builder: _Builder, spec: PodSpec, origin: Origin, prefix: str) -> Node | None:
    """The pod's node, or None when it stays Pending (recorded, with kube-scheduler's reason)."""
    try:
        node_name = place(builder.nodes, builder.pods, spec, placed_specs=builder.specs)
    except Unschedulable as exc:
        where = f"{prefix}.{exc.field}" if exc.field else ""
        raise origin.error(where, exc.problem, exc.fix) from exc
    except Pending as exc:
        # kube-scheduler would retry whenever the cluster changes; the lab's cluster does not, so the pod
        # never runs. Not an error: the manifests are valid, and such an imbalance is what is studied.
        builder.pending.append(spec.name)
        builder.warnings.append(f'Pod "{_display(spec.name, spec.namespace)}" is Pending: {exc}')
        return None
    builder.specs[spec.name] = spec
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
    spec = PodSpec(
        name,
        namespace,
        template.labels,
        template.node_name,
        template.node_selector,
        template.node_affinity,
        template.pod_affinity,
        template.pod_anti_affinity,
        template.topology_spread,
    )
    node = _place(builder, spec, origin, prefix)
    if node is None:
        return
    # Addresses follow placement order on the node: the first pod there is .2 (lab.kube.addressing).
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
    template = _template(spec, labels, namespace, origin, "spec", builder.warnings)
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
    template = _template(template_spec, labels, namespace, origin, "spec.template.spec", builder.warnings)
    pod_labels = {**labels, POD_TEMPLATE_HASH_LABEL: pod_template_hash(namespace, name)}
    template = replace(template, labels=pod_labels)
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
    parsed = _label_selector(selector, origin, "spec.selector")
    match_labels = dict(parsed.match_labels)
    if not match_labels and not parsed.match_expressions:
        raise origin.error(
            "spec.selector", "is empty", "add spec.selector.matchLabels with the template's labels"
        )
    if any(labels.get(key) != value for key, value in match_labels.items()):
        raise origin.error(
            "spec.template.metadata.labels",
            f"{_labels_text(labels)} do not match spec.selector.matchLabels {_labels_text(match_labels)}",
            "make the template labels include every matchLabels entry",
        )
    for number, requirement in enumerate(parsed.match_expressions):
        if not requirement.matches(labels):
            raise origin.error(
                "spec.template.metadata.labels",
                f"{_labels_text(labels)} do not match spec.selector.matchExpressions[{number}]",
                "make the template labels satisfy the selector",
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
