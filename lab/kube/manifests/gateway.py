"""GatewayClass, Gateway and HTTPRoute (``gateway.networking.k8s.io/v1``), validated as the API server
(with the Gateway API's CRD schema) does. HTTPRoute fields beyond matches on path and headers and
weighted Service ``backendRefs`` and the RequestRedirect filter (other filters, query and method matches,
timeouts) are warned about, by field;
a RegularExpression path or header match is warned about and left out.
"""

from __future__ import annotations

from lab.errors import Origin, shown
from lab.kube import names
from lab.kube.gateway import (
    HEADER_MATCH_TYPES,
    LISTENER_PROTOCOLS,
    NAMESPACE_POLICIES,
    ROUTE_PATH_TYPES,
    Gateway,
    GatewayClass,
    GatewayListener,
    HTTPRoute,
    ParentRef,
    RouteMatch,
    RouteRule,
)
from lab.kube.http_routing import EXACT, PREFIX, BackendRef, Redirect
from lab.kube.manifests.affinity import label_selector
from lab.kube.manifests.fields import (
    choices,
    entry_of,
    integer,
    mapping,
    object_metadata,
    port_number,
    sequence,
    string,
    warn,
)
from lab.kube.manifests.ingress import validate_host
from lab.kube.manifests.reader import Doc

UNMODELLED_RULE_FIELDS = ("timeouts", "sessionPersistence", "retry")
REDIRECT_CODES = (301, 302, 303, 307, 308)  # 301 and 302 are core support, the others extended
REDIRECT_SCHEMES = ("http", "https")
UNMODELLED_MATCH_FIELDS = ("queryParams", "method")
REGULAR_EXPRESSION = "RegularExpression"


def read_gateway_class(doc: Doc) -> GatewayClass:
    origin, name, _, _ = object_metadata(doc, namespaced=False)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    controller = string(spec, "controllerName", origin, "spec.controllerName")
    if not controller:
        raise origin.error("spec.controllerName", "is required",
                           "name the controller, e.g. gateway.nginx.org/nginx-gateway-controller")
    return GatewayClass(name, controller)


def _listener(raw, origin: Origin, field: str, warnings: list[str]) -> GatewayListener | None:
    """The listener, or None (said in a warning) for a TCP, UDP or TLS one: the lab's NGINX serves HTTP
    routes only, and a controller marks such a listener not Accepted (UnsupportedProtocol) while the
    Gateway's other listeners serve."""
    entry = entry_of(raw, origin, field, "name:, protocol:, port:")
    name = string(entry, "name", origin, f"{field}.name")
    if not name:
        raise origin.error(f"{field}.name", "is required", "name the listener")
    names.validate_dns1123_label(name, origin, f"{field}.name")
    protocol = string(entry, "protocol", origin, f"{field}.protocol")
    if not protocol:
        raise origin.error(f"{field}.protocol", "is required", f"use {choices(LISTENER_PROTOCOLS)}")
    if protocol not in LISTENER_PROTOCOLS:
        warn(warnings, origin, f"{field}.protocol", f"{shown(protocol)} is not modelled, so the lab leaves this "
             "listener out (its routes get no traffic)", f"use {choices(LISTENER_PROTOCOLS)}")
        return None
    port = integer(entry, "port", origin, f"{field}.port")
    if port is None:
        raise origin.error(f"{field}.port", "is required", "add port: 80 (HTTP) or 443 (HTTPS)")
    port_number(port, origin, f"{field}.port")
    hostname = string(entry, "hostname", origin, f"{field}.hostname")
    hostname = validate_host(hostname, origin, f"{field}.hostname") if hostname else None
    certificates: tuple[str, ...] = ()
    if protocol == "HTTPS":
        tls = mapping(entry, "tls", origin, f"{field}.tls")
        if tls.get("mode", "Terminate") != "Terminate":
            raise origin.error(f"{field}.tls.mode", "is not Terminate", "use mode: Terminate (the lab terminates TLS)")
        refs = sequence(tls, "certificateRefs", origin, f"{field}.tls.certificateRefs")
        certificates = tuple(str(entry_of(r, origin, f"{field}.tls.certificateRefs", "name:").get("name"))
                             for r in refs)
    allowed = mapping(mapping(entry, "allowedRoutes", origin, f"{field}.allowedRoutes"), "namespaces", origin,
                      f"{field}.allowedRoutes.namespaces")
    policy = string(allowed, "from", origin, f"{field}.allowedRoutes.namespaces.from") or "Same"
    if policy not in NAMESPACE_POLICIES:
        raise origin.error(f"{field}.allowedRoutes.namespaces.from", f"{shown(policy)} is not a policy",
                           f"use {choices(NAMESPACE_POLICIES)}")
    selector = None
    if policy == "Selector":
        raw_selector = allowed.get("selector")
        if not isinstance(raw_selector, dict):
            raise origin.error(f"{field}.allowedRoutes.namespaces.selector", "is required when from is Selector",
                               "add selector: {matchLabels: {...}}")
        selector = label_selector(raw_selector, origin, f"{field}.allowedRoutes.namespaces.selector")
    return GatewayListener(name, protocol, port, hostname, certificates, policy, namespace_selector=selector)


