"""What the lab adds to the manifests, as the cluster's add-ons would: objects, not shortcuts.

- Ingress objects and no ingress controller: the lab installs one as ingress-nginx's cloud manifest does
  (``deploy/static/provider/cloud/deploy.yaml``): namespace ``ingress-nginx``, a one-replica Deployment
  ``ingress-nginx-controller`` with ports http 80 and https 443, a LoadBalancer Service of the same name with
  ``externalTrafficPolicy: Local``, and IngressClass ``nginx`` (controller ``k8s.io/ingress-nginx``), made
  the default class when no class is, so class-less Ingresses are served. A warning says so.
- A Gateway: its data plane, as a Gateway controller provisions it (NGINX Gateway Fabric names it
  ``<gateway>-<class>``): a one-replica Deployment whose pods carry ``gateway.networking.k8s.io/gateway-name``,
  and a LoadBalancer Service (Local, NGINX Gateway Fabric's default) with one port per listener.

Returned as ordinary documents, so the loader validates, schedules and allocates them like the user's own.
"""

from __future__ import annotations

from lab.kube.gateway import GATEWAY_NAME_LABEL, Gateway
from lab.kube.ingress import INGRESS_NGINX, IngressClass
from lab.kube.l7_proxies import CHART_LABELS, HTTP_PORT, HTTPS_PORT
from lab.kube.manifests.reader import Doc

CONTROLLER_NAME = "ingress-nginx-controller"
CONTROLLER_NAMESPACE = "ingress-nginx"
CONTROLLER_IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.12.1"
GATEWAY_IMAGE = "ghcr.io/nginx/nginx-gateway-fabric/nginx:2.0.0"
CLASS_NAME = "nginx"
SOURCE = "added by the lab"


def _deployment(name: str, namespace: str, labels: dict[str, str], image: str,
                ports: list[tuple[str, int]]) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "nginx", "image": image,
                         "ports": [{"name": p_name, "containerPort": port} for p_name, port in ports]}]}}}}


def _service(name: str, namespace: str, labels: dict[str, str], ports: list[tuple[str, int]]) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": labels,
                     "ports": [{"name": p_name, "port": port, "targetPort": p_name} for p_name, port in ports]}}


def ingress_controller_docs(classes: list[IngressClass]) -> tuple[list[Doc], IngressClass | None]:
    """ingress-nginx as its cloud manifest installs it; the IngressClass too when none names it."""
    source = f"{SOURCE} (ingress-nginx cloud manifest)"
    ports = [("http", HTTP_PORT), ("https", HTTPS_PORT)]
    docs = [Doc("Deployment", _deployment(CONTROLLER_NAME, CONTROLLER_NAMESPACE, dict(CHART_LABELS),
                                          CONTROLLER_IMAGE, ports), source),
            Doc("Service", _service(CONTROLLER_NAME, CONTROLLER_NAMESPACE, dict(CHART_LABELS), ports), source)]
    if any(c.controller == INGRESS_NGINX for c in classes):
        return docs, None
    return docs, IngressClass(CLASS_NAME, INGRESS_NGINX, default=not any(c.default for c in classes),
                              labels=dict(CHART_LABELS))


def gateway_name(gateway: Gateway) -> str:
    return f"{gateway.name}-{gateway.class_name}"[:63].rstrip("-")


def gateway_docs(gateway: Gateway) -> list[Doc]:
    labels = {GATEWAY_NAME_LABEL: gateway.name}
    # One port per listener port (listeners may share one); named by protocol, as a port name must be short.
    unique = sorted({lst.port: (f"{lst.protocol.lower()}-{lst.port}", lst.port) for lst in gateway.listeners}
                    .values(), key=lambda p: p[1])
    source = f"{SOURCE} (data plane of Gateway {gateway.display})"
    name = gateway_name(gateway)
    return [Doc("Deployment", _deployment(name, gateway.namespace, labels, GATEWAY_IMAGE, unique), source),
            Doc("Service", _service(name, gateway.namespace, labels, unique), source)]
