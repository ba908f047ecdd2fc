"""Which bridges have a large send in lanes (``controllers.lanes``) in flight or still open, per bridge.

The controller sends a large add-only or delete-only change to a bridge over its lanes, and an install
in parts over lanes kept open from the first part to the last (``lanes.Stream``). Either way nothing
more may go to that bridge until every lane's barrier is answered (``wait``): a later message on the
controller's own connection could overtake what the lanes still carry. The controller's barrier, whose
reply acknowledges the generation, follows in ``on_done`` (``kube_proxy.KubeProxy._lanes_done``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controllers import lanes
from controllers import openflow as of
from controllers.diff import Changes

LOG = logging.getLogger("kube-proxy")


class LaneSends:
    def __init__(self) -> None:
        self.in_flight: dict[int, lanes.Ticket] = {}  # dpid -> its send in lanes, closed, not all answered
        self.streams: dict[int, lanes.Stream] = {}  # dpid -> the lanes of an install in parts, still open

    def __bool__(self) -> bool:
        return bool(self.in_flight or self.streams)

    def wait(self, dpid: int) -> None:
        """Until the bridge's last send in lanes is answered (or the lanes' timeout)."""
        ticket = self.in_flight.get(dpid)
        if ticket is not None and not ticket.wait():
            LOG.error("switch %016x: lanes still unanswered after %.0f s", dpid, lanes.TIMEOUT_S)

    def send(self, dpid: int, path: str, changes: Changes, on_done: Callable[[lanes.Ticket], None]) -> int:
        """The whole change in lanes, if it may go there (large; adds only or deletes only): how many
        lanes it took, 0 if it must go on the switch's own connection."""
        parts = lanes.plan(changes) if len(changes) >= lanes.BULK_MIN else None
        if parts is None:
            return 0
        try:
            self.in_flight[dpid] = lanes.send(path, [of.messages(part) for part in parts], on_done)
        except OSError as e:
            LOG.warning("switch %016x: no lanes on %s (%s): sending on its own connection", dpid, path, e)
            return 0
        return len(parts)

    def part(self, dpid: int, path: str | None, changes: Changes, on_done: Callable[[lanes.Ticket], None]) -> bool:
        """One part of an install (adds only) into the bridge's open lanes, opened at the first part
        (``path``: its management socket; None: it may not have lanes now). False if nothing was sent:
        then the whole install goes at the end, as usual."""
        stream = self.streams.get(dpid)
        if stream is None:
            if path is None or not len(changes):
                return False
            try:
                stream = self.streams[dpid] = lanes.Stream(path, lanes.LANES, on_done)
            except OSError as e:
                LOG.warning("switch %016x: no lanes on %s (%s)", dpid, path, e)
                return False
        stream.add(of.messages(part) for part in lanes.plan(changes, len(stream.socks), every_lane=True))
        return True

    def finish(self, dpid: int, changes: Changes) -> bool:
        """The last part of an install in parts, and the lanes closed (their barriers follow); False if
        the bridge has no lanes open."""
        stream = self.streams.pop(dpid, None)
        if stream is None:
            return False
        parts = lanes.plan(changes, len(stream.socks), every_lane=True)
        if parts is None:  # (an install only adds: cannot be) its lanes are held before the rest is sent
            self.in_flight[dpid] = stream.close()
            return False
        stream.add(of.messages(part) for part in parts)
        self.in_flight[dpid] = stream.close()
        return True

    def abort(self, dpid: int, why: str) -> None:
        """The bridge's open lanes closed without their barriers: what they carried is not acknowledged."""
        stream = self.streams.pop(dpid, None)
        if stream is not None:
            stream.abort(why)

    def answered(self, dpid: int, ticket: lanes.Ticket) -> None:
        if self.in_flight.get(dpid) is ticket:
            del self.in_flight[dpid]
