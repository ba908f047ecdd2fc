"""Pods: a pod spec read once (``Template``), placed by ``lab.kube.scheduler``, given its address.

A bare Pod honours ``spec.nodeName``; otherwise it is scheduled like a replica. A pod that spread or pod
(anti-)affinity keeps off every node is Pending in Kubernetes: the lab does not create it, lists it in
``Cluster.pending`` and says why in a warning worded as kube-scheduler words it. Pods are created in
manifest order (``Pod.serial``) and get ``10.244.<node>.2`` upwards in the order they land on their node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.errors import Origin, shown
from lab.kube import addressing, names
from lab.kube.manifests import affinity as rules
from lab.kube.manifests.fields import (
    describe,
    display,
    integer,
    mapping,
    object_metadata,
    port_number,
    sequence,
    string,
    string_map,
    type_name,
    warn,
)
from lab.kube.manifests.probes import grace_period, readiness_probe
from lab.kube.manifests.reader import Doc
from lab.kube.manifests.unhonoured import unhonoured
from lab.kube.model import ContainerPort, Node, Pod, Probe
from lab.kube.scheduler import (
    TAINT_EFFECTS,
    TOLERATION_OPERATORS,
    NodeAffinity,
    Pending,
    PodAffinity,
    PodSpec,
    SpreadConstraint,
    Toleration,
    Unschedulable,
    place,
)

CONTAINER_PROTOCOLS = ("TCP", "UDP", "SCTP")
# Every pod is a Mininet host with its own processes, and scheduling one looks at every node and pod: past
# this the lab would take minutes to build, so it refuses at once (bench/ builds larger clusters directly).
MAX_PODS = 1000


@dataclass(frozen=True)
class Template:
    """The parts of a pod spec the lab uses (a bare Pod's spec or a workload's template.spec)."""

    labels: dict[str, str]
    node_name: str | None
    node_selector: dict[str, str]
    ports: tuple[ContainerPort, ...]
    node_affinity: NodeAffinity = field(default_factory=NodeAffinity)
    pod_affinity: PodAffinity = field(default_factory=PodAffinity)
    pod_anti_affinity: PodAffinity = field(default_factory=PodAffinity)
    topology_spread: tuple[SpreadConstraint, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    readiness_probe: Probe | None = None
    termination_grace_s: float = 30.0
    images: tuple[str, ...] = ()


@dataclass
class Builder:
    """Pods placed so far (with the specs they were placed by), pods left Pending, warnings, and which
    object holds each host name (pod and node names share one space)."""

    nodes: list[Node]
    pods: list[Pod] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    workloads: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (kind, namespace, name) -> who
    specs: dict[str, PodSpec] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    strict: list[str] = field(default_factory=list)  # the warnings --strict makes errors

    def unhonoured(self, pod_spec: dict, origin: Origin, prefix: str) -> None:
        found = unhonoured("Pod", pod_spec, origin, prefix)
        self.warnings += found
        self.strict += found


def pod_template(
    spec: dict, labels: dict[str, str], namespace: str, origin: Origin, prefix: str, warnings: list[str]
) -> Template:
    node_name = string(spec, "nodeName", origin, f"{prefix}.nodeName")
    selector = string_map(spec, "nodeSelector", origin, f"{prefix}.nodeSelector")
    affinity = mapping(spec, "affinity", origin, f"{prefix}.affinity")
    node_affinity = rules.node_affinity(affinity, origin, f"{prefix}.affinity.nodeAffinity")
    pod_affinity = rules.pod_affinity(affinity, "podAffinity", namespace, origin, prefix, warnings)
    pod_anti_affinity = rules.pod_affinity(affinity, "podAntiAffinity", namespace, origin, prefix, warnings)
    spread = rules.spread_constraints(spec, origin, f"{prefix}.topologySpreadConstraints", warnings)
    tolerations = _tolerations(spec, origin, f"{prefix}.tolerations")
    ports: list[ContainerPort] = []
    containers = sequence(spec, "containers", origin, f"{prefix}.containers", required=True)
    container_names: set[str] = set()
    images: list[str] = []
    probe: Probe | None = None
    for c_index, container in enumerate(containers):
        c_field = f"{prefix}.containers[{c_index}]"
        if not isinstance(container, dict):
            raise origin.error(
                c_field, f"is {type_name(container)}, not a mapping", "write name:, image:, ports:"
            )
        c_name = string(container, "name", origin, f"{c_field}.name")
        if not c_name:
            raise origin.error(f"{c_field}.name", "is required", "name the container")
        names.validate_dns1123_label(c_name, origin, f"{c_field}.name")
        if c_name in container_names:
            raise origin.error(
                f"{c_field}.name", f'{shown(c_name)} is used twice', "give each container its own name"
            )
        container_names.add(c_name)
        image = string(container, "image", origin, f"{c_field}.image")
        if not image:
            # The lab runs no image, but the API requires one, so the manifest stays valid for a cluster.
            raise origin.error(f"{c_field}.image", "is required", "add an image, e.g. image: nginx")
        images.append(image)
        own_ports = _container_ports(container, origin, c_field)
        ports.extend(own_ports)
        found = readiness_probe(container, own_ports, origin, c_field, warnings)
        if found is not None and probe is not None:
            warn(warnings, origin, f"{c_field}.readinessProbe", "is not run: the lab runs one server per pod and "
                 "only the first container's readinessProbe", "a pod here is Ready when that one passes; a "
                 "cluster waits for every container's")
        probe = probe or found
    return Template(
        labels, node_name, selector, tuple(ports), node_affinity, pod_affinity, pod_anti_affinity, spread, tolerations,
        readiness_probe=probe, termination_grace_s=grace_period(spec, origin, prefix), images=tuple(images),
    )


def _tolerations(spec: dict, origin: Origin, field: str) -> tuple[Toleration, ...]:
    """``tolerations``, validated as the API server validates them."""
    result: list[Toleration] = []
    for number, raw in enumerate(sequence(spec, "tolerations", origin, field)):
        t_field = f"{field}[{number}]"
        if not isinstance(raw, dict):
            raise origin.error(t_field, f"is {type_name(raw)}, not a mapping", "write key:, operator:, effect:")
        key = string(raw, "key", origin, f"{t_field}.key") or ""
        if key and names.label_key_problem(key):
            raise origin.error(f"{t_field}.key", f"{shown(key)} {names.label_key_problem(key)}", "fix the key")
        operator = string(raw, "operator", origin, f"{t_field}.operator") or "Equal"
        if operator not in TOLERATION_OPERATORS:
            raise origin.error(f"{t_field}.operator", f"{shown(operator)} is not an operator", "use Equal or Exists")
        value = string(raw, "value", origin, f"{t_field}.value") or ""
        if operator == "Exists" and value:
            raise origin.error(f"{t_field}.value", "must be empty when operator is Exists", "remove value")
        if not key and operator != "Exists":
            raise origin.error(f"{t_field}.operator", "must be Exists when key is empty", "add a key, or use Exists")
        effect = string(raw, "effect", origin, f"{t_field}.effect") or ""
        if effect and effect not in TAINT_EFFECTS:
            raise origin.error(f"{t_field}.effect", f"{shown(effect)} is not a taint effect",
                               "use NoSchedule, PreferNoSchedule or NoExecute, or leave it out for all")
        seconds = integer(raw, "tolerationSeconds", origin, f"{t_field}.tolerationSeconds")
        if seconds is not None and effect != "NoExecute":
            raise origin.error(f"{t_field}.tolerationSeconds", "may only be set with effect NoExecute",
                               "remove it or use effect: NoExecute")
        result.append(Toleration(key, operator, value, effect))
    return tuple(result)


def _container_ports(container: dict, origin: Origin, c_field: str) -> list[ContainerPort]:
    ports: list[ContainerPort] = []
    for p_index, entry in enumerate(sequence(container, "ports", origin, f"{c_field}.ports")):
        p_field = f"{c_field}.ports[{p_index}]"
        if not isinstance(entry, dict):
            raise origin.error(p_field, f"is {type_name(entry)}, not a mapping", "write containerPort: <number>")
        number = integer(entry, "containerPort", origin, f"{p_field}.containerPort")
        if number is None:
            raise origin.error(f"{p_field}.containerPort", "is required", "add containerPort: <number>")
        port_number(number, origin, f"{p_field}.containerPort")
        name = string(entry, "name", origin, f"{p_field}.name")
        if name is not None:
            names.validate_port_name(name, origin, f"{p_field}.name")
            if any(port.name == name for port in ports):
                raise origin.error(
                    f"{p_field}.name",
                    f'{shown(name)} is used twice in this container',
                    "give each port its own name",
                )
        protocol = string(entry, "protocol", origin, f"{p_field}.protocol") or "TCP"
        if protocol not in CONTAINER_PROTOCOLS:
            raise origin.error(
                f"{p_field}.protocol", f'{shown(protocol)} is not a protocol', "use TCP, UDP or SCTP"
            )
        ports.append(ContainerPort(port=number, name=name, protocol=protocol))
    return ports


def claim_host(builder: Builder, name: str, owner: str, origin: Origin, field: str) -> None:
    holder = builder.hosts.get(name)
    if holder is not None:
        raise origin.error(
            field,
            f'{shown(name)} is already used by {holder}',
            "rename it: every Node and Pod becomes a Mininet host, so their names are unique cluster-wide",
        )
    builder.hosts[name] = owner


def _place(builder: Builder, spec: PodSpec, origin: Origin, prefix: str) -> Node | None:
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
        builder.warnings.append(f'Pod "{display(spec.name, spec.namespace)}" is Pending: {exc}')
        return None
    builder.specs[spec.name] = spec
    return next(node for node in builder.nodes if node.name == node_name)


def create_pod(
    builder: Builder,
    name: str,
    namespace: str,
    template: Template,
    owner: tuple[str, str] | None,
    origin: Origin,
    prefix: str,
) -> None:
    """Place the pod and add it; ``owner`` is the (kind, name) of the workload that made it."""
    if len(builder.pods) >= MAX_PODS:
        raise origin.error("", f"would make pod number {MAX_PODS + 1}, but the lab runs at most {MAX_PODS} pods "
                           "(each is a Mininet host)", "run fewer replicas")
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
        template.tolerations,
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
            owner=owner[1] if owner else None,
            owner_kind=owner[0] if owner else None,
            ip=addressing.pod_ip(node.index, host_number),
            serial=len(builder.pods) + 1,
            readiness_probe=template.readiness_probe,
            termination_grace_s=template.termination_grace_s,
            images=template.images,
        )
    )


def add_pod(builder: Builder, doc: Doc) -> None:
    origin, name, namespace, meta = object_metadata(doc, namespaced=True)
    labels = string_map(meta, "labels", origin, "metadata.labels")
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    template = pod_template(spec, labels, namespace, origin, "spec", builder.warnings)
    builder.unhonoured(spec, origin, "spec")
    claim_host(builder, name, describe("Pod", name, doc.source), origin, "metadata.name")
    create_pod(builder, name, namespace, template, None, origin, "spec")