def read_gateway(doc: Doc, order: int, warnings: list[str]) -> Gateway:
    origin, name, namespace, _ = object_metadata(doc, namespaced=True)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    class_name = string(spec, "gatewayClassName", origin, "spec.gatewayClassName")
    if not class_name:
        raise origin.error("spec.gatewayClassName", "is required", "name the GatewayClass")
    written = sequence(spec, "listeners", origin, "spec.listeners", required=True)
    listeners = [lst for n, raw in enumerate(written)
                 if (lst := _listener(raw, origin, f"spec.listeners[{n}]", warnings)) is not None]
    seen: set[str] = set()
    for number, listener in enumerate(listeners):
        if listener.name in seen:
            raise origin.error(f"spec.listeners[{number}].name", f'"{listener.name}" is used twice',
                               "give each listener its own name")
        seen.add(listener.name)
    return Gateway(name, namespace, class_name, listeners, order)


def _match(raw, origin: Origin, field: str, warnings: list[str]) -> RouteMatch | None:
    """The match, or None (said in a warning) for one the lab leaves out: a RegularExpression path or header.

    The API accepts RegularExpression (implementation-specific support); the lab's probes cannot make a
    request a regular expression surely matches, so such a match takes no request here, and the requests
    it would take go to the route's other matches."""
    entry = entry_of(raw, origin, field, "path: {type:, value:}")
    for key in UNMODELLED_MATCH_FIELDS:
        if key in entry:
            warn(warnings, origin, f"{field}.{key}", "is not modelled, so the match ignores it", f"remove {key}")
    path = mapping(entry, "path", origin, f"{field}.path")
    path_type = string(path, "type", origin, f"{field}.path.type") or "PathPrefix"
    if path_type not in (*ROUTE_PATH_TYPES, REGULAR_EXPRESSION):
        raise origin.error(f"{field}.path.type", f'"{path_type}" is not a path match type',
                           f"use {choices((*ROUTE_PATH_TYPES, REGULAR_EXPRESSION))}")
    value = string(path, "value", origin, f"{field}.path.value") or "/"
    if path_type != REGULAR_EXPRESSION and not value.startswith("/"):
        raise origin.error(f"{field}.path.value", f'"{value}" is not an absolute path', "start it with /")
    regex = [f"{field}.path.type"] if path_type == REGULAR_EXPRESSION else []
    headers = []
    for number, header in enumerate(sequence(entry, "headers", origin, f"{field}.headers")):
        h_field = f"{field}.headers[{number}]"
        header = entry_of(header, origin, h_field, "name:, value:")
        h_type = header.get("type") or "Exact"
        if h_type not in (*HEADER_MATCH_TYPES, REGULAR_EXPRESSION):
            raise origin.error(f"{h_field}.type", f"{shown(h_type)} is not a header match type",
                               f"use {choices((*HEADER_MATCH_TYPES, REGULAR_EXPRESSION))}")
        h_name, h_value = string(header, "name", origin, f"{h_field}.name"), string(header, "value", origin,
                                                                                   f"{h_field}.value")
        if not h_name or h_value is None:
            raise origin.error(h_field, "needs name and value", "write name: X-Env, value: canary")
        if h_type == REGULAR_EXPRESSION:
            regex.append(f"{h_field}.type")
        headers.append((h_name.lower(), h_value))
    if regex:
        warn(warnings, origin, regex[0], f"{REGULAR_EXPRESSION} is not modelled, so the lab leaves this match out "
             "(the requests it would take go to the route's other matches)", "use Exact (or PathPrefix)")
        return None
    return RouteMatch(EXACT if path_type == "Exact" else PREFIX, value, tuple(headers))


def _backend_ref(raw, namespace: str, origin: Origin, field: str, warnings: list[str]) -> BackendRef:
    """A backendRef; one of another kind than Service is kept, warned about, and resolves to nothing: the
    Gateway API answers its requests with 500 (ResolvedRefs False, InvalidKind)."""
    entry = entry_of(raw, origin, field, "name:, port:")
    kind = string(entry, "kind", origin, f"{field}.kind") or "Service"
    group = string(entry, "group", origin, f"{field}.group") or ""
    name = string(entry, "name", origin, f"{field}.name")
    if not name:
        raise origin.error(f"{field}.name", "is required", "name the Service")
    port = integer(entry, "port", origin, f"{field}.port")
    if (kind, group) != ("Service", ""):
        kind = f"{group}/{kind}" if group else kind
        warn(warnings, origin, f"{field}.kind", f"{shown(kind)} is not a Service, so the lab resolves it to nothing "
             "and its requests get 500", "route to Services (kind: Service)")
    elif port is None:
        raise origin.error(f"{field}.port", "is required for a Service", "add port: <the Service's port>")
    if port is not None:
        port_number(port, origin, f"{field}.port")
    weight = integer(entry, "weight", origin, f"{field}.weight")
    weight = 1 if weight is None else weight
    if not 0 <= weight <= 1_000_000:
        raise origin.error(f"{field}.weight", f"{weight} is outside 0-1000000", "use a weight from 0 to 1000000")
    return BackendRef(name, port if port is not None else 0,
                      string(entry, "namespace", origin, f"{field}.namespace") or namespace, weight, kind)


