"""The PROXY-protocol load balancer: a real HAProxy in the ``lb`` host in front of an L7 proxy's Service.

The lab's default load balancer passes connections through (``lab.cloud.load_balancer``). This one
proxies, as an AWS NLB or CLB with proxy protocol does: HAProxy listens on the ``lb`` host's address, one
frontend per Service port, and connects to every node's nodePort with ``send-proxy-v2``, health-checking
the nodes as the cloud would (``/healthz`` on the healthCheckNodePort for Local, kube-proxy's ``:10256``
for Cluster). The node sees HAProxy's address as the source, so only the PROXY header keeps the client's:
NGINX reads it (``listen ... proxy_protocol``, ``real_ip_header proxy_protocol``), which is why both ends
must switch at once.

The client and the ``lb`` host share a subnet but reach each other through the edge router, which is
the only station on the client side that answers ARP: each gets a host route via the router.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
from pathlib import Path

from lab.cloud.load_balancer import health_check_target
from lab.emulation.iperf3 import listening
from lab.emulation.resources import RunDir, runs, stop_process
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.model import Cluster, Service
from lab.polling import wait_for

TEMPLATE = Path(__file__).with_name("haproxy.cfg.tmpl")
HAPROXY = "haproxy"
CHECK = "inter 1s fall 2 rise 1"


def render(cluster: Cluster, service: Service, stats_socket: str, listen_ip: str = addr.LB_HOST_IP) -> str:
    """HAProxy's configuration for one Service: a frontend per port, every node a server of its backend."""
    check_port, check_path = health_check_target(service)
    body: list[str] = []
    for sp in service.ports:
        name = f"{service.namespace}_{service.name}_{sp.port}".replace("-", "_")
        body += [f"frontend fe_{name}", f"    bind {listen_ip}:{sp.port}", f"    default_backend be_{name}", "",
                 f"backend be_{name}", "    balance roundrobin", f"    option httpchk GET {check_path}",
                 f"    default-server send-proxy-v2 check port {check_port} {CHECK}"]
        body += [f"    server {n.name} {addr.node_ip(n.index)}:{sp.node_port}" for n in cluster.nodes]
        body.append("")
    what = f"PROXY-protocol load balancer for Service {service.namespace}/{service.name}"
    return (TEMPLATE.read_text().replace("{{what}}", what).replace("{{stats}}", stats_socket)
            .replace("{{body}}", "\n".join(body)))


class ProxyLoadBalancer:
    """HAProxy running in the ``lb`` host of a network, for one Service."""

    def __init__(self, run: RunDir, lb_host, client_host, cluster: Cluster, service: Service):
        self.run, self.lb_host, self.client_host = run, lb_host, client_host
        self.cluster, self.service = cluster, service
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return addr.LB_HOST_IP

    def start(self) -> None:
        if shutil.which(HAPROXY) is None:
            raise LabError("the PROXY-protocol load balancer needs haproxy", "run ./setup.sh as root")
        self.client_host.cmd(f"ip route replace {addr.LB_HOST_IP}/32 via {addr.ROUTER_CLIENT_IP}")
        self.lb_host.cmd(f"ip route replace {addr.CLIENT_IP}/32 via {addr.ROUTER_CLIENT_IP}")
        config = self.run.file("haproxy.cfg")
        with open(config, "w") as f:
            f.write(render(self.cluster, self.service, self.stats_socket))
        log_path = self.run.file("haproxy.log")
        with open(log_path, "ab") as log:
            self.proc = self.lb_host.popen([HAPROXY, "-db", "-f", config], stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=log)
        proc = self.proc
        try:
            wait_for(lambda: proc.poll() is not None or runs(proc.pid, HAPROXY.encode() + b"\0"), timeout=10,
                     what="HAProxy to start")
            if proc.poll() is None:
                self.run.own_process(proc.pid, "PROXY-protocol load balancer (haproxy)")

            def up(port: int) -> bool:
                if proc.poll() is not None:
                    raise LabError(f"HAProxy exited (code {proc.returncode})", f"see {log_path}")
                return listening(proc.pid, port)
            for sp in self.service.ports:
                wait_for(lambda port=sp.port: up(port), timeout=10, what=f"HAProxy to listen on {sp.port}")
            # A cloud load balancer sends traffic only once its checks have a verdict on every node.
            wait_for(self.settled, timeout=15, what="HAProxy's first health verdicts", last=self.servers)
        except BaseException:
            self.stop()
            raise

    @property
    def stats_socket(self) -> str:
        return self.run.file("haproxy.sock")

    def servers(self) -> dict[str, str]:
        """``backend/node`` -> HAProxy's state for it (UP, DOWN, or a transition such as "UP 1/2")."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.stats_socket)
            s.sendall(b"show stat\n")
            data = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        rows = list(csv.reader(line for line in data.splitlines() if line and not line.startswith("#")))
        return {f"{row[0]}/{row[1]}": f"{row[17]} {row[36]}".strip() for row in rows
                if row and row[1] not in ("FRONTEND", "BACKEND")}

    def settled(self) -> bool:
        """Every node checked and in a steady state, and some node up in every backend (a node's health
        server may still be starting when HAProxy's first check arrives: it rises a check later)."""
        try:
            states = self.servers()
        except OSError:
            return False
        steady = all(v.split()[0] in ("UP", "DOWN") and "INI" not in v and "/" not in v for v in states.values())
        backends = {key.split("/")[0] for key in states}
        up = {key.split("/")[0] for key, v in states.items() if v.startswith("UP")}
        return bool(states) and steady and up == backends

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.run, self.proc)
            self.proc = None
