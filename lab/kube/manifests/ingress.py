"""Ingress, IngressClass (``networking.k8s.io/v1``) and TLS Secrets, validated as the API server does.

What the API requires is an error (a path without ``pathType``, a backend with both a port number and a
name, a relative path); what it accepts but the lab does not model (a ``resource`` backend, Secrets of
other types) is a warning naming the field.
"""

from __future__ import annotations

import base64
import binascii

from lab.errors import Origin
from lab.kube import names
from lab.kube.http_routing import EXACT, PATH_TYPES, BackendRef
from lab.kube.ingress import (
    DEFAULT_CLASS_ANNOTATION,
    LEGACY_CLASS_ANNOTATION,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    TLSSecret,
)
from lab.kube.manifests.fields import (
    annotations_of,
    choices,
    integer,
    mapping,
    object_metadata,
    port_number,
    sequence,
    string,
    string_map,
    warn,
)
from lab.kube.manifests.reader import Doc
from lab.kube.manifests.unhonoured import unhonoured

TLS_SECRET_TYPE = "kubernetes.io/tls"


def validate_host(host: str, origin: Origin, field: str) -> str:
    """A DNS name, or ``*.`` and a DNS name; never an IP address (the API refuses those too)."""
    bare = host[2:] if host.startswith("*.") else host
    problem = names.dns1123_subdomain_problem(bare)
    if problem or "*" in bare:
        raise origin.error(field, f'"{host}" is not a host name', "use a DNS name such as shop.example.com "
                           "or a wildcard such as *.example.com")
    if bare.replace(".", "").isdigit():
        raise origin.error(field, f'"{host}" is an IP address', "use a DNS name: Ingress hosts cannot be IPs")
    return host.lower()


def backend(raw: dict, namespace: str, origin: Origin, field: str, warnings: list[str]) -> BackendRef | None:
    if "resource" in raw:
        warn(warnings, origin, f"{field}.resource", "is not modelled (the lab routes to Services only)",
             "use service: {name:, port:}")
        return None
    service = mapping(raw, "service", origin, f"{field}.service", required=True)
    name = string(service, "name", origin, f"{field}.service.name")
    if not name:
        raise origin.error(f"{field}.service.name", "is required", "name the Service to route to")
    names.validate_dns1035_label(name, origin, f"{field}.service.name")
    port = mapping(service, "port", origin, f"{field}.service.port", required=True)
    number = integer(port, "number", origin, f"{field}.service.port.number")
    port_name = string(port, "name", origin, f"{field}.service.port.name")
    if (number is None) == (port_name is None):
        raise origin.error(f"{field}.service.port", "needs exactly one of number or name",
                           "write port: {number: 80} or port: {name: http}")
    if number is not None:
        port_number(number, origin, f"{field}.service.port.number")
    return BackendRef(name, number if number is not None else port_name, namespace)


def _paths(http: dict, namespace: str, origin: Origin, field: str, warnings: list[str]) -> tuple[IngressPath, ...]:
    paths = []
    for number, raw in enumerate(sequence(http, "paths", origin, f"{field}.paths", required=True)):
        p_field = f"{field}.paths[{number}]"
        if not isinstance(raw, dict):
            raise origin.error(p_field, "is not a mapping", "write path:, pathType:, backend:")
        path_type = string(raw, "pathType", origin, f"{p_field}.pathType")
        if path_type not in PATH_TYPES:
            problem = "is required" if path_type is None else f'"{path_type}" is not a path type'
            raise origin.error(f"{p_field}.pathType", problem, f"use {choices(PATH_TYPES)}")
        path = string(raw, "path", origin, f"{p_field}.path") or ("/" if path_type != EXACT else None)
        if path is None or not path.startswith("/"):
            raise origin.error(f"{p_field}.path", f'"{path}" is not an absolute path', "start it with /")
        target = backend(mapping(raw, "backend", origin, f"{p_field}.backend", required=True), namespace,
                         origin, f"{p_field}.backend", warnings)
        if target is not None:
            paths.append(IngressPath(path, path_type, target))
    return tuple(paths)


