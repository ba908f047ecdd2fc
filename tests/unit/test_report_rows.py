"""The report a person reads: one row per (Service, port, entry), short cells, a verdict that agrees with them."""

from __future__ import annotations

from pathlib import Path

from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure.report import _counts, entry_result, new_report, render_table, verdict

SET = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx, ports: [{containerPort: 8080, name: http}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}, {name: alt, port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: lonely}
spec: {type: NodePort, selector: {app: nobody}, ports: [{port: 80, nodePort: 30090}]}
"""


def answered(pod: str, source: str, ttl: int) -> dict:
    return {"ok": True, "error": None, "latencyMs": 1.0,
            "response": {"pod": pod, "node": "node-a", "source": {"ip": source}, "synTTL": ttl}}


def failed(error: str) -> dict:
    return {"ok": False, "error": error, "latencyMs": None, "response": None}


def result(cluster, service: str, namespace: str, node: str, records: list[dict], port: int, name: str | None,
           node_port: int, policy: str) -> dict:
    index = cluster.node(node).index
    return entry_result(records, service=service, namespace=namespace, policy=policy, node_port=node_port, node=node,
                        node_ip=addr.node_ip(index), inter_node_bytes=0, client_ttl=64, duration_s=1.0, port=port,
                        port_name=name)


def cluster_and_report(tmp_path: Path):
    path = tmp_path / "set.yaml"
    path.write_text(SET)
    cluster = load_manifests([str(path)])
    report = new_report(cluster)
    pods = [p.name for p in cluster.pods]
    on_a = [p.name for p in cluster.pods if p.node == "node-a"]
    spread = [answered(pods[i % 5], addr.CLIENT_IP, 62) for i in range(10)]
    report.results = [
        result(cluster, "web", "shop", "node-a", [answered(on_a[i % len(on_a)], addr.CLIENT_IP, 62)
                                                  for i in range(4)], 80, "http", 30080, "Local"),
        result(cluster, "web", "shop", "node-b", spread, 81, "alt", cluster.service("web", "shop").ports[1].node_port,
               "Local"),
        result(cluster, "web", "shop", "node-c", [failed("timeout")] * 3, 80, "http", 30080, "Local"),
        result(cluster, "lonely", "default", "node-a", [failed("refused")] * 6, 80, None, 30090, "Cluster"),
    ]
    return cluster, report


def test_rows_show_namespace_port_and_node_port(tmp_path):
    cluster, report = cluster_and_report(tmp_path)
    lines = render_table(report, cluster).splitlines()
    assert lines[0].split()[:4] == ["service", "port", "policy", "entry"]
    assert lines[2].startswith("shop/web  http:80 -> 30080")
    assert lines[5].startswith("lonely    80 -> 30090")
    assert "no endpoints: selector app=nobody matches no pod" in lines[5]


def test_long_lists_show_the_top_few_and_how_many_more():
    assert _counts({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}) == "a 5, b 4, c 3, +2 more"
    assert _counts({"a": 1}) == "a 1"
    assert _counts({}) == "-"


def test_the_verdict_never_contradicts_the_rows(tmp_path):
    cluster, report = cluster_and_report(tmp_path)
    lines = verdict(report, cluster)
    text = " ".join(lines)
    assert "0 of 0" not in text and "n/a" not in text
    price = [line for line in lines if line.startswith("Price of Local")]
    assert price == ["Price of Local: node node-c has no pod of shop/web, so it dropped every connection silently on "
                     "port 80 (3 timeout); a client or load balancer sending there gets nothing."]
    assert lines[-1] == ("lonely has no endpoints: selector app=nobody matches no pod: all 6 requests to it failed "
                         "(6 refused), as they would in a real cluster.")
    assert not any("Under Cluster" in line or "Extra hop" in line for line in lines)  # lonely is no Cluster sample


def test_refused_is_not_called_silent(tmp_path):
    cluster, report = cluster_and_report(tmp_path)
    report.results[2] = result(cluster, "web", "shop", "node-c", [failed("refused")] * 3, 80, "http", 30080, "Local")
    line = next(line for line in verdict(report, cluster) if line.startswith("Price of Local"))
    assert "answered none of its requests on port 80 (3 refused)" in line and "silently" not in line


def test_json_lists_nodes_pods_and_ignored(tmp_path):
    cluster, report = cluster_and_report(tmp_path)
    data = report.to_dict()
    assert data["nodes"][0]["labels"]["kubernetes.io/os"] == "linux"
    assert data["pods"][0]["owner"] == "Deployment/web" and data["pods"][0]["namespace"] == "shop"
    assert data["ignored"] == [] and "warnings" in data
    assert data["results"][0]["port"] == 80 and data["results"][0]["portName"] == "http"
