"""The machine's own limit for the data path: the same traffic through kernel forwarding with netfilter,
no Open vSwitch, measured in the same run as the lab's paths (``bench.datapath``).

Three plain network namespaces, two veth pairs, all named ``npl-kn-*`` and removed by exact name::

    npl-kn-cl (client 192.0.2.2) --- npl-kn-rt (a node: forwarding + netfilter) --- npl-kn-pod (10.99.0.2)
                                     192.0.2.1 (the node IP)   10.99.0.1

- routed: the client connects to the pod's address, the node only forwards;
- DNAT+MASQUERADE: the client connects to the node address; ``iptables -t nat`` rewrites the
  destination to the pod (PREROUTING DNAT, as KUBE-SEP) and the source to the node's
  (POSTROUTING MASQUERADE of DNATed connections, as KUBE-POSTROUTING) - kube-proxy's Cluster path.

Offloads stay as the kernel sets them (the lab turns them off only because the userspace datapath
needs it): this is what the machine can do, the bound every lab figure is a fraction of.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

from lab.errors import LabError

CLIENT, ROUTER, POD = "npl-kn-cl", "npl-kn-rt", "npl-kn-pod"
NAMESPACES = (CLIENT, ROUTER, POD)
CLIENT_IP, NODE_IP, GATEWAY_IP, POD_IP = "192.0.2.2", "192.0.2.1", "10.99.0.1", "10.99.0.2"
ROUTED_IPERF, NAT_IPERF = 5301, 5302
ROUTED_CONN_BASE, NAT_CONN_BASE = 40000, 41000  # + run: each run's connections on ports of their own
TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools")

SETUP = {  # namespace (None: the root one) -> its ``ip -batch`` lines
    None: [f"netns add {CLIENT}", f"netns add {ROUTER}", f"netns add {POD}",
           f"link add npl-kn-c netns {CLIENT} type veth peer name npl-kn-rc netns {ROUTER}",
           f"link add npl-kn-p netns {POD} type veth peer name npl-kn-rp netns {ROUTER}"],
    CLIENT: [f"addr add {CLIENT_IP}/24 dev npl-kn-c", "link set npl-kn-c up", "link set lo up",
             f"route add default via {NODE_IP}"],
    ROUTER: [f"addr add {NODE_IP}/24 dev npl-kn-rc", f"addr add {GATEWAY_IP}/24 dev npl-kn-rp",
             "link set npl-kn-rc up", "link set npl-kn-rp up"],
    POD: [f"addr add {POD_IP}/24 dev npl-kn-p", "link set npl-kn-p up", "link set lo up",
          f"route add default via {GATEWAY_IP}"],
}


def _in(ns: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kwargs)


def remove() -> None:
    """Delete the three namespaces by name (their veths go with them); nothing else."""
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for ns in NAMESPACES:
        if ns in existing:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def kernel_path(runs: int):
    """The namespaces, netfilter rules and servers for ``runs`` runs; removed afterwards, also on error."""
    remove()  # a crashed earlier bench's, by exact name
    servers: list[subprocess.Popen] = []
    try:
        for ns, lines in SETUP.items():
            done = subprocess.run(["ip", *(["-n", ns] if ns else []), "-batch", "-"], input="\n".join(lines) + "\n",
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise LabError(f"kernel path: could not build its namespaces: {done.stderr.strip()[-300:]}")
        _in(ROUTER, ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        _in(CLIENT, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"], check=True)
        nat = [["-A", "PREROUTING", "-d", NODE_IP, "-p", "tcp", "--dport", str(NAT_IPERF), "-j", "DNAT",
                "--to-destination", POD_IP],
               ["-A", "PREROUTING", "-d", NODE_IP, "-p", "tcp", "--dport", f"{NAT_CONN_BASE}:{NAT_CONN_BASE + 99}",
                "-j", "DNAT", "--to-destination", POD_IP],
               ["-A", "POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"]]
        for rule in nat:
            out = _in(ROUTER, ["iptables", "-t", "nat", *rule])
            if out.returncode != 0:
                raise LabError(f"kernel path: iptables failed ({out.stderr.strip()}): is iptables installed "
                               "(setup.sh)?")
        ports = [str(b + r) for r in range(runs) for b in (ROUTED_CONN_BASE, NAT_CONN_BASE)]
        server = subprocess.Popen(["ip", "netns", "exec", POD, sys.executable, os.path.join(TOOLS, "connrate.py"),
                                   "server", "--ports", *ports], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, text=True)
        servers.append(server)
        if not server.stdout.readline():
            raise LabError("kernel path: the connection-rate server did not start")
        for port in (ROUTED_IPERF, NAT_IPERF):
            servers.append(subprocess.Popen(["ip", "netns", "exec", POD, "iperf3", "-s", "-p", str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = _in(POD, ["ss", "-Htln"]).stdout
            if all(f":{p} " in listening for p in (ROUTED_IPERF, NAT_IPERF)):
                break
            time.sleep(0.05)
        yield
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        remove()


def conn_rate(nat: bool, run: int, seconds: float, concurrency: int) -> dict:
    target = f"{NODE_IP}:{NAT_CONN_BASE + run}" if nat else f"{POD_IP}:{ROUTED_CONN_BASE + run}"
    out = _in(CLIENT, [sys.executable, os.path.join(TOOLS, "connrate.py"), "client", "--target", target,
                       "--seconds", str(seconds), "--concurrency", str(concurrency)], timeout=seconds + 30)
    if out.returncode != 0:
        raise LabError(f"kernel path: connrate failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def iperf(nat: bool, seconds: float) -> dict:
    target, port = (NODE_IP, NAT_IPERF) if nat else (POD_IP, ROUTED_IPERF)
    omit = 1 if seconds >= 2 else 0
    out = _in(CLIENT, ["iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "-O", str(omit), "-J"],
              timeout=seconds + omit + 30)
    doc = json.loads(out.stdout or "{}")
    if out.returncode != 0 or doc.get("error"):
        raise LabError(f"kernel path: iperf3 failed: {doc.get('error') or out.stderr.strip()[-300:]}")
    return {"bitsPerSecond": doc["end"]["sum_received"]["bits_per_second"],
            "retransmits": doc["end"].get("sum_sent", {}).get("retransmits")}
