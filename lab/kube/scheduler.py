"""Where each pod runs: a pure, deterministic stand-in for kube-scheduler.

kube-scheduler runs every pod through *filter* plugins (may this node run it at all?) and then *score*
plugins (which of the remaining nodes is best?). The lab keeps that shape with the rules that matter for
NodePort experiments, because which node holds which pod decides what ``externalTrafficPolicy: Local``
does: a load balancer splits traffic per node, so 3 pods on node-a and 1 on node-b give the lone pod on
node-b three times the share of each pod on node-a. Spreading the replicas is the remedy, so the
spreading rules follow kube-scheduler's formulas exactly.

Filters, in kube-scheduler's plugin order; a node failing one is not tried on the next:

- ``spec.nodeName`` bypasses the scheduler (as in Kubernetes), but the node must exist, and the pod must
  still pass the checks the kubelet repeats on admission (nodeSelector, node affinity, room); spread and
  inter-pod affinity do not apply to it, exactly as in Kubernetes;
- ``nodeSelector``: every key/value must be among the node's labels, where every node implicitly carries
  ``kubernetes.io/hostname=<node name>`` as a kubelet-registered node does;
- ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution``: at least one of the
  ``nodeSelectorTerms`` matches (all of a term's ``matchExpressions``, with In, NotIn, Exists,
  DoesNotExist, Gt, Lt, and ``matchFields`` on ``metadata.name``; an empty term matches nothing);
- capacity: a node holds at most ``addressing.MAX_PODS_PER_NODE`` pods (its /24 pod CIDR);
- ``topologySpreadConstraints`` with ``whenUnsatisfiable: DoNotSchedule`` (PodTopologySpread). Eligible
  nodes carry every such constraint's ``topologyKey`` and (``nodeAffinityPolicy: Honor``, the default)
  pass the pod's nodeSelector and node affinity; their label values are the domains. A node lacking the
  key is rejected. Per constraint, ``skew = matching pods in the candidate's domain + (1 if the pod
  matches its own labelSelector, else 0) - the minimum of matching pods over all eligible domains``
  (that minimum is 0 while there are fewer eligible domains than ``minDomains``), and the node passes if
  ``skew <= maxSkew``. Matching pods are those in the pod's namespace that the ``labelSelector`` (plus
  the pod's own values of ``matchLabelKeys``) selects, whoever owns them; no labelSelector selects none;
- required ``podAffinity``: for every term, the node's domain holds a pod that matches all the terms,
  except for the first pod of a group that matches its own terms when no such pod exists anywhere;
- required ``podAntiAffinity``: for no term does the node's domain hold a pod matching it;
- the symmetric check: no existing pod's required anti-affinity term matches the pod within the
  node's domain.

When the first filters (nodeSelector, node affinity, capacity) leave no node, the manifests are wrong and
``Unschedulable`` names the field to fix. When only the later ones do, the manifests are fine and
Kubernetes would leave the pod Pending: ``Pending`` carries kube-scheduler's message, e.g. ``0/2 nodes are
available: 2 node(s) didn't match pod anti-affinity rules.``

Scores, compared in this order (lower is better), then node order: preferred node affinity (sum of the
weights of matching terms); ``ScheduleAnyway`` spread constraints (kube-scheduler's raw score: matching
pods in the node's domain times ``log(domains + 2)``, plus ``maxSkew - 1``; nodes lacking a key come
last); preferred inter-pod (anti-)affinity (the weights of matching pods in the node's domain, attraction
minus repulsion, including existing pods' terms towards this pod and their required affinity at weight
1); fewest pods on the node. kube-scheduler instead normalises each plugin's score to 0-100 and sums them
with weights, and its default resource-balancing scores stand where the lab counts pods; comparing in
order keeps every explicit preference ahead of mere balance and the answer the same on every run.

Taints (TaintToleration; checked after the node's labels and room, so that a selector matching only
tainted nodes leaves the pod Pending, as in Kubernetes, rather than reading as a mistake): a node's
``NoSchedule`` and ``NoExecute`` taints keep off every pod that does not tolerate them (a toleration
matches a taint's key, with ``Exists`` or an ``Equal`` value, and its effect, or every effect when it
names none; an empty key with ``Exists`` tolerates everything); ``PreferNoSchedule`` taints only
score, ahead of the other scores. A pod that names its node skips this filter (kube-scheduler never
sees it), as in Kubernetes. Under ``nodeTaintsPolicy: Honor`` a spread constraint counts only nodes
whose taints the pod tolerates.

Replicas are placed one at a time, each seeing the pods placed before it, so 4 replicas on 3 nodes land
2, 1, 1 in node order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lab.kube import addressing
from lab.kube.model import Node, Pod, Taint

HOSTNAME_LABEL = "kubernetes.io/hostname"
OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"
# Deprecated since 1.14 but still set by every kubelet (initialNode), and still selected on by older charts
# and demos (sock-shop's beta.kubernetes.io/os: linux).
BETA_OS_LABEL = "beta.kubernetes.io/os"
BETA_ARCH_LABEL = "beta.kubernetes.io/arch"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")
NODE_NAME_FIELD = "metadata.name"  # the one field nodeSelectorTerms[].matchFields may name

LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
NODE_OPERATORS = (*LABEL_OPERATORS, "Gt", "Lt")
FIELD_OPERATORS = ("In", "NotIn")
DO_NOT_SCHEDULE = "DoNotSchedule"
SCHEDULE_ANYWAY = "ScheduleAnyway"
WHEN_UNSATISFIABLE = (DO_NOT_SCHEDULE, SCHEDULE_ANYWAY)
INCLUSION_POLICIES = ("Honor", "Ignore")
WEIGHT_RANGE = (1, 100)  # preferred terms' weight
HARD_POD_AFFINITY_WEIGHT = 1  # kube-scheduler's default for existing pods' required affinity in scoring

# kube-scheduler's reasons for rejecting a node, word for word, so a Pending pod reads like `kubectl
# describe pod` shows it.
REASON_NODE_AFFINITY = "node(s) didn't match Node's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"
REASON_SPREAD = "node(s) didn't match pod topology spread constraints"
REASON_SPREAD_LABEL = REASON_SPREAD + " (missing required label)"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
REASON_TAINT = "node(s) had untolerated taint {{{key}: {value}}}"

INTEGER = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt accepts: Gt and Lt compare these


# --- the rules a pod carries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a label selector or a node selector term."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist, and for nodes also Gt | Lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator in ("Gt", "Lt") and present and INTEGER.fullmatch(labels[self.key]):
            have, bound = int(labels[self.key]), int(self.values[0])
            return have > bound if self.operator == "Gt" else have < bound
        return False


@dataclass(frozen=True)
class LabelSelector:
    """``matchLabels`` and ``matchExpressions``, all of which must hold; an empty selector selects all."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        wanted = self.match_labels.items()
        return all(key in labels and labels[key] == value for key, value in wanted) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


