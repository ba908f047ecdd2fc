"""A pod's TCP sockets as its kernel lists them: what a pod being removed still has under way.

The lab reads ``/proc/<pid>/net/tcp`` of a pod's network namespace (any process in it shows the same
table). Each line is one socket: local and remote address, the state as two hex digits, and
``tx_queue:rx_queue``; for a listener, ``rx_queue`` is its accept queue (connections whose handshake is
complete but which the server has not accepted yet), and half-open connections (SYN received, SYN-ACK
sent, the client's ACK not yet back) are listed as ``SYN_RECV`` lines of their own.

Both matter when a pod's listeners close: the kernel resets everything queued on a listener as it
closes, so a connection the data plane sent to the pod just before its endpoints went, still in its
handshake or in the accept queue, is reset although its client did nothing wrong.
"""

from __future__ import annotations

ESTABLISHED, SYN_RECV, LISTEN = "01", "03", "0A"
BUSY_STATES = {ESTABLISHED, "04", "08", "09", "0B"}  # ESTABLISHED, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING


def _sockets(table: str):
    """(local port, state, rx_queue) of every socket line of a ``/proc/net/tcp`` text."""
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        local, state, queues = fields[1], fields[3], fields[4]
        yield int(local.rpartition(":")[2], 16), state, int(queues.partition(":")[2], 16)


def busy_connections(table: str) -> int:
    """Connections that may still have data to deliver."""
    return sum(1 for _port, state, _rx in _sockets(table) if state in BUSY_STATES)


def pending_handshakes(table: str, ports: set[int]) -> int:
    """Connections to ``ports`` the kernel has begun and the server not yet accepted: half-open ones,
    and those waiting in a listener's accept queue."""
    return sum(1 if state == SYN_RECV else rx
               for port, state, rx in _sockets(table) if port in ports and state in (SYN_RECV, LISTEN))


def read_table(pid: int) -> str:
    """The TCP table of the network namespace of ``pid``; empty once the process is gone."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return f.read()
    except OSError:
        return ""