def _filters(rule: dict, origin: Origin, field: str, warnings: list[str]) -> Redirect | None:
    """The rule's RequestRedirect filter (scheme, hostname, port, statusCode), if it has one; other filters
    and a redirect's path warn by field and change nothing."""
    redirect = None
    for number, raw in enumerate(sequence(rule, "filters", origin, f"{field}.filters")):
        f_field = f"{field}.filters[{number}]"
        entry = entry_of(raw, origin, f_field, "type:")
        kind = string(entry, "type", origin, f"{f_field}.type")
        if kind != "RequestRedirect":
            warn(warnings, origin, f"{f_field}.type", f"{shown(kind)} is not modelled, so the rule ignores it",
                 "remove the filter (the lab models RequestRedirect)")
            continue
        spec = mapping(entry, "requestRedirect", origin, f"{f_field}.requestRedirect")
        where = f"{f_field}.requestRedirect"
        scheme = string(spec, "scheme", origin, f"{where}.scheme")
        if scheme is not None and scheme not in REDIRECT_SCHEMES:
            raise origin.error(f"{where}.scheme", f"{shown(scheme)} is not a scheme", "use http or https")
        hostname = string(spec, "hostname", origin, f"{where}.hostname")
        port = integer(spec, "port", origin, f"{where}.port")
        if port is not None:
            port_number(port, origin, f"{where}.port")
        code = integer(spec, "statusCode", origin, f"{where}.statusCode") or 302
        if code not in REDIRECT_CODES:
            raise origin.error(f"{where}.statusCode", f"{code} is not a redirect code",
                               f"use {', '.join(map(str, REDIRECT_CODES))}")
        if "path" in spec:
            warn(warnings, origin, f"{where}.path", "is not modelled, so the redirect keeps the request's path",
                 "remove path")
        redirect = Redirect(code, scheme, validate_host(hostname, origin, f"{where}.hostname") if hostname
                            else None, port)
    return redirect


def read_http_route(doc: Doc, order: int, warnings: list[str]) -> HTTPRoute:
    origin, name, namespace, _ = object_metadata(doc, namespaced=True)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    parents = []
    for number, raw in enumerate(sequence(spec, "parentRefs", origin, "spec.parentRefs")):
        entry = entry_of(raw, origin, f"spec.parentRefs[{number}]", "name: <gateway>")
        ref_name = string(entry, "name", origin, f"spec.parentRefs[{number}].name")
        if not ref_name:
            raise origin.error(f"spec.parentRefs[{number}].name", "is required", "name the Gateway")
        parents.append(ParentRef(ref_name, string(entry, "namespace", origin, f"spec.parentRefs[{number}].namespace"),
                                 string(entry, "sectionName", origin, f"spec.parentRefs[{number}].sectionName")))
    hostnames = [validate_host(str(h), origin, f"spec.hostnames[{n}]")
                 for n, h in enumerate(sequence(spec, "hostnames", origin, "spec.hostnames"))]
    rules = []
    for number, raw in enumerate(sequence(spec, "rules", origin, "spec.rules")):
        field = f"spec.rules[{number}]"
        entry = entry_of(raw, origin, field, "matches:, backendRefs:")
        for key in UNMODELLED_RULE_FIELDS:
            if key in entry:
                warn(warnings, origin, f"{field}.{key}", "is not modelled, so the rule ignores it", f"remove {key}")
        written = sequence(entry, "matches", origin, f"{field}.matches")
        matches = tuple(m for n, raw_match in enumerate(written)
                        if (m := _match(raw_match, origin, f"{field}.matches[{n}]", warnings)) is not None)
        backends = tuple(_backend_ref(b, namespace, origin, f"{field}.backendRefs[{n}]", warnings)
                         for n, b in enumerate(sequence(entry, "backendRefs", origin, f"{field}.backendRefs")))
        if written and not matches:
            continue  # every match left out: no matches would mean every request, which it never was
        rules.append(RouteRule(matches, backends, _filters(entry, origin, field, warnings)))
    return HTTPRoute(name, namespace, parents, hostnames, rules, order)
