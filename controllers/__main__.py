"""Start kube-proxy (the os-ken app) as its own process: ``python -m controllers --state F --status F
(--socket PATH | --port N)``.

os-ken 4 has no ``osken-manager``, so this is the launcher: it configures the OpenFlow listener (a Unix
socket the lab chose, which only root can reach when it lies in the run's 0700 directory; or 127.0.0.1
and a port, reachable by every local user), then runs the app in-process with ``AppManager.run_apps`` (as
Neutron's OVS agent does). os-ken's native hub cannot be stopped cleanly (``HubThread`` has no
``kill()``, threads are not daemons, so the interpreter hangs at exit); the app keeps no state worth
saving, so on SIGINT/SIGTERM the launcher flushes its log and leaves with ``os._exit``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time


def _listening(port: int | str) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``, or on the Unix socket ``port``."""
    try:
        if isinstance(port, str):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.2)
                s.connect(port)
                return True
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controllers", description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="cluster state JSON the lab writes (watched)")
    ap.add_argument("--status", required=True, help="where to acknowledge applied generations")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="OpenFlow listener on this Unix socket (its directory must exist)")
    where.add_argument("--port", type=int, help="OpenFlow listen port on 127.0.0.1")
    ap.add_argument("--lb-health", help="health verdicts of the cloud load balancer's checker (watched)")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)

    # The controller builds and holds every bridge's program: at 1,000 Services, 311,000 small acyclic
    # Flow values and as many os-ken messages. With the default thresholds the cyclic collector runs
    # thousands of times while they are built, its full passes over an ever larger heap: a third of
    # the time of installing them. Collect far less often; nothing here relies on cycles freed early.
    gc.set_threshold(100_000, 50, 1000)
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    listener = os.path.abspath(args.socket) if args.socket else args.port
    where = f"Unix socket {listener}" if args.socket else f"port {args.port} on 127.0.0.1"
    if _listening(listener):
        print(f"error: {where} is already in use: choose another --{'socket' if args.socket else 'port'}",
              file=sys.stderr)
        return 1
    if args.socket and os.path.exists(listener):
        os.unlink(listener)  # a socket nobody accepts on: left by a controller that was killed

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    from os_ken import cfg

    from controllers.kube_proxy import KubeProxy
    from controllers.openflow import app_manager  # imports os_ken.controller, which registers ofp_* options

    cfg.CONF(args=[], project="os_ken")
    if args.socket:
        from controllers.openflow import listen_on_unix_socket
        listen_on_unix_socket(listener)
    else:
        cfg.CONF.set_override("ofp_listen_host", "127.0.0.1")
        cfg.CONF.set_override("ofp_tcp_listen_port", args.port)
    KubeProxy.state_path = os.path.abspath(args.state)
    KubeProxy.status_path = os.path.abspath(args.status)
    KubeProxy.lb_health_path = os.path.abspath(args.lb_health) if args.lb_health else None

    runner = threading.Thread(target=app_manager.AppManager.run_apps, args=(["controllers.kube_proxy"],),
                              daemon=True, name="os-ken")
    runner.start()
    deadline = time.monotonic() + 10
    while not _listening(listener):
        if time.monotonic() > deadline or not runner.is_alive():
            logging.error("OpenFlow listener on %s did not come up", where)
            logging.shutdown()
            os._exit(1)
        time.sleep(0.05)
    logging.info("listening on %s", where)
    while not stop.wait(0.5):
        if not runner.is_alive():
            logging.error("os-ken stopped unexpectedly")
            logging.shutdown()
            os._exit(1)
    logging.info("stopping")
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
