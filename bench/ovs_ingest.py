"""Open vSwitch taking in a compiled state with no controller involved: the floor under an install.

The very bytes the controller would send (``controllers.openflow.messages`` of every bridge's whole
program) are written to as many fresh userspace (``netdev``) bridges through their management sockets
(``/var/run/openvswitch/<bridge>.mgmt``, where ``ovs-ofctl`` talks to a bridge), all at once, each
followed by a barrier; the figure is the time until every barrier is answered, beside ovs-vswitchd's
CPU time. Nothing of the lab runs meanwhile: no Python compiling, no os-ken, no other traffic, so
what an install of the lab takes beyond this is the lab's, and what this takes is Open vSwitch's,
whose main thread parses and inserts every flow of every bridge, one after another.

(Tried and left: one OpenFlow 1.4 bundle per bridge instead of single messages made Open vSwitch no
faster at 10,000 Services: 0.32-0.36 s of its CPU for a node's 50,209 messages against 0.26.)
The bridges are recorded as the run's own and removed by exact name; the machine lock is held as a
lab network holds it.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from bench.machine import cpu_seconds, ovs_pid
from controllers import lanes
from controllers import openflow as of
from controllers.diff import diff
from controllers.pipeline import Program, compile_state
from lab.emulation.resources import MachineLock, RunDir, remove_recorded
from lab.kube import addressing as addr

TIMEOUT_S = 300


def program_bytes(state) -> list[bytes]:
    """Every bridge's whole program of ``state`` as the buffer the controller sends a new switch."""
    return [of.messages(diff(Program(), program)) for program in compile_state(state).values()]


def _mgmt(bridge: str) -> str:
    path = lanes.mgmt_path(bridge)
    if path is None:
        raise RuntimeError(f"bridge {bridge} has no management socket")
    return path


def ingest_once(buffers: list[bytes]) -> dict:
    """Fresh bridges, one per buffer, fed all at once; seconds until all answered, and vswitchd's CPU."""
    run = RunDir.create()  # chooses the run's tag: the bridges are npl-<tag>-i<k>
    names = [f"{addr.prefix()}i{k}" for k in range(len(buffers))]
    run.own_bridges(names)
    try:
        args = [x for br in names for x in ("--", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                                            "protocols=OpenFlow13")]
        subprocess.run(["ovs-vsctl", "--timeout=60", *args[1:]], capture_output=True, check=True)
        done: dict[str, float] = {}
        vswitchd = ovs_pid()
        cpu0, started = cpu_seconds(vswitchd), time.monotonic()
        # one connection per bridge, as ovs-ofctl would (controllers.lanes: the buffer, a barrier, its answer)
        tickets = [lanes.send(_mgmt(br), [data],
                              lambda t, br=br: done.setdefault(br, time.monotonic()))
                   for br, data in zip(names, buffers, strict=True)]
        for ticket in tickets:
            ticket.wait(TIMEOUT_S)
        cpu = (cpu_seconds(vswitchd) or 0.0) - (cpu0 or 0.0)
        if not all(t.ok for t in tickets):
            raise RuntimeError("Open vSwitch did not answer every barrier")
        return {"bridges": len(buffers), "bytes": sum(map(len, buffers)),
                "seconds": max(done.values()) - started, "vswitchdCpuS": round(cpu, 3),
                "errors": sum(len(t.errors) for t in tickets)}
    finally:
        remove_recorded(run.resources)
        shutil.rmtree(run.path, ignore_errors=True)


def measure(state, runs: int) -> list[dict]:
    """``ingest_once`` of ``state``'s programs ``runs`` times, under the machine lock."""
    buffers = program_bytes(state)
    lock = MachineLock()
    lock.acquire()
    try:
        return [ingest_once(buffers) for _ in range(runs)]
    finally:
        lock.release()
