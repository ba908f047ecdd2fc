"""The pure parts of endpoint lifecycle and UDP: kubelet's probe thresholds, probes from YAML, the
health answers, stale UDP conntrack, and the pods' UDP echo with the probe's UDP mode (on loopback)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from controllers.conntrack import flush_commands, stale_udp_endpoints
from controllers.health import proxy_answer, service_answer
from lab.emulation.kubelet import ProbeState
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Probe, Service, ServicePort
from lab.measure.probe import run_probe
from tests.unit.test_manifests import load
from tests.unit.test_workload import http_get, listener, probe, workload


def test_kubelet_thresholds_turn_ready_and_unready():
    state = ProbeState(Probe("httpGet", 8080, success_threshold=2, failure_threshold=3))
    assert [state.observe(True), state.observe(True)] == [False, True] and state.ready
    assert [state.observe(False), state.observe(False), state.observe(True)] == [False, False, False]
    assert state.ready  # two failures then a success: still Ready
    assert [state.observe(False) for _ in range(3)] == [False, False, True] and not state.ready


POD = """
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: nginx
    ports: [{{containerPort: 8080, name: http}}]
    readinessProbe: {probe}
"""


def test_readiness_probes_and_grace_are_read_exec_warns(tmp_path: Path):
    cluster = load(tmp_path, POD.format(probe="{httpGet: {path: /ready, port: http}, periodSeconds: 2}"))
    pod = cluster.pod("web")
    assert pod.readiness_probe == Probe("httpGet", "http", "/ready", period_s=2.0)
    assert pod.termination_grace_s == 5.0
    tcp = load(tmp_path, POD.format(probe="{tcpSocket: {port: 8080}, failureThreshold: 1}")).pod("web")
    assert (tcp.readiness_probe.kind, tcp.readiness_probe.port, tcp.readiness_probe.failure_threshold) == (
        "tcpSocket", 8080, 1)
    exec_ = load(tmp_path, POD.format(probe="{exec: {command: [cat, /tmp/ok]}}"))
    assert exec_.pod("web").readiness_probe is None
    assert any("readinessProbe.exec is not run" in w for w in exec_.warnings)


def test_a_second_containers_readiness_probe_is_warned_naming_its_object(tmp_path: Path):
    sidecar = ("  - name: sidecar\n    image: busybox\n    ports: [{containerPort: 9090}]\n"
               "    readinessProbe: {tcpSocket: {port: 9090}}\n")
    cluster = load(tmp_path, POD.format(probe="{httpGet: {path: /ready, port: http}}") + sidecar)
    assert cluster.pod("web").readiness_probe == Probe("httpGet", "http", "/ready")  # the first one is run
    [warning] = [w for w in cluster.warnings if "containers[1].readinessProbe" in w]
    assert warning.startswith('Pod "web" (') and "is not run" in warning


def cluster(**pod) -> Cluster:
    pods = [Pod("web-1", "node-a", labels={"app": "web"}, ports=(ContainerPort(5353, protocol="UDP"),),
                ip=addr.pod_ip(1, 2), serial=1, **pod)]
    return Cluster([Node("node-a", 1)], pods,
                   [Service("dns", [ServicePort(53, 30053, 5353, protocol="UDP")], selector={"app": "web"})])


def test_health_check_counts_only_ready_local_endpoints():
    ready = build_proxy_state(cluster(), 1)
    assert service_answer(ready, "node-a", "default", "dns", True)[0] == 200
    terminating = build_proxy_state(cluster(terminating=True), 1)
    status, body, headers = service_answer(terminating, "node-a", "default", "dns", True)
    assert (status, body["localEndpoints"], headers["X-Load-Balancing-Endpoint-Weight"]) == (503, 0, "0")


def test_proxy_healthz_is_503_for_a_node_being_deleted_livez_is_not():
    assert proxy_answer("/healthz", None, True, node_eligible=False)[0] == 503
    assert proxy_answer("/healthz", None, True, node_eligible=False)[1]["nodeEligible"] is False
    assert proxy_answer("/livez", None, True, node_eligible=False)[0] == 200
    assert proxy_answer("/healthz", None, True)[0] == 200


def test_a_removed_udp_endpoint_is_flushed_in_every_nodes_zones():
    before = build_proxy_state(cluster(), 1)
    sp = before.service_ports[0]
    after = replace(before, service_ports=(replace(sp, endpoints=()),))
    stale = stale_udp_endpoints(before, after)
    assert stale == {(addr.pod_ip(1, 2), 5353)}
    assert flush_commands(after, stale) == [
        ["ovs-appctl", "dpctl/flush-conntrack", "zone=1001", "", "ct_nw_src=10.244.1.2,ct_nw_proto=17,ct_tp_src=5353"],
        ["ovs-appctl", "dpctl/flush-conntrack", "zone=2001", "ct_nw_dst=10.244.1.2,ct_nw_proto=17,ct_tp_dst=5353"]]
    assert stale_udp_endpoints(before, before) == set() and stale_udp_endpoints(None, before) == set()


def test_the_pods_udp_echo_answers_the_udp_probe_with_the_same_json(tmp_path: Path):
    with workload(tmp_path, [{**listener("dns-1"), "protocol": "UDP"}, listener("web-1")]) as wl:
        port = wl.ports()["dns-1"]
        records = asyncio.run(run_probe([f"127.0.0.1:{port}"], requests=3, protocol="udp"))["records"]
        assert [r["ok"] for r in records] == [True] * 3
        answer = records[0]["response"]
        assert answer["pod"] == "dns-1" and answer["source"]["ip"] == "127.0.0.1" and answer["synTTL"] == 64
        assert len({r["local"] for r in records}) == 3  # a new socket, so a new source port, per request
        assert probe(wl.ports()["web-1"])[0]["ok"]
        wl.command({"op": "remove", "pod": "dns-1"})
        [gone] = asyncio.run(run_probe([f"127.0.0.1:{port}"], requests=1, protocol="udp"))["records"]
        assert gone["error"] == "refused"  # ICMP port unreachable


def test_a_failing_readiness_path_answers_503(tmp_path: Path):
    with workload(tmp_path, [listener("web-1")]) as wl:
        port = wl.ports()["web-1"]
        assert wl.command({"op": "readiness", "pod": "web-1", "path": "/ready", "failing": True}) == [{"ok": True}]
        assert b" 503 " in http_get(port, "/ready")[0] and b" 200 " in http_get(port, "/")[0]
        wl.command({"op": "readiness", "pod": "web-1", "path": "/ready", "failing": False})
        assert b" 200 " in http_get(port, "/ready")[0]
