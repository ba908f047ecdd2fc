"""Which objects the lab models, which it ignores, and which a controller in the same manifests makes.

Real manifest sets mix in many kinds the lab has no use for (RBAC, ConfigMaps, Secrets, CRDs,
NetworkPolicies, PodDisruptionBudgets...). They are ignored with ONE grouped warning line (``ignored 37
objects the lab does not model: 11 ServiceAccount, 9 Role, ...``) and listed in full in
``Cluster.ignored`` (the report's JSON). Jobs and CronJobs are workloads, but their pods run to
completion and serve nothing: one warning says so, and ``--strict`` counts it.

An export from a live cluster (``kubectl get all -o yaml``) holds the Deployment, its ReplicaSet and the
ReplicaSet's Pods. Applied to a new cluster, the dependents' ``ownerReferences`` name owners that do
not exist there, so the garbage collector removes them and the Deployment makes its own: the lab skips
an object whose controller owner is in the same manifests, and says so once.
"""

from __future__ import annotations

from collections import Counter

from lab.kube.manifests.fields import display
from lab.kube.manifests.reader import Doc
from lab.kube.manifests.routing import KINDS as ROUTING_KINDS

WORKLOAD_KINDS = ("Pod", "Deployment", "ReplicaSet", "ReplicationController", "StatefulSet", "DaemonSet")
MODELLED_KINDS = ("Node", "Namespace", "Service", *WORKLOAD_KINDS, "HorizontalPodAutoscaler",
                  *ROUTING_KINDS)
RUN_TO_COMPLETION_KINDS = ("Job", "CronJob")


def meta_of(doc: Doc) -> tuple[str, str | None]:
    """(name, namespace) as written, without validation (for lists and warnings about any object)."""
    meta = doc.body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return (name if isinstance(name, str) else "<unnamed>"), (namespace if isinstance(namespace, str) else None)


def listing(doc: Doc) -> dict:
    """An ignored object as the JSON report lists it, with the labels of its pod template if it has one
    (an Argo Rollout, a Knative Service...: the report can then say which Service's pods it would make)."""
    name, namespace = meta_of(doc)
    api_version = doc.body.get("apiVersion")
    found = {"kind": doc.kind, "apiVersion": api_version if isinstance(api_version, str) else None, "name": name,
             "namespace": namespace, "source": doc.source}
    spec = doc.body.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    meta = template.get("metadata") if isinstance(template, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if isinstance(labels, dict):
        found["podLabels"] = {str(k): str(v) for k, v in labels.items()}
    return found


def grouped(count_by_kind: Counter, what: str) -> str:
    """``37 objects the lab does not model: 11 ServiceAccount, 9 Role, ...`` (most frequent first)."""
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(count_by_kind.items(), key=lambda kv: (-kv[1], kv[0])))
    total = sum(count_by_kind.values())
    return f"{total} object{'s' if total != 1 else ''} {what}: {parts}"


def ignored_objects(docs: list[Doc], warnings: list[str], strict: list[str]) -> list[dict]:
    """The objects the lab does not model, with one warning for them and one for run-to-completion kinds."""
    ignored = [doc for doc in docs if doc.kind not in MODELLED_KINDS]
    jobs = [doc for doc in ignored if doc.kind in RUN_TO_COMPLETION_KINDS]
    others = Counter(doc.kind for doc in ignored if doc.kind not in RUN_TO_COMPLETION_KINDS)
    if others:
        warnings.append(f"ignored {grouped(others, 'the lab does not model')} (listed in the JSON report)")
    if jobs:
        names = ", ".join(f"{doc.kind}/{display(*meta_of(doc))}" for doc in jobs[:5])
        more = f" +{len(jobs) - 5} more" if len(jobs) > 5 else ""
        several = len(jobs) != 1
        message = (f"{len(jobs)} Job/CronJob object{'s' if several else ''} ({names}{more}): "
                   f"{'their' if several else 'its'} pods run to completion and serve nothing, so the lab makes no "
                   "pods for them")
        warnings.append(message)
        strict.append(message)
    return [listing(doc) for doc in ignored]


def without_owned(docs: list[Doc], warnings: list[str]) -> list[Doc]:
    """The documents less those a controller among them makes (exported ReplicaSets and Pods)."""
    present = {(doc.kind, meta_of(doc)[1] or "default", meta_of(doc)[0]) for doc in docs}
    kept: list[Doc] = []
    skipped: Counter = Counter()
    for doc in docs:
        owner = _controller(doc)
        namespace = meta_of(doc)[1] or "default"
        if owner is not None and (owner[0], namespace, owner[1]) in present:
            skipped[doc.kind] += 1
        else:
            kept.append(doc)
    if skipped:
        warnings.append(f"skipped {grouped(skipped, 'that a controller in these manifests makes (ownerReferences)')}"
                        ": the lab makes them afresh, as a new cluster would")
    return kept


def without_helm_hooks(docs: list[Doc], warnings: list[str]) -> list[Doc]:
    """The documents less the Pods that are Helm hooks (``helm.sh/hook``, e.g. ``helm test`` pods): ``helm
    template`` prints them, but an install runs them only as hooks, to completion."""
    kept: list[Doc] = []
    hooks: list[str] = []
    for doc in docs:
        meta = doc.body.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if doc.kind == "Pod" and isinstance(annotations, dict) and "helm.sh/hook" in annotations:
            hooks.append(display(*meta_of(doc)))
        else:
            kept.append(doc)
    if hooks:
        more = f" +{len(hooks) - 5} more" if len(hooks) > 5 else ""
        warnings.append(f"skipped {len(hooks)} Helm hook Pod{'s' if len(hooks) != 1 else ''} "
                        f"({', '.join(hooks[:5])}{more}): Helm runs them only as hooks (helm test), to completion")
    return kept


def _controller(doc: Doc) -> tuple[str, str] | None:
    meta = doc.body.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            kind, name = ref.get("kind"), ref.get("name")
            if isinstance(kind, str) and isinstance(name, str):
                return kind, name
    return None
