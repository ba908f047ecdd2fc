"""Services: type, traffic policy, selector and ports, then nodePorts allocated as the API server does.

NodePort and LoadBalancer Services get their nodePorts (and, for LoadBalancer + Local, the
healthCheckNodePort) from ``lab.kube.allocation``; ClusterIP and ExternalName Services are ignored with
a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import Origin, shown
from lab.kube import names
from lab.kube.allocation import PortConflict, PortRange, PortRequest, allocate
from lab.kube.endpoints import selected_pods
from lab.kube.manifests.fields import (
    display,
    integer,
    mapping,
    object_metadata,
    port_number,
    sequence,
    string,
    string_map,
    type_name,
)
from lab.kube.manifests.reader import Doc
from lab.kube.model import Cluster, Service, ServicePort

SERVICE_TYPES = ("NodePort", "LoadBalancer")
IGNORED_SERVICE_TYPES = ("ClusterIP", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
HEALTH_CHECK_KEY = "healthCheckNodePort"  # never a port name: those are lowercase


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


def service_draft(doc: Doc, warnings: list[str]) -> _ServiceDraft | None:
    origin, name, namespace, _ = object_metadata(doc, namespaced=True)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    service_type = string(spec, "type", origin, "spec.type") or "ClusterIP"
    if service_type in IGNORED_SERVICE_TYPES:
        warnings.append(
            f"ignored Service/{display(name, namespace)} of type {service_type} "
            "(the lab probes NodePort and LoadBalancer Services)"
        )
        return None
    if service_type not in SERVICE_TYPES:
        raise origin.error(
            "spec.type",
            f'{shown(service_type)} is not a Service type',
            "use NodePort or LoadBalancer (ClusterIP and ExternalName are ignored)",
        )
    policy = string(spec, "externalTrafficPolicy", origin, "spec.externalTrafficPolicy") or "Cluster"
    if policy not in TRAFFIC_POLICIES:
        raise origin.error(
            "spec.externalTrafficPolicy", f'{shown(policy)} is not a policy', "use Cluster or Local"
        )
    if service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False:
        raise origin.error(
            "spec.allocateLoadBalancerNodePorts",
            "is false, but the lab reaches Services through nodePorts",
            "remove it or set it to true",
        )
    needs_health_check = service_type == "LoadBalancer" and policy == "Local"
    health = integer(spec, "healthCheckNodePort", origin, "spec.healthCheckNodePort") or None
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
        selector=string_map(spec, "selector", origin, "spec.selector"),
        ports=_service_ports(spec, origin),
        health_check_node_port=health,
        needs_health_check=needs_health_check,
    )


def _service_ports(spec: dict, origin: Origin) -> list[_PortDraft]:
    entries = sequence(spec, "ports", origin, "spec.ports", required=True)
    ports: list[_PortDraft] = []
    for index, entry in enumerate(entries):
        field = f"spec.ports[{index}]"
        if not isinstance(entry, dict):
            raise origin.error(
                field, f"is {type_name(entry)}, not a mapping", "write port:, targetPort:, nodePort:"
            )
        name = string(entry, "name", origin, f"{field}.name") or None
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
                        f'{shown(name)} is already used by spec.ports[{other}]',
                        "give each port its own name",
                    )
        protocol = string(entry, "protocol", origin, f"{field}.protocol") or "TCP"
        if protocol in ("UDP", "SCTP"):
            raise origin.error(
                f"{field}.protocol",
                f"{protocol} is not supported (the lab sends and forwards TCP only)",
                "remove this port or use TCP",
            )
        if protocol != "TCP":
            raise origin.error(f"{field}.protocol", f'{shown(protocol)} is not a protocol', "use TCP")
        number = integer(entry, "port", origin, f"{field}.port")
        if number is None:
            raise origin.error(f"{field}.port", "is required", "add port: <number>")
        port_number(number, origin, f"{field}.port")
        for other, taken in enumerate(ports):
            if taken.port == number:
                raise origin.error(
                    f"{field}.port",
                    f"{number} is already used by spec.ports[{other}]",
                    "give each Service port its own number",
                )
        node_port = integer(entry, "nodePort", origin, f"{field}.nodePort") or None  # 0 means "allocate"
        ports.append(_PortDraft(name, number, _target_port(entry, number, origin, field), node_port))
    return ports


def _target_port(entry: dict, port: int, origin: Origin, field: str) -> int | str:
    value = entry.get("targetPort")
    if value is None:
        return port  # the API defaults targetPort to port
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise origin.error(f"{field}.targetPort", f"is {type_name(value)}", "use a port number or a port name")
    if isinstance(value, int):
        return port_number(value, origin, f"{field}.targetPort")
    if value.isdigit():
        # IntOrString: a quoted "8080" is a *name* to the API, and an invalid one.
        raise origin.error(
            f"{field}.targetPort",
            f'{shown(value)} is a quoted number, which the API reads as a port name',
            f"write it unquoted: targetPort: {value}",
        )
    names.validate_port_name(value, origin, f"{field}.targetPort")
    return value


def check_unique_services(drafts: list[_ServiceDraft]) -> None:
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


def allocate_node_ports(drafts: list[_ServiceDraft], port_range: PortRange) -> list[Service]:
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


def check_named_target_ports(cluster: Cluster, draft: _ServiceDraft, service: Service) -> None:
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
        some = ", ".join(pod.name for pod in pods[:3]) + (", ..." if len(pods) > 3 else "")
        raise draft.origin.error(
            f"spec.ports[{index}].targetPort",
            f'{shown(wanted)} is not a port name of any selected pod ({some})',
            f'name a containerPort "{wanted}" in those pods, or use a port number',
        )
