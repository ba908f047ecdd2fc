"""The external client's load generator: many short HTTP requests to NodePort targets, reported as data.

It runs inside the client's namespace. Every request is a new TCP connection, as a new client would
make, so every request is a fresh kube-proxy balancing decision; the pods' answers (``lab.emulation.workload``)
say which pod served it and which source address it saw.

Requests go to the targets round-robin (request ``i`` to ``targets[i % len(targets)]``). Per target,
at most ``concurrency`` requests are in flight while they get answers; the first timeout of a target,
or a quarter of a timeout without a single connection established, releases all of that target's
remaining requests at once. A node that silently drops traffic therefore costs about 1.25 timeouts,
not ``requests / concurrency`` of them, while a healthy one is never flooded.
Each request, from connect to the end of the response, has ``timeout`` seconds.

``python -m lab.measure.probe --targets 172.18.0.11:30007 [...] --requests N --concurrency C --timeout T
[--path /]`` prints one JSON document::

    {"startedAt": "2025-01-01T00:00:00.000+00:00", "durationS": 1.23, "records": [
      {"target": "172.18.0.11:30007", "ok": true, "error": null, "status": 200, "bytes": 171,
       "connectMs": 0.41, "latencyMs": 1.9, "response": {...}, "local": "203.0.113.10:40512"}]}

``--protocol udp`` sends each request as one datagram (the path as its text) from a new socket, so a
new source port and a new conntrack entry, and waits for the pod's datagram answer (the same JSON);
``connectMs`` and ``status`` are then null, and ``refused`` means an ICMP port unreachable.

``records`` are in request order. ``error`` is null, ``timeout``, ``refused`` (a TCP RST or an ICMP
port unreachable), ``reset``, ``unreachable`` (ICMP host or network unreachable) or ``other:<text>``.
``response`` is the parsed body when it is JSON; ``bytes`` counts the body either way.

Requests to an L7 proxy (``lab.ingress``) say more: ``--host NAME`` sets the Host header (and, with
``--tls``, the TLS server name: SNI), ``--header NAME:VALUE`` adds headers. Such records also carry
``location`` (a redirect's target) and, over TLS, ``certificate`` (the subject CN the server presented).
Any status counts as an answer for them (``ok``: an HTTP response arrived); plain probes want 200.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import json
import math
import resource
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_ERRORS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}
READ_CHUNK = 64 * 1024


@dataclass
class Record:
    """What one request saw; times in milliseconds from the start of its connect()."""

    target: str
    ok: bool = False
    error: str | None = None
    status: int | None = None
    bytes: int | None = None
    connect_ms: float | None = None
    latency_ms: float | None = None
    response: Any = None
    local: str | None = None
    t: float | None = None  # seconds from the start of the probe to this request's connect()
    location: str | None = None  # a redirect's Location header
    certificate: str | None = None  # over TLS: the subject CN of the server's certificate

    def to_json(self) -> dict[str, Any]:
        doc = {"target": self.target, "ok": self.ok, "error": self.error, "status": self.status,
               "bytes": self.bytes, "connectMs": self.connect_ms, "latencyMs": self.latency_ms,
               "response": self.response, "local": self.local, "t": self.t}
        if self.location is not None:
            doc["location"] = self.location
        if self.certificate is not None:
            doc["certificate"] = self.certificate
        return doc


@dataclass(frozen=True)
class HttpRequest:
    """What a request to an L7 proxy says beyond its path: Host (and SNI), TLS, extra headers."""

    host: str | None = None
    tls: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def l7(self) -> bool:
        return self != PLAIN


PLAIN = HttpRequest()


def _client_tls() -> ssl.SSLContext:
    # The probe reports which certificate it got (a test checks it); it trusts none, like curl -k.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _peer_cn(writer: asyncio.StreamWriter) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def parse_target(text: str) -> tuple[str, int]:
    """``"ip:port"`` -> ``(ip, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be ip:port, got {text!r}")
    return host, int(port)


def classify(exc: OSError) -> str:
    """The record's error word for a socket error."""
    return _ERRORS.get(exc.errno or 0, f"other:{exc}")


def percentiles(values: Iterable[float], qs: Iterable[float]) -> dict[float, float | None]:
    """Nearest-rank percentiles: for each q in [0, 100], the smallest value with q% at or below it.

    Nearest rank always reports a latency some request really had, never an interpolation between two,
    which is what a tail percentile should mean. Empty input gives None for every q.
    """
    ordered = sorted(values)
    result: dict[float, float | None] = {}
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q} is outside [0, 100]")
        rank = max(1, math.ceil(q * len(ordered) / 100))
        result[q] = ordered[rank - 1] if ordered else None
    return result


