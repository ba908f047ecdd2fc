"""DSR (checklist item 21) and connections moved by the load balancer, with real packets.

Cluster: node-a has no pod, node-b and node-c two each. LoadBalancer Services over the same pods, one
per forwarding mode (Cilium's annotation ``service.cilium.io/forwarding-mode``): web-snat and web-dsr,
plus web-local (Local, SNAT) and web-maglev (DSR with ``service.cilium.io/lb-algorithm: maglev``). The
load balancer delivers still addressed to its IP ("vip", as GCP's passthrough network load balancer
does) and health-checks with the "fast" profile.

Requests to node-a's nodeIP:nodePort always go to a pod on another node: under DSR the pod sees the
client, the reply goes from the pod's node straight to the router, and node-a's uplink sends on only
the requests; under SNAT the replies come back through node-a.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from controllers.services import dnat_zone
from lab.cloud.network import LabNetwork
from lab.emulation.observing import REPO, dump_ports
from lab.kube import addressing as addr
from lab.measure.held import broken_on_reroute
from lab.polling import wait_for
from tests.integration.conftest import NODES, cluster_from_yaml, web_manifests

SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, annotations: {{service.cilium.io/forwarding-mode: {mode}{extra}}}}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, nodePort: {node_port}}}]
"""
MANIFESTS = web_manifests({"web-b1": "node-b", "web-b2": "node-b", "web-c1": "node-c", "web-c2": "node-c"})
MANIFESTS += SERVICE.format(name="web-snat", mode="snat", policy="Cluster", node_port=30080, extra="")
MANIFESTS += SERVICE.format(name="web-dsr", mode="dsr", policy="Cluster", node_port=30081, extra="")
MANIFESTS += SERVICE.format(name="web-local", mode="snat", policy="Local", node_port=30082, extra="")
MANIFESTS += SERVICE.format(name="web-maglev", mode="dsr", policy="Cluster", node_port=30083,
                            extra=", service.cilium.io/lb-algorithm: maglev")
# One pod behind its own DSR Service: a client port's connections through two frontends reach the same pod.
MANIFESTS += """
---
apiVersion: v1
kind: Pod
metadata: {name: solo-c, labels: {app: solo}}
spec: {nodeName: node-c, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
"""
MANIFESTS += SERVICE.format(name="web-solo", mode="dsr", policy="Cluster", node_port=30084, extra="").replace(
    "app: web", "app: solo")
REQUESTS = 40
# One request from a chosen source port (SO_REUSEADDR: the port's last connection may be in TIME_WAIT)
FROM_PORT = """
import json, socket, sys
from lab.measure.held import request
ip, port, local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(2)
s.bind(("0.0.0.0", local))
try:
    s.connect((ip, port))
    print(json.dumps(request(s, ip)))
except OSError as e:
    print(json.dumps({"ok": False, "error": type(e).__name__}))
"""
REPLY_BYTES = 20_000  # each answer: /bulk, so the replies dwarf the requests


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cluster = cluster_from_yaml(tmp_path_factory.mktemp("dsr"), MANIFESTS)
    with LabNetwork(cluster, lb_profile="fast", lb_delivery="vip") as network:
        yield network


def through_node_a(lab, node_port: int, path: str = "/") -> dict:
    """Requests to node-a's nodePort; what node-a's uplink sent, and the bytes between nodes, per request."""
    uplink_before = dump_ports(addr.node_bridge(1))[1][1]
    between_before = lab.inter_node_bytes()
    out = lab.probe([f"{addr.node_ip(1)}:{node_port}"], REQUESTS, concurrency=4, timeout=3, path=path)
    return {"records": out["records"], "uplinkSent": dump_ports(addr.node_bridge(1))[1][1] - uplink_before,
            "betweenNodesPerRequest": (lab.inter_node_bytes() - between_before) / REQUESTS}


def test_dsr_keeps_the_client_address_and_answers_from_the_frontend(lab):
    out = through_node_a(lab, 30081)
    assert all(r["ok"] for r in out["records"]), {r["error"] for r in out["records"]}
    assert {r["response"]["source"]["ip"] for r in out["records"]} == {addr.CLIENT_IP}
    assert {r["response"]["node"] for r in out["records"]} == {"node-b", "node-c"}
    # the client's socket was connected to node-a's nodeIP:nodePort: any other source would not be its answer


def test_the_entry_node_never_sees_a_dsr_reply_but_carries_every_snat_one(lab):
    path = f"/bulk?bytes={REPLY_BYTES}"
    dsr = through_node_a(lab, 30081, path)
    snat = through_node_a(lab, 30080, path)
    assert all(r["ok"] and r["bytes"] == REPLY_BYTES for r in dsr["records"] + snat["records"])
    replies = REQUESTS * REPLY_BYTES
    assert dsr["uplinkSent"] < replies / 10, dsr["uplinkSent"]  # the requests (and ACKs) only
    assert snat["uplinkSent"] > replies, snat["uplinkSent"]
    print(f"\nnode-a uplink sent, {REQUESTS} requests of {REPLY_BYTES} B answers: DSR {dsr['uplinkSent']} B, "
          f"SNAT {snat['uplinkSent']} B; between nodes per request: DSR {dsr['betweenNodesPerRequest']:.0f} B, "
          f"SNAT {snat['betweenNodesPerRequest']:.0f} B")


def test_between_nodes_a_dsr_request_costs_its_request_bytes_and_label_only(lab):
    dsr = through_node_a(lab, 30081)
    snat = through_node_a(lab, 30080)
    assert all(r["ok"] for r in dsr["records"] + snat["records"])
    assert dsr["betweenNodesPerRequest"] < snat["betweenNodesPerRequest"] / 2
    print(f"\nbetween nodes per small request: DSR {dsr['betweenNodesPerRequest']:.0f} B, "
          f"SNAT {snat['betweenNodesPerRequest']:.0f} B")


