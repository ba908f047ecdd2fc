"""A Helm-style manifest set run as shipped (examples/helm-style: no Nodes, RBAC and ConfigMaps mixed in):
a DaemonSet behind a LoadBalancer Service (Local) and a StatefulSet behind a NodePort Service answer
real requests as a real cluster's would.

The lab makes 3 nodes; the DaemonSet controller puts one edge pod on each, so under Local every node
passes the load balancer's health check and serves from its own pod with the client's address intact;
the StatefulSet's pods store-cache-0/1 answer on the nodePort through every node, on a targetPort that
no container declares.
"""

from __future__ import annotations

import pytest

from lab.api import EXAMPLES
from lab.cloud.load_balancer import PROFILES
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure.experiment import probe_entry, probe_load_balancer
from lab.polling import wait_for

PROFILE = PROFILES["fast"]
REQUESTS = 120


@pytest.fixture(scope="module")
def lab():
    cluster = load_manifests([str(EXAMPLES / "helm-style")])
    with LabNetwork(cluster, lb_profile=PROFILE) as network:
        yield network


def edge_pods(lab) -> dict[str, str]:
    return {p.node: p.name for p in lab.cluster.pods if p.owner_kind == "DaemonSet"}


def test_the_set_runs_as_shipped(lab):
    assert [n.name for n in lab.cluster.nodes] == ["node-a", "node-b", "node-c"]
    assert sorted(edge_pods(lab)) == ["node-a", "node-b", "node-c"]  # one daemon pod per node
    cache = sorted(p.name for p in lab.cluster.pods if p.owner_kind == "StatefulSet")
    assert cache == ["store-cache-0", "store-cache-1"]
    assert len([p for p in lab.cluster.pods if p.owner == "store-api"]) == 2  # the HPA's minReplicas


def test_load_balancer_reaches_a_daemon_pod_on_every_node(lab):
    service = lab.cluster.service("store-edge", "store")
    key = "store/store-edge"
    nodes = {"node-a", "node-b", "node-c"}
    wait_for(lambda: set(lab.lb_health()["services"].get(key, {}).get("healthy", [])) == nodes
             and set(lab.lb_rotation().get(key, [])) == nodes,
             timeout=PROFILE.removal_bound_s * 4, what="every node in the load balancer's rotation",
             last=lambda: (lab.lb_health()["services"], lab.lb_rotation()))
    result = probe_load_balancer(lab, service, service.ports[0], REQUESTS, lab.client_ttl())
    assert (result["ok"], result["failed"]) == (REQUESTS, 0), result["errors"]
    assert set(result["servedBy"]) == set(edge_pods(lab).values())
    assert set(result["nodesServed"]) == nodes
    assert set(result["sourcesSeen"]) == {addr.CLIENT_IP}  # Local keeps the client's address
    assert set(result["nodeHops"]) == {"1"}  # each node served from its own pod


@pytest.mark.parametrize("node", ["node-a", "node-b", "node-c"])
def test_statefulset_answers_on_its_node_port_through_every_node(lab, node):
    service = lab.cluster.service("store-cache", "store")
    port = service.ports[0]
    assert (port.node_port, port.target_port) == (30379, 6379)
    result = probe_entry(lab, service, port, node, REQUESTS // 2, lab.client_ttl())
    assert (result["ok"], result["failed"]) == (REQUESTS // 2, 0), result["errors"]
    assert set(result["servedBy"]) == {"store-cache-0", "store-cache-1"}
