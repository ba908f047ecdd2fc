"""The east-west bill in the verdict, and ``--via``."""

from __future__ import annotations

import pytest

from lab.cli import parse_via
from lab.errors import LabError
from lab.kube.model import Cluster, Node, Pod
from lab.measure.report import Report, east_west


def result(node: str, served: dict[str, int], nbytes: int) -> dict:
    return {"via": "clusterIP", "node": node, "ok": sum(served.values()), "servedBy": served,
            "interNodeBytes": nbytes}


def test_east_west_counts_requests_served_on_another_node_and_their_bytes():
    cluster = Cluster([Node("a", 1), Node("b", 2)], [Pod("p", "a"), Pod("q", "b")], [])
    report = Report({}, [], [], results=[result("a", {"p": 6, "q": 4}, 4000), result("b", {"p": 5, "q": 5}, 5000)])
    [line] = east_west(report, cluster)
    assert "of 20 answered in-cluster requests" in line and "9 (45%) were served on another node" in line
    assert "9,000 bytes between nodes (450 per request)" in line
    assert east_west(Report({}, [], [], results=[]), cluster) == []


def test_via_takes_a_list_and_rejects_unknown_ways():
    assert parse_via(None) == ("nodePort", "clusterIP", "loadBalancer", "ingress", "gateway")
    assert parse_via("clusterIP, nodePort") == ("clusterIP", "nodePort")
    with pytest.raises(LabError, match="hostPort is not a way in"):
        parse_via("hostPort")
