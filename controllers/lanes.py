"""A large send to one bridge over several extra OpenFlow connections ("lanes") at once.

Open vSwitch's main loop reads at most 50 messages from each OpenFlow connection per pass
(``ofconn_run`` in ofproto/connmgr.c), and every pass also polls every port of the userspace datapath
(a ``recvmmsg`` and 32 packet buffers allocated and freed per port, some 130 ports in a 10-node lab).
A bridge's whole program at 10,000 Services is 50,000 messages: a thousand passes on one connection.
Measured in a lab of 10 nodes x 10 pods, the same 158.7 MB of messages fed to each bridge in turn:
one connection, 31.1 s of Open vSwitch's CPU; 4 connections, 13.9 s; 16 connections, 9.0 s, as little
as feeding every bridge at once (8.7 s). So the controller keeps compiling one bridge while another
takes in its program, and sends a large program over ``LANES`` connections to the bridge's management
socket (``<rundir>/<bridge>.mgmt``, where ``ovs-ofctl`` talks to it), each ending with a barrier.

Messages on different connections are not ordered against each other, so only two kinds of change
go in lanes (``plan``): adding only, or deleting only; and each group travels in the same lane as
every flow that points at it, in ``controllers.openflow.messages``'s order (a group before the flows
that use it; flows deleted before their group). Anything else, and anything small, goes on the
controller's own connection as before. The controller acknowledges a generation only after every
lane's barrier and then its own connection's barrier have been answered.
"""

from __future__ import annotations

import os
import queue
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controllers.diff import Changes

LANES = 16
BULK_MIN = 1000  # messages: below this one connection is as fast (20 passes of its loop)
TIMEOUT_S = 300.0  # for every lane's barrier to be answered
OFP13, HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 4, 0, 1, 2, 3, 20, 21
BARRIER_XID = 0xFFFF_FF00
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # Linux interface names: the LOCAL port's


# --- what goes in which lane (pure) -----------------------------------------------------------------------

def plan(changes: Changes, lanes: int = LANES, every_lane: bool = False) -> list[Changes] | None:
    """``changes`` split into ``lanes`` parts that can travel on separate connections, or None when they
    cannot (they modify something, or both add and delete). A group and every flow pointing at it share
    a lane (``group id % lanes``); other flows are dealt round-robin. Empty parts are left out, unless
    ``every_lane``: then part k is lane k's, as a ``Stream`` needs."""
    if changes.modify_groups or changes.modify_flows:
        return None
    adding = changes.add_groups or changes.add_flows
    if adding and (changes.delete_flows or changes.delete_groups):
        return None
    parts = [Changes() for _ in range(lanes)]
    for group in changes.add_groups:
        parts[group.group_id % lanes].add_groups.append(group)
    for gid in changes.delete_groups:
        parts[gid % lanes].delete_groups.append(gid)
    for flows, lane_lists in ((changes.add_flows, [p.add_flows for p in parts]),
                              (changes.delete_flows, [p.delete_flows for p in parts])):
        dealt = 0
        for flow in flows:
            for action in flow.actions:  # (a Service's flow: a few actions, the group last)
                if action[0] == "group":
                    lane_lists[action[1] % lanes].append(flow)
                    break
            else:
                lane_lists[dealt % lanes].append(flow)
                dealt += 1
    return parts if every_lane else [p for p in parts if len(p)]


