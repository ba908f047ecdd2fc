"""Which pods back a Service port, and on which port: the EndpointSlice controller's job, done once.

Kubernetes' endpoint controller selects the pods in the Service's namespace whose labels contain every
key/value of ``spec.selector``; a Service with an empty selector selects nothing (its endpoints are
managed by hand, which the lab does not model). Each selected pod contributes one endpoint, at the
Service port's ``targetPort``:

- a number is used as is, whether or not the pod declares it (containerPorts are informational);
- a name is looked up among the pod's container ports with the Service port's protocol, so each pod
  may map the name to a different number, and a pod without that name is not an endpoint.

Pods that have no IP yet (not placed) are not endpoints, as pods that are not running are not. Each
endpoint carries its EndpointSlice conditions: ``ready`` (the pod is Ready and not terminating),
``serving`` (its readiness passes, terminating or not) and ``terminating`` (the pod is being deleted).
A Service with ``publishNotReadyAddresses: true`` has every endpoint ready, terminating or not Ready
(``podToEndpoint`` in kubernetes' staging/src/k8s.io/endpointslice/utils.go): StatefulSets' peers find
each other through it before they are Ready, and kube-proxy and DNS then treat those pods as ready.
Endpoints are ordered by pod creation order, so flows, reports and tests see a stable list.
"""

from __future__ import annotations

from collections.abc import Mapping

from lab.kube.l7_proxies import proxy_ports
from lab.kube.model import Cluster, Endpoint, Pod, Service, ServicePort


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Service selector semantics: every key/value present; an empty selector selects nothing."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def label_index(pods: list[Pod]) -> dict[tuple[str, str, str], list[Pod]]:
    """Pods by (namespace, label key, value): with it, selecting costs the pods a selector's first label
    picks, not every pod of the cluster (1,000 Services over 100 pods: 0.15 s -> a few ms)."""
    index: dict[tuple[str, str, str], list[Pod]] = {}
    for pod in pods:
        for key, value in pod.labels.items():
            index.setdefault((pod.namespace, key, value), []).append(pod)
    return index


def selected_pods(cluster: Cluster, service: Service,
                  index: dict[tuple[str, str, str], list[Pod]] | None = None) -> list[Pod]:
    """The Service's pods in creation order, whatever their ports (``index``: ``label_index`` of the pods)."""
    if index is not None and service.selector:
        key, value = next(iter(service.selector.items()))
        candidates = index.get((service.namespace, key, value), [])
    else:
        candidates = cluster.pods
    pods = [
        pod
        for pod in candidates
        if pod.namespace == service.namespace and selects(service.selector, pod.labels)
    ]
    return sorted(pods, key=lambda pod: pod.serial)


def target_port(pod: Pod, service_port: ServicePort) -> int | None:
    """The port on ``pod`` that ``service_port`` forwards to, or ``None`` if the pod lacks the named port."""
    if isinstance(service_port.target_port, int):
        return service_port.target_port
    for port in pod.ports:
        if port.name == service_port.target_port and port.protocol == service_port.protocol:
            return port.port
    return None


def endpoints(cluster: Cluster, service: Service, service_port: ServicePort,
              index: dict[tuple[str, str, str], list[Pod]] | None = None) -> list[Endpoint]:
    result = []
    for pod in selected_pods(cluster, service, index):
        port = target_port(pod, service_port)
        if port is None or pod.ip is None:
            continue
        result.append(Endpoint(pod=pod.name, node=pod.node, ip=pod.ip, port=port,
                               ready=service.publish_not_ready or (pod.ready and not pod.terminating),
                               serving=pod.ready,
                               terminating=pod.terminating))
    return result


def leads_to_l7_proxy(cluster: Cluster, service: Service, service_port: ServicePort) -> bool:
    """Whether the port's endpoints are L7 proxies' NGINX ports (an ingress controller's, a Gateway's):
    NGINX answers there by Host and path (a bare request to ingress-nginx gets its default backend's 404),
    so the lab probes such a port per route (``lab.measure.routes``), not as one plain endpoint."""
    pods = {(p.namespace, p.name): p for p in cluster.pods}
    return any(e.port in proxy_ports(cluster, pods[(service.namespace, e.pod)])
               for e in endpoints(cluster, service, service_port))


def workload_ports(cluster: Cluster, pod: Pod) -> list[int]:
    """The TCP ports the lab serves inside ``pod``, sorted.

    No container image runs in the lab: each pod runs the lab's own small HTTP server on every one of
    these ports, so it answers wherever traffic may reach it. That is every TCP ``containerPort`` the
    pod declares, plus every numeric ``targetPort`` of a Service that selects it, because Kubernetes
    forwards to a numeric targetPort even when no container declares it. Named targetPorts need no extra
    entry: they resolve to a declared containerPort.

    The exception: a container port named ``iperf3`` (``REAL_SERVER_PORT_NAMES``) is served by a real
    ``iperf3 -s`` that ``lab.emulation.pods`` starts in the pod (bulk transfers need a real TCP sender), so the
    HTTP server must leave that port free, however it is reached; so must an L7 proxy pod's NGINX ports
    (``lab.kube.l7_proxies``).
    """
    ports = {port.port for port in pod.ports if port.protocol == "TCP"}
    proxied = proxy_ports(cluster, pod)
    probe = pod.readiness_probe
    if probe is not None and isinstance(probe.port, int):
        ports.add(probe.port)  # the application answers its probe wherever it is declared
    for service in cluster.services:
        if service.namespace != pod.namespace or not selects(service.selector, pod.labels):
            continue
        ports.update(sp.target_port for sp in service.ports
                     if isinstance(sp.target_port, int) and sp.protocol == "TCP")
    return sorted(ports - set(real_server_ports(pod).values()) - proxied)


REAL_SERVER_PORT_NAMES = ("iperf3",)


def real_server_ports(pod: Pod) -> dict[str, int]:
    """The pod's TCP container ports served by a real program instead of the lab's HTTP server: name -> port."""
    return {port.name: port.port for port in pod.ports
            if port.protocol == "TCP" and port.name in REAL_SERVER_PORT_NAMES}


def workload_udp_ports(cluster: Cluster, pod: Pod) -> list[int]:
    """The UDP ports the lab's server answers in ``pod``: its UDP containerPorts and the numeric UDP
    targetPorts of Services that select it (the same rule as ``workload_ports`` for TCP)."""
    ports = {port.port for port in pod.ports if port.protocol == "UDP"}
    for service in cluster.services:
        if service.namespace != pod.namespace or not selects(service.selector, pod.labels):
            continue
        ports.update(sp.target_port for sp in service.ports
                     if isinstance(sp.target_port, int) and sp.protocol == "UDP")
    return sorted(ports)
