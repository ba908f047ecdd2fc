"""What a run could not probe, and why, in the verdict's words: a Service missing from the table, or one
whose every request failed for a reason outside kube-proxy, must never leave the user guessing.

- A headless Service (``clusterIP: None``) has no virtual address: kube-proxy writes no rule for it, and
  its clients get the pods' own addresses from DNS, so there is nothing of kube-proxy's to measure.
- A Service whose selector matches no pod while its namespace holds custom resources the lab ignored
  (``Prometheus``, ``Alertmanager``, ``Rollout``...) most likely selects pods an operator would make from
  them: in a real cluster with that operator running, it would answer.
"""

from __future__ import annotations

from lab.kube.endpoints import selected_pods, selects
from lab.kube.manifests.fields import display
from lab.kube.model import Cluster, Service

NAMED_AT_MOST = 3


def headless_services(cluster: Cluster) -> list[str]:
    """The verdict's sentence on headless Services, or nothing when there is none."""
    names = [display(s.name, s.namespace) for s in cluster.services if s.headless]
    if not names:
        return []
    these = "it gets" if len(names) == 1 else "they get"
    return [f"Not probed: {_listed(names)}, headless (clusterIP: None): {these} no kube-proxy rules; clients "
            "resolve a headless Service by DNS to its pods' own addresses and connect straight to a pod."]


def custom_resource(api_version: str) -> bool:
    """Whether an apiVersion is a CustomResourceDefinition's: a group with a dot outside Kubernetes' own
    ``*.k8s.io`` groups (``apps/v1``, ``v1`` and ``networking.k8s.io/v1`` are built in)."""
    group = api_version.rpartition("/")[0]
    return "." in group and not (group == "k8s.io" or group.endswith(".k8s.io"))


def operator_hint(cluster: Cluster, service: Service) -> str | None:
    """For a Service whose selector matches no pod: the ignored custom resources of its namespace that
    would make its pods, or None (also for a Service that selects pods, or has no selector). One whose pod
    template carries the selector's labels (an Argo ``Rollout``) surely would; otherwise one whose kind is
    among the selector's values (an ``Alertmanager`` for ``app.kubernetes.io/name: alertmanager``) most
    likely would. Others (a ``ServiceMonitor`` named after the app) make no pods and are no hint."""
    if not service.selector or selected_pods(cluster, service):
        return None
    found = [o for o in cluster.ignored if (o.get("namespace") or "default") == service.namespace
             and custom_resource(str(o.get("apiVersion") or ""))]
    templated = [o for o in found if selects(service.selector, o.get("podLabels") or {})]
    values = {str(v).lower() for v in service.selector.values()}
    chosen = templated or [o for o in found if str(o.get("kind", "")).lower() in values]
    if not chosen:
        return None
    how = "would be" if templated else "would most likely be"
    names = _listed([f"{o.get('kind')} {o.get('name')}" for o in chosen])
    return (f"its pods {how} made by an operator from a custom resource the lab does not run ({names}), "
            "so with that operator in a real cluster it would answer")


def _listed(names: list[str]) -> str:
    """The first few names, and how many more."""
    more = len(names) - NAMED_AT_MOST
    return ", ".join(names[:NAMED_AT_MOST]) + (f" and {more} more" if more > 0 else "")
