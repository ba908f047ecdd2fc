"""Services: type, traffic policies, selector, ports and the in-cluster fields, then nodePorts
allocated as the API server does.

NodePort and LoadBalancer Services get their nodePorts (and, for LoadBalancer + Local, the
healthCheckNodePort) from ``lab.kube.allocation``; every Service gets a clusterIP
(``lab.kube.cluster_ips``) unless it is headless (``clusterIP: None``). Read and honoured:
``internalTrafficPolicy``, ``sessionAffinity: ClientIP`` with ``sessionAffinityConfig.clientIP.
timeoutSeconds`` (1-86400, default 10800), ``loadBalancerSourceRanges`` and TCP or UDP ports.
ExternalName Services are ignored with a warning (they are DNS names, not kube-proxy rules).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lab.errors import Origin, shown
from lab.kube import addressing, names
from lab.kube.allocation import PortConflict, PortRange, PortRequest, allocate
from lab.kube.cluster_ips import check_cluster_ip
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

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
IGNORED_SERVICE_TYPES = ("ExternalName",)
TRAFFIC_POLICIES = ("Cluster", "Local")
SERVICE_PROTOCOLS = ("TCP", "UDP")
AFFINITY_DEFAULT_S = 10800  # k8s.io/api: ClientIPConfig.timeoutSeconds default (3 h)
AFFINITY_MAX_S = 86400
HEALTH_CHECK_KEY = "healthCheckNodePort"  # never a port name: those are lowercase


@dataclass(frozen=True)
class _PortDraft:
    name: str | None
    port: int
    target_port: int | str
    node_port: int | None  # None: allocate one
    protocol: str = "TCP"


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
    cluster_ip: str | None = None
    internal_policy: str = "Cluster"
    affinity_timeout: int | None = None
    source_ranges: tuple[str, ...] = ()


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
            "use ClusterIP, NodePort or LoadBalancer (ExternalName is ignored)",
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
    ports = _service_ports(spec, origin)
    if service_type == "ClusterIP":
        for index, port in enumerate(ports):
            if port.node_port is not None:
                raise origin.error(f"spec.ports[{index}].nodePort", "may not be set for type ClusterIP",
                                   "remove it, or use type NodePort")
    return _ServiceDraft(
        origin=origin,
        name=name,
        namespace=namespace,
        type=service_type,
        policy=policy,
        selector=string_map(spec, "selector", origin, "spec.selector"),
        ports=ports,
        health_check_node_port=health,
        needs_health_check=needs_health_check,
        cluster_ip=_cluster_ip(spec, service_type, origin),
        internal_policy=_policy(spec, "internalTrafficPolicy", origin),
        affinity_timeout=_affinity(spec, origin),
        source_ranges=_source_ranges(spec, service_type, origin, warnings, display(name, namespace)),
    )


def _policy(spec: dict, key: str, origin: Origin) -> str:
    policy = string(spec, key, origin, f"spec.{key}") or "Cluster"
    if policy not in TRAFFIC_POLICIES:
        raise origin.error(f"spec.{key}", f"{shown(policy)} is not a policy", "use Cluster or Local")
    return policy


def _cluster_ip(spec: dict, service_type: str, origin: Origin) -> str | None:
    """``spec.clusterIP`` (``clusterIPs[0]`` agrees with it, as the API requires): an address, "None"
    (headless, ClusterIP only) or unset (allocated)."""
    value = string(spec, "clusterIP", origin, "spec.clusterIP") or None
    many = sequence(spec, "clusterIPs", origin, "spec.clusterIPs")
    if many:
        if value is not None and many[0] != value:
            raise origin.error("spec.clusterIPs[0]", f"{shown(many[0])} differs from spec.clusterIP",
                               "make them equal or remove clusterIPs")
        value = many[0] if isinstance(many[0], str) else value
    if value == "None":
        if service_type != "ClusterIP":
            raise origin.error("spec.clusterIP", f"None (headless) may not be used with type {service_type}",
                               "remove clusterIP or use type ClusterIP")
        return value
    if value is not None:
        problem = check_cluster_ip(Service("", [], cluster_ip=value))
        if problem:
            raise origin.error("spec.clusterIP", problem,
                               f"use an address in {addressing.SERVICE_CIDR} or omit it to have one allocated")
    return value


def _affinity(spec: dict, origin: Origin) -> int | None:
    affinity = string(spec, "sessionAffinity", origin, "spec.sessionAffinity") or "None"
    if affinity not in ("None", "ClientIP"):
        raise origin.error("spec.sessionAffinity", f"{shown(affinity)} is not a session affinity",
                           "use None or ClientIP")
    config = mapping(mapping(spec, "sessionAffinityConfig", origin, "spec.sessionAffinityConfig"),
                     "clientIP", origin, "spec.sessionAffinityConfig.clientIP")
    field = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    timeout = integer(config, "timeoutSeconds", origin, field)
    if affinity == "None":
        if timeout is not None:
            raise origin.error(field, "may only be set when sessionAffinity is ClientIP",
                               "remove it or set sessionAffinity: ClientIP")
        return None
    if timeout is None:
        return AFFINITY_DEFAULT_S
    if not 0 < timeout <= AFFINITY_MAX_S:
        raise origin.error(field, f"{timeout} is outside 1-{AFFINITY_MAX_S}",
                           "use a number of seconds in that range")
    return timeout


def _source_ranges(spec: dict, service_type: str, origin: Origin, warnings: list[str], shown_name: str
                   ) -> tuple[str, ...]:
    ranges = []
    values = sequence(spec, "loadBalancerSourceRanges", origin, "spec.loadBalancerSourceRanges")
    for index, value in enumerate(values):
        field = f"spec.loadBalancerSourceRanges[{index}]"
        try:
            ranges.append(str(ipaddress.IPv4Network(str(value).strip(), strict=False)))
        except ValueError:
            raise origin.error(field, f"{shown(str(value))} is not an IPv4 CIDR",
                               "write it as 203.0.113.0/24") from None
    if ranges and service_type != "LoadBalancer":
        warnings.append(f"Service/{shown_name}: spec.loadBalancerSourceRanges has no effect on type "
                        f"{service_type} (only a load balancer's address is filtered; nodePorts stay open, "
                        "as in kube-proxy)")
    return tuple(ranges)


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
        if protocol == "SCTP":
            raise origin.error(
                f"{field}.protocol",
                "SCTP is not supported (the lab forwards TCP and UDP)",
                "remove this port or use TCP or UDP",
            )
        if protocol not in SERVICE_PROTOCOLS:
            raise origin.error(f"{field}.protocol", f'{shown(protocol)} is not a protocol', "use TCP or UDP")
        number = integer(entry, "port", origin, f"{field}.port")
        if number is None:
            raise origin.error(f"{field}.port", "is required", "add port: <number>")
        port_number(number, origin, f"{field}.port")
        for other, taken in enumerate(ports):
            if taken.port == number and taken.protocol == protocol:
                raise origin.error(
                    f"{field}.port",
                    f"{number} is already used by spec.ports[{other}] ({protocol})",
                    "give each Service port its own number",
                )
        node_port = integer(entry, "nodePort", origin, f"{field}.nodePort") or None  # 0 means "allocate"
        ports.append(_PortDraft(name, number, _target_port(entry, number, origin, field), node_port, protocol))
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
        if draft.type == "ClusterIP":
            continue  # no nodePorts
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
                node_port=node_ports.get(_port_key(draft, port.name), 0),
                target_port=port.target_port,
                name=port.name,
                protocol=port.protocol,
            )
            for port in draft.ports
        ],
        cluster_ip=draft.cluster_ip,
        internal_traffic_policy=draft.internal_policy,
        session_affinity_timeout=draft.affinity_timeout,
        load_balancer_source_ranges=draft.source_ranges,
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
