"""The verdict's sentence on sessionAffinity: why one pod per way in, and when that did not hold."""

from __future__ import annotations

from lab.kube.model import Cluster, Node, Pod, Service, ServicePort
from lab.measure.report import Report, session_affinity


def cluster(timeout: int | None) -> Cluster:
    web = {"app": "web"}
    pods = [Pod("p", "a", labels=web), Pod("q", "b", labels=web)]
    return Cluster([Node("a", 1), Node("b", 2)], pods,
                   [Service("web", [ServicePort(80, 30080, 8080)], selector=web, session_affinity_timeout=timeout)])


def result(node: str, served: dict[str, int], via: str = "nodePort") -> dict:
    return {"service": "web", "via": via, "node": node, "ok": sum(served.values()), "servedBy": served}


def test_one_pod_per_way_in_is_said_with_the_pods_the_clients_met():
    report = Report({}, [], [], results=[result("a", {"p": 20}), result("b", {"q": 20})])
    [line] = session_affinity(report, cluster(600))
    assert line.startswith("Session affinity: web (ClientIP, 600 s) kept each client on one pod on all 2 ways in")
    assert line.endswith("the clients met 2 pods.")


def test_a_way_in_that_spread_a_client_is_said_as_not_kube_proxy():
    report = Report({}, [], [], results=[result("a", {"p": 19, "q": 1}), result("b", {"q": 20})])
    [line] = session_affinity(report, cluster(10800))
    assert "spread one client's requests over several pods on 1 of 2 ways in; kube-proxy would not" in line


def test_nothing_is_said_without_affinity_or_without_answers():
    assert session_affinity(Report({}, [], [], results=[result("a", {"p": 10, "q": 10})]), cluster(None)) == []
    assert session_affinity(Report({}, [], [], results=[result("a", {})]), cluster(600)) == []


def test_ways_in_through_a_load_balancer_or_a_proxy_are_not_judged():
    """A cloud load balancer spreads a client over nodes, each remembering apart; an Ingress proxy is
    the client kube-proxy sees (or reaches the pods directly)."""
    rows = [result("a", {"p": 20}), result("-", {"p": 9, "q": 11}, "loadBalancer"),
            result("-", {"p": 10, "q": 10}, "ingress")]
    [line] = session_affinity(Report({}, [], [], results=rows), cluster(600))
    assert "kept each client on one pod on its 1 way in" in line
