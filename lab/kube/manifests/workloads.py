"""Workload controllers' result, as the API server would show it after they ran: the pods they make.

- Deployment: the Deployment + ReplicaSet controllers' result, ``spec.replicas`` pods named
  ``<deployment>-<pod-template-hash>-<5 chars>`` and labelled ``pod-template-hash``;
- ReplicaSet and ReplicationController: ``spec.replicas`` pods named ``<name>-<5 chars>``;
- StatefulSet: ``<name>-0`` .. ``<name>-(n-1)``, labelled ``statefulset.kubernetes.io/pod-name`` and
  ``apps.kubernetes.io/pod-index``, placed like any pod (its headless Service is an ordinary Service);
- DaemonSet: one pod per node that the DaemonSet controller finds eligible (nodeSelector, required node
  affinity, and NoSchedule/NoExecute taints, with the tolerations the controller adds to every
  DaemonSet pod), named ``<name>-<5 chars>``, pinned to its node;
- HorizontalPodAutoscaler: the lab has no load metrics, so, as a real HPA whose metrics are missing, it
  only keeps its target's replicas within ``[minReplicas, maxReplicas]`` (``scale_targets``).

Random name suffixes are derived from sha256 instead, in Kubernetes' alphabet, so every run builds the
same network. Selectors are checked as apps/v1 checks them: required, and matching the template's labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from lab.errors import Origin, shown
from lab.kube.manifests.affinity import label_selector
from lab.kube.manifests.fields import (
    describe,
    display,
    integer,
    labels_text,
    mapping,
    object_metadata,
    string,
    string_map,
)
from lab.kube.manifests.pods import MAX_PODS, Builder, Template, claim_host, create_pod, pod_template
from lab.kube.manifests.reader import Doc
from lab.kube.scheduler import PodSpec, Toleration, fits_node_selection, untolerated

# Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words) and no look-alike 0/1/3.
POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH_LEN = 10
POD_SUFFIX_LEN = 5
# names.SimpleNameGenerator: the generateName base is cut to 63 - 5 so the pod name stays a DNS label.
GENERATED_BASE_MAX = 58
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"


def _safe_encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(POD_NAME_ALPHABET))
        chars.append(POD_NAME_ALPHABET[digit])
    return "".join(chars)


def pod_template_hash(namespace: str, deployment: str) -> str:
    """The ReplicaSet's ``pod-template-hash``: 10 safe characters, fixed per Deployment."""
    return _safe_encode(hashlib.sha256(f"{namespace}/{deployment}".encode()).digest(), POD_TEMPLATE_HASH_LEN)


