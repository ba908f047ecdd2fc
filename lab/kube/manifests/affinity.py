"""Scheduling rules of a pod spec: label selectors, node and pod (anti-)affinity, topology spread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lab.errors import Origin, shown
from lab.kube import names
from lab.kube.manifests.fields import (
    choices,
    entry_of,
    integer,
    label_key,
    mapping,
    quote_advice,
    sequence,
    string,
    string_map,
    type_name,
    warn,
)
from lab.kube.scheduler import (
    DO_NOT_SCHEDULE,
    FIELD_OPERATORS,
    HOSTNAME_LABEL,
    INCLUSION_POLICIES,
    INTEGER,
    LABEL_OPERATORS,
    NODE_NAME_FIELD,
    NODE_OPERATORS,
    WEIGHT_RANGE,
    WHEN_UNSATISFIABLE,
    LabelSelector,
    NodeAffinity,
    NodeSelectorTerm,
    PodAffinity,
    PodAffinityTerm,
    PreferredNodeTerm,
    Requirement,
    SpreadConstraint,
    WeightedPodAffinityTerm,
)

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"  # affinity rules that filter
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"  # affinity rules that score


# --- scheduling rules: selectors, affinity, topology spread --------------------------------------------
#
# Validated as the API server validates them (one line naming the field), then handed to lab.kube.scheduler.
# A labelSelector that is left out selects no pods, as the API's nil selector does; the lab warns, since
# the rule then never does anything.


def _requirement(raw: Any, origin: Origin, field: str, operators: Sequence[str]) -> Requirement:
    """A matchExpressions entry of a label selector (In, NotIn, Exists, DoesNotExist) or of a node
    selector term (also Gt and Lt, with one integer value)."""
    entry = entry_of(raw, origin, field, "key:, operator:, values:")
    key = label_key(entry, "key", origin, f"{field}.key", "app")
    operator = string(entry, "operator", origin, f"{field}.operator")
    if operator is None:
        raise origin.error(f"{field}.operator", "is required", f"use {choices(operators)}")
    if operator not in operators:
        raise origin.error(
            f"{field}.operator", f'{shown(operator)} is not an operator', f"use {choices(operators)}"
        )
    values = sequence(entry, "values", origin, f"{field}.values")
    for number, value in enumerate(values):
        if not isinstance(value, str):
            raise origin.error(
                f"{field}.values[{number}]", f"is {type_name(value)}, not a string", quote_advice(None, value)
            )
    if operator in ("In", "NotIn"):
        if not values:
            raise origin.error(f"{field}.values", f"is required for operator {operator}", "list the values")
        for number, value in enumerate(values):
            problem = names.label_value_problem(value)
            if problem:
                raise origin.error(f"{field}.values[{number}]", f'{shown(value)} {problem}', "fix the value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise origin.error(f"{field}.values", f"must be empty for operator {operator}", "remove values")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not INTEGER.fullmatch(values[0])):
        raise origin.error(
            f"{field}.values", f"must be a single integer for operator {operator}", 'write e.g. values: ["2"]'
        )
    return Requirement(key, operator, tuple(values))


def label_selector(raw: dict, origin: Origin, field: str) -> LabelSelector:
    expressions = sequence(raw, "matchExpressions", origin, f"{field}.matchExpressions")
    return LabelSelector(
        string_map(raw, "matchLabels", origin, f"{field}.matchLabels"),
        tuple(
            _requirement(entry, origin, f"{field}.matchExpressions[{number}]", LABEL_OPERATORS)
            for number, entry in enumerate(expressions)
        ),
    )


def _optional_selector(parent: dict, key: str, origin: Origin, field: str) -> LabelSelector | None:
    if parent.get(key) is None:
        return None
    return label_selector(mapping(parent, key, origin, field), origin, field)


def _weight(entry: dict, origin: Origin, field: str) -> int:
    low, high = WEIGHT_RANGE
    weight = integer(entry, "weight", origin, f"{field}.weight")
    if weight is None:
        raise origin.error(f"{field}.weight", "is required", f"add weight: <{low}-{high}>")
    if not low <= weight <= high:
        raise origin.error(f"{field}.weight", f"{weight} is outside {low}-{high}", f"use {low} to {high}")
    return weight


def _field_requirement(raw: Any, origin: Origin, field: str) -> Requirement:
    """A matchFields entry: the API allows only metadata.name, In or NotIn, and one value."""
    entry = entry_of(raw, origin, field, f"key: {NODE_NAME_FIELD}, operator: In, values: [<node>]")
    key = string(entry, "key", origin, f"{field}.key")
    if key != NODE_NAME_FIELD:
        raise origin.error(f"{field}.key", f'{shown(key)} is not a Node field selector', f"use {NODE_NAME_FIELD}")
    operator = string(entry, "operator", origin, f"{field}.operator")
    if operator not in FIELD_OPERATORS:
        raise origin.error(
            f"{field}.operator",
            f'{shown(operator)} is not an operator for fields',
            f"use {choices(FIELD_OPERATORS)}",
        )
    values = sequence(entry, "values", origin, f"{field}.values")
    if len(values) != 1 or not isinstance(values[0], str):
        raise origin.error(f"{field}.values", "must be exactly one Node name", "write values: [<node>]")
    return Requirement(key, operator, (values[0],))


def _node_selector_term(raw: Any, origin: Origin, field: str) -> NodeSelectorTerm:
    term = entry_of(raw, origin, field, "matchExpressions: or matchFields:")
    expressions = sequence(term, "matchExpressions", origin, f"{field}.matchExpressions")
    fields = sequence(term, "matchFields", origin, f"{field}.matchFields")
    return NodeSelectorTerm(
        tuple(
            _requirement(entry, origin, f"{field}.matchExpressions[{number}]", NODE_OPERATORS)
            for number, entry in enumerate(expressions)
        ),
        tuple(
            _field_requirement(entry, origin, f"{field}.matchFields[{number}]")
            for number, entry in enumerate(fields)
        ),
    )


def node_affinity(affinity: dict, origin: Origin, field: str) -> NodeAffinity:
    raw = mapping(affinity, "nodeAffinity", origin, field)
    required: tuple[NodeSelectorTerm, ...] = ()
    if raw.get(REQUIRED) is not None:
        r_field = f"{field}.{REQUIRED}"
        selector = mapping(raw, REQUIRED, origin, r_field)
        terms = sequence(selector, "nodeSelectorTerms", origin, f"{r_field}.nodeSelectorTerms", required=True)
        required = tuple(
            _node_selector_term(term, origin, f"{r_field}.nodeSelectorTerms[{number}]")
            for number, term in enumerate(terms)
        )
    preferred: list[PreferredNodeTerm] = []
    for number, raw_entry in enumerate(sequence(raw, PREFERRED, origin, f"{field}.{PREFERRED}")):
        p_field = f"{field}.{PREFERRED}[{number}]"
        entry = entry_of(raw_entry, origin, p_field, "weight:, preference:")
        preference = mapping(entry, "preference", origin, f"{p_field}.preference", required=True)
        term = _node_selector_term(preference, origin, f"{p_field}.preference")
        preferred.append(PreferredNodeTerm(_weight(entry, origin, p_field), term))
    return NodeAffinity(required, tuple(preferred))


def _namespaces(term: dict, namespace: str, origin: Origin, field: str) -> frozenset[str] | None:
    """The namespaces a pod affinity term looks in: those listed, else the pod's own; None for all."""
    listed: list[str] = []
    for number, value in enumerate(sequence(term, "namespaces", origin, f"{field}.namespaces")):
        n_field = f"{field}.namespaces[{number}]"
        if not isinstance(value, str):
            raise origin.error(n_field, f"is {type_name(value)}, not a string", quote_advice(None, value))
        names.validate_namespace(value, origin, n_field)
        listed.append(value)
    if term.get("namespaceSelector") is None:
        return frozenset(listed or [namespace])
    if mapping(term, "namespaceSelector", origin, f"{field}.namespaceSelector"):
        raise origin.error(
            f"{field}.namespaceSelector",
            "selects Namespaces by their labels, but the lab has no Namespace objects",
            "list them in namespaces instead, or write namespaceSelector: {} for every namespace",
        )
    return None  # namespaceSelector: {} selects every namespace


