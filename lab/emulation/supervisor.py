"""Supervision of a run's daemons: kube-proxy, the pods' servers and the load balancer's health checker.

Without it a dead daemon went unnoticed: the controller until the next change timed out, the pods'
server while health checks still answered 200 (kube-proxy answers them), the health checker while the
load balancer's verdicts silently froze. Now each is polled every ``POLL_S``: a death is noticed within
a fraction of a second, logged with how the process ended, the daemon restarted (as systemd or kubelet
would restart kube-proxy), and counted in ``restarts``, which the reports carry. A daemon that keeps
dying is restarted with a doubling back-off (up to ``MAX_BACKOFF_S``), as kubelet's CrashLoopBackOff.

What a restart means for traffic: switches are fail-secure and keep their flows while kube-proxy is
away, so established and new connections keep flowing and the restarted controller resynchronises
them (``controllers.kube_proxy``); the pods' servers come back with every pod's listeners; the health
checker starts from its profile's initial verdicts.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

POLL_S = 0.2
MAX_BACKOFF_S = 5.0


@dataclass
class Daemon:
    name: str
    process: Callable[[], subprocess.Popen | None]  # the current process, None while there is none
    restart: Callable[[], None]  # start it again (the dead process is already forgotten)
    forget: Callable[[subprocess.Popen], None]
    needs_lock: bool = True  # restart while no operation on the network runs
    failures: list[float] = field(default_factory=list)  # monotonic times of recent deaths


def how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, log: Callable[[str], None], lock: threading.RLock):
        self.log = log
        self.lock = lock
        self.daemons: list[Daemon] = []
        self.restarts: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, daemon: Daemon) -> None:
        self.daemons.append(daemon)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="npl-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """From here on a process that ends is being stopped, not dying."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            for daemon in self.daemons:
                proc = daemon.process()
                if proc is None or proc.poll() is None:
                    continue
                self._handle(daemon, proc)

    def _backoff_s(self, daemon: Daemon) -> float:
        now = time.monotonic()
        daemon.failures = [t for t in daemon.failures if now - t < 60] + [now]
        return min(MAX_BACKOFF_S, 0.0 if len(daemon.failures) < 3 else 0.5 * 2 ** (len(daemon.failures) - 3))

    def _handle(self, daemon: Daemon, proc: subprocess.Popen) -> None:
        noticed = time.time()
        how = how_it_ended(proc.returncode)
        self.log(f"{daemon.name} (pid {proc.pid}) {how}: restarting it")
        event = {"process": daemon.name, "pid": proc.pid, "how": how, "noticedAt": round(noticed, 3),
                 "restartedInS": None, "error": None}
        self.restarts.append(event)
        delay = self._backoff_s(daemon)
        if delay and self._stop.wait(delay):
            return
        started = time.monotonic()
        try:
            if daemon.needs_lock:
                with self.lock:
                    if self._stop.is_set():
                        return
                    daemon.forget(proc)
                    daemon.restart()
            else:
                daemon.forget(proc)
                daemon.restart()
        except Exception as e:  # noqa: BLE001 - logged and counted; the next poll tries again
            event["error"] = str(e)
            self.log(f"{daemon.name}: restart failed: {e}")
            return
        event["restartedInS"] = round(time.monotonic() - started, 3)
        count = sum(r["process"] == daemon.name for r in self.restarts)
        self.log(f"{daemon.name} restarted in {event['restartedInS']:.2f} s (pid {daemon.process().pid}; "
                 f"restart {count} of it in this run)")
