"""Short TCP connections per second, netperf TCP_CRR style: connect, one byte back, close; repeat.

Runs inside a Mininet host (``mnexec -a PID python connrate.py ...``), so it uses only the standard
library and is started by path.

``server --ports P [P...]``: on each accepted connection send one byte and close (the server closes
first, so TIME_WAIT stays on the server and the client never runs out of source ports). Prints
``{"ready": true}`` once every port listens, then serves until killed.

``client --target IP:PORT --seconds S [--concurrency C] [--warmup W] [--timeout T]``: keeps C
connections in flight; each counts when the server's byte and end of stream have both arrived.
Connections completed in the S seconds after a warm-up of W seconds are counted. Prints one JSON
document: ``{"connections", "allConnections" (warm-up included), "seconds", "rate", "errors": {kind:
n}, "latencyMs": {"p50", "p99"}, "cpuS"}`` (``cpuS``: this process's CPU time over the whole run).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import resource
import selectors
import socket
import sys
import time
from collections import Counter


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        sel.register(_listen(port), selectors.EVENT_READ)
    print(json.dumps({"ready": True, "ports": ports}), flush=True)
    while True:
        for key, _ in sel.select():
            while True:
                try:
                    conn, _peer = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. ECONNABORTED: the client gave up before we accepted
                    continue
                try:
                    conn.send(b"!")
                except OSError:
                    pass
                conn.close()


def _error_kind(err: int) -> str:
    return {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ETIMEDOUT: "timeout",
            errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable",
            errno.EADDRNOTAVAIL: "no-source-port"}.get(err, errno.errorcode.get(err, str(err)))


def nearest_rank(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def run_client(host: str, port: int, seconds: float, concurrency: int = 8, warmup: float = 0.3,
               timeout: float = 1.0) -> dict:
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + seconds
    opened: dict[socket.socket, float] = {}
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    done = total = 0

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            errors[_error_kind(err)] += 1
            sock.close()
            return
        opened[sock] = time.monotonic()
        sel.register(sock, selectors.EVENT_READ)

    def finish(sock: socket.socket) -> None:
        sel.unregister(sock)
        del opened[sock]
        sock.close()

    for _ in range(concurrency):
        open_one()
    while True:
        now = time.monotonic()
        if now >= window_end:
            break
        for key, _ in sel.select(timeout=0.05):
            sock = key.fileobj
            began = opened[sock]
            try:
                while True:
                    data = sock.recv(64)
                    if not data:  # end of stream after the byte: a complete short connection
                        now = time.monotonic()
                        total += 1
                        if window_start <= now < window_end:
                            done += 1
                            latencies.append((now - began) * 1000)
                        finish(sock)
                        break
            except (BlockingIOError, InterruptedError):
                continue  # the byte came, the end of stream has not yet
            except OSError as exc:
                errors[_error_kind(exc.errno or 0)] += 1
                finish(sock)
            if time.monotonic() < window_end:
                open_one()
        now = time.monotonic()
        for sock, began in list(opened.items()):  # connections that got no answer in time
            if now - began > timeout:
                errors["timeout"] += 1
                finish(sock)
                open_one()
        while len(opened) < concurrency and now < window_end:
            before = len(opened)
            open_one()  # make up for connections that failed at connect()
            if len(opened) == before:
                break  # failing at once (no route, no source port): try again on the next round
    for sock in list(opened):
        finish(sock)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"target": f"{host}:{port}", "connections": done, "allConnections": total, "seconds": seconds,
            "rate": round(done / seconds, 1), "concurrency": concurrency, "errors": dict(errors),
            "latencyMs": {"p50": nearest_rank(latencies, 50), "p99": nearest_rank(latencies, 99)},
            "cpuS": round(usage.ru_utime + usage.ru_stime, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="connrate.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    server = sub.add_parser("server")
    server.add_argument("--ports", type=int, nargs="+", required=True)
    client = sub.add_parser("client")
    client.add_argument("--target", required=True, metavar="IP:PORT")
    client.add_argument("--seconds", type=float, default=2.0)
    client.add_argument("--concurrency", type=int, default=8)
    client.add_argument("--warmup", type=float, default=0.3)
    client.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "server":
        serve(args.ports)
        return 0
    host, _, port = args.target.rpartition(":")
    print(json.dumps(run_client(host, int(port), args.seconds, args.concurrency, args.warmup, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
