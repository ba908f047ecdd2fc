"""A large change travels over several connections to each bridge (``controllers.lanes``), and the
switches end up holding exactly the compiled program, which real requests then follow; a small
change right after goes on the controller's own connection, in order.

Cluster: node-a runs web-1, node-b runs web-2; 400 NodePort Services over both, one more added later;
then an install large enough to go in parts (``controllers.incremental.PART_PIECES``), the first parts
sent while the rest is compiled, over lanes kept open (``controllers.lanes.Stream``).
"""

from __future__ import annotations

import pytest

from bench.clusters import expected_counts
from bench.labtools import bridge_counts
from controllers.incremental import PART_PIECES
from controllers.lanes import BULK_MIN
from controllers.pipeline import compile_state
from lab.cloud.network import LabNetwork
from lab.emulation.proxy_state import build_proxy_state
from lab.kube.model import Service, ServicePort
from lab.measure.experiment import probe_entry
from tests.integration.conftest import cluster_from_yaml, web_manifests
from topologies.cluster import bridge_names

MANIFESTS = web_manifests({"web-1": "node-a", "web-2": "node-b"}, nodes=("node-a", "node-b"))
SERVICES = 400
FIRST_NODE_PORT = 30100


def bulk_services(count: int, first: int = 0) -> list[Service]:
    return [Service(f"bulk-{i}", [ServicePort(80, FIRST_NODE_PORT + i, 8080)], selector={"app": "web"})
            for i in range(first, first + count)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("lanes"), MANIFESTS)
    with LabNetwork(cluster) as network:
        yield network


def lane_lines(lab) -> list[str]:
    with open(lab.controller.log_path) as f:
        return [line for line in f if " lanes" in line and "changes for generation" in line]


def held_equals_compiled(lab) -> None:
    programs = compile_state(build_proxy_state(lab.cluster, lab.generation))
    assert bridge_counts(bridge_names(lab.cluster)) == expected_counts(programs)


def served(lab, service: str, node: str, requests: int = 40) -> dict:
    svc = lab.cluster.service(service)
    return probe_entry(lab, svc, svc.ports[0], node, requests, lab.client_ttl())["servedBy"]


def test_a_large_install_goes_in_lanes_and_the_switches_hold_the_program(lab):
    before = len(lane_lines(lab))
    lab.cluster.services = bulk_services(SERVICES)
    lab.publish()
    sent = lane_lines(lab)[before:]
    # both node bridges got theirs in lanes (the underlay has no LoadBalancer, so little to send)
    assert len(sent) == 2, sent
    assert all(int(line.split(": ")[-1].split()[0]) >= BULK_MIN for line in sent), sent
    held_equals_compiled(lab)
    for node in ("node-a", "node-b"):
        assert sum(served(lab, f"bulk-{SERVICES - 1}", node).values()) == 40


def test_a_small_change_after_it_is_applied_in_order(lab):
    before = len(lane_lines(lab))
    lab.cluster.services += bulk_services(1, first=SERVICES)
    lab.publish()
    assert len(lane_lines(lab)) == before  # one Service: the controller's own connection
    held_equals_compiled(lab)
    assert sum(served(lab, f"bulk-{SERVICES}", "node-a").values()) == 40


def test_removing_them_all_goes_in_lanes_and_leaves_the_base_program(lab):
    before = len(lane_lines(lab))
    lab.cluster.services = []
    lab.publish()
    assert len(lane_lines(lab)) == before + 2
    held_equals_compiled(lab)


def test_an_install_in_parts_leaves_the_switches_holding_the_program_and_every_part_serves(lab):
    count = 2 * PART_PIECES + 500  # three parts per node bridge
    before = len(lane_lines(lab))
    lab.cluster.services = bulk_services(count)
    lab.publish()
    sent = lane_lines(lab)[before:]
    assert len(sent) == 2 and all("in parts" in line for line in sent), sent
    held_equals_compiled(lab)
    for name in ("bulk-0", f"bulk-{PART_PIECES + 1}", f"bulk-{count - 1}"):  # first, second and last part
        assert sum(served(lab, name, "node-b").values()) == 40, name
    lab.cluster.services = []
    lab.publish()
    held_equals_compiled(lab)
