"""What the lab does when its own parts fail: supervision of its daemons, and faults one can inject.

``ClusterNetwork`` (``lab.emulation.network``) mixes this in. A daemon of the run (kube-proxy, the pods'
servers, the load balancer's health checker beside it) that dies is restarted by the supervisor
(``lab.emulation.supervisor``); one pod's container that dies is kubelet's business: that pod alone
stops answering, is not ready (its endpoints leave every Service), and comes back per its
``restartPolicy`` after CrashLoopBackOff's delay. The data-plane fault a cluster meets most, a node's
link going down, is here too. Every event is logged and counted in ``restarts``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from lab.emulation.supervisor import Daemon, Supervisor
from lab.errors import LabError
from lab.kube import addressing as addr

BACKOFF_START_S, BACKOFF_MAX_S = 10.0, 300.0  # kubelet's CrashLoopBackOff


class Supervised:
    """The faults half of ``ClusterNetwork``; it relies on its ``run``, ``controller``, ``workload``,
    ``net``, ``cluster``, ``log``, ``ops_lock`` and pod-server helpers."""

    # --- supervision (lab.emulation.supervisor) ---------------------------------------------------------

    def _supervise(self) -> None:
        self.supervisor = Supervisor(self.log, self.ops_lock)
        self.controller.supervised = True
        self.supervisor.watch(Daemon("kube-proxy controller", lambda: self.controller and self.controller.proc,
                                     self._restart_controller, self._forget, needs_lock=False))
        self.supervisor.watch(Daemon("pod servers", lambda: self.workload, self._restart_workload, self._forget))
        self._supervised(self.supervisor)
        self.supervisor.start()

    def _supervised(self, supervisor: Supervisor) -> None:
        """Called once the cluster is up: what runs beside it adds its daemons here."""

    def _forget(self, proc: subprocess.Popen) -> None:
        self.run.disown_process(proc.pid)

    def _restart_controller(self) -> None:
        """A new kube-proxy on the same state; switches reconnect within a second and it resyncs them.
        Until then they keep their flows (fail-secure), so traffic keeps flowing."""
        if os.path.exists(self.controller.status_path):
            os.unlink(self.controller.status_path)
        self.controller.respawn()

    def _restart_workload(self) -> None:
        """Every pod's listeners again, from the cluster as it is now (pods added since included)."""
        ready = self.run.file("workload.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        self._start_workload()

    @property
    def restarts(self) -> list[dict]:
        """Every death of a supervised daemon or a pod's container in this run, in order: process, pid,
        how it ended, when it was noticed, how long its restart took (``lab.emulation.supervisor``)."""
        events = (list(self.supervisor.restarts) if self.supervisor else []) + list(self.container_restarts)
        return sorted(events, key=lambda e: e["noticedAt"])  # in the order they happened

    def _stop_supervisor(self) -> None:
        """Called first at teardown: from here on a process that ends is being stopped, not dying."""
        if self.supervisor is not None:
            self.supervisor.stop()
        for timer in self.crashed.values():
            if timer is not None:
                timer.cancel()

    # --- one pod's container dying (kubelet's part) -----------------------------------------------------

    def kill_container(self, name: str) -> None:
        """A pod's container dies on its own: that pod alone stops answering (open connections reset),
        kubelet marks it not ready (its endpoints leave every Service) and restarts it per its
        restartPolicy (Always unless the pod says otherwise) after CrashLoopBackOff's delay: 10 s,
        doubling per restart, at most 300 s. Ready again once it listens."""
        with self.ops_lock:
            pod = self.cluster.pod(name)
            if name in self.crashed:
                raise LabError(f"pod {name}'s container is already down", "wait for kubelet to restart it")
            self._workload_command({"op": "crash", "pod": name})
            self.crashed[name] = None
            self.log(f"pod {name}: container died; not ready, its endpoints removed")
            self._publish()
            policy = getattr(pod, "restart_policy", "Always")
            if policy == "Never":
                self.log(f"pod {name}: restartPolicy Never: it stays down")
                return
            delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** self._restart_counts.get(name, 0))
            timer = threading.Timer(delay, self._restart_container, args=(name, time.time()))
            timer.daemon = True
            self.crashed[name] = timer
            timer.start()
            self.log(f"pod {name}: restartPolicy {policy}: kubelet restarts it in {delay:.0f} s (back-off)")

    def _restart_container(self, name: str, died_at: float) -> None:
        try:
            self._start_container(name, died_at)
        except Exception as e:  # noqa: BLE001 - kubelet's thread: say so, never a traceback
            self.log(f"pod {name}: container restart failed: {e}")

    def _start_container(self, name: str, died_at: float) -> None:
        with self.ops_lock:
            if self.run is None or name not in self.crashed:
                return
            pod = self.cluster.pod(name)
            for listener in self._listeners(pod):
                self._workload_command({"op": "add", "listener": listener})
            del self.crashed[name]
            self._restart_counts[name] = self._restart_counts.get(name, 0) + 1
            self._publish()
            self.container_restarts.append({  # the supervisor's keys (restartedInS: from the death, back-off
                "process": f"container of pod {name}", "pid": None, "how": "container died",  # included)
                "noticedAt": round(died_at, 3), "restartedInS": round(time.time() - died_at, 2), "error": None,
                "pod": name, "restartCount": self._restart_counts[name]})
            self.log(f"pod {name}: container restarted (restart {self._restart_counts[name]}), ready again")

    def set_uplink(self, node: str, up: bool) -> None:
        """Take a node's link to the underlay down or up (both ends, as a pulled cable): a data-plane
        fault kube-proxy knows nothing of, only the load balancer's health checks notice it."""
        index = self.cluster.node(node).index
        self.net.configLinkStatus(addr.node_bridge(index), addr.underlay_bridge(), "up" if up else "down")
        self.log(f"{node}: uplink {'up' if up else 'down'}")
