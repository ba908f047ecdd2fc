"""The one place that knows os-ken: turns pipeline ``Flow``/``Group`` values into OpenFlow 1.3 messages.

Every other module of the controller works on plain data, so moving to another OpenFlow framework
means rewriting this file and the thin app class, nothing else.
"""

from __future__ import annotations

from os_ken.base import app_manager  # noqa: F401  (re-exported for the app and the entry point)
from os_ken.controller import ofp_event  # noqa: F401
from os_ken.controller.handler import (  # noqa: F401
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,  # noqa: F401
)
from os_ken.lib import hub  # noqa: F401
from os_ken.lib.packet import ethernet, icmp, ipv4, packet  # noqa: F401
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.diff import Changes
from controllers.pipeline import Ct, Flow, Group

OFP_VERSION = ofproto_v1_3.OFP_VERSION
ofp = ofproto_v1_3

NX_CT_F_COMMIT = 1
NX_NAT_F_SRC = 1
NX_NAT_F_DST = 2
NX_CT_RECIRC_NONE = 0xFF


def _nat(spec: str):
    if not spec:
        return parser.NXActionNAT(flags=0)
    kind, _, target = spec.partition("=")
    host, _, port = target.partition(":")
    flags = NX_NAT_F_SRC if kind == "src" else NX_NAT_F_DST
    kwargs = {"range_ipv4_min": host, "range_ipv4_max": host}
    if port:
        kwargs.update(range_proto_min=int(port), range_proto_max=int(port))
    return parser.NXActionNAT(flags=flags, **kwargs)


def _ct(ct: Ct):
    # NAT goes last: os-ken writes NXActionNAT with a port range 4 bytes short of its declared length,
    # which the switch rejects (OFPBAC_BAD_LEN) unless nothing follows it inside ct().
    inner = []
    if ct.mark is not None:
        inner.append(parser.OFPActionSetField(ct_mark=ct.mark))
    if ct.nat is not None:
        inner.append(_nat(ct.nat))
    return parser.NXActionCT(
        flags=NX_CT_F_COMMIT if ct.commit else 0, zone_src="", zone_ofs_nbits=ct.zone,
        recirc_table=NX_CT_RECIRC_NONE if ct.table is None else ct.table, alg=0, actions=inner)


def action(a: tuple):
    kind = a[0]
    if kind == "output":
        return parser.OFPActionOutput(ofp.OFPP_IN_PORT if a[1] == "in_port" else a[1])
    if kind == "set_field":
        return parser.OFPActionSetField(**{a[1]: a[2]})
    if kind == "move":
        return parser.NXActionRegMove(src_field=a[1], dst_field=a[2], n_bits=a[3])
    if kind == "dec_ttl":
        return parser.OFPActionDecNwTtl()
    if kind == "resubmit":
        return parser.NXActionResubmitTable(table_id=a[1])
    if kind == "group":
        return parser.OFPActionGroup(a[1])
    if kind == "controller":
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
    if kind == "ct":
        return _ct(a[1])
    raise ValueError(f"no OpenFlow action for {a!r}")


def instructions(flow: Flow) -> list:
    actions = [action(a) for a in flow.actions if a[0] != "goto"]
    gotos = [a[1] for a in flow.actions if a[0] == "goto"]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    if gotos:
        inst.append(parser.OFPInstructionGotoTable(gotos[0]))
    return inst


def flow_mod(dp, flow: Flow, command: int):
    return parser.OFPFlowMod(
        dp, cookie=flow.cookie, table_id=flow.table, command=command, priority=flow.priority,
        match=parser.OFPMatch(**dict(flow.match)), instructions=instructions(flow),
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


BUCKET_WEIGHT = 100
GUARD_WEIGHT = 1


def group_mod(dp, group: Group, command: int):
    """A select group with equal-weight buckets, plus a guard bucket that keeps the choice uniform.

    Without a selection method (OpenFlow 1.3 cannot send one) Open vSwitch picks buckets with dp_hash
    over a table of as few as 16 hash slots, so 3 equal buckets get 6/16, 5/16 and 5/16 of the
    connections. A bucket whose weight is 1/100 of the others needs more slots than Open vSwitch
    allows for that, so it falls back to its per-connection hash with highest-random-weight choice,
    which is uniform over the real buckets; the guard itself (a copy of the first bucket) wins with
    probability about (1/100)^n.
    """
    def bucket(actions, weight):
        return parser.OFPBucket(weight=weight, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                                actions=[action(a) for a in actions])
    buckets = [bucket(b, BUCKET_WEIGHT) for b in group.buckets]
    if group.buckets:
        buckets.append(bucket(group.buckets[0], GUARD_WEIGHT))
    return parser.OFPGroupMod(dp, command, ofp.OFPGT_SELECT, group.group_id, buckets)


def clear_all(dp) -> list:
    """Messages that empty a switch: every flow in every table, every group."""
    return [
        parser.OFPFlowMod(dp, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
        parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, ofp.OFPG_ALL, []),
    ]


def messages(dp, changes: Changes) -> list:
    # A bucket resubmits to its endpoint's DNAT flow: a modified group goes after the flows it may now
    # reach, or a new connection choosing a new endpoint in between finds no flow and its SYN is dropped.
    msgs = [group_mod(dp, g, ofp.OFPGC_ADD) for g in changes.add_groups]
    msgs += [flow_mod(dp, f, ofp.OFPFC_ADD) for f in changes.add_flows]
    msgs += [flow_mod(dp, f, ofp.OFPFC_MODIFY_STRICT) for f in changes.modify_flows]
    msgs += [group_mod(dp, g, ofp.OFPGC_MODIFY) for g in changes.modify_groups]
    msgs += [flow_mod(dp, f, ofp.OFPFC_DELETE_STRICT) for f in changes.delete_flows]
    msgs += [parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, gid, []) for gid in changes.delete_groups]
    return msgs


def barrier(dp):
    return parser.OFPBarrierRequest(dp)


def packet_out(dp, in_port: int, data: bytes):
    return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                               actions=[parser.OFPActionOutput(in_port)], data=data)
