"""Runs kube-proxy (``python -m controllers``) as its own process and talks to it through two files.

The lab writes the cluster state (``cluster.json``, then one line of changes per new generation to
``cluster.json.log``: ``controllers.state.state_delta``); the controller acknowledges each generation per
switch (``controller-status.json``) after a barrier. ``publish`` returns once every switch holds the
new generation, so a probe never races the flows it depends on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from controllers.state import ProxyState, log_path, state_delta, write_json_atomic
from lab.emulation.resources import RunDir, start_process, stop_process
from lab.errors import LabError
from lab.polling import wait_for


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the controller re-checks before it binds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    def __init__(self, run: RunDir):
        self.run = run
        self.port = free_port()
        self.state_path = run.file("cluster.json")
        self.status_path = run.file("controller-status.json")
        self.log_path = run.file("controller.log")
        self.lb_health_path = run.file("lb-health.json")
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.state: ProxyState | None = None  # the last state published

    def start(self, state: ProxyState) -> None:
        self.generation = state.generation
        write_json_atomic(self.state_path, state.to_dict())
        if os.path.exists(log_path(self.state_path)):
            os.unlink(log_path(self.state_path))
        self.state = state
        self.proc = start_process(
            self.run, [sys.executable, "-m", "controllers", "--state", self.state_path, "--status", self.status_path,
                       "--port", str(self.port), "--lb-health", self.lb_health_path, "--log", self.log_path],
            self.log_path, "kube-proxy controller")

        def listening():
            if self.proc.poll() is not None:
                raise LabError(f"the controller exited at start (code {self.proc.returncode}); "
                               f"see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(listening, timeout=20, what=f"controller listening on 127.0.0.1:{self.port}")

    def publish(self, state: ProxyState, dpids: list[int], timeout: float = 30) -> None:
        """Append what changed since the last state to the state's change log (one line, one write),
        and wait until every switch holds it."""
        self.generation = state.generation
        line = json.dumps(state_delta(self.state, state), separators=(",", ":")) + "\n"
        with open(log_path(self.state_path), "a") as f:
            f.write(line)
        self.state = state
        self.wait_applied(dpids, timeout)

    def wait_applied(self, dpids: list[int], timeout: float = 30) -> None:
        wanted = {f"{d:016x}" for d in dpids}

        def applied():
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"the controller died (code {self.proc.returncode}); see {self.log_path}")
            acked = self._status().get("datapaths", {})
            missing = {d for d in wanted if acked.get(d, -1) < self.generation}
            return not missing or {"waiting for": sorted(missing), "generation": self.generation}
        wait_for(lambda: applied() is True, timeout=timeout, interval=0.005,
                 what=f"all switches to hold generation {self.generation}", last=applied)

    def lb_rotation(self) -> dict[str, list[str]]:
        return self._status().get("loadBalancers", {})

    def _status(self) -> dict:
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
