"""Watch a nodePort until a given pod answers: when did the data plane start obeying a change?

Runs inside the client's namespace (``mnexec -a PID python watch.py``), standard library only. It
reads one JSON command per line on stdin::

    {"target": "172.18.0.11:32700", "want": "p-2-0", "timeout": 5, "requestTimeout": 0.25,
     "interval": 0.002}

answers ``{"armed": T}`` at once, then sends one HTTP request after another, each on a new
connection (so each is a new balancing decision), ``interval`` seconds apart, until the lab's pod
server answers as ``want``. It then prints::

    {"seen": true, "sentAt": T1, "seenAt": T2, "lastOtherAt": T3, "attempts": n, "errors": {kind: n}}

``sentAt``/``seenAt``: when the first request that reached ``want`` started and when its connection
was established (the switch had obeyed by then); ``lastOtherAt``: when the last request answered by
another pod was established. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in
every namespace), so the caller can subtract its own timestamps. End of input ends the program.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter


def request(host: str, port: int, timeout: float) -> tuple[str | None, float | None, str | None]:
    """(pod that answered, monotonic time the connection was established, error kind)."""
    connected = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            connected = time.monotonic()
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except TimeoutError:
        return None, connected, "timeout"
    except ConnectionRefusedError:
        return None, connected, "refused"
    except OSError as exc:
        return None, connected, type(exc).__name__
    body = b"".join(chunks).partition(b"\r\n\r\n")[2]
    try:
        return json.loads(body)["pod"], connected, None
    except (ValueError, KeyError, TypeError):
        return None, connected, "bad-answer"


def watch(command: dict) -> dict:
    host, _, port = command["target"].rpartition(":")
    want = command["want"]
    deadline = time.monotonic() + float(command.get("timeout", 5))
    request_timeout = float(command.get("requestTimeout", 0.25))
    interval = float(command.get("interval", 0.002))
    errors: Counter[str] = Counter()
    last_other = None
    attempts = 0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        attempts += 1
        pod, connected, error = request(host, int(port), request_timeout)
        if pod == want:
            return {"seen": True, "sentAt": sent, "seenAt": connected, "lastOtherAt": last_other,
                    "attempts": attempts, "errors": dict(errors)}
        if pod is not None:
            last_other = connected
        if error:
            errors[error] += 1
        time.sleep(interval)
    return {"seen": False, "sentAt": None, "seenAt": None, "lastOtherAt": last_other, "attempts": attempts,
            "errors": dict(errors)}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        print(json.dumps({"armed": time.monotonic()}), flush=True)
        print(json.dumps(watch(command)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
