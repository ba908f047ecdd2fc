"""Which pods are L7 proxies (they run NGINX in the lab instead of the lab's HTTP server), and for what.

- ingress-nginx controller pods, recognised as a cluster would run them from ingress-nginx's own
  manifests or Helm chart: the image ``registry.k8s.io/ingress-nginx/controller``, or the chart's labels
  (``app.kubernetes.io/name: ingress-nginx``, ``app.kubernetes.io/component: controller``), or every label
  of an IngressClass whose controller is ``k8s.io/ingress-nginx`` (the chart gives both the same labels).
  They serve every Ingress of such a class, on their container ports named ``http`` and ``https``
  (80 and 443 when the pod does not name them);
- a Gateway's pods, labelled ``gateway.networking.k8s.io/gateway-name`` in the Gateway's namespace, as
  Gateway controllers (NGINX Gateway Fabric among them) label the data-plane pods they provision. They
  serve that Gateway's listeners, on the listeners' ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.kube.gateway import GATEWAY_NAME_LABEL, Gateway
from lab.kube.ingress import INGRESS_NGINX
from lab.kube.model import Cluster, Pod, Service

CONTROLLER_IMAGE = "ingress-nginx/controller"
CHART_LABELS = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
HTTP_PORT, HTTPS_PORT = 80, 443


@dataclass(frozen=True)
class ProxyRole:
    kind: str  # "ingress" | "gateway"
    ports: tuple[tuple[str, int], ...]  # (listener name, port): ingress-nginx's are "http" and "https"
    gateway: Gateway | None = None


def is_ingress_controller(cluster: Cluster, pod: Pod) -> bool:
    if any(CONTROLLER_IMAGE in image for image in pod.images):
        return True
    if all(pod.labels.get(k) == v for k, v in CHART_LABELS.items()):
        return True
    return any(cls.controller == INGRESS_NGINX and cls.labels and
               all(pod.labels.get(k) == v for k, v in cls.labels.items()) for cls in cluster.ingress_classes)


def _ingress_ports(pod: Pod) -> tuple[tuple[str, int], ...]:
    named = {p.name: p.port for p in pod.ports if p.protocol == "TCP" and p.name in ("http", "https")}
    return (("http", named.get("http", HTTP_PORT)), ("https", named.get("https", HTTPS_PORT)))


def gateway_of(cluster: Cluster, pod: Pod) -> Gateway | None:
    name = pod.labels.get(GATEWAY_NAME_LABEL)
    return next((g for g in cluster.gateways if g.name == name and g.namespace == pod.namespace), None)


def proxy_role(cluster: Cluster, pod: Pod) -> ProxyRole | None:
    gateway = gateway_of(cluster, pod)
    if gateway is not None:
        return ProxyRole("gateway", tuple((lst.name, lst.port) for lst in gateway.listeners), gateway)
    if is_ingress_controller(cluster, pod):
        return ProxyRole("ingress", _ingress_ports(pod))
    return None


def proxy_pods(cluster: Cluster) -> dict[str, ProxyRole]:
    """Pod name -> its role, for every pod that runs NGINX, in creation order."""
    return {pod.name: role for pod in sorted(cluster.pods, key=lambda p: p.serial)
            if (role := proxy_role(cluster, pod)) is not None}


def proxy_ports(cluster: Cluster, pod: Pod) -> set[int]:
    """The ports NGINX binds in the pod (the lab's HTTP server leaves them free)."""
    role = proxy_role(cluster, pod)
    return {port for _, port in role.ports} if role else set()


def proxy_services(cluster: Cluster, kind: str, gateway: str | None = None) -> list[Service]:
    """The Services in front of the proxies of one kind ("ingress" or "gateway", optionally of one Gateway,
    ``namespace/name``): what clients reach them by."""
    pods = [cluster.pod(name) for name, role in proxy_pods(cluster).items() if role.kind == kind and
            (gateway is None or (role.gateway and f"{role.gateway.namespace}/{role.gateway.name}" == gateway))]
    return [s for s in cluster.services
            if s.selector and any(p.namespace == s.namespace and
                                   all(p.labels.get(k) == v for k, v in s.selector.items()) for p in pods)]
