"""The flows kube-proxy compiles for a cluster state, read as ovs-ofctl text (no switch, no root).

Like Antrea's flow tests: a Service's flows and groups are present after it is added, absent after it
is removed, and each policy compiles to what kube-proxy's iptables chains do.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from controllers.diff import diff
from controllers.pipeline import T_ENDPOINT, T_ROUTING, T_SERVICE, T_SNAT, Program, compile_state, group_id
from controllers.state import EndpointInfo, ProxyState
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort


def make_cluster(policy: str = "Cluster", with_service: bool = True) -> Cluster:
    nodes = [Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)]
    pods = [
        Pod("web-1", "node-a", labels={"app": "web"}, ports=(ContainerPort(8080),), ip=addr.pod_ip(1, 2), serial=1),
        Pod("web-2", "node-a", labels={"app": "web"}, ports=(ContainerPort(8080),), ip=addr.pod_ip(1, 3), serial=2),
        Pod("web-3", "node-b", labels={"app": "web"}, ports=(ContainerPort(8080),), ip=addr.pod_ip(2, 2), serial=3),
    ]
    services = [Service("web", [ServicePort(80, 30007, 8080)], selector={"app": "web"},
                        external_traffic_policy=policy)] if with_service else []
    return Cluster(nodes, pods, services)


def node_flows(state: ProxyState, node: str) -> list[str]:
    index = {"node-a": 1, "node-b": 2, "node-c": 3}[node]
    return compile_state(state)[addr.node_dpid(index)].dump()


def flows_matching(flows: list[str], *needles: str) -> list[str]:
    return [f for f in flows if all(n in f for n in needles)]


def gid(state: ProxyState, local: bool = False, index: int = 0) -> int:
    return group_id(state.service_ports[index].id, local)


MASQ_DNAT = "exec(move:reg0[0]->ct_mark[0]),table=30)"
TO_NODE = "reg8=0x10000/0x10000,"  # to the node's own IP (controllers.flows.TO_NODE_BIT, set in T_CONNTRACK)


def test_cluster_policy_sends_new_nodeport_connections_to_a_group_of_all_endpoints_and_masquerades():
    state = build_proxy_state(make_cluster("Cluster"), 1)
    flows = node_flows(state, "node-c")
    svc = flows_matching(flows, f"table={T_SERVICE},", TO_NODE, "tp_dst=30007")
    assert svc == [f"cookie=0x3,table={T_SERVICE},priority=100,dl_type=0x800,ct_state=+new-rpl+trk,"
                   f"{TO_NODE}nw_proto=6,tp_dst=30007 actions=set_field:0x1->reg0,group:{gid(state)}"]
    group = flows_matching(flows, f"group_id={gid(state)},")
    assert len(group) == 1 and group[0].count("bucket=") == 3
    # Each bucket is one endpoint's DNAT in node-c's own zone, committing the masquerade decision (reg0).
    for pod_ip in (addr.pod_ip(1, 2), addr.pod_ip(1, 3), addr.pod_ip(2, 2)):
        assert f"ct(commit,zone=NXM_NX_REG8[0..15],nat(dst={pod_ip}:8080),{MASQ_DNAT}" in group[0]


def test_local_policy_uses_only_local_endpoints_and_keeps_the_source():
    state = build_proxy_state(make_cluster("Local"), 1)
    flows = node_flows(state, "node-a")
    external = flows_matching(flows, f"table={T_SERVICE},priority=100,", TO_NODE, "tp_dst=30007")
    assert external == [f"cookie=0x3,table={T_SERVICE},priority=100,dl_type=0x800,ct_state=+new-rpl+trk,"
                        f"{TO_NODE}nw_proto=6,tp_dst=30007 actions=group:{gid(state, local=True)}"]
    local_group = flows_matching(flows, f"group_id={gid(state, local=True)},")[0]
    assert local_group.count("bucket=") == 2  # web-1 and web-2, not web-3 on node-b
    assert f"nat(dst={addr.pod_ip(1, 2)}:8080)" in local_group and addr.pod_ip(2, 2) not in local_group


def test_local_policy_drops_silently_on_a_node_without_local_endpoints():
    state = build_proxy_state(make_cluster("Local"), 1)
    flows = node_flows(state, "node-c")
    external = flows_matching(flows, f"table={T_SERVICE},priority=100,", TO_NODE, "tp_dst=30007")
    assert len(external) == 1 and external[0].endswith("actions=drop")
    # ...while pods on node-c (cluster CIDR sources) still reach all endpoints, unmasqueraded (checklist 9),
    pods = flows_matching(flows, f"table={T_SERVICE},priority=110,", "nw_src=10.244.0.0/16", "tp_dst=30007")
    assert len(pods) == 1 and pods[0].endswith(f"actions=group:{gid(state)}")
    # ...and node-c's own processes too, masqueraded (addrtype --src-type LOCAL; checklist 10).
    node = flows_matching(flows, f"table={T_SERVICE},priority=105,", "in_port=2", "tp_dst=30007")
    assert len(node) == 1 and node[0].endswith(f"actions=set_field:0x1->reg0,group:{gid(state)}")


def test_service_without_endpoints_rejects_through_the_controller():
    cluster = make_cluster("Cluster")
    cluster.services[0].selector = {"app": "nothing"}
    state = build_proxy_state(cluster, 1)
    flows = node_flows(state, "node-a")
    svc = flows_matching(flows, f"table={T_SERVICE},", "tp_dst=30007")
    assert len(svc) == 2 and all(f.endswith("actions=CONTROLLER") for f in svc)  # node IP and 127.0.0.1
    [vip] = flows_matching(flows, f"table={T_SERVICE},", f"nw_dst={state.service_ports[0].cluster_ip},")
    assert vip.endswith("actions=CONTROLLER")
    assert not flows_matching(flows, "group_id=")


def test_every_endpoint_address_gets_one_hairpin_flow_on_every_node():
    """KUBE-SEP's ``-s podIP -j KUBE-MARK-MASQ``: after DNAT a hairpin connection goes from the pod to
    itself; it is marked for masquerade whatever the policy and wherever the pod runs."""
    for policy in ("Cluster", "Local"):
        for node in ("node-a", "node-c"):
            flows = node_flows(build_proxy_state(make_cluster(policy), 1), node)
            hairpin = flows_matching(flows, f"table={T_ENDPOINT},priority=100,")
            assert len(hairpin) == 3
            ip = addr.pod_ip(2, 2)
            [flow] = flows_matching(hairpin, f"nw_src={ip},nw_dst={ip} ")
            assert "ct_state=+new-rpl+trk" in flow and "ct_mark=0x0/0x1" in flow
            assert f"exec(set_field:0x1->ct_mark),table={T_SNAT})" in flow


def test_a_new_connection_whose_dnat_failed_is_dropped_not_delivered_to_the_node():
    flows = node_flows(build_proxy_state(make_cluster("Cluster"), 1), "node-b")
    [flow] = flows_matching(flows, f"table={T_ENDPOINT},priority=90,")
    assert "ct_state=+new+trk" in flow and "nw_dst=172.18.0.12 " in flow and flow.endswith("actions=drop")


def test_masquerade_uses_the_pod_gateway_towards_local_pods_and_the_node_ip_otherwise():
    flows = node_flows(build_proxy_state(make_cluster("Cluster"), 1), "node-a")
    snat = flows_matching(flows, f"table={T_SNAT},", "ct(commit")
    assert any("nw_dst=10.244.1.0/24" in f and "nat(src=10.244.1.1)" in f for f in snat)
    assert any("nw_dst" not in f and "nat(src=172.18.0.11)" in f for f in snat)


def test_every_forwarding_step_decrements_ttl_except_same_subnet_switching():
    flows = node_flows(build_proxy_state(make_cluster("Cluster"), 1), "node-a")
    routed = flows_matching(flows, f"table={T_ROUTING},priority=200,", "nw_dst=10.244.1.2 ")
    assert routed and "dec_ttl" in routed[0]
    switched = flows_matching(flows, f"table={T_ROUTING},priority=300,", "nw_dst=10.244.1.2")
    assert switched and "dec_ttl" not in switched[0]
    to_node_b = flows_matching(flows, f"table={T_ROUTING},", "nw_dst=10.244.2.0/24")
    assert to_node_b and "dec_ttl" in to_node_b[0] and "02:00:ac:12:00:0c->eth_dst" in to_node_b[0]


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_removing_the_service_removes_its_flows_and_groups(policy):
    with_svc = build_proxy_state(make_cluster(policy), 1)
    without = build_proxy_state(make_cluster(policy, with_service=False), 2)
    for node in ("node-a", "node-b", "node-c"):
        assert flows_matching(node_flows(with_svc, node), "tp_dst=30007")
        remaining = node_flows(without, node)
        assert not flows_matching(remaining, "tp_dst=30007")
        assert not flows_matching(remaining, "group_id=")


def test_adding_a_pod_changes_only_the_groups_and_flows_it_touches():
    before = build_proxy_state(make_cluster("Cluster"), 1)
    extra = EndpointInfo(pod="web-4", node="node-c", ip=addr.pod_ip(3, 2), port=8080)
    sp = before.service_ports[0]
    after = replace(before, generation=2,
                    service_ports=(replace(sp, endpoints=sp.endpoints + (extra,)),))
    dpid = addr.node_dpid(1)
    changes = diff(compile_state(before)[dpid], compile_state(after)[dpid])
    assert [g.group_id for g in changes.modify_groups] == [gid(before)]
    assert not changes.delete_flows and not changes.delete_groups and not changes.modify_flows
    assert {f.table for f in changes.add_flows} == {T_ENDPOINT}  # the new endpoint's hairpin flow only


def test_an_unchanged_state_compiles_to_no_changes():
    state = build_proxy_state(make_cluster("Local"), 1)
    for dpid, program in compile_state(state).items():
        assert len(diff(program, compile_state(state)[dpid])) == 0
        assert len(diff(Program(), program)) == len(program.flows) + len(program.groups)


def test_underlay_counts_internode_traffic_in_its_own_table_and_routes_the_client():
    state = build_proxy_state(make_cluster("Cluster"), 1)
    flows = compile_state(state)[addr.underlay_dpid()].dump()
    internode = flows_matching(flows, "table=10,priority=100")
    assert len(internode) == 3
    to_client = flows_matching(flows, "table=20", f"nw_dst={addr.CLIENT_IP}")
    assert to_client and "dec_ttl" in to_client[0]


def test_state_round_trips_through_json():
    state = build_proxy_state(make_cluster("Local"), 7)
    assert ProxyState.from_dict(state.to_dict()) == state


def test_each_node_sets_its_dnat_zone_once_and_a_services_group_is_one_object_on_every_node():
    """The buckets' DNAT zone comes from reg8, which T_CONNTRACK sets to the node's own zone before the
    lookup every IPv4 packet makes: the group no longer depends on the node, so it is made once."""
    from controllers.flows import T_CONNTRACK
    from controllers.ofwire import group_mod

    state = build_proxy_state(make_cluster(), 1)
    programs = compile_state(state)
    gid = group_id(state.service_ports[0].id, False)
    for node in state.nodes:
        zone = 1000 + node.index
        assert flows_matching(programs[node.dpid].dump(), f"table={T_CONNTRACK},") == [
            f"cookie=0x2,table={T_CONNTRACK},priority=50,dl_type=0x800 actions=set_field:{zone:#x}->reg8,"
            f"ct(zone={zone},nat,table=15)",
            # (to the node's own IP: the zone and TO_NODE_BIT, which the nodePort flows match)
            f"cookie=0x2,table={T_CONNTRACK},priority=60,dl_type=0x800,nw_dst={node.ip} "
            f"actions=set_field:{zone | 0x10000:#x}->reg8,ct(zone={zone},nat,table=15)"]
    groups = [programs[n.dpid].groups[gid] for n in state.nodes]
    assert all(g is groups[0] for g in groups)
    # ...and so is its nodePort flow, which matches TO_NODE_BIT, not the node's address
    node_ports = [[f for f in programs[n.dpid].flows.values() if ("reg8", (0x10000, 0x10000)) in f.match]
                  for n in state.nodes]
    assert all(len(f) == 1 and f[0] is node_ports[0][0] for f in node_ports)
    assert len({group_mod(g, 0, 7) for g in groups}) == 1
    local_state = build_proxy_state(make_cluster("Local"), 2)
    local_programs = compile_state(local_state)
    lid = group_id(local_state.service_ports[0].id, True)
    a, b = (local_programs[addr.node_dpid(i)].groups[lid] for i in (1, 2))
    assert a is not b and len(a.buckets) == 2 and len(b.buckets) == 1  # Local: each node's own pods
