"""Zones and topology-aware routing, without root: kube-controller-manager's hints (against the worked
examples of the Kubernetes docs' Topology Aware Routing page and the Go code they come from), kube-proxy's
filter of them, zone assignment, the zone switches' flows and counters, and the price of crossing."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.pipeline import compile_state
from controllers.services import usable
from controllers.state import EndpointInfo, NodeInfo
from controllers.topology import topology_mode
from lab.emulation.proxy_state import build_proxy_state
from lab.emulation.zone_switches import zone_link_delay_ms
from lab.errors import ManifestError
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.kube.model import ZONE_LABEL, Cluster, ContainerPort, Endpoint, Node, Pod, Service, ServicePort
from lab.kube.topology import (
    Hints,
    allocations,
    auto_zone_hints,
    cpu_ratios,
    endpoint_hints,
    spread_zones,
    topology_mode_auto,
)
from lab.measure.zones import cost_per_million, cross_zone_cost
from topologies.zones import core_ports, cross_zone_bytes, inter_node_bytes, zone_flows, zone_layout


def zoned(*spec: tuple[str, str, int]) -> list[Node]:
    """Nodes from (name, zone, millicores)."""
    return [Node(name, i, labels={ZONE_LABEL: zone} if zone else {}, allocatable_cpu_milli=cpu)
            for i, (name, zone, cpu) in enumerate(spec, 1)]


def auto(zones_of_endpoints: list[str | None], ratios, ready=None):
    return auto_zone_hints(zones_of_endpoints, ready or [True] * len(zones_of_endpoints), ratios)


# --- kube-controller-manager: topology-mode Auto ----------------------------------------------------------

def test_hints_follow_allocatable_cpu_a_zone_with_twice_the_cpu_gets_twice_the_endpoints():
    # Docs: "if one zone has 2 CPU cores and another zone only has 1 CPU core, the controller allocates
    # twice as many endpoints to the zone with 2 CPU cores". Three endpoints in each zone: one of zone-b's
    # is given to zone-a (desired 4 and 2; minimums ceil(4/1.2) = 4 and ceil(2/1.2) = 2).
    ratios = cpu_ratios(zoned(("a1", "zone-a", 1000), ("a2", "zone-a", 1000), ("b1", "zone-b", 1000)))
    assert ratios == pytest.approx({"zone-a": 2 / 3, "zone-b": 1 / 3})
    hints = auto(["zone-a"] * 3 + ["zone-b"] * 3, ratios)
    assert hints == ["zone-a", "zone-a", "zone-a", "zone-a", "zone-b", "zone-b"]
    assert {z: a.minimum for z, a in allocations(ratios, 6).items()} == {"zone-a": 4, "zone-b": 2}


def test_no_hints_when_the_overload_threshold_cannot_be_kept():
    # Docs: "if zone-a is twice as large as zone-b, but there are only 2 endpoints, an endpoint allocated to
    # zone-a may receive twice as much traffic as zone-b. The controller does not assign hints if it can't
    # get this 'expected overload' value below an acceptable threshold for each zone."
    ratios = {"zone-a": 2 / 3, "zone-b": 1 / 3}
    assert allocations(ratios, 2) is None
    assert auto(["zone-a", "zone-b"], ratios) is None


def test_no_hints_with_fewer_endpoints_than_zones():
    ratios = {"zone-a": 1 / 3, "zone-b": 1 / 3, "zone-c": 1 / 3}
    assert auto(["zone-a", "zone-b"], ratios) is None


def test_a_zone_without_endpoints_receives_some_from_the_others():
    ratios = {"zone-a": 1 / 3, "zone-b": 1 / 3, "zone-c": 1 / 3}
    assert auto(["zone-a"] * 3 + ["zone-b"] * 3, ratios) == ["zone-c", "zone-a", "zone-a", "zone-c", "zone-b", "zone-b"]


def test_equal_zones_keep_their_own_endpoints():
    ratios = {"zone-a": 0.5, "zone-b": 0.5}
    assert auto(["zone-a", "zone-b", "zone-a", "zone-b"], ratios) == ["zone-a", "zone-b", "zone-a", "zone-b"]


def test_endpoints_that_are_not_ready_get_no_hint_and_do_not_count():
    ratios = {"zone-a": 0.5, "zone-b": 0.5}
    assert auto(["zone-a", "zone-a", "zone-b"], ratios, ready=[True, False, True]) == ["zone-a", None, "zone-b"]


def test_an_endpoint_without_a_zone_removes_every_hint():
    assert auto(["zone-a", None, "zone-b", "zone-b"], {"zone-a": 0.5, "zone-b": 0.5}) is None


def test_node_information_that_disables_hints():
    assert cpu_ratios(zoned(("a", "zone-a", 1000), ("b", None, 1000))) is None  # a node without a zone
    assert cpu_ratios(zoned(("a", "zone-a", 1000), ("b", "zone-b", 0))) is None  # ... or without CPU
    assert cpu_ratios(zoned(("a", "zone-a", 1000), ("b", "zone-a", 1000))) is None  # one zone only
    nodes = zoned(("cp", "zone-c", 8000), ("a", "zone-a", 1000), ("b", "zone-b", 1000))
    nodes[0].labels["node-role.kubernetes.io/control-plane"] = ""
    assert cpu_ratios(nodes) == {"zone-a": 0.5, "zone-b": 0.5}  # control-plane nodes do not count


def test_the_topology_annotations_as_the_reconciler_reads_them():
    assert topology_mode_auto({"service.kubernetes.io/topology-mode": "Auto"})
    assert topology_mode_auto({"service.kubernetes.io/topology-mode": "auto"})
    assert not topology_mode_auto({"service.kubernetes.io/topology-mode": "PreferZone"})
    assert not topology_mode_auto({"service.kubernetes.io/topology-aware-hints": "Disabled",  # the older one wins
                                   "service.kubernetes.io/topology-mode": "Auto"})


# --- kube-controller-manager: trafficDistribution ---------------------------------------------------------

NODES = zoned(("node-a", "zone-a", 2000), ("node-b", "zone-b", 2000), ("node-c", "zone-c", 4000))
EPS = [Endpoint("p1", "node-a", "10.244.1.2", 8080), Endpoint("p2", "node-a", "10.244.1.3", 8080),
       Endpoint("p3", "node-b", "10.244.2.2", 8080), Endpoint("p4", "node-c", "10.244.3.2", 8080, ready=False)]


def svc(**fields) -> Service:
    return Service("web", [ServicePort(80, None, 8080)], selector={"app": "web"}, **fields)


@pytest.mark.parametrize("value", ["PreferClose", "PreferSameZone"])
def test_prefer_close_hints_each_ready_endpoint_for_its_own_zone(value):
    assert endpoint_hints(svc(traffic_distribution=value), EPS, NODES) == [
        Hints(("zone-a",)), Hints(("zone-a",)), Hints(("zone-b",)), Hints()]  # nothing proportional


def test_prefer_same_node_adds_the_endpoints_own_node():
    assert endpoint_hints(svc(traffic_distribution="PreferSameNode"), EPS, NODES)[:3] == [
        Hints(("zone-a",), ("node-a",)), Hints(("zone-a",), ("node-a",)), Hints(("zone-b",), ("node-b",))]


def test_topology_mode_auto_takes_precedence_over_traffic_distribution():
    service = svc(traffic_distribution="PreferSameNode", annotations={"service.kubernetes.io/topology-mode": "Auto"})
    assert endpoint_hints(service, EPS, NODES) == [Hints()] * 4  # 3 ready endpoints, 3 zones: minimums overflow
    assert endpoint_hints(svc(), EPS, NODES) == [Hints()] * 4


# --- kube-proxy: the topology filter ----------------------------------------------------------------------

def ep(pod, node, zones=None, nodes=None, ready=True, terminating=False) -> EndpointInfo:
    return EndpointInfo(pod, node, f"10.244.0.{len(pod)}", 8080, ready=ready, serving=True, terminating=terminating,
                        for_zones=zones, for_nodes=nodes)


def here(name="node-a", zone="zone-a") -> NodeInfo:
    return NodeInfo(name, 1, "172.18.0.11", "02:00", "10.244.1.0/24", "10.244.1.1", "02:01", 1, zone=zone)


def pods(endpoints) -> list[str]:
    return [e.pod for e in endpoints]


def test_hints_are_used_when_every_endpoint_has_one_and_one_is_for_this_zone():
    eps = [ep("a", "node-a", ("zone-a",)), ep("b", "node-b", ("zone-b",)), ep("bb", "node-b", ("zone-a",))]
    assert pods(usable(eps, here=here())) == ["a", "bb"]


def test_one_endpoint_without_hints_means_all_of_them():
    eps = [ep("a", "node-a", ("zone-a",)), ep("b", "node-b")]
    assert pods(usable(eps, here=here())) == ["a", "b"]


def test_no_endpoint_for_this_zone_falls_back_to_all():
    eps = [ep("b", "node-b", ("zone-b",)), ep("c", "node-c", ("zone-c",))]
    assert pods(usable(eps, here=here())) == ["b", "c"]
    assert pods(usable(eps, here=here(zone=None))) == ["b", "c"]  # a node without a zone label


def test_prefer_same_node_falls_back_to_the_zone_then_the_cluster():
    eps = [ep("a", "node-a", ("zone-a",), ("node-a",)), ep("a2", "node-a2", ("zone-a",), ("node-a2",)),
           ep("b", "node-b", ("zone-b",), ("node-b",))]
    assert pods(usable(eps, here=here())) == ["a"]
    assert topology_mode(eps, "node-a3", "zone-a") == "PreferSameZone"
    assert pods(usable(eps, here=here("node-a3"))) == ["a", "a2"]
    assert pods(usable(eps, here=here("node-c", "zone-c"))) == ["a", "a2", "b"]


def test_hints_of_endpoints_that_are_not_ready_do_not_count():
    eps = [ep("a", "node-a", ("zone-a",), ready=False), ep("b", "node-b", ("zone-b",))]
    assert topology_mode(eps, "node-a", "zone-a") == ""
    assert pods(usable(eps, here=here())) == ["b"]
    # With no ready endpoint at all the terminating ones are used, topology or not.
    eps = [ep("a", "node-a", ("zone-a",), ready=False, terminating=True), ep("b", "node-b", ready=False,
                                                                             terminating=True)]
    assert pods(usable(eps, here=here())) == ["a", "b"]


def two_zone_cluster(**service) -> Cluster:
    web = {"app": "web"}
    nodes = zoned(("node-a", "zone-a", 2000), ("node-b", "zone-b", 2000))
    pods_ = [Pod("web-1", "node-a", labels=web, ports=(ContainerPort(8080),), ip=addr.pod_ip(1, 2), serial=1),
             Pod("web-2", "node-b", labels=web, ports=(ContainerPort(8080),), ip=addr.pod_ip(2, 2), serial=2)]
    spec = {"type": "ClusterIP", **service}
    return Cluster(nodes, pods_, [Service("web", [ServicePort(80, None, 8080)], selector=web, **spec)])


def group_buckets(c: Cluster, node_index: int) -> list[int]:
    prog = compile_state(build_proxy_state(c, 1))[addr.node_dpid(node_index)]
    return sorted(len(g.buckets) for g in prog.groups.values())


def test_the_flows_choose_among_the_zones_endpoints_and_local_policies_take_precedence():
    assert group_buckets(two_zone_cluster(), 1) == [2]  # no topology: both endpoints
    assert group_buckets(two_zone_cluster(traffic_distribution="PreferClose"), 1) == [1]  # its own zone's
    # internalTrafficPolicy Local: the node's own endpoints, whatever the hints say (KUBE-SVL).
    local = two_zone_cluster(traffic_distribution="PreferClose", internal_traffic_policy="Local")
    state = build_proxy_state(local, 1)
    assert [e.for_zones for e in state.service_ports[0].endpoints] == [("zone-a",), ("zone-b",)]
    assert group_buckets(local, 1) == [1]


def test_the_proxy_state_carries_zones_and_hints_and_its_cache_sees_them_change():
    c = two_zone_cluster()
    assert [n.zone for n in build_proxy_state(c, 1).nodes] == ["zone-a", "zone-b"]
    assert build_proxy_state(c, 1).service_ports[0].endpoints[0].for_zones is None
    c.services[0].traffic_distribution = "PreferClose"
    eps = build_proxy_state(c, 2).service_ports[0].endpoints
    assert [(e.zone, e.for_zones) for e in eps] == [("zone-a", ("zone-a",)), ("zone-b", ("zone-b",))]
    c.nodes[1].labels[ZONE_LABEL] = "zone-c"  # a node's zone changes: its endpoint's hint follows
    assert build_proxy_state(c, 3).service_ports[0].endpoints[1].for_zones == ("zone-c",)


# --- zones of nodes, from the manifests or --zones --------------------------------------------------------

def load(tmp_path: Path, text: str, **kwargs) -> Cluster:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return load_manifests([str(path)], **kwargs)


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: web}}}
      containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]
"""


