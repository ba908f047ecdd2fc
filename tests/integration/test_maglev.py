"""Maglev with real connections (checklist item 22 of ../shared/reference/kubernetes-semantics.md section 9):
every entry node maps a given 5-tuple to the same backend, the choice is near uniform, and removing one
of N backends remaps about 1/N of the connections.

Cluster::

    node-a: web-a1, web-a2     node-b: web-b1     node-c: web-c1
    Service web-maglev  LoadBalancer, Cluster, service.cilium.io/lb-algorithm: maglev
    Service web-random  LoadBalancer, Cluster (kube-proxy's random choice: the control)

How a connection with the same 5-tuple enters two nodes: Maglev hashes the packet as it reaches the
node, destination included (as Cilium does), so the destination must be the same address at every node:
a load balancer address kept all the way, as an ECMP router or a passthrough load balancer (GCP, MetalLB
in BGP mode) delivers it, not the lab's default load balancer, which DNATs to nodeIP:nodePort. The test
plays that router: one flow on the underlay (cookie ``STEER``, above the load balancer's) sends the
client's packets to the load balancer addresses, unchanged but for the MACs and TTL, to the node it
names; the node's ``-d lbIP`` KUBE-EXT rule takes them and the replies go back through the same node
(Cluster masquerades). The client opens each connection from a source port it chooses (bind), once
through node-a and once through node-b. The pods' answers say who served and which source they saw
(node-a's or node-b's side), which proves where each connection entered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from controllers import maglev
from controllers.flows import T_MAGLEV
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.measure.stats import chi_square
from tests.integration.conftest import cluster_from_yaml, web_manifests

PODS = {"web-a1": "node-a", "web-a2": "node-a", "web-b1": "node-b", "web-c1": "node-c"}
SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, annotations: {annotations}}}
spec: {{type: LoadBalancer, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""
MANIFESTS = web_manifests(PODS)
MANIFESTS += SERVICE.format(name="web-maglev", annotations='{"service.cilium.io/lb-algorithm": maglev}')
MANIFESTS += SERVICE.format(name="web-random", annotations="{}")

STEER = 0x5EE7  # the test's own underlay flow (the "ECMP router")
PORTS = range(41000, 41120)  # the client's source ports, one connection each per entry node
FIT_P = 0.001

# One connection per source port to DEST:80, one HTTP request each; prints {port: answer or error}.
CLIENT = """
import json, socket, sys
dest, client, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
out = {}
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(2)
    try:
        s.bind((client, port))
        s.connect((dest, 80))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        answer = json.loads(data.partition(b"\\r\\n\\r\\n")[2])
        out[port] = {"pod": answer["pod"], "source": answer["source"]["ip"]}
    except OSError as e:
        out[port] = {"error": type(e).__name__}
    finally:
        s.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("maglev"), MANIFESTS)
    with LabNetwork(cluster) as network:
        try:
            yield network
        finally:
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", addr.underlay_bridge(),
                            f"cookie={STEER:#x}/-1"], capture_output=True)


def steer_to(lab, node: str) -> None:
    """Deliver the client's packets to the load balancer addresses to ``node``, addressed as sent."""
    index = lab.cluster.node(node).index
    flow = (f"cookie={STEER:#x},table=0,priority=150,ip,in_port={addr.UNDERLAY_CLIENT_PORT},"
            f"nw_dst={addr.load_balancer_ip(0)}/24,actions=dec_ttl,"
            f"set_field:{addr.mac_for(addr.ROUTER_UNDERLAY_IP)}->eth_src,"
            f"set_field:{addr.mac_for(addr.node_ip(index))}->eth_dst,output:{addr.underlay_node_port(index)}")
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", addr.underlay_bridge(), flow], check=True,
                   capture_output=True)


def connect_through(lab, node: str, service: str, ports=PORTS) -> dict[int, dict]:
    steer_to(lab, node)
    argv = [sys.executable, "-S", "-c", CLIENT, lab.load_balancer_ip(service), addr.CLIENT_IP,
            ",".join(map(str, ports))]
    out = lab.run_in(addr.CLIENT_NAME, argv, timeout=30 + 3 * len(ports))
    assert out.returncode == 0, out.stderr
    answers = {int(port): answer for port, answer in json.loads(out.stdout).items()}
    errors = Counter(a["error"] for a in answers.values() if "error" in a)
    assert not errors, errors
    index = lab.cluster.node(node).index
    sources = {a["source"] for a in answers.values()}
    assert sources <= {addr.node_ip(index), addr.pod_gateway_ip(index)}, f"not all entered {node}: {sources}"
    return {port: a["pod"] for port, a in answers.items()}


def table_flows(node_index: int) -> int:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", addr.node_bridge(node_index),
                          f"table={T_MAGLEV}"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if "actions=" in line)


def test_every_node_holds_one_table_of_m_flows_for_the_maglev_service_only(lab):
    for node in lab.cluster.nodes:
        assert table_flows(node.index) == maglev.TABLE_SIZE  # web-maglev's cluster-wide chain; web-random none


def test_the_same_5_tuple_reaches_the_same_pod_through_two_entry_nodes(lab):
    via_a = connect_through(lab, "node-a", "web-maglev")
    via_b = connect_through(lab, "node-b", "web-maglev")
    differ = [p for p in PORTS if via_a[p] != via_b[p]]
    assert not differ, {p: (via_a[p], via_b[p]) for p in differ}
    assert set(via_a.values()) == set(PODS)  # every pod is chosen by some connection


def test_random_choice_does_not_do_that(lab):
    """The control: kube-proxy's choice is each node's own, so about 3/4 of the connections (4 pods)
    land elsewhere when they enter another node; this also shows the steering changed the entry."""
    via_a = connect_through(lab, "node-a", "web-random")
    via_b = connect_through(lab, "node-b", "web-random")
    differ = sum(1 for p in PORTS if via_a[p] != via_b[p])
    assert differ > len(PORTS) / 2, differ


def test_the_choice_over_many_connections_is_near_uniform(lab):
    ports = range(42000, 42400)
    served = Counter(connect_through(lab, "node-c", "web-maglev", ports).values())
    _, p = chi_square([served[name] for name in PODS], [1 / len(PODS)] * len(PODS))
    assert p > FIT_P, served


def test_removing_one_of_four_pods_remaps_about_a_quarter_of_the_connections(lab):
    """Through node-a before, node-c after (a node whose conntrack has not seen these source ports; every
    node holds the same table, so the entry does not matter): the connections that had web-c1 move, and
    almost no others."""
    before = connect_through(lab, "node-a", "web-maglev", range(43000, 43200))
    lab.delete_pod("web-c1", grace_s=0)
    after = connect_through(lab, "node-c", "web-maglev", range(43000, 43200))
    assert "web-c1" not in after.values()
    had_it = [p for p, pod in before.items() if pod == "web-c1"]
    others_moved = [p for p, pod in before.items() if pod != "web-c1" and after[p] != pod]
    assert 0.15 < len(had_it) / len(before) < 0.35, len(had_it)
    assert len(others_moved) <= 0.03 * len(before), others_moved
