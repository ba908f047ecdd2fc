"""Where each pod runs: a pure, deterministic stand-in for kube-scheduler.

kube-scheduler runs every pod through *filter* plugins (may this node run it at all?) and then *score*
plugins (which of the remaining nodes is best?). The lab keeps that shape with the few rules that matter
for NodePort experiments, because which node holds which pod decides what ``externalTrafficPolicy:
Local`` does:

- ``spec.nodeName`` bypasses the scheduler (as in Kubernetes), but the node must exist, and the pod must
  still fit it (the kubelet's admission check rejects a pod whose nodeSelector the node does not match);
- filter ``nodeSelector``: every key/value must be among the node's labels, where every node implicitly
  carries ``kubernetes.io/hostname=<node name>`` as a kubelet-registered node does;
- filter capacity: a node holds at most ``addressing.MAX_PODS_PER_NODE`` pods (its /24 pod CIDR);
- score: fewest pods already on the node, ties broken by node order. Real kube-scheduler balances by
  resource requests and spreads replicas by default; with no requests, "fewest pods, then manifest
  order" gives the same spread and, unlike the real thing, the same answer on every run.

Replicas are placed one at a time, each seeing the pods placed before it, so 4 replicas on 3 nodes land
2, 1, 1 in node order. Later rules (topologySpreadConstraints, podAntiAffinity) become one more ``Filter``
or ``Scorer`` in ``FILTERS`` / ``SCORERS``, with the fields they need added to ``PodSpec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lab import addressing
from lab.model import Node, Pod

HOSTNAME_LABEL = "kubernetes.io/hostname"


@dataclass(frozen=True)
class PodSpec:
    """The parts of a pod that constrain where it may run."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)


class Unschedulable(Exception):
    """No node can take the pod. ``field`` is relative to the pod spec (``nodeName``, ``nodeSelector``,
    or empty when no single field is to blame) so the caller can prefix ``spec.`` or
    ``spec.template.spec.`` and name the manifest object."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field} {problem}: {fix}".strip())


@dataclass(frozen=True)
class Filter:
    """A yes/no rule. ``explain`` says why no node passed, given the nodes that reached this filter,
    as (field, problem, fix) for ``Unschedulable``."""

    fits: Callable[[Node, PodSpec, Sequence[Pod]], bool]
    explain: Callable[[PodSpec, Sequence[Node]], tuple[str, str, str]]


# Lower is better; place() compares the scores of all scorers in order, then node order.
Scorer = Callable[[Node, PodSpec, Sequence[Pod]], float]


def node_labels(node: Node) -> dict[str, str]:
    """The labels the scheduler sees: the manifest's plus the one every kubelet sets."""
    return {HOSTNAME_LABEL: node.name, **node.labels}


def pods_on(node: Node, pods: Sequence[Pod]) -> int:
    return sum(1 for pod in pods if pod.node == node.name)


def _matches_selector(node: Node, spec: PodSpec, pods: Sequence[Pod]) -> bool:
    labels = node_labels(node)
    return all(labels.get(key) == value for key, value in spec.node_selector.items())


def _explain_selector(spec: PodSpec, nodes: Sequence[Node]) -> tuple[str, str, str]:
    wanted = ", ".join(f"{k}={v}" for k, v in spec.node_selector.items())
    if spec.node_name:
        return (
            "nodeSelector",
            f'{{{wanted}}} does not match the labels of Node "{spec.node_name}" named in nodeName',
            "label that Node accordingly, or drop nodeName or nodeSelector",
        )
    return (
        "nodeSelector",
        f"{{{wanted}}} matches no Node",
        "add these labels to a Node, or change the selector",
    )


def _has_room(node: Node, spec: PodSpec, pods: Sequence[Pod]) -> bool:
    return pods_on(node, pods) < addressing.MAX_PODS_PER_NODE


def _explain_room(spec: PodSpec, nodes: Sequence[Node]) -> tuple[str, str, str]:
    limit = addressing.MAX_PODS_PER_NODE
    if spec.node_name:
        return (
            "nodeName",
            f'"{spec.node_name}" already holds {limit} pods, the most its /24 pod network addresses',
            "pin fewer pods to that Node, or remove nodeName to let the lab schedule the pod",
        )
    names = ", ".join(node.name for node in nodes)
    return (
        "",
        f"cannot be placed: {names} already hold {limit} pods each, the most a node's /24 addresses",
        "add Nodes or run fewer pods",
    )


FILTERS: tuple[Filter, ...] = (
    Filter(_matches_selector, _explain_selector),
    Filter(_has_room, _explain_room),
)


def _pod_count(node: Node, spec: PodSpec, pods: Sequence[Pod]) -> float:
    return pods_on(node, pods)


SCORERS: tuple[Scorer, ...] = (_pod_count,)


def place(
    nodes: Sequence[Node],
    existing_pods: Sequence[Pod],
    pod_spec: PodSpec,
    *,
    filters: Sequence[Filter] = FILTERS,
    scorers: Sequence[Scorer] = SCORERS,
) -> str:
    """The name of the node ``pod_spec`` runs on, given the pods already placed; raises ``Unschedulable``."""
    if not nodes:
        raise Unschedulable("nodeName", "cannot be chosen: there are no Nodes", "add Node objects")
    candidates = list(nodes)
    if pod_spec.node_name is not None:
        candidates = [node for node in nodes if node.name == pod_spec.node_name]
        if not candidates:
            known = ", ".join(node.name for node in nodes)
            raise Unschedulable(
                "nodeName",
                f'"{pod_spec.node_name}" is not a Node in the manifests (Nodes: {known})',
                "use one of those names, or remove nodeName to let the lab schedule the pod",
            )
    for rule in filters:
        passed = [node for node in candidates if rule.fits(node, pod_spec, existing_pods)]
        if not passed:
            raise Unschedulable(*rule.explain(pod_spec, candidates))
        candidates = passed
    order = {node.name: position for position, node in enumerate(nodes)}

    def preference(node: Node) -> tuple[float, ...]:
        scores = tuple(score(node, pod_spec, existing_pods) for score in scorers)
        return (*scores, order[node.name])

    return min(candidates, key=preference).name
