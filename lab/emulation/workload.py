"""The pods' HTTP server: one process answers for every pod, each from inside that pod's own netns.

Every Kubernetes pod of the lab is a Mininet host, a process in its own network namespace. This server
enters a pod's namespace just long enough to create its listening socket (a socket keeps the namespace
it was created in) and serves all pods from one asyncio loop; ``ss -ltn`` in a pod shows its listener.

An answer tells what the pod saw: the connection's source as received (the client's address, or a
node's after SNAT) and ``synTTL``, the IP TTL of the SYN on arrival as the kernel kept it
(``TCP_SAVE_SYN``): how many routers the packet really crossed. HTTP/1.1, one request per connection (several when
the client asks ``Connection: keep-alive``, as ``lab.measure.held`` does);
``GET /bulk?bytes=N`` answers N bytes of octet-stream, any other request one line of JSON::

    {"pod": "web-1", "namespace": "default", "node": "node1", "podIP": "10.244.1.2", "port": 8080,
     "source": {"ip": "203.0.113.10", "port": 40512}, "synTTL": 62, "path": "/",
     "headers": {"host": "172.18.0.11:30007", "x-forwarded-for": "203.0.113.10"}}

``headers`` are the request's own, names in lower case: behind an L7 proxy (``lab.ingress``), ``source`` is
the proxy pod and ``x-forwarded-for`` / ``x-real-ip`` carry the client as the proxy saw it.

UDP ports (``"protocol": "UDP"`` in a listener) answer every datagram with a datagram holding the same
JSON (``path`` is the datagram's text; ``synTTL`` is the TTL the datagram arrived with, ``IP_RECVTTL``):
a UDP Service is measured the same way, one new source port per request.

``python -m lab.emulation.workload --config FILE``, FILE being ``{"listeners": [{"pod", "namespace", "node",
"podIP", "port", "netnsPid", "bind", "protocol"}], "ready": PATH, "control": PATH}`` (``netnsPid`` null: this
process's namespace; ``port`` 0: ephemeral; ``bind`` defaults to 0.0.0.0). Once all listen, the ready
file is written atomically: ``{"pid", "listeners": [{"pod", "namespace", "podIP", "port"}]}`` with the
actual ports. The control socket takes lines of JSON, ``{"op": "add", "listener": {...}}`` or ``{"op":
"remove", "pod": name}`` (its listening sockets close, its connections finish) or ``{"op": "connections",
"pod": name}`` (how many of its connections are still open: ``{"ok": true, "open": N}``) or ``{"op": "crash",
"pod": name}`` (the pod's container dies: its listeners close and its open connections are reset at
once) or ``{"op": "readiness", "pod": name, "path": "/ready", "failing": true}`` (that path answers 503
while failing: how the lab makes a pod fail its httpGet readinessProbe on its real server), and answers
a line each, ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``. SIGTERM or SIGINT closes
everything, removes the ready file and the control socket, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLONE_NEWNET = 0x40000000
TCP_SAVE_SYN = 27  # not exported by the socket module
TCP_SAVED_SYN = 28
IP_RECVTTL = 12  # linux/in.h; not exported by the socket module
SAVED_SYN_BUFFER = 512  # IPv4 (<= 60) or IPv6 (40) header plus TCP (<= 60)
HEAD_LIMIT = 8 * 1024
READ_TIMEOUT_S = 5.0
KEEP_ALIVE_S = 60.0  # how long a kept-alive connection may wait for its next request
BULK_MAX_BYTES = 100_000_000
BULK_CHUNK = bytes(64 * 1024)
BACKLOG = 128

_libc = ctypes.CDLL(None, use_errno=True)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Listener:
    """One pod port to serve, and the namespace (of process ``netns_pid``) it lives in."""

    pod: str
    port: int
    namespace: str = "default"
    node: str = ""
    pod_ip: str = ""
    netns_pid: int | None = None
    bind: str = "0.0.0.0"
    protocol: str = "TCP"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Listener:
        if not isinstance(data, dict) or "pod" not in data or "port" not in data:
            raise ValueError(f"a listener needs at least 'pod' and 'port', got {data!r}")
        return cls(pod=str(data["pod"]), port=int(data["port"]), namespace=data.get("namespace", "default"),
                   node=data.get("node", ""), pod_ip=data.get("podIP", ""),
                   netns_pid=data.get("netnsPid"), bind=data.get("bind", "0.0.0.0"),
                   protocol=data.get("protocol", "TCP"))


def parse_saved_syn(raw: bytes) -> int | None:
    """The TTL (IPv4) or hop limit (IPv6) from a TCP_SAVED_SYN buffer; None if there is no header."""
    if len(raw) >= 20 and raw[0] >> 4 == 4:
        return raw[8]
    if len(raw) >= 40 and raw[0] >> 4 == 6:
        return raw[7]
    return None


def response_head(status: int, content_type: str, length: int, keep_alive: bool = False) -> bytes:
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            ).encode("ascii")


def render_response(status: int, body: bytes, content_type: str = "application/json",
                    keep_alive: bool = False) -> bytes:
    """A complete HTTP/1.1 response; the body is sent whole because the JSON answers are tiny."""
    return response_head(status, content_type, len(body), keep_alive) + body


def _json_line(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode() + b"\n"


def _error(status: int, text: str) -> bytes:
    return render_response(status, _json_line({"error": text}))


def _setns(fd: int) -> None:
    # Python 3.11 has no os.setns; this switches the calling thread only.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns(pid: int | None) -> Iterator[None]:
    """Run the body in the network namespace of process ``pid`` (None: stay where we are).

    The body must not await: setns() moves only this thread, and any other socket made meanwhile would
    land in the pod's namespace."""
    if pid is None:
        yield
        return
    with open("/proc/self/ns/net", "rb") as home, open(f"/proc/{pid}/ns/net", "rb") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def listen_socket(listener: Listener) -> socket.socket:
    """A listening socket that saves each SYN, created, bound and listening in the pod's namespace."""
    with netns(listener.netns_pid):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, 1)
            sock.bind((listener.bind, listener.port))
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
    return sock


