"""Services: type, traffic policy, selector and ports, then nodePorts allocated as the API server does.

NodePort and LoadBalancer Services get their nodePorts (and, for LoadBalancer + Local, the
healthCheckNodePort) from ``lab.kube.allocation``. ClusterIP Services (headless ones too, ``clusterIP:
None``) are in the model with their ports and no nodePorts; ``clusterIP`` is kept as given (an export from
a live cluster carries the one it chose). ExternalName Services are DNS aliases: ignored with a warning.
Read and honoured: ``internalTrafficPolicy``, ``sessionAffinity: ClientIP`` with
``sessionAffinityConfig.clientIP.timeoutSeconds`` (1-86400, default 10800), ``loadBalancerSourceRanges``,
``publishNotReadyAddresses`` (``lab.kube.endpoints``), TCP and UDP ports, Cilium's
``service.cilium.io/lb-algorithm`` annotation (``lab.kube.lb_algorithm``); SCTP ports are left out with a
warning.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab.errors import ManifestError, Origin, shown
from lab.kube import addressing, lb_algorithm, names
from lab.kube.allocation import PortConflict, PortRange, PortRequest, allocate
from lab.kube.cluster_ips import check_cluster_ip
from lab.kube.endpoints import selected_pods
from lab.kube.manifests.fields import (
    annotations_of,
    boolean,
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
from lab.kube.manifests.service_topology import check_topology_annotations, traffic_distribution
from lab.kube.model import Cluster, Service, ServicePort

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
HEADLESS = "None"  # spec.clusterIP of a headless Service
TRAFFIC_POLICIES = ("Cluster", "Local")
HEALTH_CHECK_KEY = "healthCheckNodePort"  # never a port name: those are lowercase
AFFINITY_DEFAULT_S = 10800  # k8s.io/api: ClientIPConfig.timeoutSeconds default (3 h)
AFFINITY_MAX_S = 86400


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
    annotations: dict[str, str] = field(default_factory=dict)
    traffic_distribution: str | None = None
    publish_not_ready: bool = False

    @property
    def has_node_ports(self) -> bool:
        return self.type != "ClusterIP"


def service_draft(doc: Doc, warnings: list[str], strict: list[str]) -> _ServiceDraft | None:
    """The Service as the API server would store it, or None (with a warning) for an ExternalName one."""
    origin, name, namespace, meta = object_metadata(doc, namespaced=True)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    notes = _annotations(meta, origin)
    check_topology_annotations(notes, origin, warnings)
    service_type = string(spec, "type", origin, "spec.type") or "ClusterIP"
    if service_type == "ExternalName":
        target = string(spec, "externalName", origin, "spec.externalName")
        warnings.append(
            f'Service "{display(name, namespace)}" ({doc.source}) of type ExternalName is a DNS alias '
            f"(to {shown(target)}): the lab models no DNS, so it is ignored"
        )
        return None
    if service_type not in SERVICE_TYPES:
        raise origin.error(
            "spec.type",
            f"{shown(service_type)} is not a Service type",
            f"use {', '.join(SERVICE_TYPES)} or ExternalName",
        )
    cluster_ip = _cluster_ip(spec, service_type, origin)
    raw_policy = string(spec, "externalTrafficPolicy", origin, "spec.externalTrafficPolicy")
    if raw_policy and service_type == "ClusterIP":
        raise origin.error("spec.externalTrafficPolicy", "may only be set when type is NodePort or LoadBalancer",
                           "remove it, or change the type")
    policy = raw_policy or "Cluster"
    if policy not in TRAFFIC_POLICIES:
        raise origin.error(
            "spec.externalTrafficPolicy", f"{shown(policy)} is not a policy", "use Cluster or Local"
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
        ports=_service_ports(spec, service_type, origin, warnings, strict),
        health_check_node_port=health,
        needs_health_check=needs_health_check,
        cluster_ip=cluster_ip,
        internal_policy=_policy(spec, "internalTrafficPolicy", origin),
        affinity_timeout=_affinity(spec, origin),
        source_ranges=_source_ranges(spec, service_type, origin, warnings, display(name, namespace)),
        annotations=notes,
        traffic_distribution=traffic_distribution(spec, origin),
        publish_not_ready=bool(boolean(spec, "publishNotReadyAddresses", origin, "spec.publishNotReadyAddresses")),
    )


def _annotations(meta: dict, origin: Origin) -> dict[str, str]:
    """The annotations, with Cilium's ``service.cilium.io/lb-algorithm`` checked (the rest are read past;
    ``lab.kube.manifests.unhonoured`` names Cilium's other ones)."""
    notes = annotations_of(meta, origin)
    value = notes.get(lb_algorithm.ANNOTATION)
    if value is not None and (wrong := lb_algorithm.problem(value)) is not None:
        raise origin.error(f"metadata.annotations[{lb_algorithm.ANNOTATION}]", wrong,
                           f"use {' or '.join(lb_algorithm.ALGORITHMS)}")
    return notes


