"""The routes table: one row per (route probe, entry), naming the request as it was sent, headers too (two
probes of one path that differ only by a header would otherwise read as the same request)."""

from __future__ import annotations

from lab.kube.model import Cluster, Node, Pod
from lab.measure.routes import Entry, RouteProbe, render_routes, route_result


def _records(pod: str, n: int) -> list[dict]:
    return [{"status": 200, "latencyMs": 2.0, "response": {"pod": pod, "headers": {}, "source": {"ip": "10.244.3.9"}}}
            for _ in range(n)]


def test_each_row_names_the_request_with_its_headers():
    cluster = Cluster([Node("node-c", 3)], [Pod("coffee-v2-x", "node-c", ip="10.244.3.5", owner="coffee-v2")])
    entry = Entry("node-c", "172.18.0.13", {"http": 30080})
    plain = RouteProbe("gateway", "cafe.example.com", "/coffee", backend="default/coffee-v1-svc:80")
    header = RouteProbe("gateway", "cafe.example.com", "/coffee", headers=(("version", "v2"),),
                        backend="default/coffee-v2-svc:80")
    rows = [route_result(_records("coffee-v2-x", 3), probe, entry, "172.18.0.13:30080", {}) for probe in
            (plain, header)]
    assert rows[1]["headers"] == {"version": "v2"} and rows[1]["servedBy"] == {"coffee-v2-x": 3}
    table = render_routes(rows, cluster).splitlines()
    assert "http://cafe.example.com/coffee " in table[2] and "version" not in table[2]
    assert "http://cafe.example.com/coffee version: v2" in table[3] and "coffee-v2:3" in table[3]
