"""kube-proxy's health servers: one per LoadBalancer+Local Service on its healthCheckNodePort, and
kube-proxy's own on :10256, on every node, answering from the live cluster state.

What each answers is pure (``service_answer``, ``proxy_answer``), as in kube-proxy's
``pkg/proxy/healthcheck``: any path of a Service's health port gets 200 when the node has at least one
ready local endpoint and 503 otherwise, with a tab-indented JSON body and the header
``X-Load-Balancing-Endpoint-Weight`` (only ready endpoints count: a node whose local endpoints are all
terminating answers 503 while it still forwards to them, KEP-1669); ``/healthz`` on 10256 says whether
this proxy has applied the latest state and the node is not being deleted (``nodeEligible``),
``/livez`` the same without the node's deletion.

``HealthServers`` puts the listeners where kube-proxy has them, in each node's own network stack: a
thread enters the node's network namespace just long enough to create the socket (a socket keeps the
namespace it was made in; ``setns`` affects only the calling thread), and one thread per listener
serves it. ``reconcile`` opens and closes listeners as Services come and go.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from controllers.state import NodeInfo, ProxyState

PROXY_HEALTH_PORT = 10256
CLONE_NEWNET = 0x40000000
LOG = logging.getLogger("kube-proxy.health")

Answer = tuple[int, dict, dict[str, str]]  # status, JSON body, extra headers


def health_ports(state: ProxyState) -> dict[int, tuple[str, str]]:
    """healthCheckNodePort -> (namespace, name) of the Service it belongs to."""
    return {sp.health_check_node_port: (sp.namespace, sp.service)
            for sp in state.service_ports
            if sp.health_check_node_port and sp.service_type == "LoadBalancer" and sp.policy == "Local"}


def service_answer(state: ProxyState, node: str, namespace: str, name: str, proxy_healthy: bool) -> Answer:
    local = {(e.ip, e.port) for sp in state.service_ports
             if sp.namespace == namespace and sp.service == name
             for e in sp.endpoints if e.node == node and e.ready}
    count = len({ip for ip, _ in local})  # endpoints are pods (an EndpointSlice lists each pod once)
    body = {"service": {"namespace": namespace, "name": name}, "localEndpoints": count,
            "serviceProxyHealthy": proxy_healthy}
    status = 200 if count and proxy_healthy else 503
    return status, body, {"X-Load-Balancing-Endpoint-Weight": str(count)}


def proxy_answer(path: str, last_updated: datetime | None, healthy: bool, node_eligible: bool = True) -> Answer:
    """``/healthz``: 200 iff the proxy is healthy and its node is eligible (not being deleted); ``/livez``
    ignores the node (kube-proxy's ``pkg/proxy/healthcheck/proxy_health.go``)."""
    now = datetime.now(UTC)
    stamp = (last_updated or now).isoformat()
    body = {"lastUpdated": stamp, "currentTime": now.isoformat(), "healthy": healthy}
    if path.startswith("/livez"):
        return (200 if healthy else 503), body, {}
    body["nodeEligible"] = node_eligible
    return (200 if healthy and node_eligible else 503), body, {}


class HealthServers:
    """Listeners in every node's namespace; ``answer(node, port, path)`` is called per request."""

    def __init__(self, answer: Callable[[str, int, str], Answer]):
        self.answer = answer
        self.servers: dict[tuple[str, int], ThreadingHTTPServer] = {}
        self.closing: dict[tuple[str, int], threading.Thread] = {}  # listeners still shutting down
        self.lock = threading.Lock()

    def reconcile(self, state: ProxyState) -> None:
        wanted = {(n.name, port): n for n in state.nodes if n.netns_pid
                  for port in [PROXY_HEALTH_PORT, *health_ports(state)]}
        with self.lock:
            for key in [k for k in self.servers if k not in wanted]:
                self._close(key)
            for key, node in wanted.items():
                if key not in self.servers:
                    stopping = self.closing.pop(key, None)
                    if stopping is not None:  # a port closed by the previous state and wanted again
                        stopping.join(timeout=5)
                    try:
                        self._open(node, key[1])
                    except OSError as e:
                        LOG.error("cannot listen on %s:%d: %s", node.name, key[1], e)

    def close_all(self) -> None:
        with self.lock:
            for key in list(self.servers):
                self._close(key)

    def _open(self, node: NodeInfo, port: int) -> None:
        sock = socket_in_namespace(node.netns_pid, port)
        server = ThreadingHTTPServer(("0.0.0.0", port), _handler(self.answer, node.name, port),
                                     bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=f"health-{node.name}-{port}", daemon=True).start()
        self.servers[(node.name, port)] = server

    def _close(self, key: tuple[str, int]) -> None:
        server = self.servers.pop(key)
        thread = threading.Thread(target=_stop, args=(server,), daemon=True)
        thread.start()
        self.closing[key] = thread


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def socket_in_namespace(pid: int, port: int) -> socket.socket:
    """A listening TCP socket on 0.0.0.0:``port`` inside the network namespace of process ``pid``."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the node's namespace failed")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            sock.listen(64)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")
        return sock
    finally:
        os.close(own)
        os.close(target)


def _handler(answer: Callable[[str, int, str], Answer], node: str, port: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def send_response(self, code, message=None):  # Go's net/http sends Date, not Server
            self.send_response_only(code, message)
            self.send_header("Date", self.date_time_string())

        def do_GET(self):  # noqa: N802 (http.server's naming)
            status, body, headers = answer(node, port, self.path)
            payload = json.dumps(body, indent="\t").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # health checks are frequent; keep the controller log readable
            return

    return Handler
