"""Open vSwitch removing ports with no lab involved: the floor under the lab's teardown, and why.

As many veth ports as the lab's 50-node cluster has, on as many userspace (``netdev``) bridges, are
added and then removed in one ``ovs-vsctl`` transaction (``del-br`` for every bridge), as the lab's
teardown does, once with normal RCU grace periods and once expedited (``lab.emulation.rcu``). While
they go, ovs-vswitchd's main thread's kernel stack is sampled (``/proc/PID/task/PID/stack``), and its
CPU time is read: if the thread is mostly asleep in the kernel, the time is not Open vSwitch's work,
let alone the lab's. Everything is recorded as a run's own (``lab clean`` removes it after a crash)
and removed by exact name; it holds the machine lock like a lab network.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter

from bench.machine import cpu_seconds, ovs_pid
from lab.emulation.rcu import ExpeditedRcu
from lab.emulation.resources import MachineLock, RunDir, remove_recorded
from lab.kube import addressing as addr

STACK_INTERVAL_S = 0.003


def _names(bridges: int, ports: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Named with the run's tag (``npl-<tag>-b3p7``), as every name the lab makes: ``lab clean`` and
    the teardown remove only recorded names that carry their run's tag."""
    per = -(-ports // bridges)
    pre = addr.prefix()
    veths = [(f"{pre}b{k}p{i}", f"{pre}c{k}p{i}") for k in range(bridges) for i in range(per)][:ports]
    return [f"{pre}b{k}" for k in range(bridges)], veths


def _ip_batch(run: RunDir, lines: list[str]) -> None:
    path = run.file("removal.batch")
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)
    subprocess.run(["ip", "-force", "-batch", path], capture_output=True, check=False)


class StackSampler:
    """Where one thread waits: its kernel stack every few milliseconds, counted by the innermost frames."""

    def __init__(self, pid: int) -> None:
        self.path = f"/proc/{pid}/task/{pid}/stack"
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(STACK_INTERVAL_S):
            try:
                with open(self.path) as f:
                    frames = [line.split()[1].split("+")[0] for line in f if len(line.split()) > 1]
            except OSError:
                continue
            self.counts[" < ".join(frames[:2]) or "running in user space"] += 1

    def shares(self, top: int = 4) -> dict[str, float]:
        total = sum(self.counts.values())
        return {k: v / total for k, v in self.counts.most_common(top)} if total else {}


def remove_once(bridges: int, ports: int, expedite: bool) -> dict:
    """Add ``ports`` veths over ``bridges`` netdev bridges, then time Open vSwitch removing them."""
    run = RunDir.create()  # chooses the run's tag
    names, veths = _names(bridges, ports)
    run.own_bridges(names)
    run.own_interfaces([a for a, _ in veths])
    vswitchd = ovs_pid()
    try:
        _ip_batch(run, [f"link add {a} type veth peer name {b}" for a, b in veths] +
                  [f"link set {a} up" for a, _ in veths])
        args: list[str] = []
        for br in names:
            args += ["--", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev"]
            args += [x for a, _ in veths if a.startswith(f"{br}p") for x in ("--", "add-port", br, a)]
        subprocess.run(["ovs-vsctl", "--timeout=300", *args[1:]], capture_output=True, check=True)
        delete = [x for br in names for x in ("--", "--if-exists", "del-br", br)][1:]
        cpu0 = cpu_seconds(vswitchd)
        started = time.monotonic()
        with StackSampler(vswitchd) as sampler:
            if expedite:
                with ExpeditedRcu(run.path):
                    subprocess.run(["ovs-vsctl", "--timeout=300", *delete], capture_output=True, check=True)
            else:
                subprocess.run(["ovs-vsctl", "--timeout=300", *delete], capture_output=True, check=True)
        seconds = time.monotonic() - started
        cpu = (cpu_seconds(vswitchd) or 0.0) - (cpu0 or 0.0)
    finally:
        remove_recorded(run.resources)
        shutil.rmtree(run.path, ignore_errors=True)
    return {"bridges": bridges, "ports": ports, "expedited": expedite, "seconds": seconds,
            "msPerPort": seconds / ports * 1000, "vswitchdCpuS": cpu, "mainThreadStacks": sampler.shares()}


def measure(bridges: int, ports: int, runs: int) -> list[dict]:
    """Normal and expedited removals, alternating, under the machine lock (no lab network meanwhile)."""
    lock = MachineLock()
    lock.acquire()
    try:
        return [remove_once(bridges, ports, expedite) for _ in range(runs) for expedite in (False, True)]
    finally:
        lock.release()
