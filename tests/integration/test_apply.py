"""``python -m lab apply`` run as a user runs it, on a set shaped like a fresh install: an ingress-nginx
controller with no Ingress yet, an app behind a LoadBalancer Service with Local on two of three nodes, and
a headless Service. What the user reads must be the cluster's steady state:

- the load balancer is probed once its health checks have taken the pod-less node out of rotation (a new
  one sends there first: ``run healthcheck`` measures that window), so every request is answered;
- the controller answers 404 from its default server with no Ingress at all, as ingress-nginx does;
- its clusterIP is not probed as a plain endpoint (NGINX answers by Host), and the verdict names the
  headless Service as not probed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.emulation.observing import REPO

MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: NotIn, values: [node-c]}]}]
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: shop}}, topologyKey: kubernetes.io/hostname}
      containers: [{name: shop, image: shop:1.0, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: shop-peers}
spec:
  clusterIP: None
  selector: {app: shop}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Namespace
metadata: {name: ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}}
  template:
    metadata: {labels: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-a}
      containers:
      - name: controller
        image: registry.k8s.io/ingress-nginx/controller:v1.12.0
        ports:
        - {name: http, containerPort: 80}
        - {name: https, containerPort: 443}
        - {name: webhook, containerPort: 8443}
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}
  ports: [{name: http, port: 80, targetPort: http}, {name: https, port: 443, targetPort: https}]
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-controller-admission, namespace: ingress-nginx}
spec:
  selector: {app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller}
  ports: [{name: https-webhook, port: 443, targetPort: webhook}]
"""
REQUESTS = 30


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apply")
    (folder / "install.yaml").write_text(MANIFESTS)
    report = folder / "report.json"
    run = subprocess.run([sys.executable, "-m", "lab", "apply", "-f", str(folder), "--requests", str(REQUESTS),
                          "--json", str(report)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(report.read_text()), run.stdout


def test_the_load_balancer_is_probed_in_its_steady_state(outcome):
    report, _ = outcome
    [lb] = [r for r in report["results"] if r["via"] == "loadBalancer" and r["service"] == "shop"]
    assert (lb["ok"], lb["failed"]) == (REQUESTS, 0), lb["errors"]
    assert set(lb["nodesServed"]) == {"node-a", "node-b"}
    assert report["timings"]["loadBalancersSettledS"] > 0  # it did have to wait for node-c to leave


def test_the_controller_answers_404_with_no_ingress(outcome):
    report, _ = outcome
    answered = {r["entry"]: r["statusCodes"] for r in report["routes"] if r["backend"] == "404"}
    assert answered["node-a"] == {"404": REQUESTS} and answered["lb"] == {"404": REQUESTS}, answered
    assert answered["node-b"] == {} and answered["node-c"] == {}  # Local, no controller pod there: dropped


def test_only_plain_endpoints_are_probed_by_clusterip_and_the_verdict_names_the_headless_service(outcome):
    report, stdout = outcome
    by_ip = {(r["service"], r["port"]) for r in report["results"] if r["via"] == "clusterIP"}
    assert by_ip == {("shop", 80), ("ingress-nginx-controller-admission", 443)}
    assert "- Not probed: shop-peers, headless (clusterIP: None)" in stdout
