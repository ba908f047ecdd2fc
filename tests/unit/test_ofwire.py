"""The controller's own OpenFlow writer (``controllers.ofwire``) against os-ken's serializer.

os-ken is the reference: every flow and group that a cluster with every kind of Service compiles to
is built here as an os-ken message, the way the controller built them before it wrote bytes itself,
and must come out byte for byte the same (save the NAT padding os-ken leaves out, corrected below).
"""

from __future__ import annotations

import pytest
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers import ofwire
from controllers.flows import Ct, Flow, Group, Learn, Multipath
from controllers.pipeline import compile_state
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

# --- the reference: os-ken message objects -------------------------------------------------------------


class _NAT(parser.NXActionNAT):
    """os-ken's NAT, padded to the length it declares (os-ken writes a port range 4 bytes short)."""

    def serialize_body(self):
        data = super().serialize_body()
        return data + bytes(-(ofp.OFP_ACTION_EXPERIMENTER_HEADER_SIZE + 2 + len(data)) % 8)


def ref_nat(spec: str):
    if not spec:
        return _NAT(flags=0)
    kind, _, target = spec.partition("=")
    host, _, port = target.partition(":")
    kwargs = {"range_ipv4_min": host, "range_ipv4_max": host}
    if port:
        kwargs.update(range_proto_min=int(port), range_proto_max=int(port))
    return _NAT(flags=1 if kind == "src" else 2, **kwargs)


def ref_action(a: tuple):
    kind = a[0]
    if kind == "output":
        return parser.OFPActionOutput(ofp.OFPP_IN_PORT if a[1] == "in_port" else a[1])
    if kind == "set_field":
        return parser.OFPActionSetField(**{a[1]: a[2]})
    if kind == "move":
        offsets = {"src_ofs": a[4], "dst_ofs": a[5]} if len(a) == 6 else {}
        return parser.NXActionRegMove(src_field=a[1], dst_field=a[2], n_bits=a[3], **offsets)
    if kind == "push_mpls":
        return parser.OFPActionPushMpls(a[1])
    if kind == "pop_mpls":
        return parser.OFPActionPopMpls(a[1])
    if kind == "dec_ttl":
        return parser.OFPActionDecNwTtl()
    if kind == "group":
        return parser.OFPActionGroup(a[1])
    if kind == "controller":
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
    if kind == "resubmit":
        return parser.NXActionResubmitTable(table_id=a[1])
    if kind == "learn":
        return ref_learn(a[1])
    if kind == "multipath":
        return ref_multipath(a[1])
    ct: Ct = a[1]
    inner = ([parser.OFPActionSetField(ct_mark=ct.mark)] if ct.mark is not None else []) + \
        ([parser.NXActionRegMove(src_field=ct.mark_from, dst_field="ct_mark", n_bits=ct.mark_bits)]
         if ct.mark_from is not None else []) + \
        ([ref_nat(ct.nat)] if ct.nat is not None else [])
    from_register = isinstance(ct.zone, str)  # zone_ofs_nbits: bits 0..15 of the register
    return parser.NXActionCT(flags=1 if ct.commit else 0, zone_src=ct.zone if from_register else "",
                             zone_ofs_nbits=nicira_ext.ofs_nbits(0, 15) if from_register else ct.zone,
                             recirc_table=0xFF if ct.table is None else ct.table, alg=0, actions=inner)


_BITS = {"reg4": 32, "reg5": 32, "reg6": 32, "reg7": 32, "eth_type": 16, "ipv4_src": 32, "ipv4_dst": 32,
         "tcp_dst": 16, "udp_dst": 16}


def ref_learn(learn: Learn):
    specs = []
    for spec in learn.specs:
        kind, name = spec[0], spec[1]
        if kind == "load":
            specs.append(parser.NXFlowSpecLoad(src=(spec[2], 0), dst=(name, 0), n_bits=_BITS[spec[2]]))
            continue
        src = (name, 0) if len(spec) == 2 else spec[2]
        specs.append(parser.NXFlowSpecMatch(src=src, dst=(name, 0), n_bits=_BITS[name]))
    return parser.NXActionLearn(table_id=learn.table, specs=specs, idle_timeout=learn.idle_timeout,
                                hard_timeout=learn.hard_timeout, priority=learn.priority, cookie=learn.cookie)


SYMMETRIC_L3L4_UDP = 3  # nicira-ext.h's NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP (os-ken has no name for it)


def ref_multipath(mp: Multipath):
    assert (mp.fields, mp.algorithm) == ("symmetric_l3l4+udp", "modulo_n")
    return parser.NXActionMultipath(fields=SYMMETRIC_L3L4_UDP, basis=mp.basis, algorithm=nicira_ext.NX_MP_ALG_MODULO_N,
                                    max_link=mp.n_links - 1, arg=mp.arg,
                                    ofs_nbits=nicira_ext.ofs_nbits(0, mp.bits - 1), dst=mp.dst)


