"""Typed field readers with API-server-style errors, and the metadata every object carries.

Each reader takes the parent mapping, the key, the object's ``Origin`` and the field's full path, and
either returns the value or raises a one-line ``ManifestError`` naming object, field, problem and fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lab.errors import Origin, shown
from lab.kube import names

if TYPE_CHECKING:
    from lab.kube.manifests.reader import Doc

# The versions today's API server serves for each kind the lab models; the first is the one to advise.
API_VERSIONS = {
    "Node": ("v1",),
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "Service": ("v1",),
    "ReplicationController": ("v1",),
    "Deployment": ("apps/v1",),
    "ReplicaSet": ("apps/v1",),
    "StatefulSet": ("apps/v1",),
    "DaemonSet": ("apps/v1",),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "autoscaling/v1"),
    "Job": ("batch/v1",),
    "CronJob": ("batch/v1",),
    "Secret": ("v1",),
    "Ingress": ("networking.k8s.io/v1",),
    "IngressClass": ("networking.k8s.io/v1",),
    "GatewayClass": ("gateway.networking.k8s.io/v1",),
    "Gateway": ("gateway.networking.k8s.io/v1",),
    "HTTPRoute": ("gateway.networking.k8s.io/v1",),
}
DEFAULT_NAMESPACE = "default"


TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "empty",
}


def quote_advice(key: str | None, value: Any) -> str:
    """How to make a number or boolean a string; for anything else, what to write instead."""
    if isinstance(value, bool | float):
        text = json.dumps(value)
    elif isinstance(value, int):
        text = shown(value)
    else:
        return f"write {key or 'it'} as a string"
    return f'quote it: {key}: "{text}"' if key else f'quote it: "{text}"'


def type_name(value: Any) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


def mapping(parent: dict, key: str, origin: Origin, field: str, *, required: bool = False) -> dict:
    value = parent.get(key)
    if value is None:
        if required:
            raise origin.error(field, "is required", f"add {field}")
        return {}
    if not isinstance(value, dict):
        raise origin.error(field, f"is {type_name(value)}, not a mapping", f"write {field} as key: value pairs")
    return value


def sequence(parent: dict, key: str, origin: Origin, field: str, *, required: bool = False) -> list:
    value = parent.get(key)
    if value is None or value == []:
        if required:
            raise origin.error(field, "is required", f"add at least one entry to {field}")
        return []
    if not isinstance(value, list):
        raise origin.error(field, f"is {type_name(value)}, not a list", f"write {field} as a list ('- ' items)")
    return value


def string(parent: dict, key: str, origin: Origin, field: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise origin.error(field, f"is {type_name(value)}, not a string", quote_advice(key, value))
    return value


def integer(parent: dict, key: str, origin: Origin, field: str) -> int | None:
    value = parent.get(key)
    # bool is an int in Python but not in YAML/JSON: replicas: true is a type error for the API too.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise origin.error(field, f"is {type_name(value)}, not an integer", f"write {field} as a whole number")
    return value


def boolean(parent: dict, key: str, origin: Origin, field: str) -> bool | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, bool):
        raise origin.error(field, f"is {shown(value)}, not a boolean", "write true or false (unquoted)")
    return value


def port_number(value: int, origin: Origin, field: str) -> int:
    if not 1 <= value <= 65535:
        raise origin.error(field, f"{shown(value)} is outside 1-65535", "use a port number from 1 to 65535")
    return value


def string_map(parent: dict, key: str, origin: Origin, field: str) -> dict[str, str]:
    """Labels and selectors: string to string, validated as Kubernetes label syntax."""
    raw = mapping(parent, key, origin, field)
    result: dict[str, str] = {}
    for label, value in raw.items():
        if not isinstance(label, str):
            raise origin.error(f"{field} key", f'{shown(label)} is not a string', "quote the key")
        if value is None:
            value = ""
        if not isinstance(value, str):
            # YAML reads `tier: 1` or `canary: true` as a number or boolean; the API wants strings.
            raise origin.error(
                f"{field}[{label}]", f"is {type_name(value)}, not a string", quote_advice(label, value)
            )
        result[label] = value
    names.validate_labels(result, origin, field)
    return result


def annotations_of(meta: dict, origin: Origin) -> dict[str, str]:
    """``metadata.annotations``: string to string, any text (not label syntax)."""
    raw = mapping(meta, "annotations", origin, "metadata.annotations")
    result = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise origin.error(f"metadata.annotations[{key}]", "is not a string", f'quote it: {key}: "{value}"')
        result[str(key)] = value
    return result


def labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}={value}" for key, value in labels.items()) + "}"


def display(name: str, namespace: str | None) -> str:
    return name if namespace in (None, DEFAULT_NAMESPACE) else f"{namespace}/{name}"


def describe(kind: str, name: str, source: str) -> str:
    return f'{kind} "{name}" ({source})'


def object_metadata(doc: Doc, *, namespaced: bool) -> tuple[Origin, str, str, dict]:
    """Check apiVersion and metadata; return (origin, name, namespace, metadata)."""
    meta = doc.body.get("metadata")
    raw_name = meta.get("name") if isinstance(meta, dict) else None
    name = raw_name if isinstance(raw_name, str) else ""
    raw_namespace = meta.get("namespace") if isinstance(meta, dict) else None
    namespace = raw_namespace if isinstance(raw_namespace, str) and raw_namespace else DEFAULT_NAMESPACE
    origin = Origin(doc.kind, display(name, namespace if namespaced else None), doc.source)
    check_api_version(doc, origin)
    meta = mapping(doc.body, "metadata", origin, "metadata", required=True)
    if string(meta, "name", origin, "metadata.name") is None:
        raise origin.error("metadata.name", "is required", f"give the {doc.kind} a name")
    names.validate_object_name(doc.kind, name, origin)
    if namespaced:
        string(meta, "namespace", origin, "metadata.namespace")
        names.validate_namespace(namespace, origin)
    return origin, name, namespace, meta


def check_api_version(doc: Doc, origin: Origin) -> None:
    served = API_VERSIONS[doc.kind]
    expected = served[0]
    version = doc.body.get("apiVersion")
    if version is None:
        raise origin.error("apiVersion", "is missing", f"add apiVersion: {expected}")
    if version not in served:
        raise origin.error(
            "apiVersion", f'{shown(version)} does not serve {doc.kind}', f"use apiVersion: {expected}"
        )


def choices(options: Sequence[str]) -> str:
    return f"{', '.join(options[:-1])} or {options[-1]}"


def warn(warnings: list[str], origin: Origin, field: str, problem: str, fix: str) -> None:
    """A warning worded like an error (object, field, problem, advice), for what the API accepts."""
    warnings.append(str(origin.error(field, problem, fix)))


def entry_of(raw: Any, origin: Origin, field: str, shape: str) -> dict:
    if not isinstance(raw, dict):
        raise origin.error(field, f"is {type_name(raw)}, not a mapping", f"write {shape}")
    return raw


def label_key(parent: dict, key: str, origin: Origin, field: str, example: str) -> str:
    """A required field that names a label key (topologyKey, a requirement's key)."""
    value = string(parent, key, origin, field)
    if not value:
        raise origin.error(field, "is required", f"name a label key, e.g. {key}: {example}")
    problem = names.label_key_problem(value)
    if problem:
        raise origin.error(field, f'{shown(value)} {problem}', "fix the label key")
    return value