def _syn_ttl(writer: asyncio.StreamWriter) -> int | None:
    try:  # absent when the kernel did not keep the SYN (e.g. a SYN cookie)
        return parse_saved_syn(writer.get_extra_info("socket").getsockopt(
            socket.IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_BUFFER))
    except OSError:
        return None


async def answer(listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 failing: dict[str, set[str]] | None = None) -> None:
    """Answer requests as ``listener``'s pod: one, or more while the client asks to keep the connection."""
    wait = READ_TIMEOUT_S
    while await answer_one(listener, reader, writer, failing, wait):
        await writer.drain()
        wait = KEEP_ALIVE_S


async def answer_one(listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     failing: dict[str, set[str]] | None = None, wait: float = READ_TIMEOUT_S) -> bool:
    """Read one request head and answer it (503 on a path whose readiness fails); True when the client
    asked ``Connection: keep-alive`` for a plain request, so another may follow."""
    syn_ttl = _syn_ttl(writer)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return False  # the client left or said nothing: nobody to answer
    except asyncio.LimitOverrunError:
        writer.write(_error(431, f"request head over {HEAD_LIMIT} bytes"))
        return False
    lines = head.decode("latin-1").split("\r\n")
    try:
        _method, target, _version = lines[0].split(" ")
    except ValueError:
        writer.write(_error(400, "malformed request line"))
        return False
    url = urlsplit(target)
    if failing and url.path in failing.get(listener.pod, ()):
        writer.write(_error(503, "readiness failing"))
        return False
    if url.path == "/bulk":
        await _send_bulk(writer, parse_qs(url.query).get("bytes", ["0"])[0])
        return False
    peer_ip, peer_port = writer.get_extra_info("peername")[:2]
    headers = request_headers(lines[1:])
    keep_alive = headers.get("connection", "").lower() == "keep-alive"
    writer.write(render_response(200, _json_line({
        "pod": listener.pod, "namespace": listener.namespace, "node": listener.node,
        "podIP": listener.pod_ip, "port": writer.get_extra_info("sockname")[1],
        "source": {"ip": peer_ip, "port": peer_port}, "synTTL": syn_ttl, "path": target,
        "headers": headers,
    }), keep_alive=keep_alive))
    return keep_alive


