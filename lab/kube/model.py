"""The cluster as the lab understands it: what the manifests asked for, after scheduling and allocation.

These are plain dataclasses with no side effects. ``lab.kube.manifests`` builds a ``Cluster`` from YAML,
``lab.kube.scheduler`` places pods, ``lab.kube.endpoints`` turns Services into endpoint lists (what the
EndpointSlice controller does), and ``lab.runner`` brings it up as a Mininet network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.kube.gateway import Gateway, GatewayClass, HTTPRoute
    from lab.kube.ingress import Ingress, IngressClass, TLSSecret

NODE_PORT_RANGE = (30000, 32767)
ZONE_LABEL = "topology.kubernetes.io/zone"
# A made node's status.allocatable.cpu: 2 CPUs, the machine's own, which every emulated node shares.
DEFAULT_NODE_CPU_MILLI = 2000


@dataclass(frozen=True)
class ContainerPort:
    port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass
class Node:
    name: str
    index: int  # 1-based, in manifest order; addresses derive from it (lab.kube.addressing)
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False  # kubectl cordon
    deleting: bool = False  # the Node has a deletionTimestamp (kubectl delete node, still draining)
    allocatable_cpu_milli: int = DEFAULT_NODE_CPU_MILLI  # status.allocatable.cpu (topology-aware hints' weight)

    @property
    def zone(self) -> str | None:
        """``topology.kubernetes.io/zone``, as kubelet (or the cloud provider) labels the Node."""
        return self.labels.get(ZONE_LABEL) or None


@dataclass(frozen=True)
class Probe:
    """A container's readinessProbe, as kubelet runs it: ``kind`` httpGet | tcpSocket (exec is not run)."""

    kind: str
    port: int | str  # a number or the name of a container port
    path: str = "/"
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass
class Pod:
    name: str
    node: str  # node name
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()
    owner: str | None = None  # the workload's name (Deployment, StatefulSet...), when a controller made the pod
    owner_kind: str | None = None  # that workload's kind
    ip: str | None = None  # set when the lab places the pod on its node
    serial: int = 0  # creation order, names the pod's interface (lab.kube.addressing.pod_intf)
    readiness_probe: Probe | None = None
    termination_grace_s: float = 30.0  # terminationGracePeriodSeconds
    # Conditions, as the kubelet reports them: Ready (probe passing, or no probe) and being deleted.
    ready: bool = True
    terminating: bool = False
    images: tuple[str, ...] = ()  # the containers' images: no image runs, but some say what a pod is


@dataclass(frozen=True)
class ServicePort:
    port: int
    node_port: int | None  # None for a ClusterIP Service: nothing listens on the nodes
    target_port: int | str  # a number, or the name of a container port
    name: str | None = None
    protocol: str = "TCP"  # TCP | UDP


@dataclass
class Service:
    name: str
    ports: list[ServicePort]
    selector: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    type: str = "NodePort"  # ClusterIP | NodePort | LoadBalancer
    external_traffic_policy: str = "Cluster"  # Cluster | Local
    health_check_node_port: int | None = None
    cluster_ip: str | None = None  # as the manifest gives it: an address, "None" (headless), or None (not set)
    internal_traffic_policy: str = "Cluster"  # Cluster | Local
    session_affinity_timeout: int | None = None  # sessionAffinity ClientIP: timeoutSeconds; None: no affinity
    load_balancer_source_ranges: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)  # metadata.annotations (Cilium's are read)
    traffic_distribution: str | None = None  # spec.trafficDistribution: PreferClose | PreferSameZone | PreferSameNode
    publish_not_ready: bool = False  # spec.publishNotReadyAddresses: every endpoint counts as ready

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def node_ports(self) -> list[ServicePort]:
        """The ports reachable from outside through every node (none for a ClusterIP Service)."""
        return [sp for sp in self.ports if sp.node_port is not None]


@dataclass(frozen=True)
class Endpoint:
    pod: str
    node: str
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # pods no node could take (kube-scheduler: Pending)
    ignored: list[dict] = field(default_factory=list)  # objects of kinds the lab does not model
    strict_problems: list[str] = field(default_factory=list)  # the warnings --strict makes errors
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # Namespace objects: name -> labels
    nodes_made: bool = False  # the manifests had no Node objects, so the lab made the nodes
    # L7 routing objects (lab.kube.ingress, lab.kube.gateway), in manifest order.
    ingress_classes: list[IngressClass] = field(default_factory=list)
    ingresses: list[Ingress] = field(default_factory=list)
    tls_secrets: list[TLSSecret] = field(default_factory=list)
    gateway_classes: list[GatewayClass] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    http_routes: list[HTTPRoute] = field(default_factory=list)
    # Cilium's loadBalancer.algorithm for the whole lab: "random" (kube-proxy's choice) or "maglev"
    # (lab.kube.lb_algorithm; a Service's service.cilium.io/lb-algorithm annotation overrides it).
    lb_algorithm: str = "random"
    zone_delay_ms: float | None = None  # one-way delay between two zones (netem on the inter-zone links)
    # Cilium's loadBalancer.mode for the whole lab: "snat" | "dsr" (lab.kube.forwarding, per-Service override)
    proxy_mode: str = "snat"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def pod(self, name: str) -> Pod:
        for pod in self.pods:
            if pod.name == name:
                return pod
        raise KeyError(name)

    def service(self, name: str, namespace: str = "default") -> Service:
        for svc in self.services:
            if svc.name == name and svc.namespace == namespace:
                return svc
        raise KeyError(f"{namespace}/{name}")

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods if p.node == node]
