"""kube-proxy's NodePort behaviour, checked with real TCP connections (checklist items of
../shared/reference/kubernetes-semantics.md section 9: 3-8 and 17, plus 9 and "no endpoints").

Cluster::

    node-a: web x2      node-b: web x1      node-c: no web pod (only a toolbox pod, a client inside)
    Service web-cluster  NodePort 30080  Cluster
    Service web-local    NodePort 30081  Local
    Service nothing      NodePort 30082  selects no pod
"""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.experiment import probe_entry
from tests.integration.conftest import cluster_from_yaml

MANIFESTS = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Node
metadata: {name: node-c}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a1, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a2, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b1, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: toolbox, labels: {app: toolbox}}
spec: {nodeName: node-c, containers: [{name: sh, image: busybox}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-cluster}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  type: NodePort
  selector: {app: none}
  ports: [{port: 80, targetPort: 8080, nodePort: 30082}]
"""

# Chi-square critical value, 2 degrees of freedom (3 endpoints), p = 0.001: a fair choice fails this
# test once in a thousand runs; a biased one (e.g. per-node instead of per-pod) fails it every time.
CHI2_3_ENDPOINTS_P001 = 13.82


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("nodeport"), MANIFESTS)
    with LabNetwork(cluster) as network:
        network.client_ttl_value = network.client_ttl()
        yield network


def entry(lab, service: str, node: str, requests: int, timeout: float = 1.0) -> dict:
    svc = lab.cluster.service(service)
    return probe_entry(lab, svc, svc.ports[0], node, requests, lab.client_ttl_value, timeout=timeout)


def pods_on(lab, node: str) -> set[str]:
    return {p.name for p in lab.cluster.pods_on(node)}


def test_cluster_spreads_new_connections_uniformly_over_all_endpoints(lab):
    result = entry(lab, "web-cluster", "node-c", 900)
    assert result["ok"] == 900, result["errors"]
    counts = [result["servedBy"].get(p, 0) for p in ("web-a1", "web-a2", "web-b1")]
    expected = 900 / 3
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < CHI2_3_ENDPOINTS_P001, f"per-pod counts {counts} are not uniform (chi2={chi2:.1f})"


def test_cluster_masquerades_even_when_the_chosen_pod_is_local(lab):
    result = entry(lab, "web-cluster", "node-a", 120)
    node_a = lab.cluster.node("node-a").index
    local = sum(n for p, n in result["servedBy"].items() if p in pods_on(lab, "node-a"))
    assert local > 0, "no request landed on node-a's own pods"
    assert addr.CLIENT_IP not in result["sourcesSeen"]
    assert result["sourcesSeen"].get(addr.pod_gateway_ip(node_a)) == local, result["sourcesSeen"]


def test_cluster_remote_pod_sees_the_entry_node_so_replies_return_through_it(lab):
    result = entry(lab, "web-cluster", "node-c", 60)
    assert result["ok"] == 60
    assert result["sourcesSeen"] == {addr.node_ip(lab.cluster.node("node-c").index): 60}


def test_ttl_drops_once_per_forwarding_node(lab):
    via_c = entry(lab, "web-cluster", "node-c", 60)
    assert via_c["nodeHops"] == {"2": 60}
    local = entry(lab, "web-local", "node-a", 60)
    assert local["nodeHops"] == {"1": 60}


def test_cluster_moves_bytes_between_nodes_only_for_remote_pods(lab):
    via_c = entry(lab, "web-cluster", "node-c", 60)
    assert via_c["interNodeBytes"] > 60 * 500, via_c  # SYN..FIN of a small HTTP exchange, both ways


def test_local_keeps_the_client_ip_and_uses_only_local_pods(lab):
    result = entry(lab, "web-local", "node-a", 200)
    assert result["ok"] == 200
    assert result["sourcesSeen"] == {addr.CLIENT_IP: 200}
    assert set(result["servedBy"]) == pods_on(lab, "node-a")
    # k = 2 local pods, 1/2 each: 200 requests, a fair coin stays within 60..140 with p > 0.9999.
    assert all(60 <= n <= 140 for n in result["servedBy"].values()), result["servedBy"]


def test_local_moves_no_bytes_between_nodes(lab):
    result = entry(lab, "web-local", "node-b", 100)
    assert result["ok"] == 100
    assert result["interNodeBytes"] == 0


def test_local_drops_silently_on_a_node_without_a_pod(lab):
    result = entry(lab, "web-local", "node-c", 20, timeout=0.5)
    assert result["ok"] == 0
    assert result["errors"] == {"timeout": 20}, "a drop must not answer (no RST, no ICMP)"


def test_service_without_endpoints_rejects_at_once(lab):
    result = entry(lab, "nothing", "node-b", 20, timeout=2.0)
    assert result["errors"] == {"refused": 20}
    # Rejected, not timed out: the whole entry finishes far below one 2 s timeout per wave.
    assert result["durationS"] < 2.0, result


def test_local_pod_sourced_traffic_short_circuits_with_pod_ip(lab):
    """Checklist 9: a pod on a node without endpoints reaching its own node's Local NodePort is served
    (by any endpoint, across nodes) and keeps its pod IP: kube-proxy short-circuits pod traffic."""
    node_c = addr.node_ip(lab.cluster.node("node-c").index)
    out = lab.run_in("toolbox", ["curl", "-s", "-m", "3", f"http://{node_c}:30081/"], timeout=10)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["source"]["ip"] == lab.cluster.pod("toolbox").ip
    assert answer["pod"] in {"web-a1", "web-a2", "web-b1"}


def served_from(lab, pod: str, url: str, requests: int) -> dict[str, set[str]]:
    """Source addresses each serving pod saw for ``requests`` new connections from ``pod`` to ``url``."""
    loop = f'for i in $(seq {requests}); do curl -s -m 3 "{url}"; echo; done'
    out = lab.run_in(pod, ["sh", "-c", loop], timeout=10 + 4 * requests)
    seen: dict[str, set[str]] = {}
    for line in filter(None, out.stdout.splitlines()):
        answer = json.loads(line)
        seen.setdefault(answer["pod"], set()).add(answer["source"]["ip"])
    return seen


@pytest.mark.parametrize("entry_node, masquerade_as", [("node-b", "gateway"), ("node-a", "node")])
def test_hairpin_through_a_local_service_is_masqueraded_only_when_the_pod_reaches_itself(
        lab, entry_node, masquerade_as):
    """KUBE-SEP's ``-s podIP -j KUBE-MARK-MASQ``: pod-sourced traffic to a Local nodePort keeps its
    address, except when the endpoint chosen is the pod itself: without masquerade its replies would go
    straight back to itself and the connection would never open. Through its own node the source
    becomes the pod gateway; through another node, that node's IP (MASQUERADE's egress address)."""
    entry = lab.cluster.node(entry_node)
    seen = served_from(lab, "web-b1", f"http://{addr.node_ip(entry.index)}:30081/", 30)
    assert len(seen) >= 2 and "web-b1" in seen, seen  # (2/3)^30: missed once in 190,000 runs
    expected = addr.pod_gateway_ip(entry.index) if masquerade_as == "gateway" else addr.node_ip(entry.index)
    assert seen["web-b1"] == {expected}
    pod_ip = lab.cluster.pod("web-b1").ip
    assert all(sources == {pod_ip} for pod, sources in seen.items() if pod != "web-b1"), seen


def test_pod_to_pod_across_nodes_is_routed_through_both_nodes(lab):
    target = lab.cluster.pod("web-a1").ip
    out = lab.run_in("web-b1", ["curl", "-s", "-m", "3", f"http://{target}:8080/"], timeout=10)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["source"]["ip"] == lab.cluster.pod("web-b1").ip
    assert answer["synTTL"] == lab.client_ttl_value - 2  # node-b and node-a each forward once


def test_no_switch_ever_floods(lab):
    """ARP is answered by flows and every frame has one destination: nothing broadcasts over the underlay."""
    for bridge in [addr.underlay_bridge()] + [addr.node_bridge(n.index) for n in lab.cluster.nodes]:
        flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge], capture_output=True,
                               text=True, check=True).stdout
        assert "FLOOD" not in flows and "ALL" not in flows and "NORMAL" not in flows, flows


def test_the_client_picks_source_ports_above_the_held_ones_from_a_load_generators_range(lab):
    """Wider than Linux's default, so a long run reuses 5-tuples later (addr.CLIENT_EPHEMERAL_PORTS:
    Open vSwitch 3.1's conntrack loses SYNs on reused ones); the held connections' ports stay below it."""
    out = lab.run_in(addr.CLIENT_NAME, ["cat", "/proc/sys/net/ipv4/ip_local_port_range"], timeout=5).stdout
    low, high = map(int, out.split())
    assert (low, high) == addr.CLIENT_EPHEMERAL_PORTS and addr.CLIENT_HELD_PORTS[1] < low
    pod = lab.run_in(lab.cluster.pods[0].name, ["cat", "/proc/sys/net/ipv4/ip_local_port_range"], timeout=5).stdout
    assert pod.split() == ["32768", "60999"]  # pods and nodes keep Linux's default: only the load generator is tuned
    local = [int(r["local"].rsplit(":", 1)[1]) for r in lab.probe([f"{addr.node_ip(1)}:30080"], 20)["records"]]
    assert all(low <= port <= high for port in local), local