def test_zones_spread_made_nodes_round_robin_and_the_scheduler_sees_them(tmp_path):
    cluster = load(tmp_path, DEPLOYMENT, nodes=6, zones=3)
    assert [(n.name, n.zone) for n in cluster.nodes] == [
        ("node-a", "zone-a"), ("node-b", "zone-b"), ("node-c", "zone-c"),
        ("node-d", "zone-a"), ("node-e", "zone-b"), ("node-f", "zone-c")]
    zone_of = {n.name: n.zone for n in cluster.nodes}
    assert sorted(zone_of[p.node] for p in cluster.pods) == ["zone-a", "zone-b", "zone-c"]  # one a zone


def test_spread_zones_names_zones_like_columns():
    nodes = [Node(f"n{i}", i) for i in range(1, 4)]
    spread_zones(nodes, 28)
    assert [n.zone for n in nodes] == ["zone-a", "zone-b", "zone-c"]
    many = [Node(f"n{i}", i) for i in range(1, 29)]
    spread_zones(many, 28)
    assert many[-1].zone == "zone-ab"


NODE = """
apiVersion: v1
kind: Node
metadata: {{name: {name}, labels: {labels}}}
status: {{allocatable: {{cpu: {cpu}}}}}
"""


def test_manifest_nodes_give_zone_and_allocatable_cpu(tmp_path):
    text = "---\n".join(NODE.format(name=f"n{i}", labels=f"{{{ZONE_LABEL}: z{i % 2}}}", cpu=cpu)
                        for i, cpu in enumerate(['"4"', '"3500m"', "0.5"]))
    cluster = load(tmp_path, text)
    assert [(n.zone, n.allocatable_cpu_milli) for n in cluster.nodes] == [("z0", 4000), ("z1", 3500), ("z0", 500)]


