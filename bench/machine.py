"""What the figures were measured on, and what processes cost: read from ``/proc``, never estimated.

- ``facts()``: cores, CPU model, memory, kernel, Open vSwitch version and datapath, git commit (and
  whether the tree had uncommitted changes), so every result names its machine and code;
  ``python_speed()``: how fast the machine runs Python at the time of the run.
- ``cpu_seconds(pid)``, ``rss_mib(pid)``, ``pss_mib(pid)``: one process's CPU time and memory.
- ``CpuMeter``: how much CPU other work used while a benchmark ran (other engineers' tests on a
  shared machine), so that a result can say it was taken on a busy machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path

from lab.emulation.environment import datapath, has_netem

REPO = Path(__file__).resolve().parent.parent
OVS_PIDFILE = "/var/run/openvswitch/ovs-vswitchd.pid"
TICKS = os.sysconf("SC_CLK_TCK")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_total_gib() -> float | None:
    info = meminfo()
    return round(info["MemTotal"] / 1024 / 1024, 1) if "MemTotal" in info else None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in kB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def ovs_version() -> str | None:
    out = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1] if first else None


def python_speed(n: int = 2_000_000) -> float:
    """Seconds this interpreter takes for 10^7 additions in a loop (timed on ``n``, best of three): the
    same 2-core machine once ran 2.5-3.3x slower in the afternoon than that morning (a shared host), so
    the figures of two runs compare only beside this one, or as ratios within a run."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 10_000_000 / n, 3)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def facts() -> dict:
    return {
        "cores": os.cpu_count(), "cpuModel": _cpu_model(), "memoryGiB": _mem_total_gib(),
        "kernel": platform.release(), "ovsVersion": ovs_version(), "ovsDatapath": datapath(),
        "netem": has_netem(), "python": platform.python_version(),
        "commit": _git("rev-parse", "HEAD") or None,
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def ovs_pid() -> int | None:
    try:
        return int(Path(OVS_PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str]:
    # The command name may contain spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a running process (None if it is gone)."""
    if pid is None:
        return None
    try:
        fields = _stat_fields(pid)
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int | None) -> float | None:
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int | None, key: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pss_mib(pid: int) -> float | None:
    """Proportional set size: shared pages split between the processes sharing them, so PSS adds up."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


OURS_COMMANDS = ("ovs-vswitchd", "ovsdb-server")  # they work for the lab (one lab network at a time)


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command, CPU seconds including reaped children), for every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        cpu = sum(int(x) for x in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
        table[int(entry)] = (int(fields[1]), command, cpu)
    return table


def others(table: dict[int, tuple[int, str, float]], me: int) -> dict[int, float]:
    """The CPU seconds of the processes that are neither ours (``me`` and its descendants, Open
    vSwitch) nor the kernel's (its threads descend from pid 2), by pid (pure)."""
    verdict: dict[int, bool] = {}

    def is_other(pid: int) -> bool:
        chain = []
        while pid not in verdict:
            if pid in (0, 1):
                break
            if pid in (me, 2) or pid not in table or table[pid][1] in OURS_COMMANDS:
                verdict[pid] = False
                break
            chain.append(pid)
            pid = table[pid][0]
        result = verdict.get(pid, True)
        for p in chain:
            verdict[p] = result
        return result
    return {pid: row[2] for pid, row in table.items() if is_other(pid)}


class CpuMeter:
    """CPU that other work used on the machine over an interval, in cores (other engineers' tests).

    A thread samples every process once a second; the CPU a process outside this bench's process
    tree, the kernel's threads and Open vSwitch used between two samples counts as other work (a
    process's reaped children included, so short test processes count through their parents).
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.me = os.getpid()
        self.other_s = 0.0
        self._stop = threading.Event()
        self._last = others(_processes(), self.me)
        self._t0 = time.monotonic()
        self._busy0 = _busy_seconds()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-cpu-meter")
        self._thread.start()

    def _sample(self) -> None:
        now = others(_processes(), self.me)
        self.other_s += sum(max(0.0, cpu - self._last[pid]) for pid, cpu in now.items() if pid in self._last)
        self._last = now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = max(time.monotonic() - self._t0, 1e-9)
        busy = _busy_seconds() - self._busy0
        return {"wallS": round(wall, 2), "machineCores": round(busy / wall, 2),
                "otherCores": round(self.other_s / wall, 2)}


def _busy_seconds() -> float:
    """CPU time spent not idle, over all cores, since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS
