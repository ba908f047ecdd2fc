"""What one L7 proxy pod serves, from the cluster: its servers, upstreams and certificates (pure).

An ingress-nginx pod serves every Ingress of a ``k8s.io/ingress-nginx`` class on its http and https
ports (every host on both; TLS hosts redirect plain HTTP); a Gateway's pod serves that Gateway's listeners,
each on its own port. Upstreams are a Service's endpoints (pod IP:port), as ingress-nginx and NGINX
Gateway Fabric proxy by default, or, with ``service_upstream`` (ingress-nginx's annotation
``nginx.ingress.kubernetes.io/service-upstream: "true"`` on the Ingress, or the lab's option for every
backend), the Service's clusterIP:port, leaving the choice of pod to kube-proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError
from lab.ingress.nginx import Listen, NginxSite, Server
from lab.kube.cluster_ips import cluster_ips
from lab.kube.endpoints import endpoints
from lab.kube.gateway import Gateway, listener_hosts, route_statuses
from lab.kube.http_routing import CATCH_ALL, BackendRef, VirtualHost
from lab.kube.ingress import INGRESS_NGINX, ingresses_of, virtual_hosts
from lab.kube.l7_proxies import ProxyRole
from lab.kube.model import Cluster, Service, ServicePort

ENDPOINTS, SERVICE = "endpoints", "service"
UPSTREAM_MODES = (ENDPOINTS, SERVICE)


@dataclass(frozen=True)
class Table:
    """A proxy's routing, before files exist: servers by listener, and every backend they name."""

    servers: list[tuple[VirtualHost, tuple[Listen, ...], bool]]  # (vhost, listens, redirect)
    backends: list[BackendRef]
    service_upstream: set[str]  # BackendRef keys to proxy to by clusterIP
    unresolved_status: int


def find_service_port(cluster: Cluster, ref: BackendRef) -> tuple[Service, ServicePort] | None:
    if ref.kind != "Service":
        return None
    for service in cluster.services:
        if service.name == ref.service and service.namespace == ref.namespace:
            for port in service.ports:
                if port.port == ref.port or (port.name is not None and port.name == ref.port):
                    return service, port
    return None


def resolve(cluster: Cluster, ref: BackendRef, by_cluster_ip: bool) -> list[str] | None:
    """The addresses NGINX proxies to for one backend; None when the Service (port) does not exist.

    Only ready endpoints, as ingress-nginx (``getEndpointsFromSlices`` skips an endpoint whose ready
    condition is false) and NGINX Gateway Fabric do: a pod failing its readiness probe or terminating
    leaves the upstream at once, and a backend with none answers 503. kube-proxy instead falls back to
    serving terminating endpoints when no endpoint is ready (``controllers.services``)."""
    found = find_service_port(cluster, ref)
    if found is None:
        return None
    service, port = found
    if by_cluster_ip:
        cluster_ip = cluster_ips(cluster).get((service.namespace, service.name))
        if not cluster_ip:
            raise LabError(f"service-upstream for {ref.key}: the Service is headless (no clusterIP)",
                           "use the endpoints upstream mode for it")
        return [f"{cluster_ip}:{port.port}"]
    return [f"{ep.ip}:{ep.port}" for ep in endpoints(cluster, service, port) if ep.ready]


def _refs(vhosts: list[VirtualHost]) -> list[BackendRef]:
    refs = [b for v in vhosts for b in (*v.fallback, *(b for m in v.matches for b in m.backends))]
    return list({r.key: r for r in refs}.values())


def ingress_table(cluster: Cluster, role: ProxyRole, upstream: str = ENDPOINTS) -> Table:
    ports = dict(role.ports)
    served = ingresses_of(INGRESS_NGINX, cluster.ingresses, cluster.ingress_classes)
    vhosts = virtual_hosts(served)
    listens = (Listen(ports["http"]), Listen(ports["https"], ssl=True))
    by_ip = {r.key for r in _refs(vhosts)} if upstream == SERVICE else set()
    for ingress in served:
        if ingress.service_upstream:
            by_ip |= {r.key for r in _refs(virtual_hosts([ingress]))}
    return Table([(v, listens, v.tls) for v in vhosts], _refs(vhosts), by_ip, 503)


def gateway_table(cluster: Cluster, gateway: Gateway, upstream: str = ENDPOINTS) -> Table:
    exists = lambda ref: find_service_port(cluster, ref) is not None  # noqa: E731
    routes = [r for r in cluster.http_routes
              if any(s.accepted for s in route_statuses([r], [gateway], exists)[f"{r.namespace}/{r.name}"])]
    tables = listener_hosts(gateway, routes, exists)
    servers, all_vhosts = [], []
    for listener in gateway.listeners:
        # A listener no route is attached to still listens: NGINX Gateway Fabric answers 404 there.
        for vhost in tables[listener.name] or [VirtualHost(CATCH_ALL)]:
            servers.append((vhost, (Listen(listener.port, ssl=listener.protocol == "HTTPS"),), False))
            all_vhosts.append(vhost)
    refs = _refs(all_vhosts)
    return Table(servers, refs, {r.key for r in refs} if upstream == SERVICE else set(), 500)


def site(cluster: Cluster, table: Table, what: str, prefix: str, certs: dict[str, tuple[str, str]],
         default_cert: tuple[str, str], proxy_protocol: bool = False) -> NginxSite:
    """``certs``: TLS virtual host name -> (certificate, key) paths (``lab.ingress.runtime`` writes them)."""
    upstreams = {ref.key: resolve(cluster, ref, ref.key in table.service_upstream) for ref in table.backends}
    servers = [Server(vhost, listens, redirect, certs.get(vhost.host) if any(lst.ssl for lst in listens) else None)
               for vhost, listens, redirect in table.servers]
    return NginxSite(what=what, prefix=prefix, servers=servers, upstreams=upstreams, default_cert=default_cert,
                     proxy_protocol=proxy_protocol, unresolved_status=table.unresolved_status)


def tls_hosts(table: Table) -> dict[str, str | None]:
    """Every TLS virtual host -> the ``namespace/name`` of its Secret (None: the lab makes a certificate)."""
    return {vhost.host: vhost.tls_secret for vhost, listens, _ in table.servers
            if vhost.tls and vhost.host and any(lst.ssl for lst in listens)}
