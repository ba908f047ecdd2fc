"""Zones with real packets: one switch per zone, PreferClose keeping clusterIP traffic in its zone and
falling back to every endpoint where the zone has none, and cross-zone bytes counted as they were sent.

::

                              npl-ul (core)
                  ┌──────────────┼──────────────┐
              npl-z1 zone-a   npl-z2 zone-b   npl-z3 zone-c
             node-a1  node-a2 node-b1 node-b2 node-c1 node-c2
             web-a1  client-a web-b1 client-b  (none) client-c

Service web (ClusterIP, ``trafficDistribution: PreferClose``) selects web-a1 and web-b1: zone-c has no
endpoint. Each zone's client pod sits on the other node of its zone, so an in-zone answer still crosses
between nodes (inside the zone) and the test sees both counters.
"""

from __future__ import annotations

import subprocess

import pytest

from controllers.pipeline import U_INTERNODE
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.experiment import probe_cluster_ip
from tests.integration.conftest import cluster_from_yaml
from topologies.zones import COOKIE_ZONE_LOCAL, zone_layout

ZONES = {"a": "zone-a", "b": "zone-b", "c": "zone-c"}
NODES = "".join(f"""
---
apiVersion: v1
kind: Node
metadata: {{name: node-{z}{i}, labels: {{topology.kubernetes.io/zone: {zone}}}}}
status: {{allocatable: {{cpu: "2"}}}}
""" for z, zone in ZONES.items() for i in (1, 2))
PODS = "".join(f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: nginx, ports: [{{containerPort: 8080}}]}}]}}
""" for name, app, node in [("web-a1", "web", "node-a1"), ("web-b1", "web", "node-b1"),
                             ("client-a", "client", "node-a2"), ("client-b", "client", "node-b2"),
                             ("client-c", "client", "node-c2")])
SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  trafficDistribution: PreferClose
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""
REQUESTS = 40


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("zones"), NODES + PODS + SERVICE)
    with LabNetwork(cluster) as network:
        yield network


def zone_local_bytes(lab) -> int:
    """Flow counters of the zone switches' node-to-node flows (the bytes between nodes that stay in a zone)."""
    return sum(cookie_bytes(zone.bridge, COOKIE_ZONE_LOCAL) for zone in zone_layout(lab.cluster))


def cookie_bytes(bridge: str, cookie: int) -> int:
    subprocess.run(["ovs-appctl", "revalidator/wait"], capture_output=True, timeout=10)
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"cookie={cookie}/-1"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(f.split("=", 1)[1]) for f in out.replace(",", " ").split() if f.startswith("n_bytes="))


def readings(lab) -> dict[str, int]:
    return {"crossPorts": lab.cross_zone_bytes(), "interPorts": lab.inter_node_bytes(),
            "crossFlows": lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE), "localFlows": zone_local_bytes(lab)}


def measured(lab, traffic) -> dict[str, int]:
    before = readings(lab)
    result = traffic()
    after = readings(lab)
    delta = {k: after[k] - before[k] for k in before}
    delta["result"] = result
    return delta


def from_client(lab, client: str):
    return probe_cluster_ip(lab, lab.cluster.service("web"), lab.cluster.service("web").ports[0], client, REQUESTS)


def test_the_underlay_has_one_switch_per_zone(lab):
    layout = zone_layout(lab.cluster)
    assert [(z.name, [n.name for n in z.nodes]) for z in layout] == [
        ("zone-a", ["node-a1", "node-a2"]), ("zone-b", ["node-b1", "node-b2"]), ("zone-c", ["node-c1", "node-c2"])]


@pytest.mark.parametrize("client,pod", [("client-a", "web-a1"), ("client-b", "web-b1")])
def test_prefer_close_keeps_clusterip_traffic_in_its_zone(lab, client, pod):
    seen = measured(lab, lambda: from_client(lab, client))
    result = seen["result"]
    assert result["ok"] == REQUESTS and result["servedBy"] == {pod: REQUESTS}, result
    assert seen["interPorts"] > REQUESTS * 300, seen  # the client's node is not the pod's: it crossed nodes
    assert seen["crossPorts"] == 0, seen  # ... but not zones
    assert seen["crossPorts"] == seen["crossFlows"] and seen["interPorts"] == seen["crossFlows"] + seen["localFlows"]


def test_a_zone_without_endpoints_falls_back_to_all_of_them(lab):
    seen = measured(lab, lambda: from_client(lab, "client-c"))
    result = seen["result"]
    assert result["ok"] == REQUESTS and set(result["servedBy"]) == {"web-a1", "web-b1"}, result
    assert seen["crossPorts"] > REQUESTS * 300, seen  # every answer came from another zone
    assert seen["crossPorts"] == seen["interPorts"], seen  # ... so every byte between nodes crossed
    assert seen["crossPorts"] == seen["crossFlows"] and seen["interPorts"] == seen["crossFlows"] + seen["localFlows"]


def test_cross_zone_bytes_count_what_was_sent_across(lab):
    size = 2_000_000
    web_a1 = lab.cluster.pod("web-a1").ip
    seen = measured(lab, lambda: lab.run_in("client-c", ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                                                         f"http://{web_a1}:8080/bulk?bytes={size}"], timeout=30))
    assert seen["result"].stdout.strip() == str(size), seen["result"]
    # The download and its headers (Ethernet, IP, TCP: ~4.5% at a 1448-byte MSS) plus the client's ACKs.
    assert size < seen["crossPorts"] < size * 1.12, seen
    assert seen["crossPorts"] == seen["crossFlows"] == seen["interPorts"], seen
