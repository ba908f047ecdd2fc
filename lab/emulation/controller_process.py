"""Runs kube-proxy (``python -m controllers``) as its own process and talks to it through two files.

The lab writes the cluster state (``cluster.json``, then one line of changes per new generation to
``cluster.json.log``: ``controllers.state.state_delta``); the controller acknowledges each generation per
switch (``controller-status.json``) after a barrier. ``publish`` returns once every switch holds the
new generation, so a probe never races the flows it depends on.

Switches reach the controller on a Unix socket, not on a TCP port: ``<OVS run dir>/nodeport-lab/<run>.sock``
(Open vSwitch connects to Unix-socket controllers only under its own run directory), in a root-only
(0700) folder, so no other local user can connect and pose as a node's switch. Nothing about it is
global to Open vSwitch, where TLS would be (``ovs-vsctl set-ssl`` sets one certificate for every bridge
on the machine, other users' bridges included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from controllers.collector import paused
from controllers.state import ProxyState, log_path, state_delta, write_json_atomic
from lab.emulation.resources import RunDir, private_socket_dir, start_process, stop_process
from lab.errors import LabError
from lab.polling import wait_for


class ControllerProcess:
    def __init__(self, run: RunDir):
        self.run = run
        self.socket_path = os.path.join(private_socket_dir(), f"{os.path.basename(run.path)}.sock")
        run.own_socket(self.socket_path)
        self.state_path = run.file("cluster.json")
        self.status_path = run.file("controller-status.json")
        self.log_path = run.file("controller.log")
        self.lb_health_path = run.file("lb-health.json")
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.state: ProxyState | None = None  # the last state published
        self.supervised = False  # once a supervisor restarts it, a death is a wait, not an error

    @property
    def target(self) -> str:
        """Where switches connect, in Open vSwitch's words."""
        return f"unix:{self.socket_path}"

    def start(self, state: ProxyState, wait: bool = True) -> None:
        """``wait=False``: return once it is started; ``wait_listening`` before any switch needs it (its
        imports take a quarter of a second, in which the lab can build the network beside it)."""
        self.generation = state.generation
        write_json_atomic(self.state_path, state.to_dict())
        if os.path.exists(log_path(self.state_path)):
            os.unlink(log_path(self.state_path))
        self.state = state
        self.respawn(wait)

    def respawn(self, wait: bool = True) -> None:
        """Start the controller on the state file as it is (a restarted kube-proxy reads the API server)."""
        self.proc = start_process(
            self.run, [sys.executable, "-m", "controllers", "--state", self.state_path, "--status", self.status_path,
                       "--socket", self.socket_path, "--lb-health", self.lb_health_path, "--log", self.log_path],
            self.log_path, "kube-proxy controller")
        if wait:
            self.wait_listening()

    def wait_listening(self) -> None:
        proc = self.proc

        def listening():
            if proc.poll() is not None:
                raise LabError(f"the controller exited at start (code {proc.returncode}); see {self.log_path}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(0.2)
                    s.connect(self.socket_path)
                    return True
            except OSError:
                return False
        wait_for(listening, timeout=20, what=f"controller listening on {self.socket_path}")

    def publish(self, state: ProxyState, dpids: list[int], timeout: float = 30, wait: bool = True) -> None:
        """Append what changed since the last state to the state's change log (one line, one write),
        and wait until every switch holds it (``wait``; else ``wait_applied`` does)."""
        self.generation = state.generation
        with paused():  # (100,000 endpoints' values, all acyclic)
            line = json.dumps(state_delta(self.state, state), separators=(",", ":")) + "\n"
        with open(log_path(self.state_path), "a") as f:
            f.write(line)
        self.state = state
        if wait:
            self.wait_applied(dpids, timeout)

    def wait_applied(self, dpids: list[int], timeout: float = 30) -> None:
        """Poll the status file every millisecond, parsing it only when it changed (a stat() costs a few
        microseconds; at 5 ms a pod change waited 2.5 ms on average for nothing)."""
        wanted = {f"{d:016x}" for d in dpids}
        seen: list = [None, {}]  # the status file's (mtime, size, inode) when last parsed, and its contents

        def acked() -> dict:
            try:
                st = os.stat(self.status_path)
            except OSError:
                return {}
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != seen[0]:
                seen[:] = [stamp, self.status().get("datapaths", {})]
            return seen[1]

        def applied():
            if self.proc is not None and self.proc.poll() is not None and not self.supervised:
                raise LabError(f"the controller died (code {self.proc.returncode}); see {self.log_path}")
            held = acked()
            missing = {d for d in wanted if held.get(d, -1) < self.generation}
            return not missing or {"waiting for": sorted(missing), "generation": self.generation}
        wait_for(lambda: applied() is True, timeout=timeout, interval=0.001,
                 what=f"all switches to hold generation {self.generation}", last=applied)

    def lb_rotation(self) -> dict[str, list[str]]:
        return self.status().get("loadBalancers", {})

    def status(self) -> dict:
        """What the controller last wrote to its status file; {} before it has written one."""
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.run, self.proc)
        self.proc = None

    def restart(self) -> None:
        """Stop and start the controller alone, as one restarts kube-proxy; switches reconnect to it."""
        state = self.state
        self.stop()
        if os.path.exists(self.status_path):
            os.unlink(self.status_path)
        self.start(state)
