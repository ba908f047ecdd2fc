"""The remedies scenario, run small on a real network: the table's qualitative truths, from real packets.

One run of ``python -m lab run remedies`` with few requests: every row is measured.
"""

from __future__ import annotations

from argparse import Namespace

import pytest

from lab.measure.remedies import REMEDIES
from lab.scenarios import remedies
from tests.integration.conftest import lab_leftovers

REQUESTS = 45  # from the client; as many again from the three zones' client pods


@pytest.fixture(scope="module")
def outcome():
    args = Namespace(requests=REQUESTS, held=20, priority="cost", cross_zone_price=0.01, lb_delivery="vip")
    result = remedies.run(args, progress=lambda message: None)
    assert lab_leftovers() == []
    return result


@pytest.fixture(scope="module")
def rows(outcome) -> dict[str, dict]:
    return {r["remedy"]: r for r in outcome.report["remedies"]}


def measured(rows: dict[str, dict], remedy: str) -> dict:
    r = rows[remedy]
    assert r["available"], r["note"]
    assert r["requests"]["answered"] == r["requests"]["sent"], f"{remedy}: requests failed: {r['external']['errors']}"
    return r


def test_every_remedy_has_a_row_in_order(outcome):
    assert [r["remedy"] for r in outcome.report["remedies"]] == list(REMEDIES)
    assert outcome.report["remedies"] and outcome.table.splitlines()[0].startswith("remedy")


def test_cluster_loses_the_client_ip_and_forwards(rows):
    r = measured(rows, "Cluster")
    assert r["clientIpKeptPct"] == 0
    assert r["external"]["extraHops"] > 0 and r["external"]["interNodeBytes"] > 0


def test_local_keeps_the_client_ip_and_never_crosses_nodes_from_outside(rows):
    r = measured(rows, "Local")
    assert r["clientIpKeptPct"] == 100
    assert r["external"]["extraHops"] == 0  # every SYN reached its pod with one node's TTL decrement
    # Nothing of theirs crossed between nodes: at most a health check in flight at a counter reading,
    # where one forwarded request under Cluster costs some 800 bytes.
    assert r["external"]["interNodeBytes"] < 400 < rows["Cluster"]["external"]["interNodeBytesPerRequest"]
    # The load balancer splits per node: node-a1's two pods share one node's part.
    assert r["external"]["servedBy"], r


def test_spread_rollout_puts_one_pod_per_node_and_keeps_local(rows):
    r = measured(rows, "Local + topology spread")
    assert r["clientIpKeptPct"] == 100
    assert r["balance"]["pods"] == 5
    assert len(r["external"]["servedBy"]) == 5  # every new replica answered from outside


def test_ingress_with_local_carries_the_client_in_x_forwarded_for(rows):
    r = measured(rows, "Ingress with Local")
    assert r["clientIpKeptPct"] == 100


def test_dsr_keeps_the_client_ip_under_cluster(rows):
    r = measured(rows, "DSR")
    assert r["clientIpKeptPct"] == 100


def test_prefer_close_keeps_in_cluster_traffic_in_its_zone(rows):
    r = measured(rows, "PreferClose")
    for part in r["inCluster"]:
        assert part["crossZoneBytes"] == 0, part
    cluster = measured(rows, "Cluster")
    assert sum(p["crossZoneBytes"] for p in cluster["inCluster"]) > 0


def test_maglev_with_dsr_survives_a_reroute_where_cluster_breaks(rows):
    r = measured(rows, "Maglev + DSR")
    assert r["reroute"] is not None, r["note"]
    assert r["reroute"]["moved"] > 0 and r["brokenOnReroute"] == 0
    assert measured(rows, "Cluster")["brokenOnReroute"] > 0


def test_the_verdict_ranks_for_the_priority(outcome):
    assert outcome.verdict[0].startswith("Priority cost: 1. ")
    assert outcome.report["rankings"]["cost"][0] in outcome.verdict[0]
