"""kube-proxy as an os-ken app: keeps every bridge's flows equal to what the cluster state compiles to.

The shape of Ryu's simple_switch_13, one handler per event: a switch connects -> the app reads what it
holds (flows, groups) and sends only what makes it hold its program, so a restarted controller neither
drops nor duplicates flows and leaves their counters and ages alone (``_finish_resync``); the state
changes -> only the Service ports that changed are compiled again (``controllers.incremental``) and
each switch gets only the flows and groups they touched; a packet
comes up from the reject flow -> the app answers ICMP port unreachable, as iptables' REJECT does for
a Service without endpoints. After each barrier the app acknowledges the generation it applied in the
status file, which is how the lab knows the data plane obeys a state before it sends traffic.

Like kube-proxy it also serves the health endpoints on every node (``controllers.health``). The same
process programs the cloud load balancer's data plane on the underlay (the edge router), following the
health verdicts its health checker writes to a second watched file: one SDN controller, two roles, as
the lab has one fabric.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import subprocess
import threading
import time
from datetime import UTC, datetime

from controllers import lanes
from controllers import openflow as of
from controllers.collector import without_collector
from controllers.conntrack import flush_commands, stale_udp_endpoints
from controllers.diff import diff, diff_touched
from controllers.health import PROXY_HEALTH_PORT, HealthServers, health_ports, proxy_answer, service_answer
from controllers.incremental import IncrementalPrograms, Touched
from controllers.lane_sends import LaneSends
from controllers.pipeline import COOKIE_REJECT, Flow, Group, Program
from controllers.rotation import effective_rotation
from controllers.state import ProxyState, apply_delta, log_path, read_state, write_json_atomic

LOG = logging.getLogger("kube-proxy")
WATCH_INTERVAL_S = 0.001  # three stat() calls: polling this often costs nothing measurable
RESYNC_TIMEOUT_S = 3.0  # a connecting switch's flow and group listings, or it is emptied instead
HEALTH_TIMEOUT_S = 60.0  # kube-proxy: 2 x syncPeriod (30 s) without applying queued changes -> unhealthy


class KubeProxy(of.app_manager.OSKenApp):
    OFP_VERSIONS = [of.OFP_VERSION]
    state_path: str = ""  # set by the entry point (controllers.__main__) before the app starts
    status_path: str = ""
    lb_health_path: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.datapaths: dict[int, object] = {}
        self.acked: dict[int, int] = {}
        self.pending: dict[tuple[int, int], int] = {}  # (dpid, barrier xid) -> generation
        # (underlay dpid, barrier xid) -> the health verdicts its program followed; once acked, the
        # nodes each load balancer really sends to, which can lag the verdict file by a sync.
        self.pending_lb: dict[tuple[int, int], dict[str, list[str]]] = {}
        self.lb_applied: dict[str, list[str]] = {}
        self.state: ProxyState | None = None
        self.incremental = IncrementalPrograms()
        self.lb_healthy: dict[str, list[str]] = {}
        self.lb_rotation: dict[str, list[str]] = {}  # lb_healthy less the nodes taken out (controllers.rotation)
        self._stamps: dict[str, tuple] = {}
        self._log_offset = 0  # how far the state's change log (controllers.state.log_path) has been applied
        self.pending_since: float | None = None  # when a generation was loaded that not all switches hold
        self.last_synced: dict[int, datetime] = {}
        self.resyncing: dict[int, dict] = {}  # dpid -> what a connecting switch said it holds, so far
        self.health = HealthServers(self._health_answer)
        self._health_due = False
        # the last change's own cost (read, compiled and sent), in the status file: where a change's time went
        self.last_change: dict = {}
        self._times: dict[str, float] = {}  # moments of the change being applied, for last_change
        self.lane_sends = LaneSends()  # large sends over a bridge's extra connections (controllers.lanes)
        self._load_state()
        self._after_change()
        of.hub.spawn(self._watch_state)

    @property
    def programs(self) -> dict[int, Program]:
        """Every bridge's program as the last update left it (live objects: complete for a bridge as soon
        as ``incremental.update`` has called back for it)."""
        return self.incremental.programs

    # --- events ---------------------------------------------------------------------------------------

    @of.set_ev_cls(of.ofp_event.EventOFPSwitchFeatures, of.CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        dp = ev.msg.datapath
        with self.lock:
            if self._refuse_second_connection(dp):
                return
            LOG.info("switch %016x connected", dp.id)
            self._start_resync(dp)

    def _refuse_second_connection(self, dp) -> bool:
        """A second connection claiming a datapath this app already holds is refused, not believed: a
        switch reconnects only after its old connection is gone (then the DEAD event has released it)."""
        held = self.datapaths.get(dp.id) or self.resyncing.get(dp.id, {}).get("dp")
        if held is None or held is dp or not held.is_active:
            return False
        LOG.warning("switch %016x: refused a second connection claiming it (the first is still open)", dp.id)
        dp.close()
        return True

    # --- resync: a connecting switch may hold a program already (this app was restarted) ----------------

    def _start_resync(self, dp) -> None:
        """Ask the switch what it holds; ``_finish_resync`` sends the difference once both replies are in.
        Until then the switch is not synced by state changes (it joins ``datapaths`` at the end)."""
        self.resyncing[dp.id] = {"dp": dp, "flows": [], "groups": [], "waiting": {"flows", "groups"},
                                 "since": time.monotonic()}
        for msg in of.held_requests(dp):
            dp.send_msg(msg)

    @of.set_ev_cls(of.ofp_event.EventOFPFlowStatsReply, of.MAIN_DISPATCHER)
    def flow_stats_reply_handler(self, ev):
        self._held_reply(ev.msg, "flows")

    @of.set_ev_cls(of.ofp_event.EventOFPGroupDescStatsReply, of.MAIN_DISPATCHER)
    def group_desc_reply_handler(self, ev):
        self._held_reply(ev.msg, "groups")

    def _held_reply(self, msg, what: str) -> None:
        with self.lock:
            held = self.resyncing.get(msg.datapath.id)
            if held is None or held["dp"] is not msg.datapath:
                return
            held[what] += msg.body
            if not of.more_to_come(msg):
                held["waiting"].discard(what)
            if not held["waiting"]:
                self._finish_resync(self.resyncing.pop(msg.datapath.id))

    def _finish_resync(self, held: dict) -> None:
        """What the switch holds becomes ``installed``, so ``_sync`` sends only the difference: flows it
        holds are modified in place (MODIFY_STRICT keeps their age and counters), missing ones added,
        flows and groups the program has not deleted (flows first, by the switch's own match)."""
        dp = held["dp"]
        desired = self.programs.get(dp.id, Program())
        by_key = {of.flow_key(f): f for f in desired.flows.values()}
        installed = Program()
        stale = []
        for stat in held["flows"]:
            flow = by_key.get(of.held_flow_key(stat))
            if flow is None:
                stale.append(stat)
            elif stat.cookie == flow.cookie:  # a placeholder action: the diff modifies it to the program's
                installed.flows[flow.key] = Flow(flow.table, flow.priority, flow.match, (("held",),), flow.cookie)
        for group in held["groups"]:
            installed.groups[group.group_id] = Group(group.group_id, ((("held",),),))
        for stat in stale:
            dp.send_msg(of.delete_held_flow(dp, stat))
        LOG.info("switch %016x holds %d flows (%d not in the program) and %d groups: resynchronising", dp.id,
                 len(held["flows"]), len(stale), len(held["groups"]))
        self.datapaths[dp.id] = dp
        self._sync(dp, None, installed, may_use_lanes=not stale)  # lanes could overtake those deletions

    def _resync_overdue(self) -> None:
        """A switch whose replies did not come (or could not be parsed) is emptied and given its whole
        program, as on a first connection: correct, only not gentle."""
        for dpid, held in list(self.resyncing.items()):
            if time.monotonic() - held["since"] > RESYNC_TIMEOUT_S:
                del self.resyncing[dpid]
                dp = held["dp"]
                LOG.warning("switch %016x: no answer to what it holds; emptying it", dpid)
                for msg in of.clear_all(dp):
                    dp.send_msg(msg)
                self.datapaths[dpid] = dp
                self._sync(dp, None, may_use_lanes=False)  # after clear_all, on the same connection

    @of.set_ev_cls(of.ofp_event.EventOFPStateChange, of.DEAD_DISPATCHER)
    def state_change_handler(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        with self.lock:
            if self.resyncing.get(dp.id, {}).get("dp") is dp:
                del self.resyncing[dp.id]
            if self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self.acked.pop(dp.id, None)
                for key in [k for k in self.pending if k[0] == dp.id]:  # barriers it will never answer
                    self.pending.pop(key)
                    self.pending_lb.pop(key, None)
                LOG.info("switch %016x disconnected", dp.id)
                self._write_status()

    @of.set_ev_cls(of.ofp_event.EventOFPBarrierReply, of.MAIN_DISPATCHER)
    def barrier_reply_handler(self, ev):
        dp = ev.msg.datapath
        with self.lock:
            generation = self.pending.pop((dp.id, ev.msg.xid), None)
            lb_healthy = self.pending_lb.pop((dp.id, ev.msg.xid), None)
            if lb_healthy is not None:
                self.lb_applied = lb_healthy
            if generation is not None and generation >= self.acked.get(dp.id, -1):
                self.acked[dp.id] = generation
                self.last_synced[dp.id] = datetime.now(UTC)
                if self.state and all(self.acked.get(d, -1) >= self.state.generation for d in self.programs):
                    self.pending_since = None
            # Once per round of barriers, at its last reply: one change to ten switches wrote the file ten
            # times, a millisecond of the controller's time while the switches were still answering.
            if (generation is not None or lb_healthy is not None) and not self._barriers_pending():
                self._write_status()

    def _barriers_pending(self) -> bool:
        return bool(self.lane_sends) or any(dpid in self.datapaths for dpid, _ in self.pending)

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
                if self.resyncing:
                    with self.lock:
                        self._resync_overdue()
                previous = self.state
                with self.lock:  # a switch connecting meanwhile must get the program before or after a change
                    started = time.monotonic()
                    self._times = {}
                    synced: set[int] = set()
                    touched = self._load_state(functools.partial(self._sync_compiled, synced=synced),
                                               self._sync_part)
                    if touched is not None:
                        for dp in list(self.datapaths.values()):
                            if dp.id not in synced:
                                self._sync(dp, touched.get(dp.id, Touched()))
                        # (one figure: bridges are sent while the others are compiled). The moments
                        # (time.monotonic(), one clock for every process) let the bench split an install
                        # into the lab's part, the controller's, and the switches' (bench.control_plane).
                        self.last_change = {"generation": self.state.generation,
                                            "applyMs": round((time.monotonic() - started) * 1000, 3),
                                            "startedAt": started, **self._times}
                        self._after_change()
                if touched is not None:
                    self._flush_stale_udp(previous)
            except Exception:  # a bad state file must not kill the proxy; the lab sees no ack
                LOG.exception("could not apply %s", self.state_path)
            time.sleep(WATCH_INTERVAL_S)

    def _sync_compiled(self, dpid: int, touched: Touched, synced: set[int]) -> None:
        """A bridge whose program an update has just completed is sent it at once (the others are still
        being compiled): os-ken's send thread writes it while this one goes on."""
        dp = self.datapaths.get(dpid)
        if dp is not None:
            self._sync(dp, touched)
            synced.add(dpid)
            self._times.setdefault("firstSentAt", time.monotonic())
        else:
            self.lane_sends.abort(dpid, "the switch disconnected during the install")

    def _sync_part(self, dpid: int, touched: Touched) -> None:
        """A part of an install goes out at once in the bridge's lanes, kept open for the next parts
        (``controllers.lane_sends``); ``_sync`` sends the last part and closes them. Only where a send
        in lanes could go (``_lanes_path``); elsewhere ``_sync`` sends it all at the end, as usual."""
        dp = self.datapaths.get(dpid)
        if dp is None:
            return
        if dpid not in self.lane_sends.streams:
            self.lane_sends.wait(dpid)  # the last generation's lanes are held before anything more is sent
        generation, rotation = self.state.generation, self.lb_rotation
        if self.lane_sends.part(dpid, self._lanes_path(dp), diff_touched(touched, self.programs[dpid]),
                           lambda t: self._lanes_done(dp, t, generation, rotation)):
            touched.sent = (len(touched.flows), len(touched.groups))
            self._times.setdefault("firstSentAt", time.monotonic())

    def _changed(self, path: str | None) -> bool:
        if not path:
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamps.get(path):
            return False
        self._stamps[path] = stamp
        return True

    def _load_state(self, on_bridge=None, on_part=None) -> dict[int, Touched] | None:
        """Take in a new state (the whole file, or the lines appended to its change log) and new health
        verdicts; recompile only what they changed. Returns what each bridge's update touched, or None.
        ``on_bridge(dpid, touched)``: called as each bridge's program is complete (it may send it).
        Reading runs with the cyclic collector off, as the update does (``controllers.collector``): a
        change of 10,000 Services is 100,000 endpoints, read in 0.45 s with it and 0.15 s without."""
        try:
            touched, frozen = without_collector(lambda: self._take_in(on_bridge, on_part),
                                                lambda t: 0 if t is None else sum(len(x) for x in t.values()))
        finally:
            for dpid in list(self.lane_sends.streams):  # an update that failed half way: its parts are never acked
                self.lane_sends.abort(dpid, "the update failed before the switch's program was complete")
        if frozen:
            LOG.info("%d objects kept out of the cyclic collector (controllers.collector)", gc.get_freeze_count())
        return touched

    def _take_in(self, on_bridge, on_part) -> dict[int, Touched] | None:
        state_changed = self._changed(self.state_path)
        health_changed = self._changed(self.lb_health_path)
        state = read_state(self.state_path) if state_changed else self.state
        if state_changed:
            self._log_offset = 0
        state, logged = self._read_log(state)
        state_changed = state_changed or logged
        if health_changed:
            with open(self.lb_health_path) as f:
                services = json.load(f).get("services", {})
            self.lb_healthy = {key: entry["healthy"] for key, entry in services.items()}
        if state is None or not (state_changed or health_changed):
            return None
        self.lb_rotation = effective_rotation(state, self.lb_healthy)
        if state_changed:
            self.pending_since = time.monotonic()
        self.state = state  # before the update: a bridge sent its program during it acks this generation
        self._times["readAt"] = time.monotonic()
        touched = self.incremental.update(state, self.lb_rotation, on_bridge, on_part)
        if state_changed:
            self._health_due = True
            LOG.info("state generation %d: %d service ports, %d flows and groups touched", state.generation,
                     len(state.service_ports), sum(len(t) for t in touched.values()))
        if health_changed:
            LOG.info("load balancer health: %s", self.lb_healthy)
        return touched

    def _after_change(self) -> None:
        """What a new state needs once the switches have been sent it: the health listeners it wants
        (opening and closing sockets in node namespaces must not delay the flows). Still under the lock:
        the barrier replies wait for it, so the status file acknowledges a state only once they listen."""
        if self._health_due:
            self._health_due = False
            self.health.reconcile(self.state)

    def _read_log(self, state: ProxyState | None) -> tuple[ProxyState | None, bool]:
        """Apply the complete lines appended to the state's change log since the last read."""
        if state is None:
            return state, False
        try:
            if os.stat(log_path(self.state_path)).st_size <= self._log_offset:
                return state, False  # nothing new: one stat() per look
            with open(log_path(self.state_path), "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return state, False
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        if not end:
            return state, False
        self._log_offset += end
        applied = False
        for line in data[:end].splitlines():
            delta = json.loads(line)
            if delta["generation"] <= state.generation:
                continue  # already in the state file this log follows
            state = apply_delta(state, delta)
            applied = True
        return state, applied

    def _flush_stale_udp(self, previous: ProxyState | None) -> None:
        """After the new flows are sent: forget the UDP conntrack entries of endpoints no longer used."""
        stale = stale_udp_endpoints(previous, self.state)
        for argv in flush_commands(self.state, stale):
            result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            if result.returncode != 0:
                LOG.error("%s: %s", " ".join(argv), result.stderr.strip())
        if stale:
            LOG.info("flushed UDP conntrack of %s", sorted(stale))

    def _node_healthy(self, node: str) -> bool:
        """kube-proxy's /healthz: unhealthy when queued changes stay unapplied for longer than the timeout."""
        info = next((n for n in self.state.nodes if n.name == node), None) if self.state else None
        if info is None or info.dpid not in self.datapaths:
            return False
        return self.pending_since is None or time.monotonic() - self.pending_since < HEALTH_TIMEOUT_S

    def _health_answer(self, node: str, port: int, path: str):
        state = self.state
        healthy = self._node_healthy(node)
        if port == PROXY_HEALTH_PORT:
            info = next((n for n in state.nodes if n.name == node), None)
            return proxy_answer(path, self.last_synced.get(info.dpid) if info else None, healthy,
                                node_eligible=not (info and info.deleting))
        service = health_ports(state).get(port)
        if service is None:
            return 503, {"error": f"no Service uses health check port {port}"}, {}
        return service_answer(state, node, *service, proxy_healthy=healthy)

    def _sync(self, dp, touched: Touched | None, installed: Program | None = None,
              may_use_lanes: bool = True) -> None:
        """Send ``dp`` what changed (``touched``: what the last update touched; None: the difference from
        ``installed``, what a connecting switch holds, empty by default), then a barrier to learn when
        it holds it. A large change may go in lanes (``controllers.lanes``); the barrier then follows
        once the lanes' barriers are answered."""
        if self.state is None:
            return
        desired = self.programs.get(dp.id)
        if desired is None:
            LOG.warning("switch %016x is not part of the cluster state", dp.id)
            return
        changes = diff(installed or Program(), desired) if touched is None else diff_touched(touched, desired)
        generation, rotation = self.state.generation, self.lb_rotation
        if touched is not None and self.lane_sends.finish(dp.id, changes):  # an install in parts: its last one
            LOG.info("switch %016x: %d changes for generation %d in lanes, in parts", dp.id,
                     sum(touched.sent) + len(changes), generation)
            return
        self.lane_sends.wait(dp.id)  # what was sent in lanes before is held before anything more is sent
        path = self._lanes_path(dp) if may_use_lanes and len(changes) else None
        used = path is not None and self.lane_sends.send(dp.id, path, changes,
                                                          lambda t: self._lanes_done(dp, t, generation, rotation))
        if used:
            LOG.info("switch %016x: %d changes for generation %d in %d lanes", dp.id, len(changes), generation, used)
            return
        if len(changes):
            of.send(dp, of.messages(changes))  # one buffer: 20,000 messages would be 20,000 queue hand-offs
            LOG.info("switch %016x: %d changes for generation %d", dp.id, len(changes), generation)
        self._barrier(dp, generation, rotation)

    def _barrier(self, dp, generation: int, rotation: dict) -> None:
        request = of.barrier(dp)
        dp.set_xid(request)
        self.pending[(dp.id, request.xid)] = generation
        if dp.id == self.state.underlay.dpid:
            self.pending_lb[(dp.id, request.xid)] = rotation
        dp.send_msg(request)

    def _lanes_path(self, dp) -> str | None:
        """The bridge's management socket, where lanes connect; None while messages of its own connection
        are not acknowledged (a lane could overtake them), or when it has none."""
        if any(d == dp.id for d, _ in self.pending):
            return None
        local = getattr(dp, "ports", {}).get(of.ofp.OFPP_LOCAL)  # its name is the bridge's
        return None if local is None else lanes.mgmt_path(local.name.decode(errors="replace"))

    def _lanes_done(self, dp, ticket, generation: int, rotation: dict) -> None:
        """(On the lanes' thread.) Every lane answered: the switch's own barrier, whose reply acks."""
        for err_type, code, data in ticket.errors:
            LOG.error("switch %016x rejected a message: type=%d code=%d data=%s", dp.id, err_type, code, data.hex())
        with self.lock:
            self.lane_sends.answered(dp.id, ticket)
            if not ticket.ok:
                LOG.error("switch %016x: a send in lanes failed (%s): generation %d not acknowledged", dp.id,
                          ticket.failure, generation)
                return
            if self.datapaths.get(dp.id) is dp and dp.is_active:
                self._barrier(dp, generation, rotation)

    def _write_status(self) -> None:
        write_json_atomic(self.status_path, {
            "pid": os.getpid(),
            "generation": self.state.generation if self.state else None,
            "datapaths": {f"{dpid:016x}": gen for dpid, gen in self.acked.items()},
            "loadBalancers": self.lb_applied,
            "lastChange": self.last_change,
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
