"""Small operations on a running ``LabNetwork`` that the benchmarks share.

Servers a benchmark starts inside a host (iperf3, the connection-rate server) run in the foreground
of ``mnexec`` and are recorded in the lab's run directory, so that they are killed by exact pid at
the end, and by ``python -m lab clean`` if the bench itself was killed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.emulation.proxy_state import build_proxy_state
from lab.emulation.resources import kill_owned
from lab.errors import LabError
from lab.polling import wait_for

TOOLS = Path(__file__).resolve().parent / "tools"


def tool_argv(name: str, *args: str) -> list[str]:
    """Run one of ``bench/tools`` by path: hosts have no need to import the bench package."""
    return [sys.executable, str(TOOLS / f"{name}.py"), *args]


def publish(lab: LabNetwork, timeout: float = 30.0) -> float:
    """``LabNetwork.publish`` with a deadline of our choosing; returns seconds until every switch acked."""
    return publish_split(lab, timeout)[1]


def publish_split(lab: LabNetwork, timeout: float = 30.0) -> tuple[float, float]:
    """``publish``, and of its seconds those the lab spent building the state (the API server's part)."""
    lab.generation += 1
    started = time.monotonic()
    state = build_proxy_state(lab.cluster, lab.generation)
    built = time.monotonic()
    lab.controller.publish(state, lab.dpids, timeout=timeout)
    return built - started, time.monotonic() - started


@contextmanager
def host_process(lab: LabNetwork, host: str, argv: list[str], what: str, ready_line: bool = False,
                 interactive: bool = False):
    """A process in ``host``'s namespaces for the life of the block, killed by pid afterwards.

    ``ready_line``: wait for the first line of its output (a server saying it listens).
    ``interactive``: its stdin and stdout are pipes to talk to it; otherwise output is discarded
    (a server that reports every test, as iperf3 does, must never block on a full pipe).
    Its stderr goes to ``bench-stderr.log`` in the lab's run directory."""
    with open(lab.run.file("bench-stderr.log"), "ab") as errors:
        proc = lab.host(host).popen(
            argv, stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE if (ready_line or interactive) else subprocess.DEVNULL,
            stderr=errors, text=True)
    lab.run.own_process(proc.pid, what)
    try:
        if ready_line and not proc.stdout.readline():
            raise LabError(f"{what} in {host} exited at start (code {proc.wait()}); see "
                           f"{lab.run.file('bench-stderr.log')}")
        yield proc
    finally:
        kill_owned(proc.pid, "")
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        lab.run.disown_process(proc.pid)


def wait_listening(lab: LabNetwork, host: str, port: int, timeout: float = 10.0) -> None:
    """Until something listens on TCP ``port`` in ``host``'s namespace."""
    def listening() -> bool:
        out = lab.run_in(host, ["ss", "-Htln", f"sport = :{port}"], timeout=5).stdout
        return bool(out.strip())
    wait_for(listening, timeout=timeout, what=f"a listener on port {port} in {host}", interval=0.05)


def run_json(lab: LabNetwork, host: str, argv: list[str], timeout: float) -> tuple[dict, float]:
    """Run a program in ``host`` that prints one JSON document: (the document, its CPU seconds).

    The CPU time is that of the reaped child (``mnexec -a`` attaches and then becomes the program),
    read from this process's children's resource usage, so benchmarks must not run children in parallel.
    """
    before = _children_cpu()
    result = lab.run_in(host, argv, timeout=timeout)
    cpu = _children_cpu() - before
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} in {host} failed (code {result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()[-300:]}")
    return json.loads(result.stdout), cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bridge_counts(bridges: list[str]) -> tuple[int, int]:
    """(flows, groups) the switches really hold, read back from them (ovs-ofctl)."""
    flows = groups = 0
    for br in bridges:
        agg = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-aggregate", br], capture_output=True,
                             text=True, check=True).stdout
        flows += int(agg.split("flow_count=")[1].split()[0])
        dump = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", br], capture_output=True,
                              text=True, check=True).stdout
        groups += sum(1 for line in dump.splitlines() if line.strip().startswith("group_id="))
    return flows, groups


def lab_pids(lab: LabNetwork) -> list[int]:
    """Every process the lab recorded (controller, pod servers, one shell per Mininet host or switch)."""
    return [int(pid) for pid in lab.run.resources.processes]


def time_lock(lab: LabNetwork) -> dict:
    """Note how long ``lab.start`` queues for the machine lock (``{"lockWaitS": s}`` once it has it),
    so that waiting behind other engineers' networks is never counted as the lab's own time."""
    noted: dict = {}
    acquire = lab.lock.acquire

    def timed_acquire() -> None:
        started = time.monotonic()
        acquire()
        noted["lockWaitS"] = time.monotonic() - started
    lab.lock.acquire = timed_acquire
    return noted