def _policy(spec: dict, key: str, origin: Origin) -> str:
    policy = string(spec, key, origin, f"spec.{key}") or "Cluster"
    if policy not in TRAFFIC_POLICIES:
        raise origin.error(f"spec.{key}", f"{shown(policy)} is not a policy", "use Cluster or Local")
    return policy


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


def _cluster_ip(spec: dict, service_type: str, origin: Origin) -> str | None:
    """``spec.clusterIP`` as given (kubectl exports carry the one the cluster chose), "None" for headless."""
    value = string(spec, "clusterIP", origin, "spec.clusterIP") or None
    if value is None:
        return None
    if value == HEADLESS:
        if service_type != "ClusterIP":
            raise origin.error("spec.clusterIP", f"may be None (headless) only for type ClusterIP, not {service_type}",
                               "remove clusterIP, or use type ClusterIP")
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise origin.error("spec.clusterIP", f"{shown(value)} is not an IPv4 address",
                           'use an address, "None" for a headless Service, or leave it out') from exc
    problem = check_cluster_ip(Service("", [], cluster_ip=value))
    if problem:
        raise origin.error("spec.clusterIP", problem, "use an address of the Service CIDR "
                           f"({addressing.SERVICE_CIDR}) or leave it out to have one allocated")
    return value


def _service_ports(
    spec: dict, service_type: str, origin: Origin, warnings: list[str], strict: list[str]
) -> list[_PortDraft]:
    entries = sequence(spec, "ports", origin, "spec.ports", required=service_type != "ClusterIP")
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
        if protocol not in ("TCP", "UDP", "SCTP"):
            raise origin.error(f"{field}.protocol", f"{shown(protocol)} is not a protocol", "use TCP, UDP or SCTP")
        if protocol == "SCTP":
            message = str(origin.error(f"{field}.protocol", f"{protocol} is not modelled (the lab forwards TCP "
                                       "and UDP)", "this port is left out"))
            warnings.append(message)
            strict.append(message)
            continue
        number = integer(entry, "port", origin, f"{field}.port")
        if number is None:
            raise origin.error(f"{field}.port", "is required", "add port: <number>")
        port_number(number, origin, f"{field}.port")
        for other, taken in enumerate(ports):
            if taken.port == number and taken.protocol == protocol:
                raise origin.error(
                    f"{field}.port",
                    f"{number} is already used by spec.ports[{other}]",
                    "give each Service port its own number",
                )
        node_port = integer(entry, "nodePort", origin, f"{field}.nodePort") or None  # 0 means "allocate"
        if node_port is not None and service_type == "ClusterIP":
            raise origin.error(f"{field}.nodePort", "may not be set when type is ClusterIP",
                               "remove it, or use type NodePort")
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
        for index, port in enumerate(draft.ports if draft.has_node_ports else ()):
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
        cluster_ip=draft.cluster_ip,
        ports=[
            ServicePort(
                port=port.port,
                node_port=node_ports[_port_key(draft, port.name)] if draft.has_node_ports else None,
                target_port=port.target_port,
                name=port.name,
                protocol=port.protocol,
            )
            for port in draft.ports
        ],
        internal_traffic_policy=draft.internal_policy,
        session_affinity_timeout=draft.affinity_timeout,
        load_balancer_source_ranges=draft.source_ranges,
        annotations=draft.annotations,
        traffic_distribution=draft.traffic_distribution,
        publish_not_ready=draft.publish_not_ready,
    )


def check_endpoints(cluster: Cluster, draft: _ServiceDraft, service: Service, warnings: list[str]) -> None:
    """What the EndpointSlice controller would leave empty, said once per Service.

    A selector matching no pod is valid (the pods may come later), so it is a warning; a named targetPort
    that no selected pod declares is almost always a typo, so for a Service the lab probes from outside it
    is an error, and for a ClusterIP one a warning.
    """
    origin = draft.origin
    if not service.selector:
        warnings.append(str(origin.error("spec.selector", "is empty, so the Service has no endpoints (they would be "
                                         "managed by hand, which the lab does not model)",
                                         "add a selector with the pods' labels")))
        return
    pods = selected_pods(cluster, service)
    if not pods:
        warnings.append(str(origin.error("", f"no endpoints: selector {no_pod_text(service)}",
                                         "check the selector against the pods' labels and namespace")))
        return
    try:
        _check_named_target_ports(pods, draft, service)
    except ManifestError as exc:
        if service.type != "ClusterIP":
            raise
        warnings.append(str(exc))


def no_pod_text(service: Service) -> str:
    """``app=web matches no pod`` (the words reports show for a Service without endpoints)."""
    return ",".join(f"{k}={v}" for k, v in service.selector.items()) + " matches no pod"


def _check_named_target_ports(pods: list, draft: _ServiceDraft, service: Service) -> None:
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