def mgmt_path(bridge: str, rundir: str | None = None) -> str | None:
    """The bridge's management socket, if the name is a bridge name and the socket is there."""
    if not _BRIDGE_NAME.fullmatch(bridge):
        return None
    path = os.path.join(rundir or os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"), f"{bridge}.mgmt")
    return path if os.path.exists(path) else None


# --- sending (side effects) -------------------------------------------------------------------------------

@dataclass
class Ticket:
    """One send in lanes: done once every lane's barrier is answered, or a lane failed."""

    lanes: int
    answered: int = 0
    errors: list[tuple[int, int, bytes]] = field(default_factory=list)  # (type, code, start of the message)
    failure: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.answered == self.lanes

    def wait(self, timeout: float = TIMEOUT_S) -> bool:
        return self.done.wait(timeout)


class Stream:
    """``count`` lanes to one bridge kept open while a send is made in parts: each part gives every lane
    its next buffer (``add``), which goes out at once; ``close`` ends every lane with its barrier. A lane
    is one connection, so what a part sends on it follows what earlier parts sent on it: a flow of a
    later part finds its group, sent before in the same lane (``plan``'s group id % lanes). So the
    switches take in the start of an install while the controller compiles the rest (at 10,000
    Services the first bridge took 1.2 s to compile and pack, every switch idle meanwhile).
    A thread writes the lanes and reads the answers, and calls ``on_done(ticket)`` (after ``ticket.done``
    is set). Opening raises OSError if a connection cannot be made (then nothing was sent)."""

    def __init__(self, path: str, count: int, on_done: Callable[[Ticket], None]) -> None:
        socks = []
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(sock)
                sock.connect(path)
                sock.setblocking(False)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self.socks = socks
        self.ticket = Ticket(count)
        self._handed: queue.SimpleQueue = queue.SimpleQueue()  # (socket, bytes to send), for the thread
        wake, self._wake = socket.socketpair()
        self._wake.setblocking(False)
        threading.Thread(target=_serve, args=(socks, self._handed, wake, self.ticket, on_done), daemon=True,
                         name="lanes").start()
        self._hand([HELLO_MSG] * count)

    def add(self, buffers: Iterable[bytes]) -> None:
        """One buffer per lane, in lane order (a generator: each goes out as soon as it is made)."""
        made = 0
        try:
            for sock, data in zip(self.socks, buffers, strict=True):
                if data:
                    # (a view: joining a megabyte of messages with a header copied every bridge's program
                    # once more, fresh pages that cost a tenth of a second per install)
                    self._handed.put((sock, memoryview(data)))
                    _wake(self._wake)
                made += 1
        except BaseException as e:
            self.abort(f"packing lane {made + 1} of {len(self.socks)} failed: {e}")
            raise

    def close(self) -> Ticket:
        self._hand([BARRIER_MSG] * len(self.socks))
        self._wake.close()  # (the thread reads every wake-up, then the end of the pipe)
        return self.ticket

    def abort(self, why: str) -> None:
        """Give up: the lanes close without their barriers, and the ticket fails."""
        if self.ticket.failure is None:
            self.ticket.failure = why
        _wake(self._wake)

    def _hand(self, buffers: list[bytes]) -> None:
        for sock, data in zip(self.socks, buffers, strict=True):
            self._handed.put((sock, memoryview(data)))
        _wake(self._wake)


HELLO_MSG = struct.pack("!BBHI", OFP13, HELLO, 8, 0)
BARRIER_MSG = struct.pack("!BBHI", OFP13, BARRIER_REQUEST, 8, BARRIER_XID)


def send(path: str, buffers: Iterable[bytes], on_done: Callable[[Ticket], None], count: int | None = None) -> Ticket:
    """One buffer per connection to the management socket ``path``, each followed by a barrier: a
    ``Stream`` of one part. ``buffers`` may be a generator of ``count`` buffers."""
    if count is None:
        buffers = list(buffers)
        count = len(buffers)
    stream = Stream(path, count, on_done)
    stream.add(buffers)
    return stream.close()


def _wake(sock) -> None:
    try:
        sock.send(b"w")
    except (BlockingIOError, OSError):
        pass  # a wake-up is waiting to be read already, or the stream is closed and the thread has them all


def _serve(socks: list, handed: queue.SimpleQueue, wake, ticket: Ticket, on_done: Callable[[Ticket], None]) -> None:
    selector = selectors.DefaultSelector()
    incoming = {sock: bytearray() for sock in socks}
    outgoing: dict = {sock: [] for sock in socks}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    selector.register(wake, selectors.EVENT_READ)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while ticket.answered < ticket.lanes and ticket.failure is None:
            if time.monotonic() > deadline:
                ticket.failure = f"{ticket.lanes - ticket.answered} of {ticket.lanes} barriers unanswered"
                break
            for key, events in selector.select(timeout=1.0):
                sock = key.fileobj
                if sock is wake:
                    if not wake.recv(1 << 12):
                        selector.unregister(wake)
                    while not handed.empty():
                        lane, data = handed.get()
                        outgoing[lane].append(data)
                        selector.modify(lane, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    continue
                if events & selectors.EVENT_WRITE:
                    _write(sock, outgoing, selector)
                if events & selectors.EVENT_READ:
                    _read(sock, incoming[sock], ticket, outgoing, selector)
    except OSError as e:
        ticket.failure = str(e)
    finally:
        selector.close()
        for sock in incoming:
            sock.close()
        wake.close()
        ticket.done.set()
        on_done(ticket)


def _write(sock, outgoing: dict, selector) -> None:
    chunks = outgoing[sock]
    sent = sock.send(chunks[0][: 1 << 22])
    chunks[0] = chunks[0][sent:]
    if not chunks[0]:
        del chunks[0]
    if not chunks:
        selector.modify(sock, selectors.EVENT_READ)


def _read(sock, buffer: bytearray, ticket: Ticket, outgoing: dict, selector) -> None:
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise OSError("Open vSwitch closed a lane before answering its barrier")
    buffer += chunk
    at = 0
    while at + 8 <= len(buffer):
        _, kind, length, xid = struct.unpack_from("!BBHI", buffer, at)
        if length < 8:
            raise OSError(f"a message of length {length} on a lane")
        if at + length > len(buffer):
            break
        if kind == ERROR and length >= 12:
            err_type, code = struct.unpack_from("!HH", buffer, at + 8)
            ticket.errors.append((err_type, code, bytes(buffer[at + 12: at + min(length, 76)])))
        elif kind == ECHO_REQUEST:  # keep the connection alive, as os-ken does on its own
            reply = bytes(buffer[at:at + length])
            outgoing[sock].append(memoryview(bytes([OFP13, ECHO_REPLY]) + reply[2:]))
            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        elif kind == BARRIER_REPLY and xid == BARRIER_XID:
            ticket.answered += 1
        at += length
    del buffer[:at]
