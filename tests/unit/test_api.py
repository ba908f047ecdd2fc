"""lab.api without a network: manifests in, plain data out, counters turned into bytes per link.

What needs root (bringing the cluster up, probing) runs in the notebooks' integration test; here the
running network is replaced by a stand-in that answers the two questions the API asks of it (the
probe's result and the port counters), so the API's own logic is checked on its own.
"""

from __future__ import annotations

import subprocess

import pytest

import lab.measure.measurements as measurements
from lab.api import Lab, results_table
from lab.cloud.network import LabNetwork
from lab.errors import ManifestError
from lab.kube import addressing as addr
from lab.measure.measurements import link_bytes, measure_entry

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
    kind: Pod
    metadata: {name: web-1, labels: {app: web}}
    spec: {nodeName: node-a, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web-2, labels: {app: web}}
    spec: {nodeName: node-b, containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      type: NodePort
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
"""

DUMP_PORTS = """OFPST_PORT reply (OF1.3) (xid=0x2): 3 ports
  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=0, errs=0, coll=0
           duration=1.048s
  port 101: rx pkts=56, bytes=6888, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=56, bytes=4490, drop=0, errs=0, coll=0
           duration=1.048s
  port  1: rx pkts=103, bytes=8242, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=103, bytes=12582, drop=0, errs=0, coll=0
"""


@pytest.fixture
def lab() -> Lab:
    return Lab(yaml=MANIFESTS)


def test_yaml_text_is_read_and_placed_before_anything_is_built(lab):
    assert lab.net is None
    assert lab.pods() == [{"name": "web-1", "node": "node-a", "ip": "10.244.1.2"},
                          {"name": "web-2", "node": "node-b", "ip": "10.244.2.2"}]
    assert lab.services() == [{"name": "web", "namespace": "default", "type": "NodePort", "policy": "Cluster",
                               "ports": [{"port": 80, "nodePort": 30080, "targetPort": 8080}]}]
    topo = lab.topology()
    assert topo["client"] == {"name": "client", "ip": "203.0.113.10"}
    assert topo["nodes"][1] == {"name": "node-b", "ip": "172.18.0.12", "podCIDR": "10.244.2.0/24",
                                "podGateway": "10.244.2.1"}


def test_bad_manifests_fail_when_the_lab_is_made():
    with pytest.raises(ManifestError, match="nodePort"):
        Lab(yaml=MANIFESTS.replace("30080", "40000"))
    with pytest.raises(ValueError, match="manifests"):
        Lab()


def test_what_needs_the_network_says_so_outside_the_with_block(lab):
    with pytest.raises(RuntimeError, match="with lab:"):
        lab.probe("web", via="node-a")
    with pytest.raises(RuntimeError, match="with lab:"):
        lab.move_pod("web-1", "node-b")
    with pytest.raises(ValueError, match="Cluster or Local"):
        lab.set_policy("web", "Nearest")


def test_port_counters_are_read_per_port_both_directions(monkeypatch):
    def fake_run(argv, **kw):
        assert argv[:4] == ["ovs-ofctl", "-O", "OpenFlow13", "dump-ports"]
        return subprocess.CompletedProcess(argv, 0, stdout=DUMP_PORTS, stderr="")
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert LabNetwork.port_bytes(None, "npl-0ut-ul") == {101: 6888 + 4490, 1: 8242 + 12582}  # LOCAL is not a link


def test_bytes_between_nodes_are_what_nodes_sent_less_what_reached_outside_hosts(monkeypatch, lab):
    # node-a (port 101) and node-b (102) sent 9,000 and 4,000 bytes; 5,000 of them went on to the client
    # (port 1); the client sent 7,000 of which the load balancer dropped some: they do not count.
    counters = {101: (9000, 6000), 102: (4000, 9000), 1: (7000, 5000), 2: (0, 0)}
    monkeypatch.setattr("lab.emulation.observing.dump_ports", lambda bridge: counters)
    assert LabNetwork(lab.cluster).inter_node_bytes() == 8000


class FakeNet:
    """Counters that grow by a known amount per probe, and a cluster to look names up in."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.reads = 0
        web1, web2 = (addr.pod_intf(cluster.pod(p).serial) for p in ("web-1", "web-2"))
        # interface: (bytes before the probe, what the probe adds)
        self.counters = {addr.client_intf(): (5, 1000), addr.node_uplink_intf(1)[1]: (7, 2000),
                         addr.node_uplink_intf(2)[1]: (9, 0), web1: (11, 1000), web2: (13, 0)}

    def interface_bytes(self, names: list[str]) -> dict[str, int]:
        self.reads += 1
        grown = self.reads > 1  # read again after the probe: the counters have moved on
        return {n: self.counters[n][0] + grown * self.counters[n][1] for n in names}


def test_link_bytes_names_each_link_after_what_it_attaches(lab):
    assert link_bytes(FakeNet(lab.cluster)) == {"client": 5, "node-a": 7, "web-1": 11, "node-b": 9, "web-2": 13}


def test_a_measured_entry_carries_link_bytes_paths_and_topology(lab, monkeypatch):
    answer = {"service": "web", "policy": "Cluster", "node": "node-a", "servedBy": {"web-1": 3, "web-2": 1},
              "failed": 1, "errors": {"timeout": 1}}
    seen = {}

    def fake_probe_entry(net, service, sp, node, requests, client_ttl, timeout):
        seen.update(service=service.name, port=sp.node_port, node=node, requests=requests)
        return dict(answer)
    monkeypatch.setattr(measurements, "probe_entry", fake_probe_entry)

    result = measure_entry(FakeNet(lab.cluster), lab.cluster.service("web"), "node-a", 5, 64, port="http")
    assert seen == {"service": "web", "port": 30080, "node": "node-a", "requests": 5}
    assert result["linkBytes"] == {"client": 1000, "node-a": 2000, "web-1": 1000, "node-b": 0, "web-2": 0}
    assert [(p["pod"], p["nodes"], p["requests"]) for p in result["paths"]] == [
        ("web-1", ["node-a"], 3), ("web-2", ["node-a", "node-b"], 1), (None, ["node-a"], 1)]
    assert result["topology"] == lab.topology()


def test_service_ports_are_chosen_by_port_nodeport_or_name(lab):
    svc = lab.cluster.service("web")
    assert measurements.service_port(svc, None).node_port == 30080
    port = measurements.service_port
    assert port(svc, 80) is port(svc, 30080) is port(svc, "http")
    with pytest.raises(ValueError, match="no port 81"):
        measurements.service_port(svc, 81)


def test_the_table_reads_in_a_terminal_and_in_a_notebook(lab):
    result = {"service": "web", "policy": "Cluster", "node": "node-a", "via": "nodePort", "ok": 4, "failed": 1,
              "errors": {"timeout": 1}, "servedBy": {"web-1": 3, "web-2": 1},
              "sourcesSeen": {"10.244.1.1": 3, "172.18.0.11": 1}, "nodeHops": {"1": 3, "2": 1},
              "interNodeBytes": 1234, "latencyMs": {"p50": 1.5, "p95": None}}
    table = results_table([result], lab.cluster)
    text = str(table)
    assert "node-a gateway: 3, node-a: 1" in text and "timeout: 1" in text and "1,234" in text
    html = table._repr_html_()
    assert html.startswith("<table>") and "<td style='text-align:left'>web-1: 3, web-2: 1</td>" in html
    assert table.rows[0][-1] == "-"  # no p95: a dash, not None


def test_through_the_load_balancer_the_paths_start_at_the_pods_nodes(lab, monkeypatch):
    answer = {"service": "web", "policy": "Local", "node": None, "via": "loadBalancer",
              "servedBy": {"web-1": 2, "web-2": 2}, "failed": 0, "errors": {}}
    monkeypatch.setattr(measurements, "probe_load_balancer",
                        lambda net, svc, sp, n, ttl, timeout, rate=None: dict(answer))
    result = measurements.measure_load_balancer(FakeNet(lab.cluster), lab.cluster.service("web"), 4, 64)
    assert [(p["pod"], p["nodes"]) for p in result["paths"]] == [("web-1", ["node-a"]), ("web-2", ["node-b"])]
    assert set(result["linkBytes"]) == {"client", "node-a", "node-b", "web-1", "web-2"}


def test_interface_counters_are_received_plus_sent_and_zero_for_a_gone_interface(tmp_path):
    from lab.emulation.counters import interface_bytes

    stats = tmp_path / "npl-p1" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_bytes").write_text("1200\n")
    (stats / "tx_bytes").write_text("34\n")
    assert interface_bytes(["npl-p1", "npl-p2"], root=str(tmp_path)) == {"npl-p1": 1234, "npl-p2": 0}
