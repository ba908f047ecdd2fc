"""The verdict's sentences on what a run could not probe: headless Services, and Services whose pods an
operator would make from a custom resource the lab ignores (read from YAML as a user brings it)."""

from __future__ import annotations

from lab.measure.coverage import custom_resource, headless_services, operator_hint
from lab.measure.report import Report, verdict
from tests.unit.test_manifests import load

HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: kube-state-metrics, namespace: monitoring}
spec: {clusterIP: None, selector: {app: ksm}, ports: [{port: 8080}]}
"""

OPERATED = """
apiVersion: monitoring.coreos.com/v1
kind: Alertmanager
metadata: {name: main, namespace: monitoring}
spec: {replicas: 3}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: alertmanager, namespace: monitoring}
spec: {selector: {matchLabels: {app.kubernetes.io/name: alertmanager}}}
---
apiVersion: v1
kind: Service
metadata: {name: alertmanager-main, namespace: monitoring}
spec:
  selector: {app.kubernetes.io/name: alertmanager, app.kubernetes.io/instance: main}
  ports: [{port: 9093}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  template:
    metadata: {labels: {app: checkout-v2}}
    spec: {containers: [{name: app, image: shop}]}
---
apiVersion: v1
kind: Service
metadata: {name: checkout}
spec: {selector: {app: checkout-v2}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: typo}
spec: {selector: {app: chekout}, ports: [{port: 80}]}
"""


def test_headless_services_are_named_as_not_probed_and_why(tmp_path):
    cluster = load(tmp_path, HEADLESS)
    [line] = headless_services(cluster)
    assert line.startswith("Not probed: monitoring/kube-state-metrics, headless (clusterIP: None): it gets no "
                           "kube-proxy rules")
    assert headless_services(load(tmp_path)) == []


def test_custom_resources_are_told_from_built_in_kinds():
    assert custom_resource("monitoring.coreos.com/v1") and custom_resource("argoproj.io/v1alpha1")
    for built_in in ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "apiregistration.k8s.io/v1",
                     "gateway.networking.k8s.io/v1"):
        assert not custom_resource(built_in), built_in


def test_a_service_without_pods_points_at_the_custom_resource_that_would_make_them(tmp_path):
    cluster = load(tmp_path, OPERATED)
    operated = operator_hint(cluster, cluster.service("alertmanager-main", "monitoring"))
    assert operated is not None and "would most likely be made by an operator" in operated
    assert "(Alertmanager main)" in operated  # the ServiceMonitor makes no pods: not named
    rollout = operator_hint(cluster, cluster.service("checkout"))
    assert rollout is not None and "would be made by an operator" in rollout and "(Rollout checkout)" in rollout
    assert operator_hint(cluster, cluster.service("typo")) is None


def test_the_verdict_says_it_instead_of_as_in_a_real_cluster(tmp_path):
    cluster = load(tmp_path, OPERATED, HEADLESS)
    failed = {"via": "clusterIP", "node": "node-a", "ok": 0, "requests": 10, "errors": {"timeout": 10},
              "servedBy": {}, "interNodeBytes": 0, "port": 80}
    report = Report({}, [], [], results=[{**failed, "service": "checkout", "namespace": "default"},
                                         {**failed, "service": "typo", "namespace": "default"}])
    lines = verdict(report, cluster)
    assert any(line.startswith("checkout has no endpoints") and "but its pods would be made" in line
               for line in lines), lines
    assert any(line.startswith("typo has no endpoints") and line.endswith("as they would in a real cluster.")
               for line in lines), lines
    assert lines[-1].startswith("Not probed: monitoring/kube-state-metrics")