def _millis_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


async def _exchange(record: Record, host: str, port: int, path: str, start: float,
                    connected: list[int] | None = None, request: HttpRequest = PLAIN) -> None:
    if request.tls:
        reader, writer = await asyncio.open_connection(host, port, ssl=_client_tls(),
                                                       server_hostname=request.host or host)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    try:
        record.connect_ms = _millis_since(start)
        if connected is not None:
            connected[0] += 1
        local_ip, local_port = writer.get_extra_info("sockname")[:2]
        record.local = f"{local_ip}:{local_port}"
        if request.tls:
            record.certificate = _peer_cn(writer)
        extra = "".join(f"{name}: {value}\r\n" for name, value in request.headers)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {request.host or f'{host}:{port}'}\r\n{extra}"
                     "Connection: close\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        record.status = int(head[0].split(" ")[1])
        record.location = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("location:")),
                               None)
        is_json = any(h.lower().startswith("content-type: application/json") for h in head[1:])
        body, size = bytearray(), 0
        while chunk := await reader.read(READ_CHUNK):  # until EOF; bulk bodies are counted, not kept
            size += len(chunk)
            if is_json:
                body += chunk
        record.bytes = size
        length = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("content-length:")), None)
        if length is not None and length.isdigit() and int(length) != size:
            raise EOFError(f"the answer ended after {size} of {length} bytes")  # never counted as served
        record.response = json.loads(body) if is_json else None
        record.latency_ms = _millis_since(start)
    finally:
        writer.close()


async def fetch(target: tuple[str, int], path: str = "/", timeout: float = 1.0,
                origin: float | None = None, connected: list[int] | None = None,
                request: HttpRequest = PLAIN) -> Record:
    """One request on a new connection; every failure is recorded, none is raised. ``connected[0]``
    counts the connections that were established."""
    host, port = target
    record = Record(target=f"{host}:{port}")
    start = time.perf_counter()
    if origin is not None:
        record.t = round(start - origin, 4)
    try:
        async with asyncio.timeout(timeout):
            await _exchange(record, host, port, path, start, connected, request)
    except TimeoutError:  # before OSError: TimeoutError is one
        record.error = "timeout"
    except OSError as exc:
        record.error = classify(exc)
    except (EOFError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
        record.error = f"other:bad response: {exc}"
    except ssl.SSLError as exc:
        record.error = f"other:TLS: {exc.reason}"
    else:
        record.ok = record.status == 200 or request.l7
        record.error = None if record.ok else f"other:HTTP {record.status}"
    if not record.ok:
        record.latency_ms = None
    return record


async def fetch_udp(target: tuple[str, int], path: str = "/", timeout: float = 1.0,
                    origin: float | None = None, connected: list[int] | None = None) -> Record:
    """One datagram from a new socket and its answer; every failure is recorded, none is raised.
    (UDP connects nothing: ``connected`` is not counted, an answer stops the drop watch instead.)"""
    host, port = target
    record = Record(target=f"{host}:{port}")
    start = time.perf_counter()
    if origin is not None:
        record.t = round(start - origin, 4)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            local_ip, local_port = sock.getsockname()[:2]
            record.local = f"{local_ip}:{local_port}"
            await loop.sock_sendall(sock, path.encode())
            data = await loop.sock_recv(sock, 65536)
        record.bytes = len(data)
        record.response = json.loads(data)
        record.latency_ms = _millis_since(start)
        record.ok = True
    except TimeoutError:
        record.error = "timeout"
    except OSError as exc:
        record.error = classify(exc)
    except ValueError as exc:
        record.error = f"other:bad response: {exc}"
    finally:
        sock.close()
    return record


FETCHERS = {"tcp": fetch, "udp": fetch_udp}


async def _drive_target(target: tuple[str, int], indices: Sequence[int], records: list[Record | None],
                        concurrency: int, timeout: float, path: str, origin: float, fetcher=fetch) -> None:
    """Run one target's requests, ``concurrency`` at a time until one times out, then all at once.

    A target that drops silently is found sooner: when a quarter of a timeout has passed since the first
    requests left and not one connection was established (a SYN that is answered connects in
    milliseconds, however slow the answer after it), the rest go at once too. Every request still has
    its whole timeout."""
    pending = deque(indices)
    running: dict[asyncio.Task[Record], int] = {}
    flooding = False
    connected, answered = [0], 0
    silent_after = time.perf_counter() + timeout / 4
    while pending or running:
        while pending and (flooding or len(running) < concurrency):
            running[asyncio.create_task(fetcher(target, path, timeout, origin, connected))] = pending.popleft()
        watching = not flooding and pending and not connected[0] and not answered
        wait = max(silent_after - time.perf_counter(), 0.0) if watching else None
        done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            record = records[running.pop(task)] = task.result()
            answered += 1
            flooding = flooding or record.error == "timeout"
        if watching and not done and not connected[0]:
            flooding = True  # a quarter of a timeout and no connection at all: the target drops


async def _paced(targets: Sequence[tuple[str, int]], requests: int, rate: float, records: list[Record | None],
                 timeout: float, path: str, origin: float, fetcher=fetch) -> None:
    """Open loop: request i starts at i/rate seconds whatever happened to the others, so a time series of
    the records shows when a path stopped (or started) working, as a client population would see it."""
    tasks = []
    for i in range(requests):
        delay = origin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fetcher(targets[i % len(targets)], path, timeout, origin)))
    for i, record in enumerate(await asyncio.gather(*tasks)):
        records[i] = record


