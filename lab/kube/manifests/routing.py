"""The L7 routing objects of the manifests (Ingress, Gateway API, TLS Secrets), and the proxies they need.

Read before the workloads, so that the lab can add what the cluster's add-ons would add
(``provisioning``) to the same pass; the warnings say which objects no proxy in the lab serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lab.kube.gateway import NGINX_GATEWAY_FABRIC, Gateway, GatewayClass, HTTPRoute
from lab.kube.ingress import INGRESS_NGINX, Ingress, IngressClass, TLSSecret, class_of
from lab.kube.l7_proxies import is_ingress_controller
from lab.kube.manifests import provisioning
from lab.kube.manifests.gateway import read_gateway, read_gateway_class, read_http_route
from lab.kube.manifests.ingress import read_ingress, read_ingress_class, read_secret
from lab.kube.manifests.reader import Doc
from lab.kube.model import Cluster, Node, Pod

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace carries it (NamespaceDefaultLabelName)
KINDS = ("Ingress", "IngressClass", "Secret", "GatewayClass", "Gateway", "HTTPRoute")


@dataclass
class RoutingObjects:
    ingress_classes: list[IngressClass] = field(default_factory=list)
    ingresses: list[Ingress] = field(default_factory=list)
    tls_secrets: list[TLSSecret] = field(default_factory=list)
    gateway_classes: list[GatewayClass] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    http_routes: list[HTTPRoute] = field(default_factory=list)

    def into(self, cluster: Cluster) -> None:
        for name in self.__dataclass_fields__:
            setattr(cluster, name, getattr(self, name))


def read_routing(docs: list[Doc], warnings: list[str], namespaces: dict[str, dict[str, str]]) -> RoutingObjects:
    """``namespaces``: the Namespace objects' labels, for listeners that select route namespaces."""
    objects = RoutingObjects()
    for order, doc in enumerate(docs):
        if doc.kind == "Ingress":
            objects.ingresses.append(read_ingress(doc, order, warnings))
        elif doc.kind == "IngressClass":
            objects.ingress_classes.append(read_ingress_class(doc))
        elif doc.kind == "Secret":
            if (secret := read_secret(doc, warnings)) is not None:
                objects.tls_secrets.append(secret)
        elif doc.kind == "GatewayClass":
            objects.gateway_classes.append(read_gateway_class(doc))
        elif doc.kind == "Gateway":
            objects.gateways.append(read_gateway(doc, order, warnings))
        elif doc.kind == "HTTPRoute":
            objects.http_routes.append(read_http_route(doc, order, warnings))
    candidates = set(namespaces) | {r.namespace for r in objects.http_routes}
    labels = {ns: {NAMESPACE_NAME_LABEL: ns, **namespaces.get(ns, {})} for ns in candidates}
    for gateway in objects.gateways:
        gateway.listeners = [
            replace(lst, selected_namespaces=frozenset(ns for ns in candidates
                                                       if lst.namespace_selector.matches(labels[ns])))
            if lst.namespace_selector is not None else lst for lst in gateway.listeners]
    return objects


def provision(objects: RoutingObjects, nodes: list[Node], pods: list[Pod], warnings: list[str]) -> list[Doc]:
    """The Deployments and Services the lab adds (see ``provisioning``), with a warning for each."""
    docs: list[Doc] = []
    view = Cluster(nodes=nodes, pods=pods, ingress_classes=objects.ingress_classes)
    if objects.ingresses and not any(is_ingress_controller(view, pod) for pod in pods):
        added, cls = provisioning.ingress_controller_docs(objects.ingress_classes)
        docs += added
        if cls is not None:
            objects.ingress_classes.append(cls)
        warnings.append(f"the manifests have Ingress objects but no ingress controller: the lab adds ingress-nginx "
                        f"as its cloud manifest would (Deployment and LoadBalancer Service "
                        f"{provisioning.CONTROLLER_NAMESPACE}/{provisioning.CONTROLLER_NAME}, Local"
                        + (f", IngressClass {cls.name}{' as the default class' if cls.default else ''})"
                           if cls else ")"))
    for ingress in objects.ingresses:
        cls = class_of(ingress, objects.ingress_classes)
        if cls is None:
            warnings.append(f"Ingress {ingress.display}: no IngressClass "
                            + (f'"{ingress.class_name}"' if ingress.class_name else "and no default class")
                            + ", so no controller serves it: set spec.ingressClassName")
        elif cls.controller != INGRESS_NGINX:
            warnings.append(f"Ingress {ingress.display}: class {cls.name} belongs to controller {cls.controller}, "
                            f"which the lab does not run (it runs {INGRESS_NGINX})")
    classes = {c.name: c for c in objects.gateway_classes}
    for gateway in objects.gateways:
        cls = classes.get(gateway.class_name)
        if cls is None and not objects.gateway_classes:
            # No GatewayClass at all: a Gateway controller's install creates its classes (Istio's "istio",
            # Cilium's "cilium"), not the application's manifests. As with Ingress and no controller, the
            # lab then stands in for one; a class the manifests name wrongly beside others stays unserved.
            cls = classes[gateway.class_name] = GatewayClass(gateway.class_name, NGINX_GATEWAY_FABRIC)
            objects.gateway_classes.append(cls)
            warnings.append(f"Gateway {gateway.display}: the manifests have no GatewayClass, so the lab adds "
                            f"{gateway.class_name} for its own controller (its NGINX, as NGINX Gateway Fabric "
                            "would serve it), as a Gateway controller's install would add its class")
        if cls is None:
            warnings.append(f"Gateway {gateway.display}: GatewayClass {gateway.class_name} does not exist, "
                            "so no controller provisions it: add the GatewayClass")
            continue
        if not gateway.listeners:
            warnings.append(f"Gateway {gateway.display}: no HTTP or HTTPS listener is left, so the lab provisions "
                            "nothing for it")
            continue
        if cls.controller != NGINX_GATEWAY_FABRIC:
            warnings.append(f"GatewayClass {cls.name} (controller {cls.controller}) is served by the lab's NGINX, "
                            "as NGINX Gateway Fabric would serve it")
        docs += provisioning.gateway_docs(gateway)
        warnings.append(f"Gateway {gateway.display}: the lab provisions its data plane (Deployment and "
                        f"LoadBalancer Service {gateway.namespace}/{provisioning.gateway_name(gateway)}, Local)")
    return docs
