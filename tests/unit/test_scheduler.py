"""lab.scheduler: nodeName, nodeSelector, capacity, then least-loaded in node order."""

from __future__ import annotations

import pytest

from lab import addressing
from lab.model import Node, Pod
from lab.scheduler import PodSpec, Unschedulable, node_labels, place

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


def test_every_node_has_its_hostname_label():
    assert node_labels(NODES[0]) == {"kubernetes.io/hostname": "node-a"}
    spec = PodSpec("web", node_selector={"kubernetes.io/hostname": "node-c"})
    assert place(NODES, [], spec) == "node-c"


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
