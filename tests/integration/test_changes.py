"""Pods come and go while traffic flows: kube-proxy applies the difference and leaves established
connections to unchanged endpoints alone; it can also be restarted on its own, as kube-proxy can.

Cluster: node-a runs web-1, node-b runs web-2; Service web (Cluster, 30090) and web-local (Local, 30091).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.experiment import probe_entry
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
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080, nodePort: 30090}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30091}]
"""

BULK_BYTES = 3_000_000
RATE = "1M"  # curl --limit-rate: the download lasts about 3 s, long enough to change things under it


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("changes"), MANIFESTS)
    with LabNetwork(cluster) as network:
        yield network


def slow_download(lab, node: str, node_port: int):
    ip = addr.node_ip(lab.cluster.node(node).index)
    return lab.host("client").popen(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate", RATE, "-m", "30",
         f"http://{ip}:{node_port}/bulk?bytes={BULK_BYTES}"])


def served(lab, service: str, node: str, requests: int = 200) -> dict:
    svc = lab.cluster.service(service)
    return probe_entry(lab, svc, svc.ports[0], node, requests, lab.client_ttl())["servedBy"]


def finish(download) -> int:
    out, _ = download.communicate(timeout=60)
    assert download.returncode == 0, f"curl exit {download.returncode}"
    return int(out)


def flow_age_s(bridge: str, table: int, needle: str) -> float:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"table={table}"],
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if needle in line)
    return float(re.search(r"duration=([0-9.]+)s", line).group(1))


def test_added_pod_receives_new_connections_and_established_ones_survive(lab):
    download = slow_download(lab, "node-a", 30091)  # Local: only web-1 can serve it
    wait_for(lambda: download.poll() is None, timeout=5, what="download running")
    changed_at = time.monotonic()
    lab.add_pod("web-3", "node-a", labels={"app": "web"})
    # Only the difference was applied: flows the change does not touch were not reinstalled.
    age = flow_age_s(addr.node_bridge(1), 0, "priority=200,arp")
    assert age >= time.monotonic() - changed_at, f"an unchanged flow is only {age} s old"
    assert finish(download) == BULK_BYTES
    assert served(lab, "web-local", "node-a").get("web-3", 0) > 0


def test_deleted_pod_gets_no_new_connections_and_others_keep_theirs(lab):
    download = slow_download(lab, "node-a", 30091)
    wait_for(lambda: download.poll() is None, timeout=5, what="download running")
    lab.delete_pod("web-2")
    assert finish(download) == BULK_BYTES
    result = served(lab, "web", "node-b")
    assert "web-2" not in result and sum(result.values()) == 200


def test_moved_pod_serves_from_its_new_node(lab):
    lab.move_pod("web-3", "node-b")
    result = served(lab, "web-local", "node-b")
    assert result == {"web-3": 200}
    assert lab.cluster.pod("web-3").ip.startswith(f"10.244.{lab.cluster.node('node-b').index}.")


def test_restarting_kube_proxy_keeps_connections_and_service(lab):
    download = slow_download(lab, "node-a", 30090)
    wait_for(lambda: download.poll() is None, timeout=5, what="download running")
    lab.controller.restart()
    lab.controller.wait_applied(lab.dpids)
    assert finish(download) == BULK_BYTES
    assert sum(served(lab, "web", "node-a", 100).values()) == 100

