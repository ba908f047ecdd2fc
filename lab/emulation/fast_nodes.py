"""Mininet hosts and interfaces that configure themselves in one step instead of one shell round trip
per setting: Mininet sets a host's MAC with three ``ifconfig`` calls, its address, route and loopback
with three more, and brings every interface up with another (at 50 nodes x 10 pods, some 4,000 round
trips through the hosts' shells: most of a cluster's start-up). Here a host runs one command line, and
``ClusterNetwork`` brings the root-namespace ends up with one ``ip -batch`` (``interfaces_up``).

Mininet's view stays right (``host.IP()``, ``intf.MAC()``): the values are recorded as it would.
Imported only when a network is built (Mininet is not needed to read manifests).
"""

from __future__ import annotations

import subprocess

from mininet.link import Intf
from mininet.node import Host


class LabIntf(Intf):
    def config(self, mac=None, ip=None, ifconfig=None, up=True, **_params):
        """Record, do not run: the host (``LabHost.config``) or ``interfaces_up`` applies it."""
        if mac:
            self.mac = mac
        if ip:
            address, _, prefix = ip.partition("/")
            self.ip, self.prefixLen = address, int(prefix or 8)
        return {}


class LabHost(Host):
    def config(self, mac=None, ip=None, defaultRoute=None, lo="up", tune=None, deferred=False, **_params):
        """``tune``: a function of the host's name giving more commands to run in the same step.
        ``deferred``: send the command and return; ``finish`` waits for it, so hosts configure in parallel."""
        intf = self.defaultIntf()
        steps = []
        if mac:
            steps.append(f"ip link set {intf.name} address {mac}")
            intf.mac = mac
        if ip:
            address, _, prefix = ip.partition("/")
            prefix = prefix or "8"
            steps.append(f"ip addr add {address}/{prefix} dev {intf.name}")
            intf.ip, intf.prefixLen = address, int(prefix)
        steps.append(f"ip link set {intf.name} up")
        steps.append(f"ip link set lo {lo}")
        if defaultRoute:
            params = defaultRoute if " " in defaultRoute else f"dev {defaultRoute}"
            steps.append(f"ip route replace default {params}")
        if tune is not None:
            steps.append(tune(self.name))
        if deferred:
            self.sendCmd("; ".join(steps))
        else:
            self.cmd("; ".join(steps))
        return {}


def finish(hosts) -> None:
    """Wait for every host's deferred configuration (``LabHost.config``)."""
    for host in hosts:
        if host.waiting:
            host.waitOutput()


def interfaces_up(names: list[str], batch_path: str) -> None:
    """Bring root-namespace interfaces up with one ``ip -batch`` (by exact name)."""
    if not names:
        return
    with open(batch_path, "w") as f:
        f.writelines(f"link set dev {name} up\n" for name in names)
    subprocess.run(["ip", "-force", "-batch", batch_path], capture_output=True, check=False)
