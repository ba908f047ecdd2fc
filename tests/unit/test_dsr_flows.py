"""DSR (controllers.pipeline_dsr) and the load balancer's "vip" delivery and rotation, as flows (golden text).

One small Service: LoadBalancer web (port 80, nodePort 30080 = 0x7580), one pod web-1 on node-b
(10.244.2.2:8080); node-a (index 1) is an entry node with no endpoint, node-b (index 2) the backend's.
The frontends' labels: the load balancer address 0x580 (entry 0), node-a's nodeIP:nodePort 0x1580.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from controllers.incremental import IncrementalPrograms
from controllers.pipeline import compile_state, group_id
from controllers.pipeline_dsr import frontend_label
from controllers.rotation import effective_rotation
from controllers.state import ProxyState
from lab.cloud import reroute as rr
from lab.emulation.proxy_state import build_proxy_state
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.forwarding import FORWARDING_ANNOTATION
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

WEB = {"app": "web"}
LB_IP = "198.51.100.10"


def cluster(proxy_mode: str = "snat", policy: str = "Cluster", annotations: dict | None = None) -> Cluster:
    nodes = [Node("node-a", 1), Node("node-b", 2)]
    pods = [Pod("web-1", "node-b", labels=WEB, ports=(ContainerPort(8080),), ip=addr.pod_ip(2, 2), serial=1)]
    svc = Service("web", [ServicePort(80, 30080, 8080)], selector=WEB, type="LoadBalancer", cluster_ip="10.96.0.50",
                  external_traffic_policy=policy, annotations=annotations or {})
    return Cluster(nodes, pods, [svc], proxy_mode=proxy_mode)


def with_underlay(state: ProxyState, **changes) -> ProxyState:
    return replace(state, underlay=replace(state.underlay, **changes))


def programs(c: Cluster, delivery: str = "node-port") -> tuple[ProxyState, dict]:
    state = with_underlay(build_proxy_state(c, 1), lb_delivery=delivery)
    return state, compile_state(state)


def lines(progs: dict, dpid: int, *needles: str) -> set[str]:
    return {f for f in progs[dpid].dump() if all(n in f for n in needles)}


NODE_A, NODE_B = addr.node_dpid(1), addr.node_dpid(2)
NEW = "dl_type=0x800,ct_state=+new-rpl+trk"


def test_dsr_entry_node_dnats_without_masquerade_and_commits_the_frontend():
    state, progs = programs(cluster("dsr"))
    g = group_id(state.service_ports[0].id, False)
    assert lines(progs, NODE_A, "table=20,", "tp_dst=30080") | lines(progs, NODE_A, "table=20,", LB_IP) == {
        f"cookie=0x3,table=20,priority=100,{NEW},in_port=2,nw_dst=127.0.0.1,nw_proto=6,tp_dst=30080 "
        f"actions=set_field:0x1->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=100,{NEW},reg8=0x10000/0x10000,nw_proto=6,tp_dst=30080 "
        f"actions=set_field:0x158002->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=100,{NEW},nw_dst={LB_IP},nw_proto=6,tp_dst=80 "
        f"actions=set_field:0x58002->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=105,{NEW},in_port=2,reg8=0x10000/0x10000,nw_proto=6,tp_dst=30080 "
        f"actions=set_field:0x1->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=105,{NEW},in_port=2,nw_dst={LB_IP},nw_proto=6,tp_dst=80 "
        f"actions=set_field:0x1->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=110,{NEW},nw_src=10.244.0.0/16,reg8=0x10000/0x10000,nw_proto=6,tp_dst=30080 "
        f"actions=set_field:0x1->reg0,group:{g}",
        f"cookie=0x3,table=20,priority=110,{NEW},nw_src=10.244.0.0/16,nw_dst={LB_IP},nw_proto=6,tp_dst=80 "
        f"actions=set_field:0x1->reg0,group:{g}",
    }
    assert lines(progs, NODE_A, "group_id=") == {
        f"group_id={g},type=select,bucket=weight:100,ct(commit,zone=NXM_NX_REG8[0..15],nat(dst=10.244.2.2:8080),"
        "exec(move:reg0[0..27]->ct_mark[0..27]),table=30)"}
    assert lines(progs, NODE_A, "push_mpls") == {
        "cookie=0x18,table=50,priority=105,dl_type=0x800,ct_state=-rpl+trk,ct_mark=0x2/0x2,nw_dst=10.244.2.0/24 "
        "actions=set_field:02:00:ac:12:00:0b->eth_src,set_field:02:00:ac:12:00:0c->eth_dst,dec_ttl,"
        "push_mpls:0x8847,move:ct_mark[8..27]->mpls_label[0..19],set_field:0x1->reg3,goto_table:60"}


def test_dsr_backend_node_restores_each_frontend_then_dnats_in_its_own_zone():
    _, progs = programs(cluster("dsr"))
    assert frontend_label(build_proxy_state(cluster("dsr"), 1).service_ports[0], 1) == 0x1580
    assert lines(progs, NODE_B, "table=7,") == {
        "cookie=0x18,table=7,priority=0 actions=drop",
        "cookie=0x18,table=7,priority=100,dl_type=0x800,reg2=1408,nw_dst=10.244.2.2,nw_proto=6,tp_dst=8080 "
        f"actions=set_field:{LB_IP}->ipv4_dst,set_field:0x50->tcp_dst,"
        "ct(commit,zone=1002,nat(dst=10.244.2.2:8080),table=50)",
        "cookie=0x18,table=7,priority=100,dl_type=0x800,reg2=5504,nw_dst=10.244.2.2,nw_proto=6,tp_dst=8080 "
        "actions=set_field:172.18.0.11->ipv4_dst,set_field:0x7580->tcp_dst,"
        "ct(commit,zone=1002,nat(dst=10.244.2.2:8080),table=50)",
    }
    assert lines(progs, NODE_B, "pop_mpls") == {
        "cookie=0x18,table=0,priority=150,in_port=1,dl_type=0x8847 "
        "actions=move:mpls_label->reg2,pop_mpls:0x0800,goto_table:7"}
    assert not lines(progs, NODE_A, "table=7,priority=100")  # no endpoint on node-a: nothing to restore


def test_snat_mode_has_no_dsr_marks_no_backend_flows_and_one_bit_buckets():
    _, progs = programs(cluster("snat"))
    for dpid in (NODE_A, NODE_B):
        assert not lines(progs, dpid, "table=7,priority=100")
        assert not lines(progs, dpid, "8002->reg0")
        assert lines(progs, dpid, "group_id=") and all("exec(move:reg0[0]->ct_mark[0])" in g
                                                       for g in lines(progs, dpid, "group_id="))


def test_the_cluster_ip_is_the_same_under_dsr_only_north_south_entries_change():
    _, snat = programs(cluster("snat"))
    _, dsr = programs(cluster("dsr"))
    assert lines(snat, NODE_A, "10.96.0.50") == lines(dsr, NODE_A, "10.96.0.50")


def test_local_policy_is_the_same_under_dsr_local_endpoints_need_no_label():
    _, snat = programs(cluster("snat", policy="Local"))
    _, dsr = programs(cluster("dsr", policy="Local"))
    assert lines(snat, NODE_B, "table=20,") == lines(dsr, NODE_B, "table=20,")
    assert not lines(dsr, NODE_A, "8002->reg0")


def test_the_annotation_overrides_the_lab_wide_mode_and_a_bad_value_names_the_service():
    _, progs = programs(cluster("snat", annotations={FORWARDING_ANNOTATION: "dsr"}))
    assert lines(progs, NODE_A, "0x58002->reg0")
    _, progs = programs(cluster("dsr", annotations={FORWARDING_ANNOTATION: "snat"}))
    assert not lines(progs, NODE_A, "0x58002->reg0")
    with pytest.raises(LabError, match=r'Service "default/web": annotation service.cilium.io/forwarding-mode'):
        build_proxy_state(cluster(annotations={FORWARDING_ANNOTATION: "hybrid"}), 1)


def test_vip_delivery_commits_the_node_into_ct_mark_and_routes_established_packets_by_it():
    state, progs = programs(cluster(), delivery="vip")
    g = group_id(state.service_ports[0].id, False)
    ul = addr.underlay_dpid()
    assert lines(progs, ul, "group_id=") == {
        f"group_id={g},type=select,bucket=weight:100,ct(commit,zone=3000,exec(set_field:0x1->ct_mark),table=15),"
        "bucket=weight:100,ct(commit,zone=3000,exec(set_field:0x2->ct_mark),table=15)"}
    assert lines(progs, ul, "table=15,") == {
        "cookie=0x13,table=15,priority=0 actions=goto_table:20",
        "cookie=0x13,table=15,priority=100,dl_type=0x800,ct_mark=1 actions=dec_ttl,"
        "set_field:02:00:ac:12:00:01->eth_src,set_field:02:00:ac:12:00:0b->eth_dst,output:101",
        "cookie=0x13,table=15,priority=100,dl_type=0x800,ct_mark=2 actions=dec_ttl,"
        "set_field:02:00:ac:12:00:01->eth_src,set_field:02:00:ac:12:00:0c->eth_dst,output:102",
    }
    assert "cookie=0x13,table=12,priority=50,ct_state=-new-rpl+trk actions=goto_table:15" in progs[ul].dump()
    _, node_port = programs(cluster())
    assert lines(node_port, ul, "group_id=") == {
        f"group_id={g},type=select,bucket=weight:100,ct(commit,zone=3000,nat(dst=172.18.0.11:30080),table=20),"
        "bucket=weight:100,ct(commit,zone=3000,nat(dst=172.18.0.12:30080),table=20)"}


def test_the_rotation_leaves_out_the_nodes_taken_out_and_fails_open_to_the_rest():
    state = build_proxy_state(Cluster([Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)]), 1)
    out = with_underlay(state, lb_out_of_rotation={"default/web": ["node-a"]})
    assert effective_rotation(state, {"default/web": ["node-a"]}) == {"default/web": ["node-a"]}
    assert effective_rotation(out, {"default/web": ["node-a", "node-b"]}) == {"default/web": ["node-b"]}
    assert effective_rotation(out, {}) == {"default/web": ["node-b", "node-c"]}  # no verdict yet: every node
    assert effective_rotation(out, {"default/web": ["node-a"]}) == {"default/web": ["node-b", "node-c"]}


def test_a_vip_pieces_sum_equals_the_full_compile_after_a_reroute():
    state, _ = programs(cluster("dsr"), delivery="vip")
    incremental = IncrementalPrograms()
    incremental.update(state, {})
    out = replace(with_underlay(state, lb_out_of_rotation={"default/web": ["node-a"]}), generation=2)
    rotation = effective_rotation(out, {})
    incremental.update(out, rotation)
    full = compile_state(out, rotation)
    for dpid, program in full.items():
        assert incremental.programs[dpid].flows == program.flows
        assert incremental.programs[dpid].groups == program.groups
    assert "set_field:0x1->ct_mark" not in str(full[addr.underlay_dpid()].groups)


DUMP = """\
tcp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40512,dport=80),reply=(src=198.51.100.10,dst=203.0.113.10,sport=80,dport=40512),zone=3000,mark=1,protoinfo=(state=ESTABLISHED)
tcp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40513,dport=80),reply=(src=198.51.100.10,dst=203.0.113.10,sport=80,dport=40513),zone=3000,mark=2,protoinfo=(state=ESTABLISHED)
tcp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40514,dport=80),reply=(src=198.51.100.10,dst=203.0.113.10,sport=80,dport=40514),zone=3000,mark=1,protoinfo=(state=TIME_WAIT)
tcp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40515,dport=80),reply=(src=172.18.0.11,dst=203.0.113.10,sport=30080,dport=40515),zone=3000,protoinfo=(state=ESTABLISHED)
udp,orig=(src=203.0.113.10,dst=198.51.100.10,sport=40516,dport=80),reply=(src=198.51.100.10,dst=203.0.113.10,sport=80,dport=40516),zone=3000,mark=1
"""  # noqa: E501


def test_reroute_moves_the_live_connections_the_load_balancer_sent_to_the_node():
    entries = rr.parse_conntrack(DUMP)
    vip = rr.on_node(entries, "TCP", LB_IP, 80, "vip", 1, "172.18.0.11", 30080)
    assert [e.orig.sport for e in vip] == [40512]  # not node-b's, not a closed one, not UDP
    node_port = rr.on_node(entries, "TCP", LB_IP, 80, "node-port", 1, "172.18.0.11", 30080)
    assert [e.orig.sport for e in node_port] == [40515]
    assert rr.flush_argv(3000, vip[0]) == [
        "ovs-appctl", "dpctl/flush-conntrack", "zone=3000",
        "ct_nw_src=203.0.113.10,ct_nw_dst=198.51.100.10,ct_nw_proto=6,ct_tp_src=40512,ct_tp_dst=80"]


def test_the_cli_takes_the_proxy_mode_and_the_load_balancer_delivery():
    from lab.cli import parser

    args = parser(["apply", "-f", "x.yaml", "--proxy-mode", "dsr", "--lb-delivery", "vip"]).parse_args(
        ["apply", "-f", "x.yaml", "--proxy-mode", "dsr", "--lb-delivery", "vip"])
    assert (args.proxy_mode, args.lb_delivery) == ("dsr", "vip")
    defaults = parser(["apply", "-f", "x.yaml"]).parse_args(["apply", "-f", "x.yaml"])
    assert (defaults.proxy_mode, defaults.lb_delivery) == ("snat", "node-port")
