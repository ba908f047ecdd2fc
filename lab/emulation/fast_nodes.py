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
        batch = []  # ``ip`` subcommands, run by one ``ip -batch``: one program started, not five
        if mac:
            batch.append(f"link set {intf.name} address {mac}")
            intf.mac = mac
        if ip:
            address, _, prefix = ip.partition("/")
            prefix = prefix or "8"
            batch.append(f"addr add {address}/{prefix} dev {intf.name}")
            intf.ip, intf.prefixLen = address, int(prefix)
        batch.append(f"link set {intf.name} up")
        batch.append(f"link set lo {lo}")
        if defaultRoute:
            params = defaultRoute if " " in defaultRoute else f"dev {defaultRoute}"
            batch.append(f"route replace default {params}")
        steps = [ip_batch(batch)]
        if tune is not None:
            steps.append(tune(self.name))
        if deferred:
            self.sendCmd("; ".join(steps))
        else:
            self.cmd("; ".join(steps))
        return {}


def ip_batch(lines: list[str]) -> str:
    """A shell command running ``lines`` as one ``ip -force -batch`` (each line on its own, as separate
    ``ip`` commands would be), read from a here-string: no file, one program started."""
    text = "\\n".join(lines)
    return f"ip -force -batch - <<< $'{text}'"


def write_sysctls(settings: dict[str, str]) -> str:
    """Shell commands setting sysctls by writing /proc/sys (builtins: no ``sysctl`` process started).
    In a host's shell /proc/sys/net is its own namespace's."""
    return "; ".join(f"echo {value} > /proc/sys/{key.replace('.', '/')}" for key, value in settings.items())


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
