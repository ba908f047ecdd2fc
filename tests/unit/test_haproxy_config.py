"""The PROXY-protocol load balancer's configuration: every node a server at the Service's nodePort with
send-proxy-v2 and the cloud's health check, and HAProxy's own verdict on it (``haproxy -c``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.cloud.haproxy import render
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests

REPO = Path(__file__).resolve().parents[2]


def test_every_node_is_a_server_with_send_proxy_v2_and_the_local_health_check(tmp_path):
    cluster = load_manifests([REPO / "examples/ingress"])
    service = cluster.service("ingress-nginx-controller", "ingress-nginx")
    text = render(cluster, service, str(tmp_path / "haproxy.sock"))
    for sp in service.ports:
        assert f"bind {addr.LB_HOST_IP}:{sp.port}" in text
        for node in cluster.nodes:
            assert f"server {node.name} {addr.node_ip(node.index)}:{sp.node_port}" in text
    assert f"default-server send-proxy-v2 check port {service.health_check_node_port}" in text
    assert "option httpchk GET /healthz" in text
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed: run ./setup.sh")
    (tmp_path / "haproxy.cfg").write_text(text)
    result = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
