"""A pod's TCP table read as the lab reads it when the pod goes (lab.emulation.pod_sockets)."""

from lab.emulation.pod_sockets import busy_connections, pending_handshakes

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LISTEN_8080_QUEUED_2 = "   0: 00000000:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000  0  0 1 1\n"
LISTEN_9000_QUEUED_1 = "   1: 00000000:2328 00000000:0000 0A 00000000:00000001 00:00000000 00000000  0  0 2 1\n"
HALF_OPEN_8080 = "   2: 02F4000A:1F90 0A7100CB:EA60 03 00000000:00000000 02:00000064 00000000     0        0 0 0\n"
ESTABLISHED_8080 = "   3: 02F4000A:1F90 0A7100CB:EA61 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n"
TIME_WAIT_8080 = "   4: 02F4000A:1F90 0A7100CB:EA62 06 00000000:00000000 03:00000064 00000000     0        0 0 3\n"


def test_half_open_and_accept_queue_count_as_pending_on_the_asked_ports_only():
    table = HEAD + LISTEN_8080_QUEUED_2 + LISTEN_9000_QUEUED_1 + HALF_OPEN_8080 + ESTABLISHED_8080
    assert pending_handshakes(table, {8080}) == 3
    assert pending_handshakes(table, {9000}) == 1
    assert pending_handshakes(table, {8080, 9000}) == 4


def test_accepted_and_closed_connections_are_not_pending():
    idle_listener = LISTEN_8080_QUEUED_2.replace("00000000:00000002", "00000000:00000000")
    assert pending_handshakes(HEAD + idle_listener + ESTABLISHED_8080 + TIME_WAIT_8080, {8080}) == 0
    assert pending_handshakes("", {8080}) == 0


def test_busy_connections_are_those_that_may_still_deliver_data():
    assert busy_connections(HEAD + LISTEN_8080_QUEUED_2 + HALF_OPEN_8080 + ESTABLISHED_8080 + TIME_WAIT_8080) == 1