def _pod_affinity_term(
    raw: Any, namespace: str, origin: Origin, field: str, warnings: list[str]
) -> PodAffinityTerm:
    term = entry_of(raw, origin, field, "labelSelector:, topologyKey:")
    topology_key = label_key(term, "topologyKey", origin, f"{field}.topologyKey", HOSTNAME_LABEL)
    selector = _optional_selector(term, "labelSelector", origin, f"{field}.labelSelector")
    scope = _namespaces(term, namespace, origin, field)
    for key in ("matchLabelKeys", "mismatchLabelKeys"):
        if term.get(key):
            raise origin.error(
                f"{field}.{key}", "is not modelled by the lab", "put those labels in labelSelector"
            )
    if selector is None:
        warn(warnings, origin, field, "has no labelSelector, so it selects no pods", "add labelSelector")
    return PodAffinityTerm(selector, topology_key, scope)


def pod_affinity(
    affinity: dict, key: str, namespace: str, origin: Origin, prefix: str, warnings: list[str]
) -> PodAffinity:
    """podAffinity or podAntiAffinity: required terms, and preferred ones with a weight."""
    field = f"{prefix}.affinity.{key}"
    raw = mapping(affinity, key, origin, field)
    required = tuple(
        _pod_affinity_term(entry, namespace, origin, f"{field}.{REQUIRED}[{number}]", warnings)
        for number, entry in enumerate(sequence(raw, REQUIRED, origin, f"{field}.{REQUIRED}"))
    )
    preferred: list[WeightedPodAffinityTerm] = []
    for number, raw_entry in enumerate(sequence(raw, PREFERRED, origin, f"{field}.{PREFERRED}")):
        p_field = f"{field}.{PREFERRED}[{number}]"
        entry = entry_of(raw_entry, origin, p_field, "weight:, podAffinityTerm:")
        term = mapping(entry, "podAffinityTerm", origin, f"{p_field}.podAffinityTerm", required=True)
        parsed = _pod_affinity_term(term, namespace, origin, f"{p_field}.podAffinityTerm", warnings)
        preferred.append(WeightedPodAffinityTerm(_weight(entry, origin, p_field), parsed))
    return PodAffinity(required, tuple(preferred))


