"""kube-proxy inside the cluster, with real TCP connections from pods and nodes (checklist items 1, 9,
10, 18, 19, 20 of ../shared/reference/kubernetes-semantics.md section 9).

Cluster::

    node-a: web-a1, tool-a     node-b: web-b1     node-c: toolbox (no web pod)
    Service web        ClusterIP 10.96.0.80:80             (all endpoints)
    Service web-itl    ClusterIP, internalTrafficPolicy Local
    Service web-sticky ClusterIP, sessionAffinity ClientIP, timeoutSeconds 2
    Service web-np     NodePort 30090, Cluster
    Service web-lb     LoadBalancer 30091, Local                (no source ranges)
    Service web-fw     LoadBalancer 30092, Cluster, loadBalancerSourceRanges 192.0.2.0/24
    Service dns        NodePort 30053/UDP -> dns-a (node-a), dns-b (node-b) on UDP 5353
    Service dns-sticky ClusterIP, UDP, sessionAffinity ClientIP, timeoutSeconds 2 (the same pods)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from controllers.flows import COOKIE_AFFINITY, T_AFFINITY, U_LB
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.report import entry_result
from tests.integration.conftest import cluster_from_yaml

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: nginx, ports: [{{containerPort: 8080}}]}}]}}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: web}}
{spec}
"""
MANIFESTS = "---".join(
    [f"\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{n}}}\n" for n in "abc"]
    + [POD.format(name=n, app=a, node=node) for n, a, node in
       [("web-a1", "web", "node-a"), ("web-b1", "web", "node-b"), ("tool-a", "tool", "node-a"),
        ("toolbox", "tool", "node-c"), ("dns-a", "dns", "node-a"), ("dns-b", "dns", "node-b")]]
    + [SERVICE.format(name=name, spec=spec) for name, spec in [
        ("web", "  clusterIP: 10.96.0.80\n  ports: [{port: 80, targetPort: 8080}]"),
        ("web-itl", "  internalTrafficPolicy: Local\n  ports: [{port: 80, targetPort: 8080}]"),
        ("web-sticky", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}\n"
                       "  ports: [{port: 80, targetPort: 8080}]"),
        ("web-np", "  type: NodePort\n  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]"),
        ("web-lb", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
                   "  ports: [{port: 80, targetPort: 8080, nodePort: 30091}]"),
        ("web-fw", "  type: LoadBalancer\n  loadBalancerSourceRanges: [192.0.2.0/24]\n"
                   "  ports: [{port: 80, targetPort: 8080, nodePort: 30092}]"),
    ]]
    + ["""
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  type: NodePort
  selector: {app: dns}
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}]
""", """
apiVersion: v1
kind: Service
metadata: {name: dns-sticky}
spec:
  selector: {app: dns}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]
"""])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("in-cluster"), MANIFESTS)
    with LabNetwork(cluster) as network:
        yield network


def vip(lab, service: str) -> str:
    return lab.cluster_ip(service)


def probe(lab, source: str, target: str, requests: int = 40, timeout: float = 1.0, concurrency: int = 4) -> dict:
    out = lab.probe([target], requests, concurrency=concurrency, timeout=timeout, host=source)
    return entry_result(out["records"], service="", namespace="default", policy="", node_port=0, node=None,
                        node_ip=None, inter_node_bytes=0, client_ttl=64, duration_s=out["durationS"])


def node_ip(lab, node: str) -> str:
    return addr.node_ip(lab.cluster.node(node).index)


def test_cluster_ip_from_a_pod_reaches_every_endpoint_keeping_the_pod_ip(lab):
    result = probe(lab, "toolbox", f"{vip(lab, 'web')}:80", 60)
    assert result["ok"] == 60, result["errors"]
    assert set(result["servedBy"]) == {"web-a1", "web-b1"}
    assert result["sourcesSeen"] == {lab.cluster.pod("toolbox").ip: 60}


def test_cluster_ip_from_a_node_is_masqueraded(lab):
    """KUBE-SVC's ``! -s clusterCIDR -j KUBE-MARK-MASQ``: the node's own source is not a pod's, so the
    pod sees the node-side address (the pod gateway towards its own pod, the node IP towards others)."""
    result = probe(lab, "node-a", f"{vip(lab, 'web')}:80", 60)
    assert result["ok"] == 60, result["errors"]
    assert set(result["servedBy"]) == {"web-a1", "web-b1"}
    assert set(result["sourcesSeen"]) == {addr.pod_gateway_ip(1), node_ip(lab, "node-a")}
    assert result["sourcesSeen"][addr.pod_gateway_ip(1)] == result["servedBy"]["web-a1"]


