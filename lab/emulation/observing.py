"""Looking into a running network: programs in its hosts, the probe, and the counters of its bridges.

``ClusterNetwork`` (``lab.emulation.network``) mixes this in. Measurements (``lab.measure``) and the
scenarios reach the network only through these: they run a program in a host's namespace, start the
probe there, or read byte counters (flows, OpenFlow ports, interfaces) that say where traffic went.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from lab.emulation.counters import interface_bytes
from lab.emulation.zone_switches import read_counters
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips
from topologies.zones import cross_zone_bytes, inter_node_bytes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where ``lab`` is


class Observing:
    """The observing half of ``ClusterNetwork``; it relies on its ``cluster`` and ``net``."""

    def host(self, name: str):
        return self.net.get(name)

    def cluster_ip(self, service: str, namespace: str = "default") -> str:
        """The Service's clusterIP (``spec.clusterIP``); KeyError for a headless Service."""
        return cluster_ips(self.cluster)[(namespace, service)]

    def run_in(self, host_name: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a program inside a host's network namespace (mnexec -a: attach to the host's namespaces)."""
        host = self.net.get(host_name)
        return subprocess.run(["mnexec", "-a", str(host.pid), *argv], capture_output=True, text=True,
                              timeout=timeout)

    def probe(self, targets: list[str], requests: int, concurrency: int = 8, timeout: float = 1.0,
              path: str = "/", rate: float | None = None, host: str = addr.CLIENT_NAME,
              protocol: str = "TCP", http_host: str | None = None, tls: bool = False,
              headers: tuple[tuple[str, str], ...] = ()) -> dict:
        """Requests from ``host`` (the outside client, a pod or a node for in-cluster requests);
        ``http_host``, ``tls`` and ``headers`` address an L7 proxy (the Host header and SNI name).

        The probe needs only the standard library: without site (-S) it starts in a third of the time
        (no .pth files run), which a scenario of a dozen probes feels; the lab is found by PYTHONPATH."""
        site = () if tls else ("-S",)  # reading a peer's certificate needs cryptography, from site-packages
        argv = ["env", f"PYTHONPATH={REPO}", sys.executable, *site, "-m", "lab.measure.probe", "--targets", *targets,
                "--requests", str(requests), "--concurrency", str(concurrency), "--timeout", str(timeout),
                "--path", path]
        if rate is not None:
            argv += ["--rate", str(rate)]
        if protocol != "TCP":
            argv += ["--protocol", protocol.lower()]
        if http_host:
            argv += ["--host", http_host]
        if tls:
            argv.append("--tls")
        for name, value in headers:
            argv += ["--header", f"{name}:{value}"]
        budget = 30 + requests * timeout + (requests / rate if rate else 0)
        result = self.run_in(host, argv, timeout=budget)
        if result.returncode != 0:
            raise LabError(f"the probe failed (code {result.returncode}): {result.stderr.strip()[-300:]}")
        return json.loads(result.stdout)

    def flow_bytes(self, bridge: str, table: int) -> int:
        """Sum of the byte counters of one table's flows, after the datapath has pushed its statistics."""
        subprocess.run(["ovs-appctl", "revalidator/wait"], capture_output=True, timeout=10)
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"table={table}"],
                             capture_output=True, text=True, check=True).stdout
        total = 0
        for field in out.replace(",", " ").split():
            if field.startswith("n_bytes="):
                total += int(field.split("=", 1)[1])
        return total

    def inter_node_bytes(self) -> int:
        """Bytes that have crossed between nodes so far, from the underlay's port counters, read at once.

        Every frame the underlay takes in from a node either goes to another node or, through the edge
        router, to an outside host (client, load balancer), and nothing else sends to outside hosts. So
        what the node ports received (on the core, or on the nodes' zone switches) less what the outside
        ports sent is the traffic between nodes (``topologies.zones.inter_node_bytes``). (Frames from
        outside are not used: the load balancer drops some, e.g. a late ACK of a connection its conntrack
        has closed.) Port counters are the interfaces' own and current when read; the INTERNODE flow
        counters (``flow_bytes``) hold the same bytes only after Open vSwitch's revalidators pushed them
        (~0.4 s per read). ARP would break the sum (a node's request to the router's responder is
        received and never sent on), which is why every host has static ARP entries for its underlay
        neighbours (``_pin_neighbours``); tests/integration/test_counters.py checks both readings agree
        on the same traffic."""
        return inter_node_bytes(self.cluster, read_counters(self.cluster, dump_ports))

    def cross_zone_bytes(self) -> int:
        """Bytes between nodes of different zones so far (0 in one zone), from the core's zone-port
        counters, read at once (``topologies.zones.cross_zone_bytes``); tests/integration/test_zones.py
        checks they equal the core's INTERNODE flow counters on the same traffic."""
        return cross_zone_bytes(self.cluster, {addr.underlay_bridge(): dump_ports(addr.underlay_bridge())})

    def interface_bytes(self, names: list[str]) -> dict[str, int]:
        """Bytes (rx + tx) each named root-namespace interface has carried: a bridge port's own counters."""
        return interface_bytes(names)

    def port_bytes(self, bridge: str) -> dict[int, int]:
        """Bytes each OpenFlow port of a bridge has carried so far, both directions (rx + tx)."""
        return {port: rx + tx for port, (rx, tx) in dump_ports(bridge).items()}

    def client_ttl(self) -> int:
        return self.pod_ttl(addr.CLIENT_NAME)

    def pod_ttl(self, host: str) -> int:
        """The TTL a host's packets start with (its ``ip_default_ttl``)."""
        out = self.run_in(host, ["cat", "/proc/sys/net/ipv4/ip_default_ttl"], timeout=5)
        return int(out.stdout.strip())


def dump_ports(bridge: str) -> dict[int, tuple[int, int]]:
    """(received, sent) bytes of each OpenFlow port of a bridge, as the bridge sees them."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge],
                         capture_output=True, text=True, check=True).stdout
    totals: dict[int, tuple[int, int]] = {}
    for block in re.split(r"^\s*port\s+", out, flags=re.M)[1:]:  # "port  1: rx pkts=.., bytes=.." + "tx .."
        port, _, counts = block.partition(":")
        rx = re.search(r"\brx\b[^\n]*?\bbytes=(\d+)", counts)
        tx = re.search(r"\btx\b[^\n]*?\bbytes=(\d+)", counts)
        if port.strip().isdigit() and rx and tx:  # not LOCAL, the bridge's own interface
            totals[int(port)] = (int(rx.group(1)), int(tx.group(1)))
    return totals
