"""Gateway API (``gateway.networking.k8s.io/v1``): GatewayClass, Gateway, HTTPRoute, and what a Gateway
controller decides from them: which routes attach to which listener, the routes' status conditions, and
each listener's routing table (``lab.kube.http_routing``).

Attachment follows the specification's rules for a route's ``parentRefs``: the Gateway must exist (in the
route's namespace unless the ref names one) and the listener (``sectionName``, when given) must allow
routes from the route's namespace (``allowedRoutes.namespaces.from``: Same, the default, or All); the
route's hostnames must intersect the listener's (a listener without a hostname takes any; ``*.`` is a
suffix match). Status per parent, as controllers write ``status.parents[].conditions``:

- ``Accepted``: True/Accepted, or False with NoMatchingParent, NotAllowedByListeners or
  NoMatchingListenerHostname;
- ``ResolvedRefs``: True/ResolvedRefs, or False/InvalidKind when a backendRef is of another kind than
  Service, or False/BackendNotFound when one names no Service; the route still attaches and requests
  for that backend get 500, as the specification requires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lab.kube.http_routing import (
    CATCH_ALL,
    SUFFIX,
    BackendRef,
    Match,
    Redirect,
    VirtualHost,
    host_matches,
    normalise_path,
)
from lab.kube.scheduler import LabelSelector

NGINX_GATEWAY_FABRIC = "gateway.nginx.org/nginx-gateway-controller"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
LISTENER_PROTOCOLS = ("HTTP", "HTTPS")
ROUTE_PATH_TYPES = ("PathPrefix", "Exact")  # Gateway's names; PathPrefix is http_routing.PREFIX
HEADER_MATCH_TYPES = ("Exact",)
NAMESPACE_POLICIES = ("Same", "All", "Selector")


@dataclass(frozen=True)
class GatewayClass:
    name: str
    controller: str


@dataclass(frozen=True)
class GatewayListener:
    name: str
    protocol: str  # HTTP | HTTPS
    port: int
    hostname: str | None = None
    certificates: tuple[str, ...] = ()  # Secret names (certificateRefs), in the Gateway's namespace
    allowed_namespaces: str = "Same"  # Same | All | Selector
    # Selector: the namespaces whose labels the listener's selector matches (kubernetes.io/metadata.name
    # included), resolved when the manifests are read, as the controller watches Namespaces
    selected_namespaces: frozenset[str] = frozenset()
    namespace_selector: LabelSelector | None = None

    def allows(self, route_namespace: str, gateway_namespace: str) -> bool:
        if self.allowed_namespaces == "All":
            return True
        if self.allowed_namespaces == "Selector":
            return route_namespace in self.selected_namespaces
        return route_namespace == gateway_namespace


@dataclass
class Gateway:
    name: str
    namespace: str = "default"
    class_name: str = ""
    listeners: list[GatewayListener] = field(default_factory=list)
    order: int = 0

    @property
    def display(self) -> str:
        return self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ParentRef:
    name: str
    namespace: str | None = None  # None: the route's namespace
    section: str | None = None  # a listener name


@dataclass(frozen=True)
class RouteMatch:
    path_type: str = "Prefix"  # http_routing.PREFIX or EXACT
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RouteRule:
    matches: tuple[RouteMatch, ...]
    backends: tuple[BackendRef, ...]
    redirect: Redirect | None = None  # a RequestRedirect filter


@dataclass
class HTTPRoute:
    name: str
    namespace: str = "default"
    parents: list[ParentRef] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    rules: list[RouteRule] = field(default_factory=list)
    order: int = 0

    @property
    def display(self) -> str:
        return self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str = ""

    def to_dict(self) -> dict:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class ParentStatus:
    """``status.parents[]`` of one route for one parentRef, plus the listeners it attached to."""

    gateway: str  # namespace/name
    section: str | None
    conditions: tuple[Condition, ...]
    listeners: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return any(c.type == "Accepted" and c.status == "True" for c in self.conditions)

    def to_dict(self) -> dict:
        return {"parentRef": {"gateway": self.gateway, "sectionName": self.section},
                "conditions": [c.to_dict() for c in self.conditions], "listeners": list(self.listeners)}


def intersect_hostname(route_host: str | None, listener_host: str | None) -> str | None:
    """The host names a route serves on a listener, or None when they have none in common."""
    if listener_host is None:
        return route_host or CATCH_ALL
    if route_host is None:
        return listener_host
    route_host, listener_host = route_host.lower(), listener_host.lower()
    if route_host == listener_host:
        return route_host
    if listener_host.startswith("*.") and not route_host.startswith("*.") and \
            host_matches(listener_host, route_host, SUFFIX):
        return route_host
    if route_host.startswith("*.") and host_matches(route_host, listener_host.lstrip("*."), SUFFIX):
        return listener_host
    return None


def _route_hosts(route: HTTPRoute, listener: GatewayListener) -> list[str]:
    wanted = route.hostnames or [None]
    found = [h for h in (intersect_hostname(w, listener.hostname) for w in wanted) if h is not None]
    return list(dict.fromkeys(found))


def parent_status(route: HTTPRoute, ref: ParentRef, gateways: list[Gateway],
                  service_exists: Callable[[BackendRef], bool]) -> ParentStatus:
    """The conditions a Gateway controller writes for one of the route's parentRefs."""
    namespace = ref.namespace or route.namespace
    key = f"{namespace}/{ref.name}"
    gateway = next((g for g in gateways if g.name == ref.name and g.namespace == namespace), None)

    def refused(reason: str, message: str) -> ParentStatus:
        return ParentStatus(key, ref.section, (Condition("Accepted", "False", reason, message),
                                               _resolved(route, service_exists)))
    if gateway is None:
        return refused("NoMatchingParent", f"Gateway {key} does not exist")
    listeners = [lst for lst in gateway.listeners if ref.section in (None, lst.name)]
    if not listeners:
        return refused("NoMatchingParent", f"Gateway {key} has no listener named {ref.section}")
    allowed = [lst for lst in listeners if lst.allows(route.namespace, gateway.namespace)]
    if not allowed:
        return refused("NotAllowedByListeners",
                       f"the listeners of Gateway {key} do not allow routes from namespace {route.namespace}")
    attached = [lst for lst in allowed if _route_hosts(route, lst)]
    if not attached:
        return refused("NoMatchingListenerHostname",
                       f"no listener hostname of Gateway {key} matches {', '.join(route.hostnames)}")
    return ParentStatus(key, ref.section, (Condition("Accepted", "True", "Accepted", ""),
                                           _resolved(route, service_exists)),
                        tuple(lst.name for lst in attached))