def test_a_full_sized_request_packet_and_its_label_fit_the_fabric(lab):
    """A 1500-byte packet from the client plus the 4-byte label: the node uplinks' MTU takes it."""
    out = lab.probe([f"{addr.node_ip(1)}:30081"], 4, concurrency=1, timeout=3, headers=(("x-pad", "p" * 4000),))
    assert all(r["ok"] for r in out["records"]), {r["error"] for r in out["records"]}


KNOWN_DSR_CLASH = pytest.mark.xfail(
    strict=True, reason="known flaw of the lab's DSR: the entry node's one-way conntrack entry "
                   "of a connection through nodeIP:nodePort clashes with a later one from the same client port "
                   "through the load balancer's address to the same pod; conntrack moves the new one's source "
                   "port, the pod answers that port, and the client never sees the answer")


def forget_entry_conntrack(lab) -> None:
    """Each node's DNAT zone emptied: what earlier tests' DSR connections left there (the entry node sees
    one direction of them, so they linger 30 s in SYN_SENT) must not meet this test's new connections
    through another frontend; that meeting is a known flaw of its own, pinned by
    ``test_a_client_port_reused_through_another_dsr_frontend_reaches_the_pod``."""
    for node in lab.cluster.nodes:
        subprocess.run(["ovs-appctl", "dpctl/flush-conntrack", f"zone={dnat_zone(node)}"], check=True,
                       capture_output=True, timeout=10)


def from_port(lab, ip: str, port: int, local: int) -> dict:
    out = lab.run_in(addr.CLIENT_NAME, ["env", f"PYTHONPATH={REPO}", sys.executable, "-S", "-c", FROM_PORT, ip,
                                        str(port), str(local)], timeout=10)
    return json.loads(out.stdout or '{"ok": false, "error": "no output"}')


def test_a_client_port_reused_through_another_dsr_frontend_reaches_the_pod(lab, request):
    """Each port first reaches the pod (on node-c) through node-a's and node-b's nodePorts, then through the
    load balancer's address, which delivers to one of the three nodes: two of them hold the stale entry,
    so of 8 ports all escape only with probability (1/3)^8."""
    forget_entry_conntrack(lab)
    ip = lab.load_balancer_ip("web-solo")
    ports = range(41000, 41080, 10)
    first = [from_port(lab, addr.node_ip(n), 30084, p) for p in ports for n in (1, 2)]
    assert all(r["ok"] for r in first), first  # through the nodePorts: fine (a failure here is a real one)
    request.applymarker(KNOWN_DSR_CLASH)
    second = [from_port(lab, ip, 80, p) for p in ports]
    forget_entry_conntrack(lab)
    assert all(r["ok"] for r in second), second


def test_dsr_through_the_load_balancer_address(lab):
    forget_entry_conntrack(lab)
    ip = lab.load_balancer_ip("web-dsr")
    out = lab.probe([f"{ip}:80"], REQUESTS, concurrency=4, timeout=3)
    assert all(r["ok"] for r in out["records"]), {r["error"] for r in out["records"]}
    assert {r["response"]["source"]["ip"] for r in out["records"]} == {addr.CLIENT_IP}


def test_local_with_vip_delivery_follows_the_health_checks(lab):
    wait_for(lambda: sorted(lab.lb_rotation().get("default/web-local", [])) == ["node-b", "node-c"], timeout=15,
             what="the load balancer to leave node-a (no local endpoint) out of web-local's rotation")
    out = lab.probe([f"{lab.load_balancer_ip('web-local')}:80"], REQUESTS, concurrency=4, timeout=3)
    assert all(r["ok"] for r in out["records"]), {r["error"] for r in out["records"]}
    assert {r["response"]["source"]["ip"] for r in out["records"]} == {addr.CLIENT_IP}


def test_without_a_reroute_held_connections_all_survive(lab):
    result = broken_on_reroute(lab, "web-snat", "node-a", connections=30, reroute=False)
    assert result["held"] == 30 and result["broken"] == 0, result


def test_under_snat_every_connection_the_load_balancer_moves_breaks(lab):
    result = broken_on_reroute(lab, "web-snat", "node-a", connections=60)
    assert result["held"] == 60 and result["moved"] > 0, result
    assert result["broken"] == result["moved"], result  # the new node masquerades: the pod sees a stranger
    assert sorted(lab.lb_rotation().get("default/web-snat") or NODES) == list(NODES)  # restored


def test_under_dsr_with_random_choice_moved_connections_break_unless_they_land_where_they_were(lab):
    result = broken_on_reroute(lab, "web-dsr", "node-a", connections=150)  # ~50 moved, a fifth break
    print(f"\nDSR, random choice: {result}")
    assert result["held"] == 150 and result["moved"] > 0, result
    # Landing on the backend's own node, or re-chosen to the same pod by the new node's random pick, a
    # connection survives; otherwise another pod's kernel answers with a reset (cilium/cilium#27730).
    assert 0 < result["broken"] < result["moved"], result


def test_under_dsr_with_maglev_every_moved_connection_survives(lab):
    """Every node maps the connection to the same pod, and DSR leaves no SNAT state to lose."""
    result = broken_on_reroute(lab, "web-maglev", "node-a", connections=60)
    print(f"\nDSR, Maglev: {result}")
    assert result["held"] == 60 and result["moved"] > 0 and result["broken"] == 0, result
