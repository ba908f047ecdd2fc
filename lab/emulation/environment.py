"""What this machine can do, found out before anything is created: root, Mininet, Open vSwitch, netem.

Each check that fails raises ``LabError`` with one sentence saying what to do, so a user never meets a
half-built network. The kernel decides two things the user should not have to: whether Open vSwitch
can use its kernel datapath (the openvswitch module) or must run in userspace, and whether links can
carry a delay (the netem qdisc).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from lab.errors import LabError

SETUP_HINT = "run ./setup.sh as root (it installs and starts everything the lab needs)"


def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab builds network namespaces and switches, so it must run as root: use sudo")
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        raise LabError(f"Mininet is not importable from this Python: {SETUP_HINT}") from None
    for tool in ("mnexec", "ovs-vsctl", "ovs-ofctl", "ethtool", "ip", "tc"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing: {SETUP_HINT}")
    probe = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise LabError("Open vSwitch is not running: start it with "
                       "'/usr/share/openvswitch/scripts/ovs-ctl start' or " + SETUP_HINT)


@functools.cache
def datapath() -> str:
    """'kernel' when the openvswitch module is (or can be) loaded, else 'user' (datapath_type=netdev)."""
    if os.environ.get("NPL_DATAPATH") in ("kernel", "user"):
        return os.environ["NPL_DATAPATH"]
    if os.path.isdir("/sys/module/openvswitch"):
        return "kernel"
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True)
        if os.path.isdir("/sys/module/openvswitch"):
            return "kernel"
    return "user"


@functools.cache
def has_netem() -> bool:
    """Try a netem qdisc on the loopback of a throwaway network namespace (never on the machine's own)."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return False
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", "tc qdisc add dev lo root netem delay 1ms"],
        capture_output=True, text=True)
    return result.returncode == 0
