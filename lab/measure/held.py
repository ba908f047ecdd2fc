"""Connections broken when a node leaves the load balancer's rotation: held keep-alive connections, counted.

``broken_on_reroute(net, service, node)`` opens ``connections`` keep-alive HTTP/1.1 connections from the
outside client to the Service's load balancer address and makes one request on each; then the load
balancer takes ``node`` out of the rotation and moves the connections it had sent there to other nodes
(``LabNetwork.reroute``); then one more request on each. A connection is broken when that second
request fails: a reset (another node, or another pod's kernel, knows nothing of it), a timeout, or a
wrong or missing answer. What survives depends on the data path: under SNAT the new node masquerades
with its own address, so the pod's kernel sees a stranger; under DSR the new node DNATs afresh, and only
a choice that lands on the same pod (Maglev: every node chooses alike) keeps it.

The client side runs in the client host's namespace (``python -S -m lab.measure.held --target IP:PORT
--connections N``, standard library only, as ``lab.measure.probe``): it makes the first requests,
prints one JSON line ``{"held": [...]}``, waits for a line on its standard input, makes the second
requests and prints ``{"second": [...]}``; each record is ``{"ok", "error", "pod"}``.

Each call's connections use source ports of their own (``--first-port``, from a range below the client's
ephemeral one, ``lab.kube.addressing.CLIENT_HELD_PORTS``, advancing from call to call). A broken
connection's client port is free at once (its socket was reset), while the pod still holds its side
until its keep-alive ends; the kernel would hand the next batch to the same destination those very ports
again, and a SYN on such a 4-tuple draws the pod's challenge ACK, which conntrack on the way (new
connection, reply without SYN) drops: that connection would never open, a fault of the measurement and
not of the remedy measured.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from lab.kube.addressing import CLIENT_HELD_PORTS

# Long enough for a SYN's two retransmissions (at 1 s and 3 s) on a loaded machine: a slow answer is not a
# broken connection, and one that fails before the reroute is not held (it is reported apart).
REQUEST_TIMEOUT_S = 5.0
_cursor = [0]  # ports handed out so far in this process


def broken_on_reroute(net, service: str, node: str, connections: int = 60, namespace: str = "default",
                      reroute: bool = True) -> dict:
    """``{"held", "moved", "broken"}``: connections that answered before, how many the load balancer
    moved, and how many of the held ones failed after (``reroute=False``: the same without the reroute,
    the control). The rotation is restored afterwards."""
    target = f"{net.load_balancer_ip(service, namespace)}:{_lb_port(net, service, namespace)}"
    from lab.emulation.observing import REPO  # not at the top: the client side runs without site-packages

    low, high = CLIENT_HELD_PORTS  # below the client's ephemeral range
    first_port = low + _cursor[0] % (high - low - connections)
    _cursor[0] += connections
    client = net.host("client")
    argv = ["mnexec", "-a", str(client.pid), "env", f"PYTHONPATH={REPO}", sys.executable, "-S", "-m",
            "lab.measure.held", "--target", target, "--connections", str(connections),
            "--first-port", str(first_port)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline() or "{}").get("held")
        if first is None:
            raise RuntimeError("the held-connections client said nothing")
        moved = net.reroute(service, node, namespace) if reroute else 0
        proc.stdin.write("go\n")
        proc.stdin.flush()
        second = json.loads(proc.stdout.readline() or "{}").get("second", [])
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reroute:
            net.restore_rotation(service, namespace)
    held = [i for i, r in enumerate(first) if r["ok"]]
    broken = [i for i in held if not second[i]["ok"]]
    errors: dict[str, int] = {}
    for i in broken:
        errors[second[i]["error"]] = errors.get(second[i]["error"], 0) + 1
    not_held: dict[str, int] = {}
    for r in first:
        if not r["ok"]:
            not_held[r["error"]] = not_held.get(r["error"], 0) + 1
    return {"held": len(held), "moved": moved, "broken": len(broken), "errors": errors, "notHeld": not_held}


def _lb_port(net, service: str, namespace: str) -> int:
    return net.cluster.service(service, namespace).ports[0].port


# --- the client side, in the client's namespace --------------------------------------------------------

def request(sock: socket.socket, host: str) -> dict:
    """One GET on a kept-alive connection: the pod that answered, or why none did."""
    try:
        sock.sendall(f"GET /held HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return {"ok": False, "error": "closed", "pod": None}
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                       if k.strip().lower() == "content-length"), 0)
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                return {"ok": False, "error": "closed", "pod": None}
            body += chunk
        pod = json.loads(body).get("pod") if status == 200 else None
        return {"ok": status == 200 and pod is not None, "error": None if status == 200 else f"status {status}",
                "pod": pod}
    except TimeoutError:
        return {"ok": False, "error": "timeout", "pod": None}
    except (ConnectionResetError, BrokenPipeError):
        return {"ok": False, "error": "reset", "pod": None}
    except (OSError, ValueError, IndexError) as e:
        return {"ok": False, "error": f"other:{type(e).__name__}", "pod": None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.measure.held", description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="IP:PORT")
    ap.add_argument("--connections", type=int, default=60)
    ap.add_argument("--first-port", type=int, default=0, help="bind the i-th connection to this + i (0: any)")
    args = ap.parse_args(argv)
    ip, _, port = args.target.rpartition(":")
    socks = []
    first = []
    for i in range(args.connections):
        sock = socket.socket()
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            if args.first_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # over an earlier batch's TIME_WAIT
                sock.bind(("", args.first_port + i))
            sock.connect((ip, int(port)))
            first.append(request(sock, args.target))
        except OSError as e:
            first.append({"ok": False, "error": f"connect:{type(e).__name__}", "pod": None})
        socks.append(sock)
    print(json.dumps({"held": first}), flush=True)
    sys.stdin.readline()
    with ThreadPoolExecutor(max_workers=16) as pool:
        second = list(pool.map(lambda s: request(s, args.target), socks))
    for sock in socks:
        sock.close()
    print(json.dumps({"second": second}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