def ref_flow_mod(flow: Flow, command: int, xid: int) -> bytes:
    actions = [ref_action(a) for a in flow.actions if a[0] != "goto"]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    inst += [parser.OFPInstructionGotoTable(a[1]) for a in flow.actions if a[0] == "goto"]
    msg = parser.OFPFlowMod(None, cookie=flow.cookie, table_id=flow.table, command=command,
                            priority=flow.priority, match=parser.OFPMatch(**dict(flow.match)),
                            instructions=inst, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    return _serialize(msg, xid)


def ref_group_mod(group: Group, command: int, xid: int) -> bytes:
    def bucket(actions, weight):
        return parser.OFPBucket(weight=weight, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                                actions=[ref_action(a) for a in actions])
    buckets = [bucket(b, 100) for b in group.buckets] + ([bucket(group.buckets[0], 1)] if group.buckets else [])
    return _serialize(parser.OFPGroupMod(None, command, ofp.OFPGT_SELECT, group.group_id, buckets), xid)


class _Datapath:
    ofproto, ofproto_parser = ofp, parser


def _serialize(msg, xid: int) -> bytes:
    msg.datapath = _Datapath()
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


# --- a cluster that uses every action and match field the pipeline has ---------------------------------

def every_kind_of_service() -> Cluster:
    nodes = [Node("node-a", 1), Node("node-b", 2)]
    web = {"app": "web"}
    pods = [Pod("web-1", "node-a", labels=web, ports=(ContainerPort(8080),), ip=addr.pod_ip(1, 2), serial=1),
            Pod("web-2", "node-b", labels=web, ports=(ContainerPort(8080),), ip=addr.pod_ip(2, 2), serial=2)]
    services = [
        Service("cluster", [ServicePort(80, 30001, 8080)], selector=web),
        Service("local", [ServicePort(80, 30002, 8080)], selector=web, external_traffic_policy="Local"),
        Service("empty", [ServicePort(80, 30003, 8080)], selector={"app": "none"}),
        Service("lb", [ServicePort(80, 30004, 8080)], selector=web, type="LoadBalancer",
                external_traffic_policy="Local", health_check_node_port=32000,
                load_balancer_source_ranges=("203.0.113.0/24",)),
        Service("sticky", [ServicePort(80, 0, 8080), ServicePort(53, 0, 5353, name="dns", protocol="UDP")],
                selector=web, type="ClusterIP", internal_traffic_policy="Local", session_affinity_timeout=30),
        Service("dsr", [ServicePort(80, 30005, 8080)], selector=web, type="LoadBalancer",
                annotations={"service.cilium.io/forwarding-mode": "dsr"}),
        Service("maglev", [ServicePort(80, 0, 8080)], selector=web, type="ClusterIP",
                annotations={"service.cilium.io/lb-algorithm": "maglev"}),
    ]
    return Cluster(nodes, pods, services)


PROGRAMS = compile_state(build_proxy_state(every_kind_of_service(), 1))
FLOWS = [f for p in PROGRAMS.values() for f in p.flows.values()]
GROUPS = [g for p in PROGRAMS.values() for g in p.groups.values()]


def test_the_cluster_exercises_every_action_kind():
    kinds = {a[0] for f in FLOWS for a in f.actions} | {a[0] for g in GROUPS for b in g.buckets for a in b}
    assert kinds >= {"output", "set_field", "move", "dec_ttl", "group", "controller", "ct", "goto", "learn",
                     "resubmit", "push_mpls", "pop_mpls", "multipath"}
    nats = {a[1].nat.partition("=")[0] for g in GROUPS for b in g.buckets for a in b if a[0] == "ct"}
    nats |= {a[1].nat.partition("=")[0] for f in FLOWS for a in f.actions if a[0] == "ct" and a[1].nat is not None}
    assert nats == {"", "src", "dst"}


@pytest.mark.parametrize("command", [ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT])
def test_every_flow_is_written_as_os_ken_writes_it(command):
    for i, flow in enumerate(FLOWS):
        assert ofwire.flow_mod(flow, command, i) == ref_flow_mod(flow, command, i), str(flow)


@pytest.mark.parametrize("command", [ofp.OFPGC_ADD, ofp.OFPGC_MODIFY])
def test_every_group_is_written_as_os_ken_writes_it(command):
    for i, group in enumerate(GROUPS):
        assert ofwire.group_mod(group, command, i) == ref_group_mod(group, command, i), str(group)


def test_a_group_delete_names_only_the_group():
    assert ofwire.group_delete(61, 9) == _serialize(parser.OFPGroupMod(None, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT,
                                                                       61, []), 9)


def test_every_action_is_a_multiple_of_8_bytes_long_as_it_declares():
    for action in {a for g in GROUPS for b in g.buckets for a in b} | {a for f in FLOWS for a in f.actions
                                                                       if a[0] != "goto"}:
        data = ofwire.action(action)
        assert len(data) % 8 == 0 and int.from_bytes(data[2:4], "big") == len(data), action