def selects(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """A missing selector (``labelSelector`` left out) selects nothing, as the API's nil selector."""
    return selector is not None and selector.matches(labels)


@dataclass(frozen=True)
class NodeSelectorTerm:
    """One ``nodeSelectorTerms`` entry: all its requirements hold; an empty term matches no node."""

    match_expressions: tuple[Requirement, ...] = ()
    match_fields: tuple[Requirement, ...] = ()

    def matches(self, node: Node) -> bool:
        if not self.match_expressions and not self.match_fields:
            return False
        labels, fields = node_labels(node), {NODE_NAME_FIELD: node.name}
        return all(r.matches(labels) for r in self.match_expressions) and all(
            r.matches(fields) for r in self.match_fields
        )


@dataclass(frozen=True)
class PreferredNodeTerm:
    weight: int
    preference: NodeSelectorTerm


@dataclass(frozen=True)
class NodeAffinity:
    """``required``: at least one term must match (no terms: no requirement); ``preferred``: scored."""

    required: tuple[NodeSelectorTerm, ...] = ()
    preferred: tuple[PreferredNodeTerm, ...] = ()

    def admits(self, node: Node) -> bool:
        return not self.required or any(term.matches(node) for term in self.required)


@dataclass(frozen=True)
class PodAffinityTerm:
    """Pods in ``namespaces`` (None: every namespace) that ``selector`` selects, per ``topology_key`` domain.

    ``namespaces`` is resolved when the manifest is read: left out, it is the namespace of the pod that
    carries the term.
    """

    selector: LabelSelector | None
    topology_key: str
    namespaces: frozenset[str] | None

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        in_scope = self.namespaces is None or namespace in self.namespaces
        return in_scope and selects(self.selector, labels)


@dataclass(frozen=True)
class WeightedPodAffinityTerm:
    weight: int
    term: PodAffinityTerm


@dataclass(frozen=True)
class PodAffinity:
    """``podAffinity`` or ``podAntiAffinity``: required terms filter, preferred ones score."""

    required: tuple[PodAffinityTerm, ...] = ()
    preferred: tuple[WeightedPodAffinityTerm, ...] = ()


@dataclass(frozen=True)
class SpreadConstraint:
    """One ``topologySpreadConstraints`` entry."""

    max_skew: int
    topology_key: str
    when_unsatisfiable: str  # DoNotSchedule (a filter) | ScheduleAnyway (a score)
    selector: LabelSelector | None = None
    min_domains: int | None = None
    node_affinity_policy: str = "Honor"  # Honor: only nodes the pod's nodeSelector/affinity allow count
    match_label_keys: tuple[str, ...] = ()
    node_taints_policy: str = "Ignore"  # Honor: only nodes whose taints the pod tolerates count

    def selector_for(self, labels: Mapping[str, str]) -> LabelSelector | None:
        """The selector plus the pod's own values of ``matchLabelKeys``, as the API server merges them."""
        extra = {key: labels[key] for key in self.match_label_keys if key in labels}
        if self.selector is None or not extra:
            return self.selector
        return replace(self.selector, match_labels={**self.selector.match_labels, **extra})


@dataclass(frozen=True)
class Toleration:
    """One ``tolerations`` entry; an empty key with ``Exists`` tolerates every taint."""

    key: str = ""
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


def untolerated(node: Node, tolerations: Sequence[Toleration], effects: Sequence[str]) -> list[Taint]:
    """The node's taints with one of ``effects`` that no toleration tolerates."""
    return [t for t in node.taints if t.effect in effects and not any(tol.tolerates(t) for tol in tolerations)]


@dataclass(frozen=True)
class PodSpec:
    """The parts of a pod that constrain where it may run."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    node_affinity: NodeAffinity = field(default_factory=NodeAffinity)
    pod_affinity: PodAffinity = field(default_factory=PodAffinity)
    pod_anti_affinity: PodAffinity = field(default_factory=PodAffinity)
    topology_spread: tuple[SpreadConstraint, ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    def spread(self, when: str) -> list[SpreadConstraint]:
        return [c for c in self.topology_spread if c.when_unsatisfiable == when]


# --- what the scheduler sees --------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The cluster as the scheduler sees it while placing one pod (kube-scheduler's snapshot and cycle state).

    ``specs`` holds the rules the placed pods were scheduled with, by pod name (a pod missing there has
    none); ``feasible`` is set for the scorers: the nodes that passed every filter. ``memo`` computes a
    per-pod value once (kube-scheduler's PreFilter/PreScore state) instead of once per node.
    """

    nodes: Sequence[Node]
    pods: Sequence[Pod]
    specs: Mapping[str, PodSpec] = field(default_factory=dict)
    feasible: Sequence[Node] = ()
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def pods_on(self, node: Node) -> int:
        """Pods placed on ``node``, counted once per placement rather than once per node."""
        counts = self.memo("pods per node", lambda: Counter(pod.node for pod in self.pods))
        return counts.get(node.name, 0)

    def labels_of(self, node_name: str) -> Mapping[str, str]:
        """The scheduler's labels of the node a placed pod runs on ({} if it is not among ``nodes``)."""
        by_name = self.memo("labels", lambda: {node.name: node_labels(node) for node in self.nodes})
        return by_name.get(node_name, {})


class Unschedulable(Exception):
    """No node can take the pod because of a mistake in the manifests. ``field`` is relative to the pod
    spec (``nodeName``, ``nodeSelector``, ``affinity.nodeAffinity...``, or empty when no single field is to
    blame) so the caller can prefix ``spec.`` or ``spec.template.spec.`` and name the manifest object."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field} {problem}: {fix}".strip())


class Pending(Exception):
    """No node passes, for reasons Kubernetes answers by leaving the pod Pending (spread, pod affinity).

    ``reasons`` counts the nodes rejected for each reason; ``str()`` is kube-scheduler's message.
    """

    def __init__(self, node_count: int, reasons: Mapping[str, int]) -> None:
        self.node_count = node_count
        self.reasons = dict(reasons)
        histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in self.reasons.items()))
        super().__init__(f"0/{node_count} nodes are available: {histogram}.")


@dataclass(frozen=True)
class Filter:
    """A yes/no rule, as a kube-scheduler filter plugin.

    ``check`` returns None when the node may run the pod, else kube-scheduler's reason for rejecting it.
    ``explain`` is set for rules whose failure on every node is a mistake in the manifests: it says why,
    given the nodes that reached the rule, as (field, problem, fix) for ``Unschedulable``; rules without
    it leave the pod ``Pending``. ``admission`` rules are repeated by the kubelet, so they also hold for
    pods that name their node.
    """

    check: Callable[[Node, PodSpec, Snapshot], str | None]
    explain: Callable[[PodSpec, Sequence[Node]], tuple[str, str, str]] | None = None
    admission: bool = False


# Lower is better; place() compares the scores of all scorers in order, then node order.
Scorer = Callable[[Node, PodSpec, Snapshot], float]


def kubelet_labels(name: str) -> dict[str, str]:
    """The labels every kubelet registers its Node with (the lab's nodes are linux/amd64 machines)."""
    return {HOSTNAME_LABEL: name, OS_LABEL: "linux", ARCH_LABEL: "amd64", BETA_OS_LABEL: "linux",
            BETA_ARCH_LABEL: "amd64"}


def node_labels(node: Node) -> dict[str, str]:
    """The labels the scheduler sees: the ones every kubelet sets, then the Node's own."""
    return {**kubelet_labels(node.name), **node.labels}


def pods_on(node: Node, pods: Sequence[Pod]) -> int:
    return sum(1 for pod in pods if pod.node == node.name)


def _matches_node_selector(node: Node, spec: PodSpec) -> bool:
    labels = node_labels(node)
    return all(key in labels and labels[key] == value for key, value in spec.node_selector.items())


def fits_node_selection(node: Node, spec: PodSpec) -> bool:
    """nodeSelector and required node affinity: kube-scheduler's NodeAffinity filter."""
    return _matches_node_selector(node, spec) and spec.node_affinity.admits(node)


# --- filters: the node's own labels, taints and room -----------------------------------------------


def _check_taints(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    taints = untolerated(node, spec.tolerations, ("NoSchedule", "NoExecute"))
    return REASON_TAINT.format(key=taints[0].key, value=taints[0].value) if taints else None


def _check_selector(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    return None if _matches_node_selector(node, spec) else REASON_NODE_AFFINITY


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


def _check_node_affinity(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    return None if spec.node_affinity.admits(node) else REASON_NODE_AFFINITY


def _explain_node_affinity(spec: PodSpec, nodes: Sequence[Node]) -> tuple[str, str, str]:
    field = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    if spec.node_name:
        return (
            field,
            f'does not match Node "{spec.node_name}" named in nodeName',
            "label that Node accordingly, or drop nodeName or the node affinity",
        )
    names = ", ".join(node.name for node in nodes)
    scope = f"no Node the nodeSelector allows ({names})" if spec.node_selector else "no Node"
    return (field, f"matches {scope}", "label a Node to match one of the nodeSelectorTerms, or change them")


def _check_room(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    return None if snapshot.pods_on(node) < addressing.MAX_PODS_PER_NODE else REASON_TOO_MANY_PODS


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


# --- filter: topology spread ---------------------------------------------------------------------------


def spread_counts(
    constraint: SpreadConstraint, spec: PodSpec, snapshot: Snapshot, keys: frozenset[str]
) -> dict[str, int]:
    """Matching pods per eligible domain (value of ``constraint.topology_key``), zero counts included.

    Eligible nodes carry every key in ``keys`` (all the pod's constraints of the same kind) and, under
    ``nodeAffinityPolicy: Honor``, pass the pod's nodeSelector and required node affinity.
    """
    selector = constraint.selector_for(spec.labels)
    counts: dict[str, int] = {}
    eligible: dict[str, str] = {}  # node name -> domain
    for node in snapshot.nodes:
        labels = node_labels(node)
        if not keys <= labels.keys():
            continue
        if constraint.node_affinity_policy == "Honor" and not fits_node_selection(node, spec):
            continue
        if constraint.node_taints_policy == "Honor" and untolerated(node, spec.tolerations, TAINT_EFFECTS):
            continue
        eligible[node.name] = labels[constraint.topology_key]
        counts.setdefault(labels[constraint.topology_key], 0)
    for pod in snapshot.pods:
        domain = eligible.get(pod.node)
        if domain is not None and pod.namespace == spec.namespace and selects(selector, pod.labels):
            counts[domain] += 1
    return counts


def skew(constraint: SpreadConstraint, spec: PodSpec, domain: str, counts: Mapping[str, int]) -> int:
    """kube-scheduler's skew if the pod joins ``domain``: matching pods there, plus one if the pod matches
    its own selector, minus the global minimum over eligible domains (0 below ``minDomains`` domains)."""
    minimum = min(counts.values(), default=0)
    if constraint.min_domains is not None and len(counts) < constraint.min_domains:
        minimum = 0
    self_match = 1 if selects(constraint.selector_for(spec.labels), spec.labels) else 0
    return counts.get(domain, 0) + self_match - minimum


def _check_spread(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    hard = spec.spread(DO_NOT_SCHEDULE)
    keys = frozenset(c.topology_key for c in hard)
    labels = node_labels(node)
    for index, constraint in enumerate(hard):
        if constraint.topology_key not in labels:
            return REASON_SPREAD_LABEL
        counts = snapshot.memo(("spread", index), lambda c=constraint: spread_counts(c, spec, snapshot, keys))
        if skew(constraint, spec, labels[constraint.topology_key], counts) > constraint.max_skew:
            return REASON_SPREAD
    return None


# --- filters: inter-pod affinity -----------------------------------------------------------------------


def _domain_counts(snapshot: Snapshot, terms: Sequence[PodAffinityTerm], *, all_terms: bool) -> Counter:
    """(topologyKey, value) -> placed pods matching a term (``all_terms``: pods matching every term)."""
    counts: Counter = Counter()
    for pod in snapshot.pods:
        labels = snapshot.labels_of(pod.node)
        matched = [term for term in terms if term.matches(pod.namespace, pod.labels)]
        if all_terms and len(matched) < len(terms):
            continue
        for term in matched:
            if term.topology_key in labels:
                counts[term.topology_key, labels[term.topology_key]] += 1
    return counts


def _check_pod_affinity(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    terms = spec.pod_affinity.required
    if not terms:
        return None
    labels = node_labels(node)
    if any(term.topology_key not in labels for term in terms):
        return REASON_AFFINITY
    counts = snapshot.memo("affinity", lambda: _domain_counts(snapshot, terms, all_terms=True))
    if all(counts[term.topology_key, labels[term.topology_key]] > 0 for term in terms):
        return None
    # The first pod of a group with affinity to itself would otherwise wait forever.
    first = not counts and all(term.matches(spec.namespace, spec.labels) for term in terms)
    return None if first else REASON_AFFINITY


def _check_pod_anti_affinity(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    terms = spec.pod_anti_affinity.required
    if not terms:
        return None
    labels = node_labels(node)
    counts = snapshot.memo("anti-affinity", lambda: _domain_counts(snapshot, terms, all_terms=False))
    for term in terms:
        if term.topology_key in labels and counts[term.topology_key, labels[term.topology_key]] > 0:
            return REASON_ANTI_AFFINITY
    return None


def _existing_anti_affinity(spec: PodSpec, snapshot: Snapshot) -> Counter:
    """(topologyKey, value) -> placed pods whose required anti-affinity terms match ``spec``'s pod."""
    counts: Counter = Counter()
    for pod in snapshot.pods:
        theirs = snapshot.specs.get(pod.name)
        if theirs is None:
            continue
        labels = snapshot.labels_of(pod.node)
        for term in theirs.pod_anti_affinity.required:
            if term.topology_key in labels and term.matches(spec.namespace, spec.labels):
                counts[term.topology_key, labels[term.topology_key]] += 1
    return counts


def _check_existing_anti_affinity(node: Node, spec: PodSpec, snapshot: Snapshot) -> str | None:
    counts = snapshot.memo("existing-anti-affinity", lambda: _existing_anti_affinity(spec, snapshot))
    if any(counts[pair] > 0 for pair in node_labels(node).items()):
        return REASON_EXISTING_ANTI_AFFINITY
    return None


FILTERS: tuple[Filter, ...] = (
    Filter(_check_selector, _explain_selector, admission=True),
    Filter(_check_node_affinity, _explain_node_affinity, admission=True),
    Filter(_check_room, _explain_room, admission=True),
    Filter(_check_taints),
    Filter(_check_spread),
    Filter(_check_pod_affinity),
    Filter(_check_pod_anti_affinity),
    Filter(_check_existing_anti_affinity),
)


# --- scorers -------------------------------------------------------------------------------------------


def _node_preference(node: Node, spec: PodSpec, snapshot: Snapshot) -> float:
    return -sum(p.weight for p in spec.node_affinity.preferred if p.preference.matches(node))


def _spread_preference(node: Node, spec: PodSpec, snapshot: Snapshot) -> float:
    """kube-scheduler's raw PodTopologySpread score for ScheduleAnyway constraints."""
    soft = spec.spread(SCHEDULE_ANYWAY)
    if not soft:
        return 0.0
    keys = frozenset(c.topology_key for c in soft)
    labels = node_labels(node)
    if not keys <= labels.keys():
        return math.inf  # kube-scheduler scores such a node 0 of 100
    score = 0.0
    for index, constraint in enumerate(soft):
        counts = snapshot.memo(
            ("spread-score", index), lambda c=constraint: spread_counts(c, spec, snapshot, keys)
        )
        domains = snapshot.memo(
            ("spread-domains", index), lambda c=constraint: _scored_domains(c, snapshot, keys)
        )
        weight = math.log(domains + 2)  # smaller topologies are not watered down by bigger ones
        score += counts.get(labels[constraint.topology_key], 0) * weight + (constraint.max_skew - 1)
    return score


def _scored_domains(constraint: SpreadConstraint, snapshot: Snapshot, keys: frozenset[str]) -> int:
    """How many domains the feasible nodes that carry every key span."""
    labels = [node_labels(node) for node in snapshot.feasible]
    return len({each[constraint.topology_key] for each in labels if keys <= each.keys()})


def _inter_pod_scores(spec: PodSpec, snapshot: Snapshot) -> Counter:
    """(topologyKey, value) -> kube-scheduler's InterPodAffinity score, from every placed pod."""
    scores: Counter = Counter()

    def add(labels: Mapping[str, str], key: str, weight: int) -> None:
        if key in labels:
            scores[key, labels[key]] += weight

    for pod in snapshot.pods:
        labels = snapshot.labels_of(pod.node)
        for sign, affinity in ((1, spec.pod_affinity), (-1, spec.pod_anti_affinity)):
            for weighted in affinity.preferred:
                if weighted.term.matches(pod.namespace, pod.labels):
                    add(labels, weighted.term.topology_key, sign * weighted.weight)
        theirs = snapshot.specs.get(pod.name)
        if theirs is None:
            continue
        for term in theirs.pod_affinity.required:
            if term.matches(spec.namespace, spec.labels):
                add(labels, term.topology_key, HARD_POD_AFFINITY_WEIGHT)
        for sign, affinity in ((1, theirs.pod_affinity), (-1, theirs.pod_anti_affinity)):
            for weighted in affinity.preferred:
                if weighted.term.matches(spec.namespace, spec.labels):
                    add(labels, weighted.term.topology_key, sign * weighted.weight)
    return scores


def _pod_preference(node: Node, spec: PodSpec, snapshot: Snapshot) -> float:
    scores = snapshot.memo("inter-pod-score", lambda: _inter_pod_scores(spec, snapshot))
    labels = node_labels(node)
    return -sum(score for (key, value), score in scores.items() if labels.get(key) == value)


def _pod_count(node: Node, spec: PodSpec, snapshot: Snapshot) -> float:
    return snapshot.pods_on(node)


def _taint_preference(node: Node, spec: PodSpec, snapshot: Snapshot) -> float:
    """TaintToleration's score: fewer untolerated PreferNoSchedule taints is better."""
    return len(untolerated(node, spec.tolerations, ("PreferNoSchedule",)))


SCORERS: tuple[Scorer, ...] = (_taint_preference, _node_preference, _spread_preference, _pod_preference, _pod_count)


# --- placement -----------------------------------------------------------------------------------------


def place(
    nodes: Sequence[Node],
    existing_pods: Sequence[Pod],
    pod_spec: PodSpec,
    *,
    placed_specs: Mapping[str, PodSpec] | None = None,
    filters: Sequence[Filter] = FILTERS,
    scorers: Sequence[Scorer] = SCORERS,
) -> str:
    """The name of the node ``pod_spec`` runs on, given the pods already placed (and, by pod name, the
    specs they were placed with, for the rules other pods impose); raises ``Unschedulable`` or ``Pending``."""
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
        filters = [rule for rule in filters if rule.admission]  # the scheduler never sees the pod
    snapshot = Snapshot(nodes, existing_pods, placed_specs or {})
    rejected: Counter = Counter()
    for rule in filters:
        verdicts = [(node, rule.check(node, pod_spec, snapshot)) for node in candidates]
        passed = [node for node, reason in verdicts if reason is None]
        if not passed and rule.explain is not None:
            raise Unschedulable(*rule.explain(pod_spec, candidates))
        rejected.update(reason for _, reason in verdicts if reason is not None)
        candidates = passed
        if not candidates:
            raise Pending(len(nodes), rejected)
    snapshot.feasible = candidates
    order = {node.name: position for position, node in enumerate(nodes)}

    def preference(node: Node) -> tuple[float, ...]:
        scores = tuple(score(node, pod_spec, snapshot) for score in scorers)
        return (*scores, order[node.name])

    return min(candidates, key=preference).name
