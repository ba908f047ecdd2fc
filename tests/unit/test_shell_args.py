"""The lab shell's verbs check every argument before touching the cluster: one line, nothing half-made."""

from __future__ import annotations

import pytest

from lab.emulation.pods import check_pod_ports
from lab.errors import LabError
from lab.shell import parse_add_pod, parse_words


def test_add_pod_reads_name_node_labels_and_ports():
    assert parse_add_pod("web-9 node-b app=web tier=front --port 8081 --port 9000") == (
        "web-9", "node-b", {"labels": {"app": "web", "tier": "front"}, "ports": (8081, 9000)})
    assert parse_add_pod("web-9 node-b")[2]["ports"] == (8080,)


@pytest.mark.parametrize("line, says", [
    ("web-9 node-b --port 70000", "not a port number"),
    ("web-9 node-b --port 0", "not a port number"),
    ("web-9 node-b --port -1", "not a port number"),
    ("web-9 node-b --port " + "9" * 5000, "not a port number"),
    ("web-9 node-b --port", "needs a number"),
    ("web-9", "needs a pod name and a node"),
    ("web-9 node-b notalabel", "KEY=VALUE"),
    ("web-9 node-b --replicas 3", "unknown option"),
    ("web-9 'node-b", "cannot read"),
])
def test_bad_add_pod_arguments_are_one_line(line, says):
    with pytest.raises(LabError) as err:
        parse_add_pod(line)
    assert says in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 200


def test_move_pod_needs_a_node():
    with pytest.raises(LabError, match="expected 2 arguments, got 1: usage: move-pod NAME NODE"):
        parse_words("web-1", "move-pod NAME NODE", 2)
    assert parse_words("web-1 node-c", "move-pod NAME NODE", 2) == ["web-1", "node-c"]


@pytest.mark.parametrize("ports", [(0,), (70000,), (True,), ("80",), (8080, -3)])
def test_the_network_refuses_bad_ports_itself(ports):
    with pytest.raises(LabError, match="is not a port number"):
        check_pod_ports(ports)
