"""The remedies table's pure parts: rows from per-request records, balance, cost, ranking, JSON shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure import remedies as rm
from lab.measure.remedies import Part, RowInput

CLIENT_TTL, POD_TTL = 64, 64
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "remedies"


def record(pod: str, source: str, syn_ttl: int, latency: float = 2.0, xff: str | None = None) -> dict:
    headers = {"x-forwarded-for": xff} if xff else {}
    return {"ok": True, "error": None, "latencyMs": latency,
            "response": {"pod": pod, "source": {"ip": source, "port": 40000}, "synTTL": syn_ttl,
                         "headers": headers}}


FAILED = {"ok": False, "error": "timeout", "latencyMs": None, "response": None}


def external(records, inter=0, zone=0, l7=False) -> Part:
    ttl = POD_TTL if l7 else CLIENT_TTL
    return Part(records=records, client_ttl=ttl, router_hops=0 if l7 else 1, inter_node_bytes=inter,
                cross_zone_bytes=zone, l7=l7)


def in_cluster(records, inter=0, zone=0, client="loadgen-zone-a") -> Part:
    return Part(records=records, client_ttl=POD_TTL, router_hops=0, inter_node_bytes=inter, cross_zone_bytes=zone,
                client=client)


def flat_cost(nbytes: float, price_per_gb: float) -> float:
    return nbytes / 1e9 * price_per_gb * 2  # each direction


def test_cluster_like_records_lose_the_client_and_count_the_second_hop():
    node_ip = addr.node_ip(1)
    # Entered node-a and forwarded (TTL 64 - router 1 - 2 nodes = 61), or served on node-a (62).
    ext = [record("web-1", node_ip, 61), record("web-2", node_ip, 62), record("web-1", node_ip, 61), FAILED]
    r = rm.row(RowInput("Cluster", external(ext, inter=3000, zone=1000), pods=["web-1", "web-2"]), 0.01, flat_cost)
    assert r["clientIpKeptPct"] == 0
    assert r["extraHops"] == pytest.approx(2 / 3, abs=1e-3)
    assert r["interNodeBytesPerRequest"] == 1000.0  # 3000 bytes over 3 answered requests
    assert r["crossZoneBytesPerRequest"] == pytest.approx(333.3)
    assert r["requests"] == {"sent": 4, "answered": 3}
    assert r["external"]["errors"] == {"timeout": 1}


def test_local_like_records_keep_the_client_and_in_cluster_ones_are_not_counted_for_it():
    ext = [record("web-1", addr.CLIENT_IP, 62)] * 4
    inside = [record("web-2", "10.244.3.5", 63), record("web-1", "10.244.3.5", 62)]  # same node: 1 hop; other: 2
    r = rm.row(RowInput("Local", external(ext), [in_cluster(inside)], pods=["web-1", "web-2"]), 0.01, flat_cost)
    assert r["clientIpKeptPct"] == 100
    assert r["extraHops"] == pytest.approx(1 / 6, abs=1e-3)  # 0,0,0,0 outside, 0 and 1 inside
    assert r["inCluster"][0]["client"] == "loadgen-zone-a"
    assert r["inCluster"][0]["extraHops"] == 0.5


def test_behind_an_l7_proxy_the_client_is_the_first_forwarded_for_address():
    proxy_ip = "10.244.2.7"
    ext = [record("web-1", proxy_ip, 63, xff=f"{addr.CLIENT_IP}, 10.0.0.1"),
           record("web-2", proxy_ip, 62, xff=addr.node_ip(2))]
    r = rm.row(RowInput("Ingress with Local", external(ext, l7=True), pods=["web-1", "web-2"]), 0.01, flat_cost)
    assert r["clientIpKeptPct"] == 50
    assert r["extraHops"] == 0.5  # the second leg crossed nodes once in two


def test_balance_counts_pods_that_got_nothing():
    even = rm.balance({"a": 100, "b": 100, "c": 100}, ["a", "b", "c"])
    assert even["maxShare"] == even["minShare"] == pytest.approx(1 / 3, abs=1e-4)
    assert even["pValue"] == 1.0
    skewed = rm.balance({"a": 200, "b": 100}, ["a", "b", "c"])
    assert skewed["minShare"] == 0 and skewed["pods"] == 3
    assert skewed["pValue"] < 1e-6
    assert rm.balance({}, ["a", "b"])["pValue"] is None


def test_cost_per_million_uses_the_price_and_is_unknown_without_zone_counters():
    assert rm.cost_per_million(500.0, 0.01, flat_cost) == pytest.approx(500e6 / 1e9 * 0.02, rel=1e-3)
    assert rm.cost_per_million(None, 0.01, flat_cost) is None
    assert rm.cost_per_million(500.0, 0.01, None) is None
    part = external([record("web-1", addr.CLIENT_IP, 62)], zone=None)
    assert rm.row(RowInput("x", part, pods=["web-1"]), 0.01, flat_cost)["crossZoneCostPerMillion"] is None


def test_cost_per_million_with_the_labs_own_price_function():
    from lab.measure import zones
    assert rm.cost_per_million(1000.0, 0.01, zones.cross_zone_cost) == pytest.approx(
        zones.cross_zone_cost(1000.0 * rm.MILLION, 0.01), rel=1e-3)


def _row(name, kept, zone, inter, shares, broken, held=60, p=0.5):
    return {"remedy": name, "available": True, "note": None, "extraHops": 0.5, "clientIpKeptPct": kept,
            "interNodeBytesPerRequest": inter, "crossZoneBytesPerRequest": zone,
            "crossZoneCostPerMillion": None if zone is None else zone * 2e-5,
            "balance": {"maxShare": shares[0], "minShare": shares[1], "pValue": p},
            "brokenOnReroute": broken,
            "reroute": None if broken is None else {"held": held, "moved": 20, "broken": broken},
            "latencyMs": {"p50": 1.0, "p95": 2.0}}


ROWS = [
    _row("Cluster", 0, 600, 900, (0.25, 0.15), 60),
    _row("Local", 100, 300, 450, (0.3, 0.1), 40),
    _row("Maglev + DSR", 100, 400, 500, (0.22, 0.18), 0),
    _row("PreferClose", 0, 0, 300, (0.4, 0.1), 60),
]


@pytest.mark.parametrize("priority,first", [("client-ip", "Maglev + DSR"), ("cost", "PreferClose"),
                                            ("balance", "Maglev + DSR"), ("resilience", "Maglev + DSR")])
def test_rank_puts_the_best_row_for_the_priority_first(priority, first):
    ranked = rm.rank(ROWS, priority)
    assert ranked[0]["remedy"] == first


def test_rank_orders_by_the_priority_then_the_tie_breaks():
    assert [r["remedy"] for r in rm.rank(ROWS, "cost")][:4] == ["PreferClose", "Local", "Maglev + DSR", "Cluster"]
    # client-ip: Local and Maglev + DSR tie at 100%; fewer broken connections first.
    assert [r["remedy"] for r in rm.rank(ROWS, "client-ip")][:2] == ["Maglev + DSR", "Local"]


def test_cost_falls_back_to_bytes_between_nodes_without_zone_counters():
    rows = [_row("a", 0, None, 900, (0.2, 0.2), 0), _row("b", 0, None, 100, (0.2, 0.2), 0)]
    assert [r["remedy"] for r in rm.rank(rows, "cost")] == ["b", "a"]


def test_unknown_priority_is_refused():
    with pytest.raises(ValueError, match="unknown priority"):
        rm.rank(ROWS, "speed")


def test_imbalance_is_infinite_when_a_pod_got_nothing():
    assert rm.imbalance(_row("x", 0, 0, 0, (0.5, 0.0), 0)) == math.inf
    assert rm.imbalance(_row("x", 0, 0, 0, (None, None), 0)) is None  # no pod answered


def test_verdict_names_the_ranking_with_figures():
    lines = rm.verdict(ROWS, "cost")
    assert lines[0].startswith("Priority cost: 1. PreferClose (0 bytes across zones per request")
    assert "PreferClose ranks first" in lines[1]


def test_json_shape_is_the_contract():
    measured = rm.row(RowInput("Local", external([record("web-1", addr.CLIENT_IP, 62)]),
                               [in_cluster([record("web-1", "10.244.1.9", 63)])], pods=["web-1"],
                               reroute={"held": 10, "moved": 4, "broken": 0}), 0.01, flat_cost)
    json.dumps(measured)
    assert {"remedy", "extraHops", "clientIpKeptPct", "interNodeBytesPerRequest", "crossZoneBytesPerRequest",
            "crossZoneCostPerMillion", "balance", "brokenOnReroute", "latencyMs"} <= set(measured)
    assert set(measured["balance"]) >= {"maxShare", "minShare", "pValue"}
    assert set(measured["latencyMs"]) == {"p50", "p95"}


def test_table_says_a_rows_note_under_it():
    text = rm.render([*ROWS[:3], {**ROWS[3], "note": "no reroute measured"}])
    assert text.splitlines()[0].startswith("remedy")
    assert text.splitlines()[-1].strip() == "PreferClose: no reroute measured"
    assert rm.table_rows([ROWS[2]])[0][7] == "0/20 of 60"


# --- the scenario's example and its rollout ---------------------------------------------

def test_the_example_places_the_app_unevenly_and_the_variant_spreads_it():
    from lab.scenarios.remedies import BASE_FILES, SPREAD_VARIANT

    files = [str(EXAMPLE / f) for f in BASE_FILES]
    base = load_manifests(files)
    spread = load_manifests([str(EXAMPLE / SPREAD_VARIANT) if f.endswith("app.yaml") else f for f in files])

    def web_per_node(cluster):
        return {n.name: sum(1 for p in cluster.pods_on(n.name) if p.labels.get("app") == "web") for n in cluster.nodes}
    assert web_per_node(base) == {"node-a1": 2, "node-a2": 1, "node-b1": 1, "node-b2": 0, "node-c1": 1, "node-c2": 0}
    assert web_per_node(spread) == {"node-a1": 1, "node-a2": 1, "node-b1": 1, "node-b2": 1, "node-c1": 1,
                                    "node-c2": 0}
    zones = {p.name: base.node(p.node).labels["topology.kubernetes.io/zone"] for p in base.pods
             if p.labels.get("app") == "loadgen"}
    assert sorted(zones.values()) == ["zone-a", "zone-b", "zone-c"]
    assert not base.warnings and not spread.warnings


def test_rotation_follows_the_policy():
    from lab.cloud.load_balancer import expected_rotation as rotation_nodes

    cluster = load_manifests([str(EXAMPLE)])
    web = cluster.service("web")
    assert rotation_nodes(cluster, web) == {n.name for n in cluster.nodes}
    web.external_traffic_policy = "Local"
    assert rotation_nodes(cluster, web) == {"node-a1", "node-a2", "node-b1", "node-c1"}