async def run_probe(targets: Sequence[str], requests: int, concurrency: int = 8, timeout: float = 1.0,
                    path: str = "/", rate: float | None = None, protocol: str = "tcp",
                    request: HttpRequest = PLAIN) -> dict[str, Any]:
    """Send ``requests`` requests over ``targets`` (``"ip:port"``) and return the report document.

    With ``rate`` (requests per second) requests start on a fixed schedule instead (open loop)."""
    if not targets or requests < 0 or concurrency < 1 or timeout <= 0 or (rate is not None and rate <= 0):
        raise ValueError("need targets, requests >= 0, concurrency >= 1, timeout > 0 and rate > 0")
    parsed = [parse_target(t) for t in targets]
    fetcher = FETCHERS[protocol]
    if request.l7:
        fetcher = functools.partial(fetch, request=request)
    records: list[Record | None] = [None] * requests
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    start = time.perf_counter()
    if rate is not None:
        await _paced(parsed, requests, rate, records, timeout, path, start, fetcher)
    else:
        await asyncio.gather(*(
            _drive_target(target, range(k, requests, len(parsed)), records, concurrency, timeout, path, start,
                          fetcher)
            for k, target in enumerate(parsed)))
    return {"startedAt": started_at, "durationS": round(time.perf_counter() - start, 6),
            "records": [r.to_json() for r in records if r is not None]}


def _target_arg(text: str) -> str:
    try:
        parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.measure.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", required=True, type=_target_arg, metavar="IP:PORT")
    parser.add_argument("--requests", type=int, default=100, help="total, spread round-robin (100)")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight per target (8)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per request (1.0)")
    parser.add_argument("--path", default="/", help="request path (/); /bulk?bytes=N for bulk data")
    parser.add_argument("--rate", type=float, help="start requests on a fixed schedule, this many per second")
    parser.add_argument("--protocol", choices=sorted(FETCHERS), default="tcp", help="tcp (HTTP) or udp (datagrams)")
    parser.add_argument("--host", help="Host header (and TLS server name) for an L7 proxy")
    parser.add_argument("--tls", action="store_true", help="speak HTTPS (the certificate is reported, not checked)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra header")
    args = parser.parse_args(argv)
    if any(":" not in h for h in args.header):
        parser.error("--header takes NAME:VALUE")
    request = HttpRequest(args.host, args.tls, tuple((n.strip(), v.strip()) for n, _, v in
                                                     (h.partition(":") for h in args.header)))
    # Releasing a dropping target's requests at once can open thousands of sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        report = asyncio.run(
            run_probe(args.targets, args.requests, args.concurrency, args.timeout, args.path, args.rate,
                      args.protocol, request))
    except ValueError as exc:
        parser.error(str(exc))
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
