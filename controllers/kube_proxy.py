"""kube-proxy as an os-ken app: keeps every bridge's flows equal to what the cluster state compiles to.

The shape of Ryu's simple_switch_13, one handler per event: a switch connects -> it is emptied and
given its whole program; the state file changes -> each switch gets only the difference; a packet
comes up from the reject flow -> the app answers ICMP port unreachable, as iptables' REJECT does for
a Service without endpoints. After each barrier the app acknowledges the generation it applied in the
status file, which is how the lab knows the data plane obeys a state before it sends traffic.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from controllers import openflow as of
from controllers.diff import diff
from controllers.pipeline import COOKIE_REJECT, Program, compile_state
from controllers.state import ProxyState, read_state, write_json_atomic

LOG = logging.getLogger("kube-proxy")
WATCH_INTERVAL_S = 0.02


class KubeProxy(of.app_manager.OSKenApp):
    OFP_VERSIONS = [of.OFP_VERSION]
    state_path: str = ""  # set by the entry point (controllers.__main__) before the app starts
    status_path: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.datapaths: dict[int, object] = {}
        self.installed: dict[int, Program] = {}
        self.acked: dict[int, int] = {}
        self.pending: dict[tuple[int, int], int] = {}  # (dpid, barrier xid) -> generation
        self.state: ProxyState | None = None
        self.programs: dict[int, Program] = {}
        self._stamp = None
        self._load_state()
        of.hub.spawn(self._watch_state)

    # --- events ---------------------------------------------------------------------------------------

    @of.set_ev_cls(of.ofp_event.EventOFPSwitchFeatures, of.CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        dp = ev.msg.datapath
        with self.lock:
            self.datapaths[dp.id] = dp
            for msg in of.clear_all(dp):
                dp.send_msg(msg)
            self.installed[dp.id] = Program()
            LOG.info("switch %016x connected", dp.id)
            self._sync(dp)

    @of.set_ev_cls(of.ofp_event.EventOFPStateChange, of.DEAD_DISPATCHER)
    def state_change_handler(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        with self.lock:
            if self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self.installed.pop(dp.id, None)
                self.acked.pop(dp.id, None)
                LOG.info("switch %016x disconnected", dp.id)
                self._write_status()

    @of.set_ev_cls(of.ofp_event.EventOFPBarrierReply, of.MAIN_DISPATCHER)
    def barrier_reply_handler(self, ev):
        dp = ev.msg.datapath
        with self.lock:
            generation = self.pending.pop((dp.id, ev.msg.xid), None)
            if generation is not None and generation >= self.acked.get(dp.id, -1):
                self.acked[dp.id] = generation
                self._write_status()

    @of.set_ev_cls(of.ofp_event.EventOFPErrorMsg, [of.CONFIG_DISPATCHER, of.MAIN_DISPATCHER])
    def error_msg_handler(self, ev):
        msg = ev.msg
        LOG.error("switch %016x rejected a message: type=%d code=%d data=%s",
                  msg.datapath.id, msg.type, msg.code, bytes(msg.data[:64]).hex())

    @of.set_ev_cls(of.ofp_event.EventOFPPacketIn, of.MAIN_DISPATCHER)
    def packet_in_handler(self, ev):
        msg = ev.msg
        if msg.cookie != COOKIE_REJECT:
            return
        reply = reject_packet(msg.data)
        if reply is not None:
            msg.datapath.send_msg(of.packet_out(msg.datapath, msg.match["in_port"], reply))

    # --- state ----------------------------------------------------------------------------------------

    def _watch_state(self):
        while True:
            try:
                if self._load_state():
                    with self.lock:
                        for dp in list(self.datapaths.values()):
                            self._sync(dp)
            except Exception:  # a bad state file must not kill the proxy; the lab sees no ack
                LOG.exception("could not apply %s", self.state_path)
            time.sleep(WATCH_INTERVAL_S)

    def _load_state(self) -> bool:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        state = read_state(self.state_path)
        programs = compile_state(state)
        with self.lock:
            self._stamp = stamp
            self.state, self.programs = state, programs
        LOG.info("state generation %d: %d service ports", state.generation, len(state.service_ports))
        return True

    def _sync(self, dp) -> None:
        """Send ``dp`` the difference to its desired program, then a barrier to learn when it holds."""
        if self.state is None:
            return
        desired = self.programs.get(dp.id)
        if desired is None:
            LOG.warning("switch %016x is not part of the cluster state", dp.id)
            return
        changes = diff(self.installed.get(dp.id, Program()), desired)
        for msg in of.messages(dp, changes):
            dp.send_msg(msg)
        self.installed[dp.id] = desired
        request = of.barrier(dp)
        dp.set_xid(request)
        self.pending[(dp.id, request.xid)] = self.state.generation
        dp.send_msg(request)
        if len(changes):
            LOG.info("switch %016x: %d changes for generation %d", dp.id, len(changes), self.state.generation)

    def _write_status(self) -> None:
        write_json_atomic(self.status_path, {
            "pid": os.getpid(),
            "generation": self.state.generation if self.state else None,
            "datapaths": {f"{dpid:016x}": gen for dpid, gen in self.acked.items()},
        })


def reject_packet(data: bytes) -> bytes | None:
    """ICMP port unreachable for a TCP SYN, from the address it was sent to (iptables REJECT's default)."""
    pkt = of.packet.Packet(data)
    eth = pkt.get_protocol(of.ethernet.ethernet)
    ip = pkt.get_protocol(of.ipv4.ipv4)
    if eth is None or ip is None:
        return None
    header_len = ip.header_length * 4
    ip_start = 14
    quoted = data[ip_start:ip_start + header_len + 8]  # the offending header and 8 bytes of TCP
    reply = of.packet.Packet()
    reply.add_protocol(of.ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=0x0800))
    reply.add_protocol(of.ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1, ttl=64))
    reply.add_protocol(of.icmp.icmp(type_=3, code=3, data=of.icmp.dest_unreach(data=quoted)))
    reply.serialize()
    return bytes(reply.data)
