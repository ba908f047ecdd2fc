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
``response`` is the parsed body when it is JSON; ``bytes`` counts the body either way. ``local`` is the
source address and port connect() chose, also for a request that never connected (which 4-tuple a
failure had is what tells a data-plane clash from a lost packet).

Requests to an L7 proxy (``lab.ingress``) say more: ``--host NAME`` sets the Host header (and, with
``--tls``, the TLS server name: SNI), ``--header NAME:VALUE`` adds headers. Such records also carry
``location`` (a redirect's target) and, over TLS, ``certificate`` (the subject CN the server presented).
Any status counts as an answer for them (``ok``: an HTTP response arrived); plain probes want 200.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from lab.measure.probe_loop import PLAIN, Engine, HttpRequest, Record, classify

__all__ = ["PLAIN", "HttpRequest", "Record", "classify", "fetch", "parse_target", "percentiles", "probe",
           "run_probe"]
PROTOCOLS = ("tcp", "udp")


def parse_target(text: str) -> tuple[str, int]:
    """``"ip:port"`` -> ``(ip, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be ip:port, got {text!r}")
    return host, int(port)


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


def probe(targets: Sequence[str], requests: int, concurrency: int = 8, timeout: float = 1.0, path: str = "/",
          rate: float | None = None, protocol: str = "tcp", request: HttpRequest = PLAIN) -> dict[str, Any]:
    """Send ``requests`` requests over ``targets`` (``"ip:port"``) and return the report document.

    With ``rate`` (requests per second) requests start on a fixed schedule instead (open loop)."""
    head, records = _run(targets, requests, concurrency, timeout, path, rate, protocol, request)
    return {**head, "records": [r.to_json() for r in records]}


def _run(targets: Sequence[str], requests: int, concurrency: int, timeout: float, path: str, rate: float | None,
         protocol: str, request: HttpRequest) -> tuple[dict[str, Any], list[Record]]:
    if not targets or requests < 0 or concurrency < 1 or timeout <= 0 or (rate is not None and rate <= 0):
        raise ValueError("need targets, requests >= 0, concurrency >= 1, timeout > 0 and rate > 0")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    engine = Engine([parse_target(t) for t in targets], requests, concurrency, timeout, path, protocol, request)
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    start = time.perf_counter()
    records = engine.run(rate)
    return {"startedAt": started_at, "durationS": round(time.perf_counter() - start, 6)}, records


def report_text(head: dict[str, Any], records: Sequence[Record]) -> str:
    """``probe``'s document as JSON text, built record by record (``Record.json_text``)."""
    return f'{json.dumps(head)[:-1]}, "records": [{", ".join(r.json_text() for r in records)}]}}'


async def run_probe(targets: Sequence[str], requests: int, concurrency: int = 8, timeout: float = 1.0,
                    path: str = "/", rate: float | None = None, protocol: str = "tcp",
                    request: HttpRequest = PLAIN) -> dict[str, Any]:
    """``probe`` for a caller inside an event loop (its own servers keep running meanwhile, in that loop)."""
    import asyncio

    return await asyncio.to_thread(probe, targets, requests, concurrency, timeout, path, rate, protocol, request)


async def fetch(target: tuple[str, int], path: str = "/", timeout: float = 1.0,
                request: HttpRequest = PLAIN) -> Record:
    """One request on a new connection, for a caller inside an event loop; every failure is recorded."""
    import asyncio

    def one() -> Record:
        return Engine([target], 1, 1, timeout, path, "tcp", request).run()[0]

    return await asyncio.to_thread(one)


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
    parser.add_argument("--protocol", choices=PROTOCOLS, default="tcp", help="tcp (HTTP) or udp (datagrams)")
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
    # A short-lived process that makes next to no reference cycles: a collector would only walk its growing
    # list of records, over and over (a sixth of the engine's own CPU).
    gc.disable()
    try:
        head, records = _run(args.targets, args.requests, args.concurrency, args.timeout, args.path, args.rate,
                             args.protocol, request)
    except ValueError as exc:
        parser.error(str(exc))
    # One string in one write: json.dump would encode in pure Python, chunk by chunk, and for thousands of
    # records that cost the probe more CPU than all its requests did.
    sys.stdout.write(report_text(head, records) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