STATEFULSET_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
SCALABLE_KINDS = ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet")
# What the DaemonSet controller adds to every DaemonSet pod (pkg/controller/daemon/util), so that a node's
# conditions never keep its daemon off; network-unavailable only for hostNetwork pods.
DAEMONSET_TOLERATIONS = (
    Toleration("node.kubernetes.io/not-ready", "Exists", effect="NoExecute"),
    Toleration("node.kubernetes.io/unreachable", "Exists", effect="NoExecute"),
    Toleration("node.kubernetes.io/disk-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/memory-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/pid-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),
)
HOST_NETWORK_TOLERATION = Toleration("node.kubernetes.io/network-unavailable", "Exists", effect="NoSchedule")


def generated_pod_name(base: str, seed: str, attempt: int = 0) -> str:
    """``base`` (cut to 58 characters) + 5 characters, as the API server's generateName makes them;
    ``attempt`` > 0 re-draws the suffix after a name clash, as its retry would."""
    seed = seed + (f"#{attempt}" if attempt else "")
    return base[:GENERATED_BASE_MAX] + _safe_encode(hashlib.sha256(seed.encode()).digest(), POD_SUFFIX_LEN)


def replica_pod_name(namespace: str, deployment: str, index: int, attempt: int = 0) -> str:
    """``<deployment>-<pod-template-hash>-<5 chars>``, as the ReplicaSet controller names pods.

    ``index`` is the 0-based replica number.
    """
    base = f"{deployment}-{pod_template_hash(namespace, deployment)}-"
    return generated_pod_name(base, f"{namespace}/{deployment}/{index}", attempt)


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: str
    origin: Origin
    replicas: int  # DaemonSets: ignored, one per eligible node
    template: Template
    host_network: bool


def workload_key(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
    return (kind, namespace, name)


def read_workload(builder: Builder, doc: Doc) -> Workload:
    """The object's metadata, replicas, selector and pod template, checked as the API server checks them."""
    origin, name, namespace, meta = object_metadata(doc, namespaced=True)
    string_map(meta, "labels", origin, "metadata.labels")
    key = workload_key(doc.kind, namespace, name)
    if key in builder.workloads:
        raise origin.error("metadata.name", f"{shown(name)} is already used by {builder.workloads[key]}",
                           "rename one of them")
    builder.workloads[key] = describe(doc.kind, display(name, namespace), doc.source)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    replicas = integer(spec, "replicas", origin, "spec.replicas")
    replicas = 1 if replicas is None else replicas
    if replicas < 0:
        raise origin.error("spec.replicas", f"{replicas} is negative", "use 0 or more replicas")
    if replicas > MAX_PODS:
        raise origin.error("spec.replicas", f"{shown(replicas)} is more than the lab runs ({MAX_PODS} pods in all, "
                           "each a Mininet host)", "use fewer replicas")
    template_doc = mapping(spec, "template", origin, "spec.template", required=True)
    template_meta = mapping(template_doc, "metadata", origin, "spec.template.metadata")
    labels = string_map(template_meta, "labels", origin, "spec.template.metadata.labels")
    if doc.kind == "ReplicationController":
        _check_rc_selector(spec, labels, origin)
    else:
        _check_selector(mapping(spec, "selector", origin, "spec.selector", required=True), labels, origin)
    template_spec = mapping(template_doc, "spec", origin, "spec.template.spec", required=True)
    template = pod_template(template_spec, labels, namespace, origin, "spec.template.spec", builder.warnings)
    builder.unhonoured(template_spec, origin, "spec.template.spec")
    host_network = template_spec.get("hostNetwork") is True
    return Workload(doc.kind, name, namespace, origin, replicas, template, host_network)


def add_workload(builder: Builder, doc: Doc, scaled: dict[tuple[str, str, str], tuple[int, int]]) -> None:
    """The pods the workload's controller makes; ``scaled`` holds the bounds an autoscaler keeps."""
    workload = read_workload(builder, doc)
    replicas = workload.replicas
    bounds = scaled.get(workload_key(workload.kind, workload.namespace, workload.name))
    if bounds is not None:
        replicas = min(max(replicas, bounds[0]), bounds[1])
    if workload.kind == "DaemonSet":
        _add_daemon_pods(builder, workload)
        return
    for index in range(replicas):
        template = workload.template
        if workload.kind == "Deployment":
            pod_name = _free_name(builder, lambda a, i=index: replica_pod_name(workload.namespace, workload.name, i, a))
            labels = {**template.labels, POD_TEMPLATE_HASH_LABEL: pod_template_hash(workload.namespace, workload.name)}
        elif workload.kind == "StatefulSet":
            pod_name = f"{workload.name}-{index}"
            labels = {**template.labels, STATEFULSET_POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(index)}
            if len(pod_name) > 63:  # a label value holds at most 63 characters
                labels.pop(STATEFULSET_POD_NAME_LABEL)
        else:
            seed = f"{workload.kind}/{workload.namespace}/{workload.name}/{index}"
            pod_name = _free_name(builder, lambda a, s=seed: generated_pod_name(f"{workload.name}-", s, a))
            labels = dict(template.labels)
        _add(builder, workload, pod_name, replace(template, labels=labels))


def _add_daemon_pods(builder: Builder, workload: Workload) -> None:
    tolerations = workload.template.tolerations + DAEMONSET_TOLERATIONS
    if workload.host_network:
        tolerations += (HOST_NETWORK_TOLERATION,)
    for node in builder.nodes:
        probe = replace(_spec_of(workload), tolerations=tolerations)
        if not fits_node_selection(node, probe) or untolerated(node, tolerations, ("NoSchedule", "NoExecute")):
            continue  # the DaemonSet controller makes no pod for a node its pods may not run on
        seed = f"DaemonSet/{workload.namespace}/{workload.name}/{node.name}"
        pod_name = _free_name(builder, lambda a, s=seed: generated_pod_name(f"{workload.name}-", s, a))
        template = replace(workload.template, node_name=node.name, tolerations=tolerations)
        _add(builder, workload, pod_name, template)


def _spec_of(workload: Workload) -> PodSpec:
    t = workload.template
    return PodSpec(workload.name, workload.namespace, t.labels, None, t.node_selector, t.node_affinity)


def _add(builder: Builder, workload: Workload, pod_name: str, template: Template) -> None:
    owner = describe("Pod", pod_name, f"from {workload.kind} {display(workload.name, workload.namespace)}")
    claim_host(builder, pod_name, owner, workload.origin, "metadata.name")
    create_pod(builder, pod_name, workload.namespace, template, (workload.kind, workload.name), workload.origin,
               "spec.template.spec")


def _free_name(builder: Builder, name_for) -> str:
    attempt = 0
    while (candidate := name_for(attempt)) in builder.hosts:
        attempt += 1
    return candidate


def _check_rc_selector(spec: dict, labels: dict[str, str], origin: Origin) -> None:
    """A ReplicationController's selector is a plain map, defaulting to the template's labels."""
    selector = string_map(spec, "selector", origin, "spec.selector")
    if not selector and not labels:
        raise origin.error("spec.template.metadata.labels", "is empty, and so is spec.selector",
                           "label the template, e.g. app: <name>")
    if any(labels.get(key) != value for key, value in selector.items()):
        raise origin.error(
            "spec.template.metadata.labels",
            f"{labels_text(labels)} do not match spec.selector {labels_text(selector)}",
            "make the template labels include every selector entry",
        )


# --- HorizontalPodAutoscaler ---------------------------------------------------------------------------


def scale_targets(
    docs: list[Doc], targets: set[tuple[str, str, str]], warnings: list[str]
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """The replicas each autoscaler keeps its target at, and one warning saying so (and what it missed)."""
    scaled: dict[tuple[str, str, str], tuple[int, int]] = {}
    notes: list[str] = []
    for doc in docs:
        origin, name, namespace, _ = object_metadata(doc, namespaced=True)
        spec = mapping(doc.body, "spec", origin, "spec", required=True)
        ref = mapping(spec, "scaleTargetRef", origin, "spec.scaleTargetRef", required=True)
        kind = string(ref, "kind", origin, "spec.scaleTargetRef.kind")
        target = string(ref, "name", origin, "spec.scaleTargetRef.name")
        if not kind or not target:
            raise origin.error("spec.scaleTargetRef", "needs kind and name", "e.g. kind: Deployment, name: web")
        low = integer(spec, "minReplicas", origin, "spec.minReplicas")
        low = 1 if low is None else low
        high = integer(spec, "maxReplicas", origin, "spec.maxReplicas")
        if high is None:
            raise origin.error("spec.maxReplicas", "is required", "add maxReplicas: <number>")
        if low < 1 or high < low:
            raise origin.error("spec.maxReplicas" if high < low else "spec.minReplicas",
                               f"minReplicas {low} and maxReplicas {high} leave no room",
                               "use 1 <= minReplicas <= maxReplicas")
        key = workload_key(kind, namespace, target)
        if kind not in SCALABLE_KINDS or key not in targets:
            notes.append(f"{display(name, namespace)} targets {kind}/{target}, which is not in these manifests")
            continue
        scaled[key] = (low, high)
        notes.append(f"{display(name, namespace)} keeps {kind}/{target} within {low}-{high} replicas")
    if notes:
        warnings.append("HorizontalPodAutoscaler: the lab has no load metrics, so an autoscaler only keeps its "
                        "target's replicas within [minReplicas, maxReplicas]: " + "; ".join(notes))
    return scaled


def _check_selector(selector: dict, labels: dict[str, str], origin: Origin) -> None:
    """apps/v1 requires a non-empty selector that selects the template's own labels."""
    parsed = label_selector(selector, origin, "spec.selector")
    match_labels = dict(parsed.match_labels)
    if not match_labels and not parsed.match_expressions:
        raise origin.error(
            "spec.selector", "is empty", "add spec.selector.matchLabels with the template's labels"
        )
    if any(labels.get(key) != value for key, value in match_labels.items()):
        raise origin.error(
            "spec.template.metadata.labels",
            f"{labels_text(labels)} do not match spec.selector.matchLabels {labels_text(match_labels)}",
            "make the template labels include every matchLabels entry",
        )
    for number, requirement in enumerate(parsed.match_expressions):
        if not requirement.matches(labels):
            raise origin.error(
                "spec.template.metadata.labels",
                f"{labels_text(labels)} do not match spec.selector.matchExpressions[{number}]",
                "make the template labels satisfy the selector",
            )
