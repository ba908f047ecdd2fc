"""What kube-proxy knows: the cluster state the lab publishes and the controller watches.

A real kube-proxy learns Nodes, Services and EndpointSlices from the API server. Here the lab plays the
API server by writing one JSON document (``ProxyState``) to a file that the controller watches; each
write carries a higher ``generation``, and the controller acknowledges a generation once every switch
has it (see ``controllers.status``). Endpoints arrive already resolved (pod IP and target port), as in
an EndpointSlice, so the controller never looks at selectors or manifests.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from operator import attrgetter


@dataclass(frozen=True)
class NodeInfo:
    name: str
    index: int
    ip: str
    mac: str
    pod_cidr: str
    gateway_ip: str
    gateway_mac: str
    dpid: int
    netns_pid: int | None = None  # the node's own network stack, where kube-proxy's health servers listen
    deleting: bool = False  # the Node has a deletionTimestamp: kube-proxy's /healthz answers 503
    zone: str | None = None  # topology.kubernetes.io/zone


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    node: str
    ip: str
    mac: str
    ofport: int


@dataclass(frozen=True)
class EndpointInfo:
    """One EndpointSlice endpoint, with its conditions: ``ready`` (Ready and not terminating),
    ``serving`` (its readiness probe passes, terminating or not) and ``terminating`` (being deleted)."""

    pod: str
    node: str
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str | None = None  # the endpoint's node's zone
    for_zones: tuple[str, ...] | None = None  # EndpointSlice hints (None: no hints of that kind)
    for_nodes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ServicePortInfo:
    """One port of one Service: the unit kube-proxy programs (its KUBE-SVC chain)."""

    service: str
    namespace: str
    port_name: str
    protocol: str
    port: int
    node_port: int
    policy: str  # "Cluster" | "Local" (externalTrafficPolicy)
    endpoints: tuple[EndpointInfo, ...] = ()
    health_check_node_port: int | None = None
    service_type: str = "NodePort"  # ClusterIP | NodePort | LoadBalancer
    load_balancer_ip: str | None = None  # status.loadBalancer.ingress[0].ip
    id: int = 0  # stable per Service port (lab.emulation.proxy_state): names its groups and affinity
    cluster_ip: str | None = None  # None: headless, or no clusterIP
    internal_policy: str = "Cluster"  # internalTrafficPolicy: Cluster | Local
    affinity_timeout: int | None = None  # sessionAffinity ClientIP's timeoutSeconds; None: no affinity
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges (CIDRs)
    algorithm: str = "random"  # endpoint choice: "random" (kube-proxy) | "maglev" (Cilium's loadBalancer.algorithm)
    forwarding: str = "snat"  # "snat" | "dsr": Cilium's loadBalancer.mode for its north-south entries

    # Cached (in the instance's __dict__, beside the fields): a pod change in a 1,000-Service state
    # asked for keys 60,000 times, one f-string each.
    @cached_property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port_name or self.port}"

    @cached_property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service}"


@dataclass(frozen=True)
class ExternalHost:
    """A host outside the cluster, attached to the edge router (the client, later a load balancer)."""

    name: str
    ip: str
    mac: str
    ofport: int


@dataclass(frozen=True)
class UnderlayInfo:
    dpid: int
    router_ip: str
    router_mac: str
    external_gateway_ip: str
    external_gateway_mac: str
    node_ports: dict[str, int] = field(default_factory=dict)  # node name -> port on the underlay bridge
    # How the cloud load balancer delivers: "node-port" (DNAT to nodeIP:nodePort, AWS NLB instance
    # targets) or "vip" (still addressed to the LB IP: GCP passthrough NLB, MetalLB BGP/ECMP).
    lb_delivery: str = "node-port"
    # Service (namespace/name) -> nodes taken out of its rotation by hand (LabNetwork.reroute)
    lb_out_of_rotation: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyState:
    generation: int
    nodes: tuple[NodeInfo, ...]
    pods: tuple[PodInfo, ...]
    service_ports: tuple[ServicePortInfo, ...]
    underlay: UnderlayInfo
    externals: tuple[ExternalHost, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ProxyState:
        return cls(
            generation=int(data["generation"]),
            nodes=tuple(NodeInfo(**n) for n in data["nodes"]),
            pods=tuple(PodInfo(**p) for p in data["pods"]),
            service_ports=tuple(_service_port(sp) for sp in data["service_ports"]),
            underlay=UnderlayInfo(**data["underlay"]),
            externals=tuple(ExternalHost(**e) for e in data.get("externals", ())),
        )


def _service_port(data: dict) -> ServicePortInfo:
    return ServicePortInfo(**{k: v for k, v in data.items() if k not in ("endpoints", "source_ranges")},
                           endpoints=tuple(_endpoint(e) for e in data["endpoints"]),
                           source_ranges=tuple(data.get("source_ranges", ())))


_ENDPOINT_FIELDS = tuple(f.name for f in fields(EndpointInfo))
_endpoint_values = attrgetter(*_ENDPOINT_FIELDS)
_HINTS = (_ENDPOINT_FIELDS.index("for_zones"), _ENDPOINT_FIELDS.index("for_nodes"))


def _endpoint(data: dict | list) -> EndpointInfo:
    """An endpoint from JSON: a dict (the whole state file) or its fields' values in order (the change
    log, where 100,000 endpoints' keys were half of 20 MB). JSON has lists where the hints are tuples (a
    hashable, comparable EndpointInfo needs tuples)."""
    if isinstance(data, list):
        if len(data) != len(_ENDPOINT_FIELDS):
            raise ValueError(f"an endpoint of {len(data)} values where EndpointInfo has {len(_ENDPOINT_FIELDS)}")
        for i in _HINTS:
            if data[i] is not None:
                data[i] = tuple(data[i])
        return EndpointInfo(*data)
    hints = {k: tuple(data[k]) for k in ("for_zones", "for_nodes") if data.get(k) is not None}
    return EndpointInfo(**{**data, **hints})


# The lab writes the whole state once (``write_json_atomic``) and then appends one line per new
# generation to ``<state>.log``: only what changed (``state_delta``), so publishing a pod change in a
# cluster of 10,000 Service ports costs that pod's Service ports, not a 15 MB document.
_WHOLE = {"nodes": NodeInfo, "pods": PodInfo, "externals": ExternalHost}


def log_path(state_path: str) -> str:
    return state_path + ".log"


def state_delta(old: ProxyState, new: ProxyState) -> dict:
    """What turns ``old`` into ``new``: Service ports by key (changed ones whole, removed ones' keys, the
    order when it changed) and nodes, pods, externals and the underlay whole when they changed."""
    delta: dict = {"base": old.generation, "generation": new.generation}
    for name in (*_WHOLE, "underlay"):
        if getattr(new, name) != getattr(old, name):
            value = getattr(new, name)
            delta[name] = asdict(value) if name == "underlay" else [asdict(v) for v in value]
    before = {sp.key: sp for sp in old.service_ports}
    keys = [sp.key for sp in new.service_ports]
    delta["changed"] = [_service_port_dict(sp) for key, sp in zip(keys, new.service_ports, strict=True)
                        if before.get(key) is not sp and before.get(key) != sp]
    if keys != list(before):
        delta["order"] = keys
    return delta


def _service_port_dict(sp: ServicePortInfo) -> dict:
    """``asdict(sp)``, ten times faster (it deep-copies): 10,000 Service ports are written in one line."""
    data = dict(vars(sp))
    data.pop("key", None), data.pop("service_key", None)  # cached properties, not fields
    data["endpoints"] = [_endpoint_values(e) for e in sp.endpoints]  # (tuples: JSON lists)
    return data


def apply_delta(state: ProxyState, delta: dict) -> ProxyState:
    """``state`` with ``delta`` applied; ValueError if the delta was made from another generation."""
    if delta.get("base") != state.generation:
        raise ValueError(f"a change from generation {delta.get('base')} cannot apply to generation {state.generation}")
    fields = {name: tuple(cls(**v) for v in delta[name]) for name, cls in _WHOLE.items() if name in delta}
    if "underlay" in delta:
        fields["underlay"] = UnderlayInfo(**delta["underlay"])
    ports = {sp.key: sp for sp in state.service_ports}
    for data in delta.get("changed", ()):
        sp = _service_port(data)
        ports[sp.key] = sp
    order = delta.get("order")
    service_ports = tuple(ports[k] for k in order) if order is not None else tuple(ports.values())
    return replace(state, generation=int(delta["generation"]), service_ports=service_ports, **fields)


def write_json_atomic(path: str, data: dict) -> None:
    """Write so that a reader never sees half a document (rename is atomic on one filesystem)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_state(path: str) -> ProxyState:
    with open(path) as f:
        return ProxyState.from_dict(json.load(f))