def test_internal_traffic_policy_local_uses_the_local_endpoint_or_drops(lab):
    local = probe(lab, "tool-a", f"{vip(lab, 'web-itl')}:80", 30)
    assert local["servedBy"] == {"web-a1": 30}
    none_here = probe(lab, "toolbox", f"{vip(lab, 'web-itl')}:80", 8, timeout=0.5)
    assert none_here["errors"] == {"timeout": 8}


def test_load_balancer_ip_from_a_pod_is_served_by_its_own_node_keeping_the_pod_ip(lab):
    """Checklist 9: Local, a pod on a pod-less node reaching the LB IP succeeds, keeps its pod IP and
    may hit any endpoint; the cloud load balancer never sees it."""
    lb_ip = lab.load_balancer_ip("web-lb")
    before = lb_flow_packets(lab, lb_ip)
    result = probe(lab, "toolbox", f"{lb_ip}:80", 60)
    assert result["ok"] == 60 and set(result["servedBy"]) == {"web-a1", "web-b1"}
    assert result["sourcesSeen"] == {lab.cluster.pod("toolbox").ip: 60}
    assert lb_flow_packets(lab, lb_ip) == before


def test_load_balancer_ip_and_own_node_port_from_a_node_are_masqueraded(lab):
    """Checklist 10: Local, node-c (no local endpoint) reaching the LB IP or its own NodePort succeeds,
    masqueraded, to any endpoint."""
    for target in (f"{lab.load_balancer_ip('web-lb')}:80", f"{node_ip(lab, 'node-c')}:30091"):
        result = probe(lab, "node-c", target, 30)
        assert result["ok"] == 30, (target, result["errors"])
        assert result["sourcesSeen"] == {node_ip(lab, "node-c"): 30}, target


@pytest.mark.parametrize("address", ["own", "127.0.0.1"])
def test_a_node_reaches_its_own_node_port_on_its_ip_and_on_localhost(lab, address):
    """Checklist 1: iptables mode serves NodePorts on every local address, 127.0.0.1 included."""
    target = node_ip(lab, "node-b") if address == "own" else "127.0.0.1"
    result = probe(lab, "node-b", f"{target}:30090", 30)
    assert result["ok"] == 30, result["errors"]
    assert set(result["servedBy"]) == {"web-a1", "web-b1"}
    assert set(result["sourcesSeen"]) <= {addr.pod_gateway_ip(2), node_ip(lab, "node-b")}


def learned_flows(lab, node: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", addr.node_bridge(lab.cluster.node(node).index),
                          f"table={T_AFFINITY},cookie={COOKIE_AFFINITY:#x}/-1"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "priority=100" in line]


def test_session_affinity_holds_while_connections_keep_coming_then_is_released(lab):
    """Checklist 18: one client's connections go to one endpoint; the memory is a sliding window
    (renewed by each new connection), released when timeoutSeconds pass without one."""
    target = f"{vip(lab, 'web-sticky')}:80"
    first = probe(lab, "toolbox", target, 20, concurrency=1)
    assert first["ok"] == 20 and len(first["servedBy"]) == 1, first["servedBy"]  # (1/2)^19 by chance
    chosen = next(iter(first["servedBy"]))
    for _ in range(3):  # 4.5 s in all, more than the 2 s timeout, but never 2 s without a connection
        time.sleep(1.5)
        assert probe(lab, "toolbox", target, 1)["servedBy"] == {chosen: 1}
    assert len(learned_flows(lab, "node-c")) == 1
    time.sleep(3.5)  # timeoutSeconds (2) plus Open vSwitch's expiry sweep (up to 1 s)
    assert learned_flows(lab, "node-c") == [], "the learned affinity flow outlived its timeout"
    # Released, the client starts a new session: sticky again, also with connections overlapping (no
    # datapath flow cached by an earlier connection may choose for a later one).
    again = probe(lab, "toolbox", target, 20, concurrency=4)
    assert again["ok"] == 20 and len(again["servedBy"]) == 1, again["servedBy"]
    assert len(learned_flows(lab, "node-c")) == 1


def test_source_ranges_drop_load_balancer_connections_from_outside_but_not_the_node_port(lab):
    """Checklist 20: the client (203.0.113.10) is outside 192.0.2.0/24."""
    lb = probe(lab, addr.CLIENT_NAME, f"{lab.load_balancer_ip('web-fw')}:80", 8, timeout=0.5)
    assert lb["errors"] == {"timeout": 8}
    node_port = probe(lab, addr.CLIENT_NAME, f"{node_ip(lab, 'node-a')}:30092", 30)
    assert node_port["ok"] == 30
    from_pod = probe(lab, "toolbox", f"{lab.load_balancer_ip('web-fw')}:80", 4, timeout=0.5)
    assert from_pod["errors"] == {"timeout": 4}  # kube-proxy's KUBE-FW filters in-cluster clients too


