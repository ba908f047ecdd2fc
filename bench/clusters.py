"""The clusters the benchmarks build, as plain ``lab.kube.model`` data (pure: no network, no root).

- ``datapath_cluster``: two nodes, one pod on node-a; ``datapath_services`` adds one Service per
  NodePort path under test, each with exactly that one pod (so iperf3's control and data connections
  land on the same pod) and each on its own backend port, so that no two paths ever share a
  connection 4-tuple at the pod (conntrack would see a clash on a reused source port).
- ``control_plane_cluster``: N nodes with P pods each; ``control_plane_services(S)`` gives S Services
  of 10 endpoints, one pod on each of 10 nodes, each Service on its own targetPort, so S Services mean
  10 x S distinct endpoints, as S real Services of 10 replicas would. ``flip_service`` is the Service
  whose single endpoint the pod-change benchmark moves between two pods.
- ``scale_cluster``: N nodes x P pods, and P Services with ``externalTrafficPolicy: Local``, Service k
  selecting the k-th pod of every node: through node n, Service k reaches exactly pod (n, k), so one
  request per (Service, node) proves that every pod is reachable through its NodePort.

Services are added to a running network (``LabNetwork.publish``), not built with it, when their
target ports must stay free for the benchmark's own servers (iperf3, the connection-rate server): the
lab's pod server listens on every numeric targetPort of the Services it knows at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.kube import addressing as addr
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

HTTP_PORT = 8080  # what the lab's pod server answers on


def _pod(name: str, node: Node, host_number: int, serial: int, labels: dict[str, str]) -> Pod:
    return Pod(name=name, node=node.name, labels=labels, ports=(ContainerPort(HTTP_PORT),),
               ip=addr.pod_ip(node.index, host_number), serial=serial)


def grid_cluster(nodes: int, pods_per_node: int, label: str) -> Cluster:
    """``nodes`` nodes ``node-1``.., each with pods ``p-<node>-<k>`` labelled ``{label: k}``."""
    if not 1 <= nodes <= addr.MAX_NODES:
        raise ValueError(f"nodes must be 1..{addr.MAX_NODES}")
    if not 0 <= pods_per_node <= addr.MAX_PODS_PER_NODE:
        raise ValueError(f"pods per node must be 0..{addr.MAX_PODS_PER_NODE}")
    node_list = [Node(f"node-{i}", i) for i in range(1, nodes + 1)]
    pods = []
    for node in node_list:
        for k in range(pods_per_node):
            pods.append(_pod(f"p-{node.index}-{k}", node, 2 + k, len(pods) + 1, {label: str(k)}))
    return Cluster(nodes=node_list, pods=pods)


# --- data path ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataPath:
    """One way from the client to the pod: what it crosses, and where the client connects."""

    name: str
    label: str
    entry_node: str | None  # None: straight to the pod IP (the routed baseline)
    conn_port: int  # the connection-rate server's port in the pod
    iperf_port: int  # the iperf3 server's port in the pod
    conn_node_port: int | None = None
    iperf_node_port: int | None = None
    policy: str | None = None


DATAPATH_POD = "bench-pod"
DATAPATH_PATHS = (
    DataPath("routed", "pod IP, routed (baseline)", None, 9001, 5201),
    DataPath("dnat", "nodePort, pod on entry node: DNAT (Local)", "node-a", 9002, 5202, 30101, 30102, "Local"),
    DataPath("dnat-snat", "nodePort, pod on entry node: DNAT+SNAT (Cluster)", "node-a", 9003, 5203, 30103,
             30104, "Cluster"),
    DataPath("dnat-snat-remote", "nodePort, pod on another node: DNAT+SNAT (Cluster)", "node-b", 9004, 5204,
             30105, 30106, "Cluster"),
)


def datapath_cluster() -> Cluster:
    node_a, node_b = Node("node-a", 1), Node("node-b", 2)
    pod = _pod(DATAPATH_POD, node_a, 2, 1, {"app": "bench"})
    return Cluster(nodes=[node_a, node_b], pods=[pod])


# Each run measures connection rates on ports of its own (server port and nodePort + RUN_PORT_STEP x run):
# ~20,000 connections a measurement reuse the client's source ports, and a 4-tuple that conntrack still
# holds from an earlier run (TIME_WAIT) cannot be NATed again by Open vSwitch's userspace conntrack, so
# runs sharing ports would measure that collision instead of the path (README, "Benchmarks").
RUN_PORT_STEP = 100
MAX_RUNS = 20


def conn_ports(path: DataPath, run: int) -> tuple[int, int | None]:
    """(server port in the pod, nodePort or None) of ``path``'s connection-rate Service in ``run``."""
    if not 0 <= run < MAX_RUNS:
        raise ValueError(f"the datapath benchmark has ports for {MAX_RUNS} runs")
    shift = RUN_PORT_STEP * run
    return path.conn_port + shift, None if path.conn_node_port is None else path.conn_node_port + shift


