"""The one place that knows os-ken's app side: events, datapaths, barriers, packets.

Every other module of the controller works on plain data (flows and groups are written to bytes by
``controllers.ofwire``), so moving to another OpenFlow framework means rewriting this file and the
thin app class, nothing else.
"""

from __future__ import annotations

import socket

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

from controllers import ofwire
from controllers.diff import Changes

OFP_VERSION = ofproto_v1_3.OFP_VERSION
ofp = ofproto_v1_3


SEND_BUFFER = 32 << 20  # bytes the kernel holds for a switch that has not read them yet
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # Linux's number; root may exceed wmem_max with it


class _UnixConnection:
    """A switch's connection on a Unix socket, as os-ken's datapath wants it: os-ken sets TCP_NODELAY
    on every connection, which a Unix socket refuses (and has no need of).

    Its send buffer is made large (``SEND_BUFFER``, past net.core.wmem_max: the controller runs as
    root): with the default 208 KB, os-ken's send thread wrote one bridge's 14 MB (10,000 Services)
    in some 70 pieces, each waiting for the interpreter lock while the next bridge was being compiled,
    and the switch sat idle in between. With 32 MB one write hands the kernel the whole buffer and
    Open vSwitch reads it at its own pace."""

    def __init__(self, sock):
        self._sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, SEND_BUFFER)
        except OSError:  # not root: the default buffer, only slower
            pass

    def setsockopt(self, level, option, value):
        if level != socket.IPPROTO_TCP:
            self._sock.setsockopt(level, option, value)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def listen_on_unix_socket(path: str) -> None:
    """Have os-ken's OpenFlow listener accept switches on the Unix socket ``path`` instead of TCP.

    os-ken binds a Unix socket when its listen host is a path in an existing directory; only its
    per-connection socket options need the wrapper above."""
    from os_ken import cfg
    from os_ken.controller import controller

    cfg.CONF.set_override("ofp_listen_host", path)
    # Unset, os-ken would also serve its old port 6633, which for a path means binding it twice.
    cfg.CONF.set_override("ofp_tcp_listen_port", 6653)
    factory = controller.datapath_connection_factory
    controller.datapath_connection_factory = lambda sock, address: factory(_UnixConnection(sock), address)


# --- resynchronising a switch that already holds flows (a restarted controller) -------------------------

def held_requests(dp) -> list:
    """Ask a switch what it holds: every flow of every table, every group."""
    return [parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()),
            parser.OFPGroupDescStatsRequest(dp, 0)]


def more_to_come(msg) -> bool:
    return bool(msg.flags & ofp.OFPMPF_REPLY_MORE)


def match_key(m) -> tuple:
    """A match as a comparable value, whoever wrote it (os-ken parsing the switch's reply, or our bytes)."""
    import json
    return tuple(sorted(json.dumps(f, sort_keys=True) for f in m.to_jsondict()["OFPMatch"]["oxm_fields"]))


def flow_key(flow) -> tuple:
    """``match_key`` of one of our flows, read back through os-ken's parser from the bytes we send."""
    return (flow.table, flow.priority, match_key(parser.OFPMatch.parser(ofwire.match(flow.match), 0)))


def held_flow_key(stat) -> tuple:
    return (stat.table_id, stat.priority, match_key(stat.match))


def delete_held_flow(dp, stat):
    """Remove a flow the switch holds that the program has not (by the switch's own match)."""
    return parser.OFPFlowMod(dp, table_id=stat.table_id, priority=stat.priority, command=ofp.OFPFC_DELETE_STRICT,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=stat.match)


def clear_all(dp) -> list:
    """Messages that empty a switch: every flow in every table, every group."""
    return [
        parser.OFPFlowMod(dp, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
        parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, ofp.OFPG_ALL, []),
    ]


def messages(changes: Changes) -> bytes:
    """The changes as one buffer of OpenFlow messages (``controllers.ofwire``), in a safe order: a
    modified group goes after the flows its new endpoints need (their hairpin flow), or a connection
    choosing a new endpoint in between misses them; a flow goes before the group it points at.

    Every flow and group mod carries the same transaction id (``ofwire.MOD_XID``): no reply pairs with
    one (only an error would, and it quotes the message it refuses), so a flow object sent to ten
    bridges is one message, packed once; a transaction id per message (os-ken's) cost a second at
    10,000 Services (500,000 messages)."""
    parts = ofwire.group_mods(changes.add_groups, ofp.OFPGC_ADD)
    parts += ofwire.flow_mods(changes.add_flows, ofp.OFPFC_ADD)
    parts += ofwire.flow_mods(changes.modify_flows, ofp.OFPFC_MODIFY_STRICT)
    parts += ofwire.group_mods(changes.modify_groups, ofp.OFPGC_MODIFY)
    parts += ofwire.flow_mods(changes.delete_flows, ofp.OFPFC_DELETE_STRICT)
    parts += [ofwire.group_delete(gid) for gid in changes.delete_groups]
    return b"".join(parts)


def send(dp, data: bytes) -> None:
    """Queue one buffer of messages for the switch. eventlet's ``sendall`` sends what is left after each
    partial send as ``data[tail:]``, a copy: a 16 MB sync (10,000 Services) to a switch that takes
    200 KB at a time would be copied some 80 times. A memoryview slices without copying."""
    dp.send(memoryview(data))


def barrier(dp):
    return parser.OFPBarrierRequest(dp)


def packet_out(dp, in_port: int, data: bytes):
    return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                               actions=[parser.OFPActionOutput(in_port)], data=data)
