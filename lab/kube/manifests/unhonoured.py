"""Fields the lab reads past on objects it does model: each gets a warning naming it, never silence.

One table, so that when the data plane learns a field (session affinity, source ranges...) its entry is
deleted here and nothing else changes. Each entry names the kind (``Pod`` stands for every pod spec: a
Pod's ``spec``, a workload's ``spec.template.spec``), the field's path (``*`` for every list item), the
values that change nothing (the defaults, which exports and Helm charts write out), and what the lab does
instead. ``--strict`` turns these warnings into an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lab.errors import Origin, shown


def _quoted(value: Any) -> str:
    """The value as the warning quotes it: a short list of plain values written out (ipFamilies
    [IPv6, IPv4], externalIPs), anything else as ``shown`` has it (containers only by their type)."""
    if isinstance(value, list) and 0 < len(value) <= 8 and all(
            isinstance(v, str | int | float | bool) or v is None for v in value):
        return "[" + ", ".join(shown(v, 64) for v in value) + "]"
    return shown(value)


def _unset(value: Any) -> bool:
    return value in (None, "", [], {}, False)


@dataclass(frozen=True)
class Unhonoured:
    kind: str
    path: tuple[str, ...]
    harmless: Callable[[Any], bool]
    instead: str


UNHONOURED = (
    Unhonoured("Service", ("spec", "externalIPs"), _unset, "the Service is reachable only through nodePorts and its "
               "load balancer"),
    Unhonoured("Service", ("spec", "loadBalancerIP"), _unset, "the load balancer gets the lab's own address"),
    Unhonoured("Service", ("spec", "ipFamilies"), lambda v: v in (None, [], ["IPv4"]), "the lab is IPv4 only"),
    Unhonoured("Service", ("spec", "ipFamilyPolicy"), lambda v: v in (None, "SingleStack", "PreferDualStack"),
               "the lab is IPv4 only"),
    Unhonoured("Service", ("spec", "loadBalancerClass"), _unset,
               "the lab's own cloud load balancer serves the Service, whatever controller the class names"),
    Unhonoured("Pod", ("hostNetwork",), _unset,
               "every pod gets its own network namespace and address, as without hostNetwork"),
    Unhonoured("Pod", ("containers", "*", "ports", "*", "hostPort"), _unset,
               "the port is reachable at the pod's address only, not at the node's"),
    Unhonoured("Pod", ("readinessGates",), _unset,
               "no controller sets the gates' conditions here, so the lab counts them as passed (in a cluster "
               "without that controller the pod would never be Ready)"),
)


# Annotations of an implementation the lab models in part, by (kind, key prefix): the keys it reads. Any
# other key under the prefix warns by name (an annotation's default is its absence).
HONOURED_ANNOTATIONS = {
    ("Service", "service.cilium.io/"): ("service.cilium.io/lb-algorithm",),  # lab.kube.lb_algorithm
    # ingress-nginx's (rewrite-target, canary, affinity, ssl-redirect, use-regex...): lab.kube.ingress
    ("Ingress", "nginx.ingress.kubernetes.io/"): ("nginx.ingress.kubernetes.io/service-upstream",),
}


def _annotations(kind: str, body: dict) -> Iterator[tuple[str, Any]]:
    """(field, value) of every annotation of ``body`` under a prefix the lab reads only in part."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    for key, value in (notes.items() if isinstance(notes, dict) else ()):
        for (of_kind, prefix), honoured in HONOURED_ANNOTATIONS.items():
            if of_kind == kind and str(key).startswith(prefix) and key not in honoured:
                yield f"metadata.annotations[{key}]", value


def _values(node: Any, path: tuple[str, ...], where: str) -> Iterator[tuple[str, Any]]:
    """(field path with indices, value) for every place ``path`` reaches in ``node``."""
    if not path:
        yield where, node
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for number, item in enumerate(node if isinstance(node, list) else ()):
            yield from _values(item, rest, f"{where}[{number}]")
    elif isinstance(node, dict) and head in node:
        yield from _values(node[head], rest, f"{where}.{head}" if where else head)


def unhonoured(kind: str, body: dict, origin: Origin, prefix: str = "") -> list[str]:
    """Warnings for ``body`` (a ``kind`` object, or with kind ``Pod`` a pod spec at ``prefix``)."""
    warnings: list[str] = []
    for entry in UNHONOURED:
        if entry.kind != kind:
            continue
        for field, value in _values(body, entry.path, prefix):
            if not entry.harmless(value):
                warnings.append(str(origin.error(field, f"{_quoted(value)} is not honoured by the lab", entry.instead)))
    notes = list(_annotations(kind, body))
    if len(notes) == 1:
        field, value = notes[0]
        warnings.append(str(origin.error(field, f"{shown(value)} is not honoured by the lab",
                                         "the lab does not model this annotation, so here it changes nothing")))
    elif notes:  # one line for an object's many (an Ingress often carries five of ingress-nginx's)
        listed = ", ".join(f"{field.removeprefix('metadata.annotations')} {shown(value)}" for field, value in notes)
        warnings.append(str(origin.error("metadata.annotations", f"{listed} are not honoured by the lab",
                                         "the lab does not model these annotations, so here they change nothing")))
    return warnings