def datapath_services(paths: tuple[DataPath, ...] = DATAPATH_PATHS, runs: int = 1) -> list[Service]:
    services = []
    for p in paths:
        if p.entry_node is None:
            continue
        ports = [ServicePort(p.iperf_port, p.iperf_node_port, p.iperf_port, name="iperf")]
        for run in range(runs):
            port, node_port = conn_ports(p, run)
            ports.append(ServicePort(port, node_port, port, name=f"conn-{run}"))
        services.append(Service(f"bench-{p.name}", ports, selector={"app": "bench"}, external_traffic_policy=p.policy))
    return services


def datapath_target(cluster: Cluster, path: DataPath, kind: str, run: int = 0) -> tuple[str, int]:
    """(address, port) the client connects to for ``kind`` "conn" or "iperf" on ``path``."""
    port, node_port = conn_ports(path, run) if kind == "conn" else (path.iperf_port, path.iperf_node_port)
    if path.entry_node is None:
        return cluster.pod(DATAPATH_POD).ip, port
    return addr.node_ip(cluster.node(path.entry_node).index), node_port


# --- control plane ------------------------------------------------------------------------------------

# Beyond 2,768 Services the nodePorts leave the default 30000-32767 range, as a cluster with a wider
# --service-node-port-range would; the flip Service sits below them all.
CONTROL_NODE_PORT_BASE = 30000
CONTROL_TARGET_PORT_BASE = 10000
FLIP_NODE_PORT = 29999
MAX_CONTROL_SERVICES = 65535 - CONTROL_NODE_PORT_BASE
ENDPOINTS_PER_SERVICE = 10


def control_plane_cluster(nodes: int = 10, pods_per_node: int = 10) -> Cluster:
    if nodes < ENDPOINTS_PER_SERVICE:
        raise ValueError(f"control-plane Services have {ENDPOINTS_PER_SERVICE} endpoints, one per node: "
                         f"need at least {ENDPOINTS_PER_SERVICE} nodes")
    return grid_cluster(nodes, pods_per_node, "group")


def control_plane_services(count: int, groups: int = 10) -> list[Service]:
    """``count`` Cluster-policy Services; Service i selects pod group ``i % groups`` (one pod per node)."""
    if count > min(MAX_CONTROL_SERVICES, CONTROL_NODE_PORT_BASE - CONTROL_TARGET_PORT_BASE):
        raise ValueError(f"at most {CONTROL_NODE_PORT_BASE - CONTROL_TARGET_PORT_BASE} Services have ports here")
    return [Service(f"svc-{i}", [ServicePort(80, CONTROL_NODE_PORT_BASE + i, CONTROL_TARGET_PORT_BASE + i)],
                    selector={"group": str(i % groups)})
            for i in range(count)]


def flip_service() -> Service:
    return Service("flip", [ServicePort(80, FLIP_NODE_PORT, HTTP_PORT)], selector={"flip": "on"})


def set_flip(cluster: Cluster, on: str, off: str) -> None:
    """Make pod ``on`` the flip Service's endpoint and pod ``off`` not (a readiness change)."""
    cluster.pod(on).labels["flip"] = "on"
    cluster.pod(off).labels.pop("flip", None)


def expected_counts(programs: dict) -> tuple[int, int]:
    """(flows, groups) over every bridge of a compiled state (``controllers.pipeline.compile_state``)."""
    return (sum(len(p.flows) for p in programs.values()), sum(len(p.groups) for p in programs.values()))


# --- scale --------------------------------------------------------------------------------------------

SCALE_NODE_PORT_BASE = 30000


def scale_cluster(nodes: int, pods_per_node: int = 10) -> Cluster:
    cluster = grid_cluster(nodes, pods_per_node, "slot")
    cluster.services = [
        Service(f"slot-{k}", [ServicePort(80, SCALE_NODE_PORT_BASE + k, HTTP_PORT)], selector={"slot": str(k)},
                external_traffic_policy="Local")
        for k in range(pods_per_node)]
    return cluster


def scale_targets(cluster: Cluster) -> dict[str, str]:
    """nodeIP:nodePort -> the one pod that must answer there (Local: the entry node's pod of that slot)."""
    targets = {}
    for service in cluster.services:
        slot = service.selector["slot"]
        for node in cluster.nodes:
            pod = next(p for p in cluster.pods_on(node.name) if p.labels.get("slot") == slot)
            targets[f"{addr.node_ip(node.index)}:{service.ports[0].node_port}"] = pod.name
    return targets
