"""Ingress and IngressClass (``networking.k8s.io/v1``) and the routing table one ingress controller builds.

An ingress controller serves the Ingresses of its classes: ``spec.ingressClassName``, or the legacy
``kubernetes.io/ingress.class`` annotation, or, when neither is set, the IngressClass marked
``ingressclass.kubernetes.io/is-default-class: "true"``. The lab runs ingress-nginx's behaviour
(controller ``k8s.io/ingress-nginx``), so the table is built as ingress-nginx builds its NGINX servers:

- one virtual host per rule host, merging every Ingress of the class that names it; rules without a host
  go to the catch-all server, which only serves requests whose host no server claims;
- a host's unmatched paths go to the ``defaultBackend`` of the Ingress that first defined that host, or
  to the controller's default backend (404); the catch-all's to the first Ingress ``defaultBackend``;
- a host listed in an Ingress's ``tls`` gets HTTPS with that entry's Secret (or a certificate the lab
  makes, ``lab.ingress.certificates``) and plain HTTP redirected with 308 (``ssl-redirect``, default on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.kube.http_routing import CATCH_ALL, ONE_LABEL, BackendRef, Match, VirtualHost, normalise_path

INGRESS_NGINX = "k8s.io/ingress-nginx"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_UPSTREAM_ANNOTATION = "nginx.ingress.kubernetes.io/service-upstream"


@dataclass(frozen=True)
class IngressPath:
    path: str
    path_type: str
    backend: BackendRef


@dataclass(frozen=True)
class IngressRule:
    host: str | None
    paths: tuple[IngressPath, ...]


@dataclass(frozen=True)
class IngressTLS:
    hosts: tuple[str, ...]
    secret: str | None  # secretName, in the Ingress's namespace


@dataclass
class Ingress:
    name: str
    namespace: str = "default"
    class_name: str | None = None  # spec.ingressClassName, else the legacy annotation
    rules: list[IngressRule] = field(default_factory=list)
    default_backend: BackendRef | None = None
    tls: list[IngressTLS] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    order: int = 0  # manifest order: ingress-nginx resolves conflicts by creation time

    @property
    def display(self) -> str:
        return self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"

    @property
    def service_upstream(self) -> bool:
        return self.annotations.get(SERVICE_UPSTREAM_ANNOTATION, "").lower() == "true"


@dataclass(frozen=True)
class IngressClass:
    name: str
    controller: str
    default: bool = False
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class TLSSecret:
    """A ``kubernetes.io/tls`` Secret: PEM certificate chain and key."""

    name: str
    namespace: str
    cert_pem: str
    key_pem: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def class_of(ingress: Ingress, classes: list[IngressClass]) -> IngressClass | None:
    """The IngressClass an Ingress belongs to, or None (no such class, or no class and no default)."""
    if ingress.class_name is not None:
        return next((c for c in classes if c.name == ingress.class_name), None)
    defaults = [c for c in classes if c.default]
    return defaults[0] if len(defaults) == 1 else None


def ingresses_of(controller: str, ingresses: list[Ingress], classes: list[IngressClass]) -> list[Ingress]:
    """The Ingresses a controller serves, in manifest order."""
    served = []
    for ingress in sorted(ingresses, key=lambda i: i.order):
        cls = class_of(ingress, classes)
        if cls is not None and cls.controller == controller:
            served.append(ingress)
    return served


def virtual_hosts(ingresses: list[Ingress]) -> list[VirtualHost]:
    """The routing table of one controller over the Ingresses it serves (see the module docstring)."""
    hosts: dict[str, VirtualHost] = {}

    def vhost(name: str, ingress: Ingress) -> VirtualHost:
        if name not in hosts:
            fallback = (ingress.default_backend,) if ingress.default_backend and name != CATCH_ALL else ()
            hosts[name] = VirtualHost(host=name, fallback=fallback, wildcard=ONE_LABEL)
        return hosts[name]

    for ingress in sorted(ingresses, key=lambda i: i.order):
        for number, rule in enumerate(ingress.rules):
            target = vhost((rule.host or CATCH_ALL).lower(), ingress)
            for p_number, path in enumerate(rule.paths):
                target.matches.append(Match(
                    path_type=path.path_type, path=normalise_path(path.path_type, path.path),
                    backends=(path.backend,), order=ingress.order,
                    source=f"Ingress {ingress.display} rules[{number}].http.paths[{p_number}]"))
        for entry in ingress.tls:
            for host in entry.hosts:
                target = vhost(host.lower(), ingress)
                if not target.tls:
                    target.tls = True
                    target.tls_secret = f"{ingress.namespace}/{entry.secret}" if entry.secret else None
    # The catch-all exists with no Ingress at all: ingress-nginx always has its default server on 80 and
    # 443, answering 404 from its default backend.
    catch_all = hosts.setdefault(CATCH_ALL, VirtualHost(host=CATCH_ALL, fallback=(), wildcard=ONE_LABEL))
    if not catch_all.fallback:
        first = next((i.default_backend for i in sorted(ingresses, key=lambda i: i.order) if i.default_backend),
                     None)
        catch_all.fallback = (first,) if first else ()
    return list(hosts.values())