def lb_flow_packets(lab, lb_ip: str) -> int:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", addr.underlay_bridge(),
                          f"table={U_LB},ip,nw_dst={lb_ip}"], capture_output=True, text=True, check=True).stdout
    return sum(int(f.split("n_packets=")[1].split(",")[0]) for f in out.splitlines() if "n_packets=" in f)


def udp(lab, source: str, target: str, requests: int = 40) -> dict:
    out = lab.probe([target], requests, concurrency=4, timeout=1.0, host=source, protocol="UDP")
    return entry_result(out["records"], service="", namespace="default", policy="", node_port=0, node=None,
                        node_ip=None, inter_node_bytes=0, client_ttl=64, duration_s=out["durationS"])


def test_udp_through_cluster_ip_and_node_port(lab):
    inside = udp(lab, "toolbox", f"{vip(lab, 'dns')}:53")
    assert inside["ok"] == 40 and set(inside["servedBy"]) == {"dns-a", "dns-b"}, inside["errors"]
    assert inside["sourcesSeen"] == {lab.cluster.pod("toolbox").ip: 40}
    outside = udp(lab, addr.CLIENT_NAME, f"{node_ip(lab, 'node-c')}:30053")
    assert outside["ok"] == 40 and set(outside["servedBy"]) == {"dns-a", "dns-b"}
    assert outside["sourcesSeen"] == {node_ip(lab, "node-c"): 40}  # Cluster: masqueraded by the entry node


def test_udp_session_affinity_sends_every_new_socket_to_one_endpoint(lab):
    """Each probe datagram comes from a socket (a source port) of its own, as each DNS query of a
    resolver may: without affinity they spread (above), with it they all reach the endpoint learned first."""
    for session in ("first", "after a release"):
        if session != "first":
            time.sleep(3.5)  # timeoutSeconds (2) plus Open vSwitch's expiry sweep
        sticky = udp(lab, "toolbox", f"{vip(lab, 'dns-sticky')}:53", requests=30)
        assert sticky["ok"] == 30 and len(sticky["servedBy"]) == 1, (session, sticky["servedBy"])


SAME_PORT_CLIENT = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40053))
s.settimeout(1)
seen = []
for _ in range(5):
    s.sendto(b"/", (sys.argv[1], 53))
    try:
        seen.append(json.loads(s.recv(2048))["pod"])
    except OSError:
        seen.append(None)
    time.sleep(0.05)
print(json.dumps(seen))
"""


def same_port(lab, target: str) -> list:
    out = lab.run_in("toolbox", [sys.executable, "-c", SAME_PORT_CLIENT, target], timeout=20)
    return json.loads(out.stdout)


def test_udp_conntrack_of_a_removed_endpoint_is_flushed(lab):
    """One client socket keeps one conntrack entry, so one endpoint; when that endpoint goes, kube-proxy
    deletes the entry and the same socket's next datagrams reach the other endpoint (no black hole)."""
    target = vip(lab, "dns")
    first = same_port(lab, target)
    assert len(set(first)) == 1 and first[0] in {"dns-a", "dns-b"}, first
    lab.delete_pod(first[0], grace_s=0)
    after = same_port(lab, target)
    survivor = ({"dns-a", "dns-b"} - {first[0]}).pop()
    assert after == [survivor] * 5, after


def test_apply_probes_a_cluster_ip_from_a_client_pod_on_each_node(lab):
    """``lab apply``'s clusterIP results: a lab-made client pod per node, the same keys as the other
    results, and the east-west bill: requests served on another node cost bytes between nodes."""
    from lab.measure.measurements import in_cluster_clients, measure_cluster_ip
    clients = in_cluster_clients(lab)
    assert set(clients) == {"node-a", "node-b", "node-c"}
    results = [measure_cluster_ip(lab, lab.cluster.service("web"), pod, 20) for pod in clients.values()]
    for r in results:
        assert r["via"] == "clusterIP" and r["ok"] == 20 and r["clientPod"] == clients[r["node"]]
        assert {"servedBy", "sourcesSeen", "nodeHops", "interNodeBytes", "latencyMs", "linkBytes"} <= r.keys()
    on_c = next(r for r in results if r["node"] == "node-c")
    assert on_c["nodeHops"] == {"2": 20} and on_c["interNodeBytes"] > 20 * 300  # both pods are elsewhere
    on_a = next(r for r in results if r["node"] == "node-a")
    assert on_a["nodeHops"].get("1") == on_a["servedBy"].get("web-a1")  # the local pod: one hop
