"""The ingress scenario's pure parts: both legs' node hops per request, and bytes between nodes per leg."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.scenarios.ingress import leg_bytes, legs

REPO = Path(__file__).resolve().parents[2]
CLUSTER = load_manifests([REPO / "examples/ingress"])
PROXY = {p.node: p for p in CLUSTER.pods if p.namespace == "ingress-nginx"}
BLOG = {p.node: p for p in CLUSTER.pods if p.owner == "blog"}


def _record(proxy_node: str, app_node: str) -> dict:
    app = BLOG[app_node]
    return {"status": 200, "response": {"pod": app.name, "node": app.node,
                                         "source": {"ip": PROXY[proxy_node].ip, "port": 1}}}


def test_legs_count_where_each_request_crossed_nodes():
    records = [_record("node-a", "node-a"), _record("node-a", "node-b"), _record("node-b", "node-b"),
               {"status": None, "response": None}]
    hops = legs(records, CLUSTER, "node-a")
    assert hops["clientToIngress"] == {"same node": 2, "other node": 1}
    assert hops["ingressToApp"] == {"same node": 2, "other node": 1}
    assert hops["pairs"] == Counter({("node-a", BLOG["node-a"].name): 1, ("node-a", BLOG["node-b"].name): 1,
                                     ("node-b", BLOG["node-b"].name): 1})


def test_leg_bytes_split_what_crossed_between_nodes():
    # 1000 bytes from the client into node-a; node-a's ingress pod sends 600 to node-b's blog (crossing),
    # and node-b's blog gets 300 more from node-b's own ingress pod: links as Open vSwitch would count them.
    before = {n: 0 for n in ("node-a", "node-b", "node-c", addr.CLIENT_NAME, addr.LB_NAME, BLOG["node-b"].name)}
    after = dict(before, **{addr.CLIENT_NAME: 1000, "node-a": 1000 + 600, "node-b": 600, BLOG["node-b"].name: 900})
    pairs = Counter({("node-a", BLOG["node-b"].name): 2, ("node-b", BLOG["node-b"].name): 1})
    split = leg_bytes(before, after, pairs, CLUSTER, proxying_lb=False)
    assert split == {"clientToIngress": 0, "ingressToApp": 600, "total": 600}
