"""kube-proxy inside the cluster, as compiled flows (golden lists, present and absent, Antrea-style):
ClusterIP, internalTrafficPolicy, load balancer addresses from inside, 127.0.0.1 NodePorts,
sessionAffinity, loadBalancerSourceRanges, terminating endpoints, UDP."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from controllers.flows import T_AFFINITY, T_FIREWALL, T_REMEMBER, T_SERVICE, T_STICKY, T_UDP_PICK, U_LB
from controllers.pipeline import compile_state, group_id
from controllers.services import udp_slots, usable
from controllers.state import EndpointInfo
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

WEB = {"app": "web"}


def cluster(**service) -> Cluster:
    nodes = [Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)]
    pods = [Pod("web-1", "node-a", labels=WEB, ports=(ContainerPort(8080),), ip=addr.pod_ip(1, 2), serial=1),
            Pod("web-2", "node-b", labels=WEB, ports=(ContainerPort(8080),), ip=addr.pod_ip(2, 2), serial=2)]
    spec = {"type": "ClusterIP", **service}
    ports = spec.pop("ports", [ServicePort(80, 0, 8080)])
    return Cluster(nodes, pods, [Service("web", ports, selector=WEB, **spec)])


def flows(c: Cluster, node: str = "node-c") -> tuple:
    state = build_proxy_state(c, 1)
    index = {"node-a": 1, "node-b": 2, "node-c": 3}[node]
    return state, compile_state(state)[addr.node_dpid(index)].dump()


def matching(lines, *needles):
    return [f for f in lines if all(n in f for n in needles)]


def test_cluster_ips_are_deterministic_in_the_service_cidr_and_honour_the_manifest():
    c = cluster()
    first = cluster_ips(c)[("default", "web")]
    assert first == cluster_ips(cluster())[("default", "web")]
    assert ipaddress.IPv4Address(first) in addr.SERVICE_CIDR
    assert cluster_ips(cluster(cluster_ip="10.96.0.50"))[("default", "web")] == "10.96.0.50"
    assert ("default", "web") not in cluster_ips(cluster(cluster_ip="None"))  # headless


def test_headless_service_gets_no_flows():
    state, lines = flows(cluster(cluster_ip="None"))
    assert state.service_ports[0].cluster_ip is None
    assert not matching(lines, f"table={T_SERVICE},priority=100")
    assert not matching(lines, "group_id=")


def test_cluster_ip_golden_flows_pods_unmasqueraded_everyone_else_masqueraded():
    state, lines = flows(cluster(cluster_ip="10.96.0.50"))
    g = group_id(state.service_ports[0].id, False)
    assert matching(lines, "nw_dst=10.96.0.50") == [
        f"cookie=0x17,table={T_SERVICE},priority=100,dl_type=0x800,ct_state=+new-rpl+trk,nw_src=10.244.0.0/16,"
        f"nw_dst=10.96.0.50,nw_proto=6,tp_dst=80 actions=group:{g}",
        f"cookie=0x17,table={T_SERVICE},priority=90,dl_type=0x800,ct_state=+new-rpl+trk,"
        f"nw_dst=10.96.0.50,nw_proto=6,tp_dst=80 actions=set_field:0x1->reg0,group:{g}",
    ]
    [group] = matching(lines, f"group_id={g},")
    assert group.count("bucket=") == 2
    assert not matching(lines, "tp_dst=0")  # a ClusterIP Service has no nodePort


def test_internal_traffic_policy_local_uses_local_endpoints_or_drops():
    state, on_a = flows(cluster(cluster_ip="10.96.0.50", internal_traffic_policy="Local"), "node-a")
    local = group_id(state.service_ports[0].id, True)
    assert [f.rsplit("actions=", 1)[1] for f in matching(on_a, "nw_dst=10.96.0.50")] == [
        f"group:{local}", f"set_field:0x1->reg0,group:{local}"]
    [group] = matching(on_a, f"group_id={local},")
    assert group.count("bucket=") == 1 and addr.pod_ip(1, 2) in group
    _, on_c = flows(cluster(cluster_ip="10.96.0.50", internal_traffic_policy="Local"), "node-c")
    [drop] = matching(on_c, "nw_dst=10.96.0.50")
    assert drop.startswith("cookie=0x12,") and drop.endswith("actions=drop")


def test_load_balancer_address_is_served_by_the_clients_own_node():
    c = cluster(type="LoadBalancer", external_traffic_policy="Local", ports=[ServicePort(80, 30100, 8080)])
    state, lines = flows(c, "node-c")
    lb = state.service_ports[0].load_balancer_ip
    g = group_id(state.service_ports[0].id, False)
    got = {f.split(",")[2]: f.rsplit("actions=", 1)[1] for f in matching(lines, f"nw_dst={lb},", "tp_dst=80")}
    assert got == {"priority=110": f"group:{g}",  # pods: all endpoints, pod IP kept (checklist 9)
                   "priority=105": f"set_field:0x1->reg0,group:{g}",  # the node: masqueraded (checklist 10)
                   "priority=100": "drop"}  # anything else on a node without local endpoints


def test_node_reaches_its_own_nodeport_on_127_0_0_1_masqueraded():
    for policy in ("Cluster", "Local"):
        c = cluster(type="NodePort", external_traffic_policy=policy, ports=[ServicePort(80, 30100, 8080)])
        state, lines = flows(c, "node-c")
        [flow] = matching(lines, "nw_dst=127.0.0.1,")
        assert "in_port=2," in flow and "tp_dst=30100" in flow
        assert flow.endswith(f"actions=set_field:0x1->reg0,group:{group_id(state.service_ports[0].id, False)}")


def test_session_affinity_learns_client_to_endpoint_with_an_idle_timeout():
    state, lines = flows(cluster(cluster_ip="10.96.0.50", session_affinity_timeout=7))
    sp = state.service_ports[0]
    g = group_id(sp.id, False)
    [entry] = matching(lines, "priority=100", "nw_dst=10.96.0.50")
    # The source port moved onto itself: datapath flows exact on it, one translation per connection.
    assert entry.endswith(f"actions=set_field:{g:#x}->reg4,set_field:{sp.id:#x}->reg7,move:tcp_src->tcp_src,"
                          f"resubmit(,{T_AFFINITY}),goto_table:{T_STICKY}")
    [group] = matching(lines, f"group_id={g},")
    for ep in sp.endpoints:
        dnat = f"nat(dst={ep.ip}:8080),exec(move:reg0[0]->ct_mark[0]),table={T_REMEMBER})"
        assert f"ct(commit,zone=NXM_NX_REG8[0..15],{dnat}" in group  # a bucket: the node's zone from reg8
        [sticky] = matching(lines, f"table={T_STICKY},priority=100", f"reg5={ep.ip},")
        assert f"reg4={g}," in sticky and sticky.endswith(f"actions=ct(commit,zone=1003,{dnat}")
    [fallback] = matching(lines, f"table={T_STICKY},priority=10,")
    assert fallback.endswith(f"actions=group:{g}")
    assert matching(lines, f"table={T_REMEMBER},priority=100") == [
        f"cookie=0x16,table={T_REMEMBER},priority=100,dl_type=0x800,nw_proto=6,reg7={sp.id} actions="
        f"move:tcp_src->tcp_src,learn(table={T_AFFINITY},idle_timeout=7,priority=100,cookie=0x16,reg7,eth_type=0x800,ipv4_src,"
        f"load:ipv4_dst->reg5,load:tcp_dst->reg6),goto_table:30"]
    assert not matching(lines, "tp_src=")  # (a never-matching port 0 un-wildcards only the port's top bit)
    _, plain = flows(cluster(cluster_ip="10.96.0.50"))
    assert not matching(plain, "learn(") and not matching(plain, f"table={T_STICKY},")


def test_source_ranges_gate_the_load_balancer_address_not_the_node_port():
    c = cluster(type="LoadBalancer", load_balancer_source_ranges=("192.0.2.0/24",),
                ports=[ServicePort(80, 30100, 8080)])
    state, lines = flows(c)
    lb = state.service_ports[0].load_balancer_ip
    fw = matching(lines, f"table={T_FIREWALL},", f"nw_dst={lb}")
    assert [f.rsplit("actions=", 1)[1] for f in fw] == ["drop", f"goto_table:{T_SERVICE}"]
    assert "nw_src=192.0.2.0/24" in fw[1]
    assert not matching(lines, f"table={T_FIREWALL},", "tp_dst=30100")
    underlay = compile_state(state)[addr.underlay_dpid()].dump()
    lb_flows = matching(underlay, f"table={U_LB},", f"nw_dst={lb}")
    assert len(lb_flows) == 2 and any("nw_src=192.0.2.0/24" in f and "group:" in f for f in lb_flows)
    assert any("nw_src" not in f and f.endswith("actions=drop") for f in lb_flows)


def test_terminating_endpoints_are_used_only_when_no_ready_one_is_left():
    ready = EndpointInfo("a", "node-a", "10.244.1.2", 8080)
    term = EndpointInfo("b", "node-b", "10.244.2.2", 8080, ready=False, serving=True, terminating=True)
    dead = EndpointInfo("c", "node-b", "10.244.2.3", 8080, ready=False, serving=False, terminating=True)
    assert usable([ready, term, dead]) == (ready,)
    assert usable([term, dead]) == (term,)
    assert usable([ready, term, dead], "node-b") == (term,)  # Local: this node has only a terminating one
    assert usable([dead]) == ()


def test_local_node_with_only_terminating_endpoints_still_forwards_to_them():
    c = cluster(type="NodePort", external_traffic_policy="Local", ports=[ServicePort(80, 30100, 8080)])
    c.pods[1].terminating = True
    state, lines = flows(c, "node-b")
    local = group_id(state.service_ports[0].id, True)
    [entry] = matching(lines, "priority=100", "reg8=0x10000/0x10000,", "tp_dst=30100")
    assert entry.endswith(f"actions=group:{local}")
    assert addr.pod_ip(2, 2) in matching(lines, f"group_id={local},")[0]
    # ...and cluster-wide choices leave it out, since a ready endpoint exists.
    assert addr.pod_ip(2, 2) not in matching(lines, f"group_id={group_id(state.service_ports[0].id, False)},")[0]


def test_udp_service_ports_match_udp():
    c = cluster(cluster_ip="10.96.0.53", ports=[ServicePort(53, 30053, 5353, name="dns", protocol="UDP")],
                type="NodePort")
    _, lines = flows(c)
    vip = matching(lines, "nw_dst=10.96.0.53")
    assert vip and all("nw_proto=17,tp_dst=53" in f for f in vip)
    assert matching(lines, "reg8=0x10000/0x10000,", "nw_proto=17,tp_dst=30053")
    # The endpoint is chosen by the client's source port (OVS hashes UDP by addresses only), 16 slots each.
    picks = matching(lines, f"table={T_UDP_PICK},")
    assert len(picks) == udp_slots(2) == 32 and not matching(lines, "group_id=")
    for ip in (addr.pod_ip(1, 2), addr.pod_ip(2, 2)):
        assert len(matching(picks, f"nat(dst={ip}:5353)")) == 16


def test_removing_an_endpoint_changes_only_its_service_groups():
    state = build_proxy_state(cluster(cluster_ip="10.96.0.50"), 1)
    sp = state.service_ports[0]
    after = replace(state, service_ports=(replace(sp, endpoints=sp.endpoints[:1]),))
    before_lines = compile_state(state)[addr.node_dpid(3)].dump()
    after_lines = compile_state(after)[addr.node_dpid(3)].dump()
    changed = set(before_lines) ^ set(after_lines)
    assert all("group_id=" in f or "table=30," in f for f in changed)