def _inclusion_policy(entry: dict, key: str, default: str, origin: Origin, field: str) -> str:
    value = string(entry, key, origin, f"{field}.{key}") or default
    if value not in INCLUSION_POLICIES:
        raise origin.error(
            f"{field}.{key}", f'{shown(value)} is not a policy', f"use {choices(INCLUSION_POLICIES)}"
        )
    return value


def _match_label_keys(
    entry: dict, selector: LabelSelector | None, origin: Origin, field: str
) -> tuple[str, ...]:
    keys: list[str] = []
    for number, key in enumerate(sequence(entry, "matchLabelKeys", origin, f"{field}.matchLabelKeys")):
        k_field = f"{field}.matchLabelKeys[{number}]"
        if not isinstance(key, str) or names.label_key_problem(key):
            raise origin.error(
                k_field, f'{shown(key)} is not a label key', "name a pod label, e.g. pod-template-hash"
            )
        if selector is None:
            raise origin.error(
                f"{field}.labelSelector", "is required when matchLabelKeys is set", "add labelSelector"
            )
        if key in selector.match_labels or any(r.key == key for r in selector.match_expressions):
            raise origin.error(k_field, f'{shown(key)} is also in labelSelector', "name it in only one of them")
        keys.append(key)
    return tuple(keys)


def _spread_constraint(raw: Any, origin: Origin, field: str, warnings: list[str]) -> SpreadConstraint:
    entry = entry_of(raw, origin, field, "maxSkew:, topologyKey:, whenUnsatisfiable:, labelSelector:")
    max_skew = integer(entry, "maxSkew", origin, f"{field}.maxSkew")
    if max_skew is None:
        raise origin.error(
            f"{field}.maxSkew", "is required", "add maxSkew: 1 (the most two domains may differ by)"
        )
    if max_skew < 1:
        raise origin.error(
            f"{field}.maxSkew", f"{max_skew} must be greater than zero", "use maxSkew: 1 or more"
        )
    topology_key = label_key(entry, "topologyKey", origin, f"{field}.topologyKey", HOSTNAME_LABEL)
    when = string(entry, "whenUnsatisfiable", origin, f"{field}.whenUnsatisfiable")
    if when is None:
        raise origin.error(
            f"{field}.whenUnsatisfiable",
            "is required",
            "add whenUnsatisfiable: DoNotSchedule (a rule) or ScheduleAnyway (a preference)",
        )
    if when not in WHEN_UNSATISFIABLE:
        raise origin.error(
            f"{field}.whenUnsatisfiable", f'{shown(when)} is not supported', f"use {choices(WHEN_UNSATISFIABLE)}"
        )
    selector = _optional_selector(entry, "labelSelector", origin, f"{field}.labelSelector")
    min_domains = integer(entry, "minDomains", origin, f"{field}.minDomains")
    if min_domains is not None and min_domains < 1:
        raise origin.error(f"{field}.minDomains", f"{min_domains} must be greater than zero", "use 1 or more")
    if min_domains is not None and when != DO_NOT_SCHEDULE:
        raise origin.error(
            f"{field}.minDomains",
            f"may only be set with whenUnsatisfiable {DO_NOT_SCHEDULE}, not {when}",
            f"remove minDomains or use {DO_NOT_SCHEDULE}",
        )
    affinity_policy = _inclusion_policy(entry, "nodeAffinityPolicy", "Honor", origin, field)
    _inclusion_policy(entry, "nodeTaintsPolicy", "Ignore", origin, field)  # the lab's Nodes have no taints
    keys = _match_label_keys(entry, selector, origin, field)
    if selector is None:
        warn(
            warnings,
            origin,
            field,
            "has no labelSelector, so it counts no pods and never constrains placement",
            "add labelSelector.matchLabels with the pods' labels",
        )
    return SpreadConstraint(max_skew, topology_key, when, selector, min_domains, affinity_policy, keys)


def spread_constraints(
    spec: dict, origin: Origin, field: str, warnings: list[str]
) -> tuple[SpreadConstraint, ...]:
    constraints: list[SpreadConstraint] = []
    for number, raw in enumerate(sequence(spec, "topologySpreadConstraints", origin, field)):
        constraint = _spread_constraint(raw, origin, f"{field}[{number}]", warnings)
        pair = (constraint.topology_key, constraint.when_unsatisfiable)
        for other, taken in enumerate(constraints):
            if (taken.topology_key, taken.when_unsatisfiable) == pair:
                raise origin.error(
                    f"{field}[{number}]",
                    f"repeats topologyKey {pair[0]} with whenUnsatisfiable {pair[1]} of {field}[{other}]",
                    "merge the two constraints into one",
                )
        constraints.append(constraint)
    return tuple(constraints)
