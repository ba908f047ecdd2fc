"""Bulk transfers with real iperf3, and the gauges that say whether the machine kept up with them.

The iperf3 processes themselves (servers in pods, clients in any host) are ``lab.emulation.iperf3``'s.

iperf3 opens a control connection, then the data connection; through a nodePort each is a new
connection, so a Service for iperf3 must have exactly one endpoint or the two may land on different pods.

What a run's counters mean, read by the pure functions here:

- ``parse_iperf3``: the client's ``--json`` document -> goodput (payload bits per second at the receiver),
  payload bytes delivered, and the sender's TCP retransmits (the client sends: iperf3's default direction);
- ``cpu_usage``: two ``CpuSample`` (``/proc/stat`` and ovs-vswitchd's ``/proc/<pid>/stat``) -> the share of
  the machine left idle (Mininet-HiFi's fidelity monitor) and ovs-vswitchd's CPU in % of one core;
- ``expected_goodput_mbit``: what TCP can carry on a shaped link: HTB counts whole Ethernet frames, and at
  MTU 1500 with TCP timestamps (Linux's default) a frame of 1514 bytes carries 1448 bytes of payload.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

PAYLOAD_PER_FRAME = 1448 / 1514  # TCP payload per Ethernet frame at MTU 1500, timestamps on
OVS_PIDFILES = ("/run/openvswitch/ovs-vswitchd.pid", "/var/run/openvswitch/ovs-vswitchd.pid")


# --- reading what happened (pure) ----------------------------------------------------------------------

def parse_iperf3(stdout: str, stderr: str = "") -> dict:
    """An iperf3 client's ``--json`` output -> ``{ok, error, mbps, bytes, sentBytes, retransmits, seconds}``."""
    empty = {"mbps": None, "bytes": 0, "sentBytes": 0, "retransmits": None, "seconds": None}
    try:
        doc = json.loads(stdout)
    except ValueError:
        detail = (stderr or stdout).strip().splitlines()
        return {"ok": False, "error": f"no JSON from iperf3: {detail[-1] if detail else 'no output'}", **empty}
    if doc.get("error"):
        return {"ok": False, "error": doc["error"], **empty}
    sent, received = doc["end"]["sum_sent"], doc["end"]["sum_received"]
    return {"ok": True, "error": None, "mbps": round(received["bits_per_second"] / 1e6, 2),
            "bytes": int(received["bytes"]), "sentBytes": int(sent["bytes"]),
            "retransmits": sent.get("retransmits"), "seconds": round(received["seconds"], 3)}


def expected_goodput_mbit(rate_mbit: float) -> float:
    """TCP payload rate a link shaped to ``rate_mbit`` can carry (HTB counts Ethernet frames)."""
    return rate_mbit * PAYLOAD_PER_FRAME


def per_byte(counted: int, delivered: int) -> float | None:
    return round(counted / delivered, 3) if delivered else None


# --- CPU -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuSample:
    total: int  # jiffies of all CPUs since boot
    idle: int  # idle + iowait jiffies
    ovs: int | None  # ovs-vswitchd's user + system jiffies, None if it could not be read
    at: float  # seconds, monotonic


def ovs_vswitchd_pid() -> int | None:
    for path in OVS_PIDFILES:
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return None


def cpu_sample(ovs_pid: int | None, at: float) -> CpuSample:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]  # user .. steal (guest is inside user)
    ovs = None
    if ovs_pid is not None:
        try:
            with open(f"/proc/{ovs_pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            ovs = int(stat[11]) + int(stat[12])  # utime, stime (fields 14 and 15 of proc(5))
        except (OSError, IndexError, ValueError):
            ovs = None
    return CpuSample(total=sum(fields), idle=fields[3] + fields[4], ovs=ovs, at=at)


def cpu_usage(before: CpuSample, after: CpuSample, clock_ticks: int = 100) -> dict:
    """``{idlePct}``: share of all cores left idle; ``{ovsCpuPct}``: ovs-vswitchd, in % of one core."""
    total = after.total - before.total
    idle = round(100 * (after.idle - before.idle) / total, 1) if total > 0 else None
    elapsed = after.at - before.at
    ovs = None
    if before.ovs is not None and after.ovs is not None and elapsed > 0:
        ovs = round(100 * (after.ovs - before.ovs) / clock_ticks / elapsed, 1)
    return {"idlePct": idle, "ovsCpuPct": ovs}


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def interface_bytes(names: list[str]) -> int:
    """Bytes sent plus received on root-namespace interfaces: every byte that crossed those links."""
    total = 0
    for name in names:
        for counter in ("tx_bytes", "rx_bytes"):
            with open(f"/sys/class/net/{name}/statistics/{counter}") as f:
                total += int(f.read())
    return total