@pytest.mark.parametrize("text,kwargs,needle", [
    (NODE.format(name="n1", labels="{}", cpu='"lots"'), {}, 'status.allocatable.cpu "lots" is not a CPU quantity'),
    (NODE.format(name="n1", labels=f"{{{ZONE_LABEL}: z}}", cpu="1"), {"zones": 1}, "has a topology.kubernetes.io"),
    (DEPLOYMENT, {"nodes": 2, "zones": 3}, "asks for 3 zones over 2 nodes"),
])
def test_bad_zone_inputs_are_one_line_errors(tmp_path, text, kwargs, needle):
    with pytest.raises(ManifestError, match=needle):
        load(tmp_path, text, **kwargs)


SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: web{annotations}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]{extra}}}
"""


def about_topology(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "topology mode" in w or "trafficDistribution" in w]


def test_traffic_distribution_is_validated_as_the_api_server_does(tmp_path):
    ok = load(tmp_path, SERVICE.format(annotations="", extra=", trafficDistribution: PreferSameNode"))
    assert ok.services[0].traffic_distribution == "PreferSameNode" and not about_topology(ok.warnings)
    with pytest.raises(ManifestError, match=r'Service "web".*spec.trafficDistribution "PreferNear" is not a traffic '
                                            r"distribution.*PreferClose, PreferSameZone, PreferSameNode"):
        load(tmp_path, SERVICE.format(annotations="", extra=", trafficDistribution: PreferNear"))


def test_an_unknown_topology_mode_is_warned(tmp_path):
    annotations = ", annotations: {service.kubernetes.io/topology-mode: Always}"
    cluster = load(tmp_path, SERVICE.format(annotations=annotations, extra=""))
    assert any('topology-mode] "Always" is not a topology mode' in w for w in cluster.warnings), cluster.warnings
    auto_ = load(tmp_path, SERVICE.format(annotations=", annotations: {service.kubernetes.io/topology-mode: Auto}",
                                          extra=""))
    assert auto_.services[0].annotations == {"service.kubernetes.io/topology-mode": "Auto"}
    assert not about_topology(auto_.warnings)


# --- the underlay across zones ----------------------------------------------------------------------------

def three_zones() -> Cluster:
    nodes = [Node(f"node-{c}", i) for i, c in enumerate("abcdef", 1)]
    spread_zones(nodes, 3)
    return Cluster(nodes=nodes)


def test_one_switch_per_zone_and_the_core_sees_each_zone_behind_one_port():
    c = three_zones()
    assert [(z.bridge, [n.name for n in z.nodes]) for z in zone_layout(c)] == [
        (addr.zone_bridge(1), ["node-a", "node-d"]), (addr.zone_bridge(2), ["node-b", "node-e"]),
        (addr.zone_bridge(3), ["node-c", "node-f"])]
    assert core_ports(c) == {"node-a": 1001, "node-b": 1002, "node-c": 1003, "node-d": 1001, "node-e": 1002,
                             "node-f": 1003}
    assert zone_layout(Cluster(nodes=[Node("a", 1), Node("b", 2)])) == []  # one zone (none): flat as before
    underlay = compile_state(build_proxy_state(c, 1))[addr.underlay_dpid()].dump()
    assert len([f for f in underlay if "table=0" in f and "in_port=100" in f]) == 3  # one classify flow a zone


def test_a_zone_switch_keeps_its_nodes_frames_and_sends_the_rest_up():
    zone = zone_layout(three_zones())[0]
    mac_a, mac_d = addr.mac_for(addr.node_ip(1)), addr.mac_for(addr.node_ip(4))
    assert zone_flows(zone) == [
        f"cookie=0x5a01,priority=100,in_port=104,dl_dst={mac_a},actions=output:101",
        f"cookie=0x5a02,priority=100,in_port=1,dl_dst={mac_a},actions=output:101",
        "cookie=0x5a03,priority=50,in_port=101,actions=output:1",
        f"cookie=0x5a01,priority=100,in_port=101,dl_dst={mac_d},actions=output:104",
        f"cookie=0x5a02,priority=100,in_port=1,dl_dst={mac_d},actions=output:104",
        "cookie=0x5a03,priority=50,in_port=104,actions=output:1",
        "cookie=0x5a03,priority=0,actions=drop",
    ]


def test_bytes_between_nodes_and_across_zones_from_port_counters():
    c = three_zones()
    UL, Z1, Z2, Z3 = addr.underlay_bridge(), addr.zone_bridge(1), addr.zone_bridge(2), addr.zone_bridge(3)
    # node-a sent 1,000 (to node-d, same zone) + 500 (up: 300 to node-b, 200 to the client); node-b sent 50 to
    # the client. The core received 500 + 50 from zones 1 and 2 and sent 250 to the client (port 1).
    counters = {UL: {1: (0, 250), 2: (0, 0), 1001: (500, 0), 1002: (50, 300), 1003: (0, 0)},
                Z1: {1: (0, 500), 101: (1500, 0), 104: (0, 1000)},
                Z2: {1: (300, 50), 102: (50, 300), 105: (0, 0)}, Z3: {1: (0, 0)}}
    assert inter_node_bytes(c, counters) == 1300
    assert cross_zone_bytes(c, counters) == 300
    flat = Cluster(nodes=[Node("a", 1), Node("b", 2)])
    assert cross_zone_bytes(flat, {UL: {1: (0, 10), 101: (100, 0), 102: (0, 90)}}) == 0
    assert inter_node_bytes(flat, {UL: {1: (0, 10), 101: (100, 0), 102: (0, 90)}}) == 90


def test_nodes_without_a_zone_share_a_switch_of_their_own():
    nodes = [Node("a", 1, labels={ZONE_LABEL: "zone-a"}), Node("b", 2), Node("c", 3)]
    assert [(z.name, [n.name for n in z.nodes]) for z in zone_layout(Cluster(nodes=nodes))] == [
        ("zone-a", ["a"]), (None, ["b", "c"])]


# --- the price -------------------------------------------------------------------------------------------

def test_cross_zone_cost_bills_each_direction():
    assert cross_zone_cost(2**30) == pytest.approx(0.02)  # 1 GB crossing once: out of one zone, into the other
    assert cross_zone_cost(2**30, price_per_gb=0.02, ends=1) == pytest.approx(0.02)
    assert cost_per_million(1074) == pytest.approx(1074e6 / 2**30 * 0.02)
    assert cost_per_million(None) is None


def test_delay_between_zones_needs_netem_and_is_never_faked():
    c = three_zones()
    c.zone_delay_ms = 4.0
    warnings: list[str] = []
    assert zone_link_delay_ms(c, has_netem=True, warnings=warnings) == 2.0 and not warnings  # two links a crossing
    assert zone_link_delay_ms(c, has_netem=False, warnings=warnings) is None
    assert warnings == ["this kernel has no netem qdisc: the links between zones run without delay (asked for 4.0 "
                        "ms); no delay is faked"]
    flat = Cluster(nodes=[Node("a", 1)], zone_delay_ms=4.0)
    assert zone_link_delay_ms(flat, has_netem=False, warnings=warnings) is None and len(warnings) == 1