def read_ingress(doc: Doc, order: int, warnings: list[str]) -> Ingress:
    origin, name, namespace, meta = object_metadata(doc, namespaced=True)
    annotations = annotations_of(meta, origin)
    warnings += unhonoured("Ingress", doc.body, origin)
    spec = mapping(doc.body, "spec", origin, "spec")
    class_name = string(spec, "ingressClassName", origin, "spec.ingressClassName")
    class_name = class_name or annotations.get(LEGACY_CLASS_ANNOTATION)
    rules = []
    for number, raw in enumerate(sequence(spec, "rules", origin, "spec.rules")):
        field = f"spec.rules[{number}]"
        if not isinstance(raw, dict):
            raise origin.error(field, "is not a mapping", "write host: and http: paths:")
        host = string(raw, "host", origin, f"{field}.host")
        host = validate_host(host, origin, f"{field}.host") if host else None
        http = mapping(raw, "http", origin, f"{field}.http")
        if not http:
            warn(warnings, origin, f"{field}.http", "is empty, so the rule routes nothing", "add http.paths")
            continue
        rules.append(IngressRule(host, _paths(http, namespace, origin, f"{field}.http", warnings)))
    default = mapping(spec, "defaultBackend", origin, "spec.defaultBackend")
    default_backend = backend(default, namespace, origin, "spec.defaultBackend", warnings) if default else None
    if not rules and default_backend is None:
        raise origin.error("spec", "has neither rules nor defaultBackend", "add spec.rules or spec.defaultBackend")
    tls = []
    for number, raw in enumerate(sequence(spec, "tls", origin, "spec.tls")):
        field = f"spec.tls[{number}]"
        if not isinstance(raw, dict):
            raise origin.error(field, "is not a mapping", "write hosts: and secretName:")
        hosts = tuple(validate_host(str(h), origin, f"{field}.hosts")
                      for h in sequence(raw, "hosts", origin, f"{field}.hosts"))
        tls.append(IngressTLS(hosts, string(raw, "secretName", origin, f"{field}.secretName")))
    return Ingress(name=name, namespace=namespace, class_name=class_name, rules=rules,
                   default_backend=default_backend, tls=tls, annotations=annotations, order=order)


def read_ingress_class(doc: Doc) -> IngressClass:
    origin, name, _, meta = object_metadata(doc, namespaced=False)
    annotations = annotations_of(meta, origin)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    controller = string(spec, "controller", origin, "spec.controller")
    if not controller:
        raise origin.error("spec.controller", "is required", "name the controller, e.g. k8s.io/ingress-nginx")
    return IngressClass(name, controller, annotations.get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true",
                        string_map(meta, "labels", origin, "metadata.labels"))


def _secret_value(doc: Doc, origin: Origin, key: str) -> str | None:
    string_data = mapping(doc.body, "stringData", origin, "stringData")
    if isinstance(string_data.get(key), str):
        return string_data[key]
    data = mapping(doc.body, "data", origin, "data")
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(str(raw), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise origin.error(f"data[{key}]", "is not base64 of PEM text", "encode the PEM file with base64 -w0") \
            from exc


def read_secret(doc: Doc, warnings: list[str]) -> TLSSecret | None:
    """A ``kubernetes.io/tls`` Secret; any other Secret is ignored with a warning."""
    origin, name, namespace, _ = object_metadata(doc, namespaced=True)
    secret_type = doc.body.get("type") or "Opaque"
    if secret_type != TLS_SECRET_TYPE:
        warnings.append(f"ignored Secret/{name} of type {secret_type} (the lab uses {TLS_SECRET_TYPE} Secrets)")
        return None
    cert, key = _secret_value(doc, origin, "tls.crt"), _secret_value(doc, origin, "tls.key")
    for field, value, marker in (("tls.crt", cert, "CERTIFICATE"), ("tls.key", key, "PRIVATE KEY")):
        if not value or marker not in value:
            raise origin.error(f"data[{field}]", f"holds no PEM {marker}", f"put the PEM {marker} in {field}")
    return TLSSecret(name, namespace, cert, key)
