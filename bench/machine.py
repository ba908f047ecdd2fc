"""What the figures were measured on, and what processes cost: read from ``/proc``, never estimated.

- ``facts()``: cores, CPU model, memory, kernel, Open vSwitch version and datapath, git commit (and
  whether the tree had uncommitted changes), so every result names its machine and code.
- ``cpu_seconds(pid)``, ``rss_mib(pid)``, ``pss_mib(pid)``: one process's CPU time and memory.
- ``CpuMeter``: how much CPU the rest of the machine used while a benchmark ran (other engineers'
  work on a shared machine), so that a result can say it was taken on a busy machine.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from pathlib import Path

from lab.environment import datapath, has_netem

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


def _busy_seconds() -> float:
    """CPU time spent not idle, over all cores, since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS


def _ksoftirqd_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().startswith("ksoftirqd/"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU the rest of the machine used over an interval, in cores.

    Busy time of the whole machine, less what this process and its reaped children used, less
    Open vSwitch and the kernel's softirq threads (which forward the lab's packets). Children still
    running at ``stop`` are not counted as ours yet, so measure across whole benchmarks, whose
    networks are torn down (and their processes reaped) by then.
    """

    def __init__(self) -> None:
        self.softirq = _ksoftirqd_pids()
        self.ovs = ovs_pid()
        self._start = self._sample()

    def _ours(self) -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        shared = sum(cpu_seconds(p) or 0.0 for p in [self.ovs, *self.softirq])
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + shared

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), _busy_seconds(), self._ours()

    def stop(self) -> dict:
        wall0, busy0, ours0 = self._start
        wall1, busy1, ours1 = self._sample()
        wall = max(wall1 - wall0, 1e-9)
        return {"wallS": round(wall, 2), "machineCores": round((busy1 - busy0) / wall, 2),
                "oursCores": round((ours1 - ours0) / wall, 2),
                "otherCores": round(max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall, 2)}
