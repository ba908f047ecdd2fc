"""Short requests timed in two parts: the TCP handshake, and the wait for the first byte of the answer.

It runs inside the client's namespace. One request at a time, so no request ever waits behind another,
and the paths take turns (request i goes to target i mod k), so a burst of noise on this shared machine
falls on every path alike. Each request is a new TCP connection (a new nodePort decision) that sends
``GET PATH`` and reads the answer to its end. Times, in milliseconds:

- ``connectMs``: ``connect()`` until the handshake completed: one round trip (SYN, SYN-ACK);
- ``ttfbMs``: from sending the request until the first byte of the answer: one round trip plus the
  server's time.

Both hold exactly one round trip of the path, so a path that is longer by some delay shows it in both.
The first ``--warmup`` requests per target are not recorded (ARP, and Open vSwitch's first-packet upcalls).

``python -m lab.measure.latency --targets NAME=IP:PORT [...] --requests N [--warmup W] [--timeout T] [--path /]``
prints one JSON document: ``{"durationS": 1.2, "records": {NAME: [{"ok": true, "error": null,
"connectMs": 0.31, "ttfbMs": 0.52}, ...]}}``; ``error`` is ``timeout``, ``refused`` or ``other:<text>``.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time

from lab.measure.probe import parse_target, percentiles

QUANTILES = (50, 90, 99)


def timed_request(target: tuple[str, int], path: str, timeout: float) -> dict:
    """One request on a new connection; failures are recorded, never raised."""
    host, port = target
    record = {"ok": False, "error": None, "connectMs": None, "ttfbMs": None}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            start = time.perf_counter()
            sock.connect((host, port))
            connected = time.perf_counter()
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            sent = time.perf_counter()
            if not sock.recv(1):
                record["error"] = "other:closed before answering"
                return record
            first = time.perf_counter()
            while sock.recv(65536):
                pass
        except TimeoutError:
            record["error"] = "timeout"
            return record
        except OSError as exc:
            record["error"] = "refused" if exc.errno == errno.ECONNREFUSED else f"other:{exc}"
            return record
    record.update(ok=True, connectMs=round((connected - start) * 1000, 4), ttfbMs=round((first - sent) * 1000, 4))
    return record


def measure(targets: dict[str, tuple[str, int]], requests: int, warmup: int = 5, timeout: float = 2.0,
            path: str = "/") -> dict:
    """``requests`` timed requests per target, the targets taking turns; returns the report document."""
    for _ in range(warmup):
        for target in targets.values():
            timed_request(target, path, timeout)
    records: dict[str, list[dict]] = {name: [] for name in targets}
    start = time.perf_counter()
    for _ in range(requests):
        for name, target in targets.items():
            records[name].append(timed_request(target, path, timeout))
    return {"durationS": round(time.perf_counter() - start, 3), "records": records}


def summarize(records: list[dict]) -> dict:
    """``{requests, ok, failed, errors, connectMs: {p50, p90, p99}, ttfbMs: {...}}`` (nearest-rank percentiles)."""
    ok = [r for r in records if r["ok"]]
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1

    def quantiles(key: str) -> dict[str, float | None]:
        values = percentiles([r[key] for r in ok], QUANTILES)
        return {f"p{q}": None if v is None else round(v, 3) for q, v in values.items()}
    return {"requests": len(records), "ok": len(ok), "failed": len(records) - len(ok), "errors": errors,
            "connectMs": quantiles("connectMs"), "ttfbMs": quantiles("ttfbMs")}


def _named_target(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, target = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"target must be NAME=IP:PORT, got {text!r}")
    try:
        return name, parse_target(target)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.measure.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", required=True, type=_named_target, metavar="NAME=IP:PORT")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per target (200)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per target first (5)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request (2.0)")
    parser.add_argument("--path", default="/", help="request path (/)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("need --requests >= 1, --warmup >= 0 and --timeout > 0")
    json.dump(measure(dict(args.targets), args.requests, args.warmup, args.timeout, args.path), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
