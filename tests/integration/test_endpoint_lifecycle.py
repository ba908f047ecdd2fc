"""Endpoint readiness and termination with real TCP (checklist items 13 and 14): a readinessProbe run
against the pod's real server, a pod made to fail and pass it, a pod deleted while a download runs
(KEP-1669 terminating endpoints under Local, with the health check's 503), a node being deleted.

Cluster::

    node-a: web-a1 (readinessProbe httpGet /ready, period 1 s)    node-b: web-b1 (grace 8 s)    node-c: -
    Service web     NodePort 30095, Cluster
    Service web-lb  LoadBalancer 30096, Local (healthCheckNodePort)
    Service web-peers NodePort 30097, publishNotReadyAddresses (every endpoint ready)
"""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.polling import wait_for
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
spec:
  nodeName: node-a
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 8080, name: http}]
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b1, labels: {app: web}}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 8
  containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30095}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30096}]
---
apiVersion: v1
kind: Service
metadata: {name: web-peers}
spec:
  type: NodePort
  publishNotReadyAddresses: true
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30097}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("lifecycle"), MANIFESTS)
    with LabNetwork(cluster, lb_profile="fast") as network:
        yield network


def served(lab, node: str, port: int, requests: int = 30) -> dict[str, int]:
    out = lab.probe([f"{addr.node_ip(lab.cluster.node(node).index)}:{port}"], requests, timeout=1.0)
    counts: dict[str, int] = {}
    for r in out["records"]:
        key = r["response"]["pod"] if r["ok"] else r["error"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def get(lab, node: str, port: int, path: str) -> tuple[int, dict]:
    url = f"http://{addr.node_ip(lab.cluster.node(node).index)}:{port}{path}"
    out = lab.run_in(addr.LB_NAME, ["curl", "-s", "-m", "2", "-w", "\n%{http_code}", url], timeout=10)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body or "{}")


def test_a_pod_is_an_endpoint_only_while_its_readiness_probe_passes(lab):
    """Except behind a Service with publishNotReadyAddresses: the EndpointSlice controller marks every one of
    its endpoints ready, and kube-proxy sends to them."""
    assert served(lab, "node-c", 30095, 40).keys() == {"web-a1", "web-b1"}
    lab.set_pod_ready("web-a1", False)  # its server now answers 503 on /ready; kubelet notices
    wait_for(lambda: not lab.cluster.pod("web-a1").ready, timeout=5, what="web-a1 not Ready")
    assert served(lab, "node-c", 30095, 40) == {"web-b1": 40}
    assert served(lab, "node-c", 30097, 40).keys() == {"web-a1", "web-b1"}  # published though not Ready
    lab.set_pod_ready("web-a1", True)
    wait_for(lambda: lab.cluster.pod("web-a1").ready, timeout=5, what="web-a1 Ready again")
    assert served(lab, "node-c", 30095, 40).keys() == {"web-a1", "web-b1"}


def test_a_deleted_pod_drains_terminating_and_local_still_uses_it_while_its_health_check_says_503(lab):
    """Checklist 13: node-b's only pod is Terminating: its health check answers 503 with
    localEndpoints 0, yet the download in flight and new connections entering node-b still reach it;
    cluster-wide choices leave it out."""
    download = lab.host(addr.CLIENT_NAME).popen(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate", "1M", "-m", "30",
         f"http://{addr.node_ip(2)}:30096/bulk?bytes=3000000"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: download.poll() is None, timeout=5, what="the download")
    lab.delete_pod("web-b1")
    assert lab.cluster.pod("web-b1").terminating
    status, body = get(lab, "node-b", lab.cluster.service("web-lb").health_check_node_port, "/healthz")
    assert (status, body.get("localEndpoints")) == (503, 0), body
    assert served(lab, "node-b", 30096, 20) == {"web-b1": 20}
    assert "web-b1" not in served(lab, "node-c", 30095, 30)
    out, _ = download.communicate(timeout=40)
    assert download.returncode == 0 and int(out) == 3_000_000
    wait_for(lambda: "web-b1" not in {p.name for p in lab.cluster.pods}, timeout=15, what="web-b1 removed")
    assert served(lab, "node-b", 30096, 6)["timeout"] == 6  # Local, nothing left on node-b: dropped


def test_kube_proxy_healthz_answers_503_on_a_node_being_deleted(lab):
    """Checklist 14: /healthz 200 normally, 503 once the Node has a deletionTimestamp; /livez stays 200."""
    assert get(lab, "node-c", 10256, "/healthz")[0] == 200
    lab.delete_node("node-c")
    status, body = get(lab, "node-c", 10256, "/healthz")
    assert status == 503 and body["nodeEligible"] is False
    assert get(lab, "node-c", 10256, "/livez")[0] == 200
    assert get(lab, "node-a", 10256, "/healthz")[0] == 200