def request_headers(lines: list[str]) -> dict[str, str]:
    """The request's headers, names in lower case (a proxy's X-Forwarded-For is how the app sees the client)."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def _send_bulk(writer: asyncio.StreamWriter, count: str) -> None:
    if not count.isdigit() or int(count) > BULK_MAX_BYTES:
        writer.write(_error(400, f"bytes must be 0..{BULK_MAX_BYTES}"))
        return
    remaining = int(count)
    writer.write(response_head(200, "application/octet-stream", remaining))
    chunk = memoryview(BULK_CHUNK)
    while remaining:
        piece = chunk[:remaining]
        writer.write(piece)
        remaining -= len(piece)
        await writer.drain()  # waits for a slow reader instead of buffering 100 MB


def udp_socket(listener: Listener) -> socket.socket:
    """A bound UDP socket in the pod's namespace that reports each datagram's TTL."""
    with netns(listener.netns_pid):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            sock.bind((listener.bind, listener.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    return sock


def udp_answer(listener: Listener, port: int, data: bytes, ancillary, peer) -> bytes:
    ttl = next((int.from_bytes(d[:4], sys.byteorder) for level, kind, d in ancillary
                if level == socket.IPPROTO_IP and kind == socket.IP_TTL), None)
    return _json_line({"pod": listener.pod, "namespace": listener.namespace, "node": listener.node,
                       "podIP": listener.pod_ip, "port": port, "source": {"ip": peer[0], "port": peer[1]},
                       "synTTL": ttl, "path": data[:200].decode("latin-1").strip()})


class UdpServer:
    """One pod's UDP port: every datagram gets one answer, sent from the port it arrived on."""

    def __init__(self, listener: Listener, loop: asyncio.AbstractEventLoop) -> None:
        self.listener, self.loop = listener, loop
        self.sock = udp_socket(listener)
        self.port = self.sock.getsockname()[1]
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _flags, peer = self.sock.recvmsg(2048, socket.CMSG_SPACE(4))
            self.sock.sendto(udp_answer(self.listener, self.port, data, ancillary, peer), peer)
        except OSError:
            pass  # a datagram is not a connection: nothing to clean up

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Workload:
    """The running server: each pod's listening sockets, the control socket, and live connections."""

    def __init__(self) -> None:
        self._servers: dict[str, list[asyncio.Server | UdpServer]] = {}
        self._control: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: dict[str, int] = {}  # pod -> connections being served (a deleted pod's drain)
        self._writers: dict[str, set[asyncio.StreamWriter]] = {}  # pod -> its open connections
        self._failing: dict[str, set[str]] = {}  # pod -> paths that answer 503

    async def add(self, listener: Listener) -> int:
        """Start serving ``listener``; returns the port it actually listens on."""
        if listener.protocol == "UDP":
            udp = UdpServer(listener, asyncio.get_running_loop())
            self._servers.setdefault(listener.pod, []).append(udp)
            return udp.port
        sock = listen_socket(listener)
        handler = functools.partial(self._track, functools.partial(self._counted, listener))
        try:
            server = await asyncio.start_server(handler, sock=sock, limit=HEAD_LIMIT)
        except BaseException:
            sock.close()
            raise
        self._servers.setdefault(listener.pod, []).append(server)
        return sock.getsockname()[1]

    async def _counted(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[listener.pod] = self._open.get(listener.pod, 0) + 1
        self._writers.setdefault(listener.pod, set()).add(writer)
        try:
            await answer(listener, reader, writer, failing=self._failing)
            await writer.drain()
        finally:
            self._open[listener.pod] -= 1
            self._writers[listener.pod].discard(writer)

    def crash(self, pod: str) -> int:
        """The pod's container dies, alone: no more listeners, and every open connection reset (RST)."""
        closed = self.remove(pod)
        for writer in list(self._writers.get(pod, ())):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return closed

    def open_connections(self, pod: str) -> int:
        return self._open.get(pod, 0)

    def remove(self, pod: str) -> int:
        """Close ``pod``'s listening sockets; connections already accepted run to their end."""
        servers = self._servers.pop(pod, None)
        if not servers:
            raise LookupError(f"no listeners for pod {pod!r}")
        for server in servers:
            server.close()
        return len(servers)

    async def open_control(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # replace only a stale socket, never a file
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        self._control = await asyncio.start_unix_server(functools.partial(self._track, self._commands), path)

    async def command(self, line: bytes) -> dict[str, Any]:
        """Carry out one control command; every failure becomes an answer, never a crash."""
        try:
            cmd = json.loads(line)
            op = cmd.get("op") if isinstance(cmd, dict) else None
            if op == "add":
                return {"ok": True, "port": await self.add(Listener.from_json(cmd.get("listener")))}
            if op == "remove":
                return {"ok": True, "closed": self.remove(str(cmd.get("pod")))}
            if op == "crash":
                return {"ok": True, "closed": self.crash(str(cmd.get("pod")))}
            if op == "connections":
                return {"ok": True, "open": self.open_connections(str(cmd.get("pod")))}
            if op == "readiness":
                paths = self._failing.setdefault(str(cmd.get("pod")), set())
                (paths.add if cmd.get("failing") else paths.discard)(str(cmd.get("path", "/")))
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r}; expected 'add', 'remove', 'crash', 'connections' "
                                          "or 'readiness'"}
        except (ValueError, LookupError, TypeError, OSError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def _commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in reader:
            if line.strip():
                writer.write(_json_line(await self.command(line)))
                await writer.drain()

    async def _track(self, handler: Handler, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """Run a connection handler so that close() can cancel it, and always close the connection."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await handler(reader, writer)
            await writer.drain()
        except ConnectionError:
            pass  # the peer went away; there is nobody left to tell
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        for pod in list(self._servers):
            self.remove(pod)
        if self._control is not None:
            self._control.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _write_atomically(path: str, document: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(document) + "\n")
    os.replace(tmp, path)  # a reader sees no file or the whole file, never half of it


async def serve(config: dict[str, Any]) -> None:
    """Serve until SIGTERM or SIGINT, then close every socket and remove the files we created."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listeners = [Listener.from_json(item) for item in config.get("listeners", [])]
    ready, control = config.get("ready"), config.get("control")
    workload = Workload()
    created: list[str] = []  # remove only what this process made
    try:
        ports = [await workload.add(listener) for listener in listeners]
        if control:
            await workload.open_control(control)
            created.append(control)
        if ready:
            _write_atomically(ready, {"pid": os.getpid(), "listeners": [
                {"pod": li.pod, "namespace": li.namespace, "podIP": li.pod_ip, "port": port}
                for li, port in zip(listeners, ports, strict=True)]})
            created.append(ready)
        await stop.wait()
    finally:
        await workload.close()
        for path in created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.emulation.workload", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file: listeners, ready file, control socket")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(json.loads(Path(args.config).read_text())))
    except (OSError, ValueError) as exc:
        print(f"workload: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
