"""Probing L7 routes: every Ingress rule and HTTPRoute, through every node and the load balancer.

``route_plan`` lists what to ask (pure): per Ingress virtual host and path, and per HTTPRoute hostname and
match, one request shape (host, path, headers; HTTPS too for TLS hosts), each with the backend the
specification says should answer (``lab.kube.http_routing.route``), plus one request for a host nothing
claims. ``entries`` lists where to ask: every node's IP at the proxy Service's nodePorts, and its load
balancer (pass-through at its external address, or the PROXY-protocol one at the ``lb`` host).
``route_result`` turns one probe's records into the result (pure); ``measure_routes`` runs them all.

A result (JSON keys are a contract, as in ``lab.measure.report``)::

    {"via": "ingress", "entry": "node-a", "target": "172.18.0.11:31675", "scheme": "http",
     "host": "shop.example.com", "path": "/", "headers": {}, "backend": "default/shop:80",
     "requests": 50, "statusCodes": {"308": 50}, "servedBy": {"shop-...": 25}, "proxyPods": {...},
     "forwardedFor": {"203.0.113.10": 50}, "sources": {"10.244.1.4": 50}, "location": "https://...",
     "certificates": {"shop.example.com": 50}, "errors": 0, "latencyMs": {"p50": 1.2, "p95": 2.0}}

``sources`` is the TCP source the app saw (a proxy pod); ``forwardedFor`` the client as the proxy told it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from lab.kube import addressing as addr
from lab.kube.gateway import Gateway, listener_hosts, route_statuses
from lab.kube.http_routing import CATCH_ALL, BackendRef, VirtualHost, route
from lab.kube.ingress import INGRESS_NGINX, ingresses_of, virtual_hosts
from lab.kube.l7_proxies import gateway_of, proxy_pods, proxy_services
from lab.kube.load_balancers import load_balancer_ips
from lab.kube.model import Cluster, Service
from lab.measure.probe import percentiles
from lab.measure.report import format_table

UNMATCHED_HOST = "unmatched.example.invalid"
LOAD_BALANCER = "lb"


@dataclass(frozen=True)
class RouteProbe:
    via: str  # "ingress" | "gateway"
    host: str
    path: str
    tls: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    backend: str = "404"  # what the specification says answers: "namespace/service:port"s, or "404"
    gateway: str | None = None  # namespace/name, for via == "gateway"
    port_name: str = "http"  # which Service port: "http" / "https" (ingress) or the listener's port


@dataclass(frozen=True)
class Entry:
    name: str  # a node name, or "lb"
    ip: str
    ports: dict[str, int]  # port_name -> port to connect to


def _request_host(vhost: VirtualHost) -> str:
    if vhost.host == CATCH_ALL:
        return "any.example.invalid"
    return f"probe{vhost.host[1:]}" if vhost.host.startswith("*.") else vhost.host


def _backend(vhosts: list[VirtualHost], host: str, path: str, headers: tuple) -> str:
    decision = route(vhosts, host, path, dict(headers))
    if decision.status is not None:  # a redirect's code, or 404
        return str(decision.status)
    return ", ".join(b.key + (f" ({b.weight})" if len(decision.backends) > 1 else "") for b in decision.backends)


def _probes(vhosts: list[VirtualHost], via: str, gateway: str | None, port_name: Callable[[VirtualHost], str],
            tls: Callable[[VirtualHost], bool]) -> list[RouteProbe]:
    found: dict[tuple, RouteProbe] = {}
    for vhost in vhosts:
        host = _request_host(vhost)
        for match in vhost.matches:
            path = match.path
            shapes = [(False, port_name(vhost))] + ([(True, "https")] if tls(vhost) and via == "ingress" else [])
            for is_tls, port in shapes:
                key = (host, path, is_tls, match.headers, port)
                expected = "308" if via == "ingress" and vhost.tls and not is_tls else \
                    _backend(vhosts, host, path, match.headers)
                found.setdefault(key, RouteProbe(via, host, path, is_tls or (via == "gateway" and tls(vhost)),
                                                 match.headers, expected, gateway, port))
    return list(found.values())


def service_exists(cluster: Cluster) -> Callable[[BackendRef], bool]:
    """Whether a backendRef names a Service of the cluster (of any port: a missing port is the proxy's 500)."""
    services = {(s.namespace, s.name) for s in cluster.services}
    return lambda ref: ref.kind == "Service" and (ref.namespace, ref.service) in services


def route_plan(cluster: Cluster) -> list[RouteProbe]:
    """Every Ingress path and HTTPRoute match to probe, and one unmatched host per proxy kind."""
    plan: list[RouteProbe] = []
    roles = proxy_pods(cluster).values()
    if any(r.kind == "ingress" for r in roles):
        vhosts = virtual_hosts(ingresses_of(INGRESS_NGINX, cluster.ingresses, cluster.ingress_classes))
        plan += _probes(vhosts, "ingress", None, lambda v: "http", lambda v: v.tls)
        plan.append(RouteProbe("ingress", UNMATCHED_HOST, "/", backend=_backend(vhosts, UNMATCHED_HOST, "/", ())))
    for gateway in _served_gateways(cluster):
        exists = service_exists(cluster)
        routes = [r for r in cluster.http_routes
                  if any(s.accepted for s in route_statuses([r], [gateway], exists)[f"{r.namespace}/{r.name}"])]
        tables = listener_hosts(gateway, routes, exists)
        key = f"{gateway.namespace}/{gateway.name}"
        for listener in gateway.listeners:
            port = str(listener.port)
            plan += _probes(tables[listener.name], "gateway", key, lambda v, p=port: p,
                            lambda v, lst=listener: lst.protocol == "HTTPS")
        first = gateway.listeners[0]
        plan.append(RouteProbe("gateway", UNMATCHED_HOST, "/", first.protocol == "HTTPS", backend="404",
                               gateway=key, port_name=str(first.port)))
    return plan


def _served_gateways(cluster: Cluster) -> list[Gateway]:
    found = {}
    for name, role in proxy_pods(cluster).items():
        gateway = gateway_of(cluster, cluster.pod(name))
        if role.kind == "gateway" and gateway is not None:
            found[f"{gateway.namespace}/{gateway.name}"] = gateway
    return list(found.values())


def proxy_service(cluster: Cluster, probe: RouteProbe) -> Service | None:
    """The Service clients reach this probe's proxy by."""
    return next(iter(proxy_services(cluster, probe.via, probe.gateway)), None)


def _port_names(service: Service, via: str) -> dict[str, int]:
    if via == "ingress":
        by = {sp.name or str(sp.port): sp for sp in service.ports}
        http = by.get("http") or next(sp for sp in service.ports if sp.port == 80)
        https = by.get("https") or next((sp for sp in service.ports if sp.port == 443), None)
        return {"http": http.port, "https": https.port if https else 443}
    return {str(sp.port): sp.port for sp in service.ports}


def entries(cluster: Cluster, service: Service, via: str, proxy_lb: str | None = None) -> list[Entry]:
    """Every node at the Service's nodePorts, then its load balancer (``proxy_lb``: the PROXY one's IP)."""
    names = _port_names(service, via)
    node_ports = {sp.port: sp.node_port for sp in service.ports}
    found = [Entry(n.name, addr.node_ip(n.index), {k: node_ports[p] for k, p in names.items() if p in node_ports})
             for n in cluster.nodes]
    lb_ip = proxy_lb or load_balancer_ips(cluster).get((service.namespace, service.name))
    if lb_ip:
        found.append(Entry(LOAD_BALANCER, lb_ip, dict(names)))
    return found


def route_result(records: list[dict], probe: RouteProbe, entry: Entry, target: str,
                 pod_nodes: dict[str, str]) -> dict:
    """One probe's records as a result (pure)."""
    answered = [r for r in records if r.get("status") is not None]
    responses = [r["response"] for r in answered if isinstance(r.get("response"), dict)]
    headers = [resp.get("headers", {}) for resp in responses]
    latencies = [r["latencyMs"] for r in answered if r.get("latencyMs") is not None]
    q = percentiles(latencies, [50, 95])
    return {
        "via": probe.via, "gateway": probe.gateway, "entry": entry.name, "target": target,
        "scheme": "https" if probe.tls else "http", "host": probe.host, "path": probe.path,
        "headers": dict(probe.headers), "backend": probe.backend, "requests": len(records),
        "statusCodes": dict(Counter(str(r["status"]) for r in answered)),
        "servedBy": dict(Counter(resp["pod"] for resp in responses if "pod" in resp)),
        "forwardedFor": dict(Counter(h.get("x-forwarded-for", "") for h in headers)),
        "sources": dict(Counter(resp["source"]["ip"] for resp in responses if "source" in resp)),
        "location": next((r["location"] for r in answered if r.get("location")), None),
        "certificates": dict(Counter(r["certificate"] for r in answered if r.get("certificate") is not None)),
        "errors": len(records) - len(answered),
        "errorKinds": dict(Counter(r["error"] for r in records if r.get("status") is None)),
        "latencyMs": {"p50": q[50], "p95": q[95]},
        "podNodes": {pod: pod_nodes.get(pod) for pod in {resp.get("pod") for resp in responses} if pod},
    }


def measure_routes(net, requests: int, timeout: float = 1.0, proxy_lb: str | None = None,
                   progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Every planned route probe through every entry (``net`` is a running ``LabNetwork``)."""
    cluster = net.cluster
    pod_nodes = {p.name: p.node for p in cluster.pods}
    results = []
    for probe in route_plan(cluster):
        service = proxy_service(cluster, probe)
        if service is None:
            continue
        lb = proxy_lb if probe.via == "ingress" else None
        for entry in entries(cluster, service, probe.via, lb):
            port = entry.ports.get(probe.port_name)
            if port is None:
                continue
            target = f"{entry.ip}:{port}"
            progress(f"probing {probe.via} {'https' if probe.tls else 'http'}://{probe.host}{probe.path} "
                     f"via {entry.name}, {requests} requests")
            report = net.probe([target], requests, timeout=timeout, path=probe.path, http_host=probe.host,
                               tls=probe.tls, headers=probe.headers)
            results.append(route_result(report["records"], probe, entry, target, pod_nodes))
    return results


def http_route_statuses(cluster: Cluster) -> list[dict]:
    """``status.parents`` of every HTTPRoute, as a Gateway controller writes it."""
    exists = service_exists(cluster)
    return [{"route": key, "parents": [p.to_dict() for p in parents]}
            for key, parents in route_statuses(cluster.http_routes, cluster.gateways, exists).items()]


def _apps(served: dict[str, int], pod_owner: Callable[[str], str]) -> str:
    counts = Counter()
    for pod, n in served.items():
        counts[pod_owner(pod)] += n
    return " ".join(f"{app}:{n}" for app, n in sorted(counts.items())) or "-"


def counts_text(counter: dict) -> str:
    """``{key: count}`` as one table cell, ``key:count`` sorted by key (an empty key shows as ``-``)."""
    return " ".join(f"{k or '-'}:{v}" for k, v in sorted(counter.items())) or "-"


def render_routes(results: list[dict], cluster: Cluster) -> str:
    """One line per (route, entry): what answered, and the client as the app saw it."""
    owners = {p.name: p.owner or p.name for p in cluster.pods}
    owners_by_ip = {p.ip: f"{p.owner or p.name}@{p.node}" for p in cluster.pods}
    rows = []
    for r in results:
        sources = Counter()
        for ip, n in r["sources"].items():
            sources[owners_by_ip.get(ip, ip)] += n
        headers = "".join(f" {name}: {value}" for name, value in r["headers"].items())
        rows.append([r["via"], r["entry"], f"{r['scheme']}://{r['host']}{r['path']}{headers}", r["backend"],
                     counts_text(r["statusCodes"]) + (f" errors:{r['errors']}" if r["errors"] else ""),
                     _apps(r["servedBy"], lambda pod: owners.get(pod, pod)), counts_text(r["forwardedFor"]),
                     counts_text(dict(sources)),
                     "-" if r["latencyMs"]["p50"] is None else f"{r['latencyMs']['p50']:.1f}"])
    return format_table(["via", "entry", "request", "expected", "status", "served by", "X-Forwarded-For",
                         "TCP source at the app", "p50 ms"], rows)
