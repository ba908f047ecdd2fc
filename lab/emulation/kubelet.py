"""What each node's kubelet does for the endpoints: readiness probes and graceful termination.

A pod is a Service endpoint only while it is Ready (``lab.kube.endpoints``). Kubelet decides that by
running the container's ``readinessProbe`` against the pod's own server, from the node: ``httpGet``
(success is a status from 200 to 399) or ``tcpSocket`` (the connection opens), every ``periodSeconds``
with ``timeoutSeconds``, turning Ready after ``successThreshold`` successes in a row and not Ready after
``failureThreshold`` failures in a row. ``exec`` probes run a command in the container, which the lab
does not have: they are not run (the manifest reader warns) and the pod counts as Ready. A pod with a
probe starts not Ready and is probed once as soon as its server listens (``initialDelaySeconds`` is
not waited for at start, so that a lab is usable when it is up; later rounds keep the period).

``Prober`` keeps the decision (``ProbeState.observe``) apart from the probing (``probe_once``, a real
TCP connection made from the node's network namespace) and runs the rounds on one thread.

Deleting a pod makes it Terminating for its ``terminationGracePeriodSeconds`` (times the lab's scale,
for demos): it leaves the endpoints for new connections (EndpointSlice ``ready: false``, ``serving``
as its readiness says, ``terminating: true``), its server keeps running and established connections
keep flowing; then it is removed. kube-proxy still uses serving terminating endpoints where no ready
one is left (KEP-1669, ``controllers.services.usable``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.emulation.workload import netns
from lab.kube.model import Pod, Probe


@dataclass
class ProbeState:
    """Consecutive results of one pod's probe and the Ready condition they give."""

    probe: Probe
    ready: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    def observe(self, ok: bool) -> bool:
        """Record one result; True when Ready changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.ready and self.successes >= self.probe.success_threshold:
                self.ready = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.ready and self.failures >= self.probe.failure_threshold:
                self.ready = False
                return True
        return False


def probe_port(pod: Pod, probe: Probe) -> int | None:
    """The probe's port: a number, or a container port's name (None if the pod has no such port)."""
    if isinstance(probe.port, int):
        return probe.port
    return next((p.port for p in pod.ports if p.name == probe.port), None)


def probe_once(pod: Pod, probe: Probe, node_pid: int | None) -> bool:
    """One probe from the node's network namespace (kubelet runs in the node's)."""
    port = probe_port(pod, probe)
    if port is None or pod.ip is None:
        return False
    with netns(node_pid):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(probe.timeout_s)
    try:
        sock.connect((pod.ip, port))
        if probe.kind == "tcpSocket":
            return True
        sock.sendall(f"GET {probe.path} HTTP/1.1\r\nHost: {pod.ip}:{port}\r\nUser-Agent: kube-probe/1.30\r\n"
                     "Connection: close\r\n\r\n".encode())
        head = sock.recv(64).decode("latin-1")
        parts = head.split(" ", 2)
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except OSError:
        return False
    finally:
        sock.close()


@dataclass
class Prober:
    """Runs every probed pod's readiness probe on its period; ``changed(pod)`` is called when a pod's
    Ready condition flips (the pod's ``ready`` is already updated)."""

    node_pid: Callable[[str], int | None]
    changed: Callable[[Pod], None]
    states: dict[str, tuple[Pod, ProbeState]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, pod: Pod) -> None:
        if pod.readiness_probe is None:
            return
        with self.lock:
            pod.ready = False
            self.states[pod.name] = (pod, ProbeState(pod.readiness_probe))

    def remove(self, name: str) -> None:
        with self.lock:
            self.states.pop(name, None)

    def round(self, now: float | None = None) -> list[Pod]:
        """Probe every pod that is due; returns the pods whose Ready condition changed."""
        now = time.monotonic() if now is None else now
        with self.lock:
            due = [(pod, st) for pod, st in self.states.values() if st.next_at <= now]
        flipped = []
        for pod, st in due:
            ok = probe_once(pod, st.probe, self.node_pid(pod.node))
            st.next_at = now + st.probe.period_s
            if st.observe(ok):
                pod.ready = st.ready
                flipped.append(pod)
        return flipped

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kubelet-prober", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pod in self.round():
                self.changed(pod)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
