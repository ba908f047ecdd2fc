"""Bytes between nodes read from the underlay's port counters (at once) equal the INTERNODE flow
counters (after Open vSwitch's revalidators), on the same traffic, and no ARP crosses the underlay.

Cluster: node-a runs web-a1, node-b runs web-b1, node-c no pod; Service web (LoadBalancer, Cluster):
so a request through node-c always crosses to another node, through node-a sometimes, through the load
balancer it may enter any node; a pod and a node also talk across nodes directly.
"""

from __future__ import annotations

import subprocess

import pytest

from controllers.pipeline import COOKIE_ARP, U_CLASSIFY, U_INTERNODE
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.experiment import probe_entry, probe_load_balancer
from tests.integration.conftest import cluster_from_yaml

MANIFESTS = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Node
metadata: {name: node-c}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a1, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b1, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("counters"), MANIFESTS)
    with LabNetwork(cluster) as network:
        # Dynamic ARP entries would go stale within a window and be probed again: with these timers any
        # neighbour resolved by ARP shows up in the counters below, so the test sees a missing static entry.
        for host in [addr.CLIENT_NAME, addr.LB_NAME] + [n.name for n in cluster.nodes]:
            network.run_in(host, ["sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time_ms=200",
                                  "net.ipv4.neigh.eth0.delay_first_probe_time=1"], timeout=5)
        yield network


def flow_packets(bridge: str, table: int, cookie: int) -> int:
    subprocess.run(["ovs-appctl", "revalidator/wait"], capture_output=True, timeout=10)
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"table={table},cookie={cookie}/-1"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(f.split("=", 1)[1]) for f in out.replace(",", " ").split() if f.startswith("n_packets="))


def both_readings(lab, traffic) -> tuple[int, int]:
    """(port-counter bytes, flow-counter bytes) between nodes during ``traffic()``."""
    ports0, flows0 = lab.inter_node_bytes(), lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    traffic()
    ports1, flows1 = lab.inter_node_bytes(), lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    return ports1 - ports0, flows1 - flows0


def test_port_counters_equal_flow_counters_on_the_same_traffic(lab):
    svc = lab.cluster.service("web")
    sp = svc.ports[0]
    ttl = lab.client_ttl()
    arp_before = flow_packets(addr.underlay_bridge(), U_CLASSIFY, COOKIE_ARP)
    windows = {
        "nodePort via node-c (always forwarded)": lambda: probe_entry(lab, svc, sp, "node-c", 200, ttl),
        "nodePort via node-a (half forwarded)": lambda: probe_entry(lab, svc, sp, "node-a", 200, ttl),
        "load balancer": lambda: probe_load_balancer(lab, svc, sp, 200, ttl),
        "pod to pod across nodes": lambda: lab.run_in(
            "web-b1", ["curl", "-s", "-m", "3", f"http://{lab.cluster.pod('web-a1').ip}:8080/"], timeout=10),
        "node to node": lambda: lab.run_in(
            "node-a", ["ping", "-c", "5", "-i", "0.3", addr.node_ip(lab.cluster.node("node-c").index)], timeout=10),
    }
    seen = {}
    for name, traffic in windows.items():
        seen[name] = both_readings(lab, traffic)
    assert all(ports == flows for ports, flows in seen.values()), seen
    assert seen["nodePort via node-c (always forwarded)"][0] > 200 * 500, seen  # the windows did carry traffic
    assert seen["node to node"][0] > 0, seen
    assert flow_packets(addr.underlay_bridge(), U_CLASSIFY, COOKIE_ARP) == arp_before, "ARP crossed the underlay"


def test_every_underlay_neighbour_is_static(lab):
    for host in [addr.CLIENT_NAME, addr.LB_NAME, "node-b"]:
        out = lab.run_in(host, ["ip", "neigh", "show", "dev", "eth0"], timeout=5).stdout
        underlay = [line for line in out.splitlines() if line.startswith(("172.18.0.", "203.0.113."))]
        assert underlay and all("PERMANENT" in line for line in underlay), (host, out)


def test_kernel_interface_counters_equal_open_vswitch_port_counters(lab):
    """link_bytes reads the kernel's counters of each bridge-side interface (lab.emulation.counters): they
    must be the numbers Open vSwitch reports for the same ports, after real traffic through every link."""
    svc = lab.cluster.service("web")
    probe_entry(lab, svc, svc.ports[0], "node-c", 100, lab.client_ttl())
    ports = {(addr.underlay_bridge(), addr.UNDERLAY_CLIENT_PORT): addr.client_intf()}
    for node in lab.cluster.nodes:
        ports[(addr.underlay_bridge(), addr.underlay_node_port(node.index))] = addr.node_uplink_intf(node.index)[1]
        ports[(addr.node_bridge(node.index), addr.NODE_UPLINK_PORT)] = addr.node_uplink_intf(node.index)[0]
        for pod in lab.cluster.pods_on(node.name):
            ports[(addr.node_bridge(node.index), addr.pod_ofport(pod.ip))] = addr.pod_intf(pod.serial)
    bridges = {bridge for bridge, _ in ports}
    by_ovs = {bridge: lab.port_bytes(bridge) for bridge in bridges}  # nothing moves between the two reads
    by_kernel = lab.interface_bytes(list(ports.values()))
    assert {name: by_ovs[b][p] for (b, p), name in ports.items()} == by_kernel
    assert by_kernel[addr.node_uplink_intf(lab.cluster.node("node-c").index)[1]] > 100 * 500, by_kernel
