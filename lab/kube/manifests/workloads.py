"""Workload controllers' result, as the API server would show it: the pods a Deployment makes.

Deployment (apps/v1): the Deployment + ReplicaSet controllers' result, ``spec.replicas`` pods named
``<deployment>-<pod-template-hash>-<suffix>`` like real ones, but derived from sha256 instead of random
so every run builds the same network.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from lab.errors import Origin, shown
from lab.kube.manifests.affinity import label_selector
from lab.kube.manifests.fields import (
    describe,
    display,
    integer,
    labels_text,
    mapping,
    object_metadata,
    string_map,
)
from lab.kube.manifests.pods import Builder, claim_host, create_pod, pod_template
from lab.kube.manifests.reader import Doc

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


def replica_pod_name(namespace: str, deployment: str, index: int, attempt: int = 0) -> str:
    """``<deployment>-<pod-template-hash>-<5 chars>``, as the ReplicaSet controller names pods.

    ``index`` is the 0-based replica number; ``attempt`` > 0 re-draws the suffix after a name clash, as
    the API server's generateName retry would.
    """
    seed = f"{namespace}/{deployment}/{index}" + (f"#{attempt}" if attempt else "")
    suffix = _safe_encode(hashlib.sha256(seed.encode()).digest(), POD_SUFFIX_LEN)
    base = f"{deployment}-{pod_template_hash(namespace, deployment)}-"
    return base[:GENERATED_BASE_MAX] + suffix


def add_deployment(builder: Builder, doc: Doc) -> None:
    origin, name, namespace, meta = object_metadata(doc, namespaced=True)
    string_map(meta, "labels", origin, "metadata.labels")
    if (namespace, name) in builder.deployments:
        raise origin.error(
            "metadata.name",
            f'{shown(name)} is already used by {builder.deployments[namespace, name]}',
            "rename one of them",
        )
    builder.deployments[namespace, name] = describe("Deployment", display(name, namespace), doc.source)
    spec = mapping(doc.body, "spec", origin, "spec", required=True)
    replicas = integer(spec, "replicas", origin, "spec.replicas")
    replicas = 1 if replicas is None else replicas
    if replicas < 0:
        raise origin.error("spec.replicas", f"{replicas} is negative", "use 0 or more replicas")
    selector = mapping(spec, "selector", origin, "spec.selector", required=True)
    template_doc = mapping(spec, "template", origin, "spec.template", required=True)
    template_meta = mapping(template_doc, "metadata", origin, "spec.template.metadata")
    labels = string_map(template_meta, "labels", origin, "spec.template.metadata.labels")
    _check_selector(selector, labels, origin)
    template_spec = mapping(template_doc, "spec", origin, "spec.template.spec", required=True)
    template = pod_template(template_spec, labels, namespace, origin, "spec.template.spec", builder.warnings)
    pod_labels = {**labels, POD_TEMPLATE_HASH_LABEL: pod_template_hash(namespace, name)}
    template = replace(template, labels=pod_labels)
    for index in range(replicas):
        pod_name = _free_replica_name(builder, namespace, name, index)
        claim_host(
            builder, pod_name, describe("Pod", pod_name, f"from Deployment {name}"), origin, "metadata.name"
        )
        create_pod(builder, pod_name, namespace, template, name, origin, "spec.template.spec")


def _free_replica_name(builder: Builder, namespace: str, deployment: str, index: int) -> str:
    attempt = 0
    while (candidate := replica_pod_name(namespace, deployment, index, attempt)) in builder.hosts:
        attempt += 1
    return candidate


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
