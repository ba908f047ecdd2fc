"""lab.kube.scheduler: nodeName, nodeSelector, node affinity, capacity, topology spread and inter-pod
(anti-)affinity, as kube-scheduler filters them; then preferences and least-loaded in node order."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.kube import addressing
from lab.kube.model import Node, Pod, Taint
from lab.kube.scheduler import (
    DO_NOT_SCHEDULE,
    HOSTNAME_LABEL,
    NODE_NAME_FIELD,
    REASON_ANTI_AFFINITY,
    SCHEDULE_ANYWAY,
    LabelSelector,
    NodeAffinity,
    NodeSelectorTerm,
    Pending,
    PodAffinity,
    PodAffinityTerm,
    PodSpec,
    PreferredNodeTerm,
    Requirement,
    Snapshot,
    SpreadConstraint,
    Toleration,
    Unschedulable,
    WeightedPodAffinityTerm,
    node_labels,
    place,
    skew,
    spread_counts,
)

NODES = [Node("node-a", 1), Node("node-b", 2, {"disk": "ssd"}), Node("node-c", 3, {"disk": "ssd"})]


def placed(*node_names: str) -> list[Pod]:
    return [Pod(name=f"p{i}", node=name) for i, name in enumerate(node_names)]


def spread(count: int, spec: PodSpec, nodes=NODES) -> list[str]:
    """Place ``count`` replicas one by one, each seeing the ones before it."""
    pods: list[Pod] = []
    for i in range(count):
        pods.append(Pod(name=f"r{i}", node=place(nodes, pods, spec)))
    return [pod.node for pod in pods]


def test_least_loaded_first_ties_in_node_order():
    assert spread(4, PodSpec("web")) == ["node-a", "node-b", "node-c", "node-a"]


def test_existing_pods_count_whatever_their_owner():
    assert place(NODES, placed("node-a", "node-b"), PodSpec("web")) == "node-c"


def test_node_name_is_honoured_even_when_loaded():
    assert place(NODES, placed("node-c", "node-c"), PodSpec("web", node_name="node-c")) == "node-c"


def test_unknown_node_name():
    with pytest.raises(Unschedulable) as caught:
        place(NODES, [], PodSpec("web", node_name="node-z"))
    assert caught.value.field == "nodeName"
    assert "node-a, node-b, node-c" in caught.value.problem


def test_node_selector_filters():
    assert spread(3, PodSpec("web", node_selector={"disk": "ssd"})) == ["node-b", "node-c", "node-b"]


def test_every_node_has_the_labels_kubelet_sets():
    assert node_labels(NODES[0]) == {
        "kubernetes.io/hostname": "node-a", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    spec = PodSpec("web", node_selector={"kubernetes.io/hostname": "node-c"})
    assert place(NODES, [], spec) == "node-c"
    helm = PodSpec("web", node_selector={"kubernetes.io/os": "linux"})
    assert place(NODES, [], helm) == "node-a"


TAINTED = [Node("node-a", 1, taints=(Taint("dedicated", "db", "NoSchedule"),)), Node("node-b", 2),
           Node("node-c", 3, taints=(Taint("spot", "", "PreferNoSchedule"),))]


def test_a_taint_keeps_off_pods_that_do_not_tolerate_it():
    spread = [place(TAINTED, [], PodSpec(f"web-{i}")) for i in range(1)]
    assert spread == ["node-b"]  # node-a is tainted, node-c only prefers not
    db = PodSpec("db", tolerations=(Toleration("dedicated", "Equal", "db", "NoSchedule"),),
                 node_selector={"kubernetes.io/hostname": "node-a"})
    assert place(TAINTED, [], db) == "node-a"
    wrong_value = replace(db, tolerations=(Toleration("dedicated", "Equal", "web"),))
    with pytest.raises(Pending, match=r"1 node\(s\) had untolerated taint \{dedicated: db\}"):
        place(TAINTED, [], wrong_value)


def test_tolerations_match_as_kubernetes_matches_them():
    taint = Taint("dedicated", "db", "NoExecute")
    assert Toleration("dedicated", "Exists").tolerates(taint)
    assert Toleration("", "Exists").tolerates(taint)  # empty key + Exists: everything
    assert not Toleration("", "Equal").tolerates(taint)
    assert not Toleration("dedicated", "Exists", effect="NoSchedule").tolerates(taint)
    assert Toleration("dedicated", "Equal", "db", "NoExecute").tolerates(taint)


def test_prefer_no_schedule_only_scores():
    only_c = [TAINTED[2]]
    assert place(only_c, [], PodSpec("web")) == "node-c"
    pods = []
    for i in range(3):
        node = place(TAINTED[1:], pods, PodSpec(f"web-{i}"))
        pods.append(Pod(f"web-{i}", node))
    assert [p.node for p in pods] == ["node-b", "node-b", "node-b"]  # the taint outweighs balance


def test_spread_with_node_taints_policy_honor_skips_tainted_nodes():
    nodes = [Node("node-a", 1, taints=(Taint("gpu", "", "NoSchedule"),)), Node("node-b", 2), Node("node-c", 3)]
    honour = SpreadConstraint(1, "kubernetes.io/hostname", "DoNotSchedule", LabelSelector({"app": "web"}),
                              node_taints_policy="Honor")
    pods: list[Pod] = []
    for i in range(4):
        spec = PodSpec(f"web-{i}", labels={"app": "web"}, topology_spread=(honour,))
        pods.append(Pod(f"web-{i}", place(nodes, pods, spec), labels={"app": "web"}))
    assert sorted(p.node for p in pods) == ["node-b", "node-b", "node-c", "node-c"]


def test_selector_matching_no_node():
    with pytest.raises(Unschedulable) as caught:
        place(NODES, [], PodSpec("web", node_selector={"disk": "nvme"}))
    assert (caught.value.field, caught.value.problem) == ("nodeSelector", "{disk=nvme} matches no Node")


def test_selector_must_match_the_named_node():
    with pytest.raises(Unschedulable) as caught:
        place(NODES, [], PodSpec("web", node_name="node-a", node_selector={"disk": "ssd"}))
    assert caught.value.field == "nodeSelector"
    assert '"node-a"' in caught.value.problem


def test_full_nodes_are_skipped_and_all_full_is_an_error():
    full_a = placed(*["node-a"] * addressing.MAX_PODS_PER_NODE)
    two = NODES[:2]
    assert place(two, full_a + placed("node-b"), PodSpec("web")) == "node-b"
    with pytest.raises(Unschedulable) as caught:
        place(NODES[:1], full_a, PodSpec("web"))
    assert caught.value.field == ""
    with pytest.raises(Unschedulable) as caught:
        place(NODES[:1], full_a, PodSpec("web", node_name="node-a"))
    assert caught.value.field == "nodeName"


def test_no_nodes():
    with pytest.raises(Unschedulable):
        place([], [], PodSpec("web"))


def test_scorers_are_an_extension_point():
    def prefer_ssd(node, spec, pods):
        return 0 if node.labels.get("disk") == "ssd" else 1

    assert place(NODES, [], PodSpec("web"), scorers=(prefer_ssd,)) == "node-b"


# --- topology spread -------------------------------------------------------------------------------------

TWO = [Node("node-a", 1), Node("node-b", 2)]
MY_APP = {"app": "my-app"}


def hostname_spread(max_skew: int = 1, when: str = DO_NOT_SCHEDULE, **kwargs) -> SpreadConstraint:
    return SpreadConstraint(max_skew, HOSTNAME_LABEL, when, LabelSelector(MY_APP), **kwargs)


def app_pods(*node_names: str, labels=MY_APP, namespace: str = "default", prefix: str = "old") -> list[Pod]:
    return [
        Pod(name=f"{prefix}{i}", node=name, labels=dict(labels), namespace=namespace)
        for i, name in enumerate(node_names)
    ]


def replicas(count: int, spec: PodSpec, nodes=TWO, existing=()) -> list[str]:
    """Place ``count`` replicas of ``spec`` one by one after ``existing``; Pending ones read "Pending"."""
    pods, specs, where = list(existing), {}, []
    for i in range(count):
        replica = replace(spec, name=f"{spec.name}-{i}")
        try:
            node = place(nodes, pods, replica, placed_specs=specs)
        except Pending:
            where.append("Pending")
            continue
        pods.append(Pod(name=replica.name, node=node, namespace=spec.namespace, labels=dict(spec.labels)))
        specs[replica.name] = replica
        where.append(node)
    return where


def test_skew_is_kube_schedulers_formula():
    constraint = hostname_spread()
    counts = {"node-a": 3, "node-b": 1}
    pod = PodSpec("new", labels=MY_APP)
    assert skew(constraint, pod, "node-a", counts) == 3 + 1 - 1
    assert skew(constraint, pod, "node-b", counts) == 1 + 1 - 1
    # A pod its own selector does not match adds nothing to the domain it joins.
    assert skew(constraint, PodSpec("other", labels={"app": "db"}), "node-b", counts) == 1 + 0 - 1
    # Fewer eligible domains than minDomains: the global minimum counts as 0.
    assert skew(hostname_spread(min_domains=3), pod, "node-b", counts) == 1 + 1 - 0
    assert skew(hostname_spread(min_domains=2), pod, "node-b", counts) == 1 + 1 - 1


def test_spread_counts_only_matching_pods_of_the_namespace_on_eligible_nodes():
    nodes = [Node("node-a", 1, {"zone": "z1"}), Node("node-b", 2, {"zone": "z1"}), Node("node-c", 3)]
    pods = (
        app_pods("node-a", "node-a", "node-b", "node-c")
        + app_pods("node-b", "node-b", labels={"app": "db"}, prefix="db")  # another Deployment's
        + app_pods("node-a", namespace="team", prefix="team")
    )
    snapshot = Snapshot(nodes, pods)
    zone = SpreadConstraint(1, "zone", DO_NOT_SCHEDULE, LabelSelector(MY_APP))
    pod = PodSpec("new", labels=MY_APP)
    # node-c has no zone label: not a domain, and its pod is not counted.
    assert spread_counts(zone, pod, snapshot, frozenset({"zone"})) == {"z1": 3}
    hostname = hostname_spread()
    assert spread_counts(hostname, pod, snapshot, frozenset({HOSTNAME_LABEL})) == {
        "node-a": 2,
        "node-b": 1,
        "node-c": 1,
    }
    # nodeAffinityPolicy Honor (default): nodes the pod's nodeSelector excludes are no domain at all.
    picky = PodSpec("new", labels=MY_APP, node_selector={"zone": "z1"})
    assert spread_counts(hostname, picky, snapshot, frozenset({HOSTNAME_LABEL})) == {"node-a": 2, "node-b": 1}
    ignore = hostname_spread(node_affinity_policy="Ignore")
    assert "node-c" in spread_counts(ignore, picky, snapshot, frozenset({HOSTNAME_LABEL}))


def test_do_not_schedule_spreads_four_replicas_two_and_two():
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(hostname_spread(),))
    assert replicas(4, spec) == ["node-a", "node-b", "node-a", "node-b"]


def test_do_not_schedule_evens_out_a_skewed_start():
    # The seed's skew: 3 my-app pods on node-a, 1 on node-b. A new Deployment with the same labels and
    # maxSkew 1 must put both its replicas on node-b: node-a would make the skew 3, then 2.
    spec = PodSpec("my-app-v2", labels=MY_APP, topology_spread=(hostname_spread(),))
    skewed = app_pods("node-a", "node-a", "node-a", "node-b")
    assert replicas(2, spec, existing=skewed) == ["node-b", "node-b"]
    # 4 replicas: node-b up to 3 and 3, node-a on the tie (node order), then node-b: node-a would be 2 ahead.
    assert replicas(4, spec, existing=skewed) == [
        "node-b",
        "node-b",
        "node-a",
        "node-b",
    ]


def test_pods_the_selector_does_not_match_do_not_count_towards_skew():
    # node-b runs 3 pods of another app: the least-loaded rule alone would put all 4 replicas on node-a
    # (0, 1, 2 pods against 3, then a tie in node order); the spread constraint, which ignores the db
    # pods, stops node-a at one more than node-b.
    db = app_pods("node-b", "node-b", "node-b", labels={"app": "db"}, prefix="db")
    plain = PodSpec("my-app", labels=MY_APP)
    assert replicas(4, plain, existing=db) == ["node-a"] * 4
    spread = replace(plain, topology_spread=(hostname_spread(),))
    assert replicas(4, spread, existing=db) == ["node-a", "node-b", "node-a", "node-b"]


def test_max_skew_two_allows_two_more():
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(hostname_spread(2),))
    db = app_pods(*["node-b"] * 5, labels={"app": "db"}, prefix="db")
    assert replicas(3, spec, existing=db) == ["node-a", "node-a", "node-b"]


def test_do_not_schedule_rejects_nodes_without_the_topology_key():
    nodes = [Node("node-a", 1), Node("node-b", 2, {"zone": "z1"}), Node("node-c", 3, {"zone": "z2"})]
    zone = SpreadConstraint(1, "zone", DO_NOT_SCHEDULE, LabelSelector(MY_APP))
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(zone,))
    assert replicas(4, spec, nodes=nodes) == ["node-b", "node-c", "node-b", "node-c"]
    with pytest.raises(Pending) as caught:
        place(nodes[:1], [], spec)
    assert str(caught.value) == (
        "0/1 nodes are available: "
        "1 node(s) didn't match pod topology spread constraints (missing required label)."
    )


def test_do_not_schedule_can_leave_a_pod_pending():
    # node-b only for this pod (nodeSelector), and node-b is already 1 ahead: skew would be 2 > 1. With
    # nodeAffinityPolicy Honor node-a is no domain, so the minimum is node-b's own count and it fits.
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(hostname_spread(),))
    pinned = replace(spec, node_selector={HOSTNAME_LABEL: "node-b"})
    assert place(TWO, app_pods("node-b"), pinned) == "node-b"
    ignore = replace(pinned, topology_spread=(hostname_spread(node_affinity_policy="Ignore"),))
    with pytest.raises(Pending) as caught:
        place(TWO, app_pods("node-b"), ignore)
    assert str(caught.value) == (
        "0/2 nodes are available: 1 node(s) didn't match Node's node affinity/selector, "
        "1 node(s) didn't match pod topology spread constraints."
    )


def test_min_domains_holds_back_until_enough_domains_exist():
    # Two nodes but minDomains 3: the global minimum counts as 0, so no node may hold 2 with maxSkew 1.
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(hostname_spread(min_domains=3),))
    assert replicas(3, spec) == ["node-a", "node-b", "Pending"]


def test_match_label_keys_count_only_the_pods_of_the_same_revision():
    # matchLabelKeys [pod-template-hash]: the old skewed pods (another hash) no longer count.
    old = app_pods("node-a", "node-a", "node-a", labels={**MY_APP, "pod-template-hash": "old"})
    constraint = hostname_spread(match_label_keys=("pod-template-hash",))
    spec = PodSpec("my-app", labels={**MY_APP, "pod-template-hash": "new"}, topology_spread=(constraint,))
    assert replicas(2, spec, existing=old) == ["node-b", "node-a"]  # least loaded first, then spread
    counting_all = replace(spec, topology_spread=(hostname_spread(),))
    assert replicas(2, counting_all, existing=old) == ["node-b", "node-b"]


def test_schedule_anyway_prefers_the_domain_with_fewer_matching_pods():
    # node-a: 2 my-app pods; node-b: 5 pods of another app. Least-loaded alone picks node-a; the soft
    # constraint counts only my-app pods and prefers node-b, and it never rejects a node.
    existing = app_pods("node-a", "node-a") + app_pods(*["node-b"] * 5, labels={"app": "db"}, prefix="db")
    plain = PodSpec("my-app", labels=MY_APP)
    assert place(TWO, existing, plain) == "node-a"
    soft = replace(plain, topology_spread=(hostname_spread(when=SCHEDULE_ANYWAY),))
    assert replicas(4, soft, existing=existing) == ["node-b", "node-b", "node-a", "node-b"]


def test_schedule_anyway_puts_nodes_without_the_key_last_but_still_uses_them():
    nodes = [Node("node-a", 1), Node("node-b", 2, {"zone": "z1"})]
    zone = SpreadConstraint(1, "zone", SCHEDULE_ANYWAY, LabelSelector(MY_APP))
    spec = PodSpec("my-app", labels=MY_APP, topology_spread=(zone,))
    assert replicas(3, spec, nodes=nodes) == ["node-b", "node-b", "node-b"]
    only_a = replace(spec, node_selector={HOSTNAME_LABEL: "node-a"})
    assert place(nodes, [], only_a) == "node-a"


def test_pods_pinned_with_node_name_bypass_spread_and_anti_affinity():
    spec = PodSpec(
        "my-app",
        labels=MY_APP,
        node_name="node-a",
        topology_spread=(hostname_spread(),),
        pod_anti_affinity=PodAffinity(required=(host_term(),)),
    )
    assert place(TWO, app_pods("node-a", "node-a", "node-a"), spec) == "node-a"


# --- inter-pod affinity ---------------------------------------------------------------------------------


def host_term(labels=MY_APP, namespaces=frozenset({"default"})) -> PodAffinityTerm:
    return PodAffinityTerm(LabelSelector(labels), HOSTNAME_LABEL, namespaces)


ANTI = PodSpec("my-app", labels=MY_APP, pod_anti_affinity=PodAffinity(required=(host_term(),)))


def test_required_anti_affinity_one_per_node():
    assert replicas(2, ANTI) == ["node-a", "node-b"]


def test_required_anti_affinity_leaves_the_third_replica_pending():
    assert replicas(3, ANTI) == ["node-a", "node-b", "Pending"]
    with pytest.raises(Pending) as caught:
        place(TWO, app_pods("node-a", "node-b"), ANTI)
    assert str(caught.value) == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    assert caught.value.reasons == {REASON_ANTI_AFFINITY: 2}


def test_anti_affinity_looks_in_the_terms_namespaces_only():
    other_namespace = app_pods("node-a", namespace="team")
    assert place(TWO, other_namespace + app_pods("node-b", labels={"app": "db"}), ANTI) == "node-a"
    everywhere = replace(ANTI, pod_anti_affinity=PodAffinity(required=(host_term(namespaces=None),)))
    assert place(TWO, other_namespace, everywhere) == "node-b"


def test_anti_affinity_over_a_wider_topology_key():
    nodes = [Node("node-a", 1, {"zone": "z1"}), Node("node-b", 2, {"zone": "z1"}), Node("node-c", 3)]
    zone_term = PodAffinityTerm(LabelSelector(MY_APP), "zone", frozenset({"default"}))
    spec = replace(ANTI, pod_anti_affinity=PodAffinity(required=(zone_term,)))
    # node-b shares node-a's zone; node-c has no zone at all, so the term cannot reject it.
    assert place(nodes, app_pods("node-a"), spec) == "node-c"
    assert place(nodes, app_pods("node-a", "node-c"), spec) == "node-c"


def test_existing_pods_anti_affinity_keeps_matching_pods_away():
    guard = replace(ANTI, name="guard")
    existing = [Pod(name="guard", node="node-a", labels=dict(MY_APP))]
    newcomer = PodSpec("plain", labels=MY_APP)
    assert place(TWO, existing, newcomer, placed_specs={"guard": guard}) == "node-b"
    with pytest.raises(Pending) as caught:
        place(TWO[:1], existing, newcomer, placed_specs={"guard": guard})
    assert "1 node(s) didn't satisfy existing pods anti-affinity rules." in str(caught.value)
    # A pod the guard's term does not select is not kept away.
    db = PodSpec("db", labels={"app": "db"})
    assert place(TWO[:1], existing, db, placed_specs={"guard": guard}) == "node-a"


def test_required_pod_affinity_follows_the_matching_pods():
    cache = PodSpec(
        "web", labels={"app": "web"}, pod_affinity=PodAffinity(required=(host_term({"app": "cache"}),))
    )
    assert place(TWO, app_pods("node-b", labels={"app": "cache"}), cache) == "node-b"
    with pytest.raises(Pending) as caught:
        place(TWO, [], cache)  # no cache pod anywhere, and web is no cache pod itself
    assert str(caught.value) == "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."
    # The first pod of a group with affinity to itself may go anywhere; the rest follow it.
    self_attracted = PodAffinity(required=(host_term({"app": "web"}),))
    together = PodSpec("web", labels={"app": "web"}, pod_affinity=self_attracted)
    assert replicas(3, together) == ["node-a", "node-a", "node-a"]


def test_preferred_anti_affinity_prefers_fewer_matching_pods_by_weight():
    existing = app_pods("node-a") + app_pods(*["node-b"] * 3, labels={"app": "db"}, prefix="db")
    soft = replace(
        ANTI, pod_anti_affinity=PodAffinity(preferred=(WeightedPodAffinityTerm(50, host_term()),))
    )
    assert place(TWO, existing, PodSpec("plain", labels=MY_APP)) == "node-a"  # least loaded
    assert place(TWO, existing, soft) == "node-b"
    assert replicas(3, soft) == ["node-a", "node-b", "node-a"]  # a preference never leaves a pod Pending
    # Attraction and repulsion add up by weight: node-a holds a my-app pod (-50) and a db pod (+weight).
    together = app_pods("node-a") + app_pods("node-a", labels={"app": "db"}, prefix="db")
    for weight, expected in ((80, "node-a"), (20, "node-b")):
        attraction = WeightedPodAffinityTerm(weight, host_term({"app": "db"}))
        mixed = replace(soft, pod_affinity=PodAffinity(preferred=(attraction,)))
        assert place(TWO, together, mixed) == expected


# --- node affinity --------------------------------------------------------------------------------------

ZONED = [
    Node("node-a", 1, {"zone": "z1", "cores": "4"}),
    Node("node-b", 2, {"zone": "z2", "cores": "16"}),
    Node("node-c", 3, {"cores": "many"}),
]


def required(*terms: NodeSelectorTerm) -> PodSpec:
    return PodSpec("web", node_affinity=NodeAffinity(required=terms))


def expr(key: str, operator: str, *values: str) -> NodeSelectorTerm:
    return NodeSelectorTerm((Requirement(key, operator, values),))


@pytest.mark.parametrize(
    ("term", "allowed"),
    [
        (expr("zone", "In", "z1", "z2"), ["node-a", "node-b"]),
        (expr("zone", "NotIn", "z1"), ["node-b", "node-c"]),  # NotIn matches nodes without the label
        (expr("zone", "Exists"), ["node-a", "node-b"]),
        (expr("zone", "DoesNotExist"), ["node-c"]),
        (expr("cores", "Gt", "8"), ["node-b"]),  # "many" is no integer: no match
        (expr("cores", "Lt", "8"), ["node-a"]),
        (NodeSelectorTerm(match_fields=(Requirement(NODE_NAME_FIELD, "In", ("node-c",)),)), ["node-c"]),
        (
            NodeSelectorTerm(match_fields=(Requirement(NODE_NAME_FIELD, "NotIn", ("node-c",)),)),
            ["node-a", "node-b"],
        ),
        (
            NodeSelectorTerm((Requirement("zone", "Exists"), Requirement("cores", "Gt", ("8",)))),  # AND
            ["node-b"],
        ),
    ],
)
def test_node_affinity_operators(term, allowed):
    assert [node.name for node in ZONED if term.matches(node)] == allowed
    assert place(ZONED, [], required(term)) == allowed[0]


def test_node_affinity_terms_are_alternatives_and_an_empty_term_matches_nothing():
    assert not NodeSelectorTerm().matches(ZONED[0])
    spec = required(expr("zone", "In", "z9"), expr("zone", "DoesNotExist"))
    assert place(ZONED, [], spec) == "node-c"


def test_node_affinity_matching_no_node_is_a_manifest_error():
    with pytest.raises(Unschedulable) as caught:
        place(ZONED, [], required(expr("zone", "In", "z9")))
    assert caught.value.field == "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    assert caught.value.problem == "matches no Node"
    with pytest.raises(Unschedulable) as caught:
        place(ZONED, [], replace(required(expr("zone", "In", "z1")), node_name="node-b"))
    assert 'does not match Node "node-b"' in caught.value.problem


def test_preferred_node_affinity_adds_up_weights():
    prefer = NodeAffinity(
        preferred=(
            PreferredNodeTerm(10, expr("zone", "Exists")),
            PreferredNodeTerm(30, expr("cores", "Gt", "8")),
        )
    )
    assert place(ZONED, [], PodSpec("web", node_affinity=prefer)) == "node-b"
    assert place(ZONED, placed("node-b", "node-b"), PodSpec("web", node_affinity=prefer)) == "node-b"


def test_pending_message_counts_every_reason_like_kube_scheduler():
    # node-c: nodeSelector; node-a and node-b: anti-affinity. Reasons are sorted as kube-scheduler does.
    nodes = [Node("node-a", 1, {"pool": "web"}), Node("node-b", 2, {"pool": "web"}), Node("node-c", 3)]
    spec = replace(ANTI, node_selector={"pool": "web"})
    with pytest.raises(Pending) as caught:
        place(nodes, app_pods("node-a", "node-b"), spec)
    assert str(caught.value) == (
        "0/3 nodes are available: 1 node(s) didn't match Node's node affinity/selector, "
        "2 node(s) didn't match pod anti-affinity rules."
    )