def _resolved(route: HTTPRoute, service_exists: Callable[[BackendRef], bool]) -> Condition:
    foreign = [b for rule in route.rules for b in rule.backends if b.kind != "Service"]
    if foreign:
        kinds = ", ".join(dict.fromkeys(f"{b.kind} {b.namespace}/{b.service}" for b in foreign))
        return Condition("ResolvedRefs", "False", "InvalidKind", f"{kinds}: only Services are supported")
    missing = [b for rule in route.rules for b in rule.backends if not service_exists(b)]
    if missing:
        names = ", ".join(dict.fromkeys(f"{b.namespace}/{b.service}" for b in missing))
        return Condition("ResolvedRefs", "False", "BackendNotFound", f"Service {names} not found")
    return Condition("ResolvedRefs", "True", "ResolvedRefs", "")


def route_statuses(routes: list[HTTPRoute], gateways: list[Gateway],
                   service_exists: Callable[[BackendRef], bool]) -> dict[str, list[ParentStatus]]:
    """``namespace/name`` of every route -> its status per parentRef."""
    return {f"{r.namespace}/{r.name}": [parent_status(r, ref, gateways, service_exists) for ref in r.parents]
            for r in sorted(routes, key=lambda r: r.order)}


def listener_hosts(gateway: Gateway, routes: list[HTTPRoute],
                   service_exists: Callable[[BackendRef], bool]) -> dict[str, list[VirtualHost]]:
    """Listener name -> its routing table, from the routes attached to it."""
    tables: dict[str, dict[str, VirtualHost]] = {lst.name: {} for lst in gateway.listeners}
    by_name = {lst.name: lst for lst in gateway.listeners}
    for route in sorted(routes, key=lambda r: r.order):
        for ref in route.parents:
            status = parent_status(route, ref, [gateway], service_exists)
            for name in status.listeners:
                listener = by_name[name]
                for host in _route_hosts(route, listener):
                    vhost = tables[name].setdefault(host, VirtualHost(host=host, wildcard=SUFFIX,
                                                                      tls=listener.protocol == "HTTPS"))
                    vhost.matches.extend(_matches(route))
    for name, table in tables.items():
        listener = by_name[name]
        if listener.protocol == "HTTPS" and listener.certificates:
            for vhost in table.values():
                vhost.tls_secret = f"{gateway.namespace}/{listener.certificates[0]}"
    return {name: list(table.values()) for name, table in tables.items()}


def _matches(route: HTTPRoute) -> list[Match]:
    found = []
    for number, rule in enumerate(route.rules):
        for match in rule.matches or (RouteMatch(),):
            found.append(Match(path_type=match.path_type, path=normalise_path(match.path_type, match.path),
                               backends=rule.backends, headers=match.headers, order=route.order,
                               source=f"HTTPRoute {route.display} rules[{number}]", redirect=rule.redirect))
    return found
