"""LoadBalancer Services behind the emulated cloud load balancer, checked with real traffic (checklist
items 11-16 of ../shared/reference/kubernetes-semantics.md section 9).

Cluster: node-a runs web-a1..a3, node-b runs web-b1, node-c none; Service web-lb (LoadBalancer, Local).
The load balancer uses the "fast" health-check profile (every 0.5 s, unhealthy after 2 failures).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.cloud.load_balancer import PROFILES
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.experiment import probe_load_balancer, set_policy
from lab.measure.stats import chi_square
from lab.polling import wait_for
from tests.integration.conftest import cluster_from_yaml, web_manifests

MANIFESTS = web_manifests({"web-a1": "node-a", "web-a2": "node-a", "web-a3": "node-a", "web-b1": "node-b"})
MANIFESTS += """
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""
PROFILE = PROFILES["fast"]
FIT_P = 0.001  # a correct split fails the fit once in a thousand runs; a wrong one (per pod vs per node) always
CONNECTIONS = 1200


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("lb"), MANIFESTS)
    with LabNetwork(cluster, lb_profile=PROFILE) as network:
        yield network


def curl(lab, url: str) -> tuple[int, dict, str]:
    out = lab.run_in(addr.LB_NAME, ["curl", "-s", "-i", "-m", "2", url], timeout=10)
    head, _, body = out.stdout.partition("\n\n")  # text mode turned CRLF into LF
    return int(head.split()[1]), json.loads(body), head


def node_url(lab, node: str, port: int, path: str) -> str:
    return f"http://{addr.node_ip(lab.cluster.node(node).index)}:{port}{path}"


def through_lb(lab, connections: int = CONNECTIONS, rate: float | None = None) -> dict:
    svc = lab.cluster.service("web-lb")
    return probe_load_balancer(lab, svc, svc.ports[0], connections, lab.client_ttl(), rate=rate)


def wait_rotation(lab, nodes: set[str]) -> None:
    """Until the health checks say ``nodes`` and the load balancer's data plane sends only there: a
    connection sent to a dropped node meanwhile stays pinned to it by the load balancer's conntrack."""
    def rotation():
        verdict = set(lab.lb_health()["services"].get("default/web-lb", {}).get("healthy", []))
        return verdict == nodes and set(lab.lb_rotation().get("default/web-lb", [])) == nodes
    wait_for(rotation, timeout=PROFILE.removal_bound_s * 3, what=f"load balancer rotation {sorted(nodes)}",
             last=lambda: (lab.lb_health()["services"], lab.lb_rotation()))


@pytest.mark.parametrize("node,status,local", [("node-a", 200, 3), ("node-b", 200, 1), ("node-c", 503, 0)])
def test_health_check_node_port_answers_like_kube_proxy_on_any_path(lab, node, status, local):
    port = lab.cluster.service("web-lb").health_check_node_port
    for path in ("/healthz", "/any/other/path"):
        code, body, head = curl(lab, node_url(lab, node, port, path))
        assert code == status
        assert body == {"service": {"namespace": "default", "name": "web-lb"}, "localEndpoints": local,
                        "serviceProxyHealthy": True}
        assert f"X-Load-Balancing-Endpoint-Weight: {local}" in head
        assert "Content-Type: application/json" in head


def test_kube_proxy_healthz_on_10256_is_healthy_on_every_node(lab):
    for node in ("node-a", "node-b", "node-c"):
        for path in ("/healthz", "/livez"):
            code, body, _ = curl(lab, node_url(lab, node, 10256, path))
            assert code == 200 and body["healthy"] is True


def test_pod_less_node_leaves_rotation_within_the_profile_bound(lab):
    wait_rotation(lab, {"node-a", "node-b"})
    removal = [e for e in lab.lb_health()["events"] if e["node"] == "node-c" and not e["healthy"]]
    assert removal, "node-c never left the rotation"
    assert removal[0]["t"] - lab.checker_started_at <= PROFILE.removal_bound_s


def test_after_removal_the_pod_less_node_gets_no_new_connections(lab):
    wait_rotation(lab, {"node-a", "node-b"})
    result = through_lb(lab, 200)
    assert result["failed"] == 0, result["errors"]
    assert set(result["nodesServed"]) == {"node-a", "node-b"}


def test_local_behind_the_lb_keeps_the_client_ip(lab):
    result = through_lb(lab, 100)
    assert result["sourcesSeen"] == {addr.CLIENT_IP: 100}


def test_local_splits_per_node_so_the_lone_pod_gets_three_times_more(lab):
    wait_rotation(lab, {"node-a", "node-b"})
    result = through_lb(lab)
    pods = ["web-a1", "web-a2", "web-a3", "web-b1"]
    counts = [result["servedBy"].get(p, 0) for p in pods]
    _, p_expected = chi_square(counts, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert p_expected > FIT_P, f"{counts} do not fit 1/6, 1/6, 1/6, 1/2 (p={p_expected:.2g})"
    _, p_even = chi_square(counts, [1 / 4] * 4)
    assert p_even < FIT_P, f"{counts} look even: the load balancer is not splitting per node"


def test_cluster_behind_the_lb_is_even_over_pods_but_masquerades(lab):
    service = lab.cluster.service("web-lb")
    set_policy(lab, service, "Cluster")
    try:
        wait_rotation(lab, {"node-a", "node-b", "node-c"})  # now checked on :10256, which every node passes
        result = through_lb(lab)
        counts = [result["servedBy"].get(p, 0) for p in ("web-a1", "web-a2", "web-a3", "web-b1")]
        _, p_even = chi_square(counts, [1 / 4] * 4)
        assert p_even > FIT_P, f"{counts} are not even under Cluster (p={p_even:.2g})"
        assert addr.CLIENT_IP not in result["sourcesSeen"]
    finally:
        set_policy(lab, service, "Local")
        wait_rotation(lab, {"node-a", "node-b"})


def serving_pod(lab) -> str | None:
    """The pod with an established connection from the client (Local keeps the client's address)."""
    for pod in lab.cluster.pods:
        out = lab.run_in(pod.name, ["ss", "-Htn", "state", "established", "dst", addr.CLIENT_IP], timeout=5)
        if out.stdout.strip():
            return pod.name
    return None


def test_connections_to_surviving_pods_survive_a_pod_deletion(lab):
    wait_rotation(lab, {"node-a", "node-b"})
    vip = lab.load_balancer_ip("web-lb")
    download = lab.host("client").popen(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                                         "--limit-rate", "1M", "-m", "30", f"http://{vip}/bulk?bytes=3000000"],
                                        stdout=subprocess.PIPE, text=True)
    server = wait_for(lambda: serving_pod(lab), timeout=5, what="the download's pod")
    victim = "web-b1" if server != "web-b1" else "web-a1"
    lab.delete_pod(victim)
    out, _ = download.communicate(timeout=60)
    assert download.returncode == 0 and int(out) == 3_000_000, f"download to {server} broke"
