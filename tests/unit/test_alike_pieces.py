"""A Service port compiled for one node and copied for the others (controllers.services._ALIKE) is
what compiling it afresh for each node gives, flow for flow and group for group, on states that random
changes make (policies, types, DSR on and off, pods coming and going)."""

from __future__ import annotations

import random

import pytest

from controllers import services
from controllers.state import ProxyState
from lab.emulation.proxy_state import build_proxy_state
from lab.kube.model import Cluster, Node
from tests.unit.test_incremental import random_change


def compare_every_node(state: ProxyState) -> int:
    """Compile every Service port on every node both ways; how many went the copying way."""
    copied = 0
    for sp in state.service_ports:
        for node in state.nodes:
            copied += services._ALIKE.get(sp) is not None
            got = services.compile_service_port(node, sp, state.nodes)
            fresh = services._compile_service_port(node, sp, state.nodes)
            assert got.flows == fresh.flows, (sp.key, node.name)
            assert got.groups == fresh.groups, (sp.key, node.name)
            assert got.dump() == fresh.dump()
    return copied


@pytest.mark.parametrize("seed", range(3))
def test_copied_pieces_equal_fresh_ones_on_every_node(seed):
    rng = random.Random(seed)
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)], [], [])
    serial, copied = [0], 0
    for step in range(60):
        random_change(rng, cluster, serial)
        copied += compare_every_node(build_proxy_state(cluster, step + 1))
    assert copied > 0  # the copying way was taken, so the comparison meant something


def test_only_services_alike_on_every_node_are_copied():
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2)], [], [])
    rng, serial = random.Random(7), [0]
    for _ in range(30):
        random_change(rng, cluster, serial)
    state = build_proxy_state(cluster, 1)
    for sp in state.service_ports:
        services.compile_service_port(state.nodes[0], sp, state.nodes)
        alike = services._ALIKE.get(sp) is not None
        assert alike == (sp.policy == "Cluster" and sp.forwarding != "dsr" and bool(services.usable(sp.endpoints)))


def test_topology_hints_keep_each_node_compiling_its_own():
    """PreferClose: node-a's group holds zone-a's endpoint, node-b's zone-b's: nothing is copied."""
    from tests.unit.test_topology_hints import two_zone_cluster

    state = build_proxy_state(two_zone_cluster(traffic_distribution="PreferClose"), 1)
    assert compare_every_node(state) == 0
    [sp] = state.service_ports
    assert services._ALIKE.get(sp) is None
