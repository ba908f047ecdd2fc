"""How a cluster becomes a Mininet network of Open vSwitch bridges, and how that network goes again.

``ClusterNetwork`` (``lab.emulation.network``) mixes this in. ``topologies.cluster`` says what the network
is (one bridge per node, one host per pod and per node, the client and the underlay); this builds it fast
(``lab.emulation.fast_build``: veths in one batch, hosts configuring themselves in parallel), tunes every
interface for the userspace datapath, pins the underlay's neighbours, points the bridges at kube-proxy,
and at teardown removes it all by the exact names the run recorded (``lab.emulation.resources``), faster
than Mininet's own stop. A node's routing for its own NodePort connections (``node_port_routing``) is
part of how a node host is configured.
"""

from __future__ import annotations

import os
import subprocess
import time
from functools import partial

from lab.emulation.environment import datapath
from lab.emulation.rcu import ExpeditedRcu
from lab.emulation.zone_switches import install_zone_flows
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.model import NODE_PORT_RANGE
from topologies.cluster import ClusterTopo, bridge_names, root_interfaces, static_neighbours
from topologies.zones import zone_bridges

OFFLOADS_OFF = "tx off tso off gso off"
TEARDOWN_GROUP_BASE = 0x4E500000  # interface groups of the lab's teardown: "NP" + the run's pid
FABRIC_MTU = 1504  # node uplinks: a 1500-byte packet plus a DSR label (controllers.pipeline_dsr)
NODE_PORT_TABLE = 100


class MininetBuild:
    """The Mininet half of ``ClusterNetwork``; it relies on its ``cluster``, ``run``, ``controller``,
    ``underlay``, ``zone_link``, ``timings`` and ``_publish``."""

    def _build_mininet(self) -> None:
        from mininet.link import Link
        from mininet.log import setLogLevel
        from mininet.node import OVSSwitch

        from lab.emulation.fast_build import BatchMininet, batch_host
        from lab.emulation.fast_nodes import LabHost, LabIntf, finish, interfaces_up

        setLogLevel("error")
        self.run.own_bridges(bridge_names(self.cluster))
        self.run.own_interfaces(root_interfaces(self.cluster))
        switch = partial(OVSSwitch, datapath=datapath(), protocols="OpenFlow13", batch=True,
                         failMode="secure")
        topo = ClusterTopo(self.cluster, underlay=self.underlay, zone_link=self.zone_link)
        self.net = BatchMininet(topo=topo, switch=switch, host=partial(batch_host(LabHost), tune=self._tune_command,
                                                                   deferred=True),
                                intf=LabIntf, link=Link, controller=None, build=False, autoSetMacs=False,
                                autoStaticArp=False, waitConnected=False, batch_path=self.run.file("veths.batch"))
        self.net.build()
        finish(self.net.hosts)  # hosts configured themselves in parallel
        interfaces_up(root_interfaces(self.cluster), self.run.file("interfaces-up.batch"))
        self._fabric_mtu()
        self.run.own_processes([(node.pid, f"mininet {node.name}") for node in self.net.hosts + self.net.switches])
        # Now with the nodes' namespaces, where kube-proxy's health servers listen: compiled while the rest
        # is built, so the switches get this state when they connect, not the first and then this (3 s at 100)
        self._publish(wait=False)
        self._tune_interfaces([])  # the hosts' own ends were tuned as they were configured (_tune_command)
        self._pin_neighbours()
        self.net.start()
        install_zone_flows(self.cluster, self.run.file)
        self.controller.wait_listening()
        self._connect_switches()

    def _connect_switches(self) -> None:
        """Point every bridge at kube-proxy's Unix socket (Mininet only knows TCP controllers); they are
        fail-secure, so until then, and whenever the controller is away, they keep the flows they hold.
        ``max_backoff`` 1 s: a restarted controller gets its switches back within a second. Zone switches
        have static flows and no controller (``topologies.zones``)."""
        args = ["ovs-vsctl", "--timeout=10"]
        static = set(zone_bridges(self.cluster))
        for i, switch in enumerate(s for s in self.net.switches if s.name not in static):
            args += ["--", f"--id=@c{i}", "create", "Controller", f'target="{self.controller.target}"',
                     "max_backoff=1000", "--", "set", "Bridge", switch.name, f"controller=@c{i}"]
        subprocess.run(args, check=True, capture_output=True)

    def _fabric_mtu(self) -> None:
        """The links between nodes and the underlay carry FABRIC_MTU: 4 bytes more than the hosts' 1500, for
        the label a DSR request carries between nodes (``controllers.pipeline_dsr``), as a fabric carrying
        Geneve or Cilium's DSR option is given a larger MTU than the pods'. Hosts keep 1500."""
        path = self.run.file("fabric-mtu.batch")
        with open(path, "w") as f:
            f.writelines(f"link set dev {name} mtu {FABRIC_MTU}\n"
                         for node in self.cluster.nodes for name in addr.node_uplink_intf(node.index))
        subprocess.run(["ip", "-force", "-batch", path], capture_output=True, check=False)

    def _pin_neighbours(self) -> None:
        """Permanent ARP entries for every underlay neighbour (``topologies.cluster.static_neighbours``):
        one ``ip -batch`` per host, all hosts at once."""
        procs = []
        for name, entries in static_neighbours(self.cluster).items():
            path = self.run.file(f"neigh-{name}.batch")
            with open(path, "w") as f:
                f.writelines(f"neigh replace {ip} lladdr {mac} dev eth0 nud permanent\n" for ip, mac in entries)
            procs.append((name, subprocess.Popen(["mnexec", "-a", str(self.net.get(name).pid), "ip", "-batch", path],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        for name, proc in procs:
            _, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                raise LabError(f"could not set the static ARP entries of {name}: {err.strip()[-200:]}")

    def _tune_command(self, host_name: str) -> str:
        """What a host runs when it is configured: offloads off (the userspace datapath drops TCP
        otherwise), IPv6 off (its chatter costs CPU), on a node the route to its own pods, and on the
        outside client the source ports of a load generator (``addr.CLIENT_EPHEMERAL_PORTS``)."""
        extra = ""
        if host_name in self._node_names:
            index = self.cluster.node(host_name).index
            extra = f"; ip route add {addr.pod_cidr(index)} dev eth0; {node_port_routing(index)}"
        from lab.emulation.fast_nodes import write_sysctls  # builtins, no sysctl process: 1,100 hosts at 100 nodes

        settings = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        if host_name == addr.CLIENT_NAME:
            settings["net.ipv4.ip_local_port_range"] = "{} {}".format(*addr.CLIENT_EPHEMERAL_PORTS)
        return f"{write_sysctls(settings)}; ethtool -K eth0 {OFFLOADS_OFF} >/dev/null 2>&1{extra}"

    def _tune_interfaces(self, hosts, root_names: list[str] | None = None) -> None:
        """``_tune_command`` in ``hosts``; offloads and IPv6 off on root-namespace interfaces."""
        for host in hosts:
            host.cmd(self._tune_command(host.name))
        names = root_interfaces(self.cluster) if root_names is None else root_names
        for name in names:
            try:
                with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                    f.write("1")
            except OSError:
                pass
        shells = [subprocess.Popen(["sh", "-c", "; ".join(f"ethtool -K {n} {OFFLOADS_OFF} >/dev/null 2>&1"
                                                          for n in names[k::4])])
                  for k in range(min(4, len(names)))]  # one ethtool per interface: four at a time
        for shell in shells:
            shell.wait()

    @property
    def _node_names(self) -> set[str]:
        return {n.name for n in self.cluster.nodes}

    def _stop_mininet(self, net) -> None:
        """Mininet's own stop deletes links with one ``ip link del`` per interface through a shell (1,204 at
        50 nodes: 20 s). Instead: every host's shell ended, so its namespace goes and the kernel removes
        the veths inside it, and their peers; what is left (links with both ends in the root namespace,
        and ends the kernel has not reached yet) deleted as one group, by the exact names the run
        recorded; then every bridge in one ``ovs-vsctl`` transaction. That last step is Open vSwitch's
        userspace datapath removing its ports one by one, a kernel RCU grace period each (about 14 ms here,
        2 ms expedited: ``lab.emulation.rcu``), most of the time."""
        for controller in net.controllers:
            controller.stop()
        for node in net.hosts + net.switches:
            node.terminate()
        owned = [n for n in self.run.resources.interfaces if os.path.exists(f"/sys/class/net/{n}")]
        if owned:
            # Tagged by exact name with a group of this run's own, then deleted as one group: the kernel
            # unregisters them together (one RCU grace period, not one per interface: 9 ms each here).
            group = TEARDOWN_GROUP_BASE + os.getpid() % 0x10000
            path = self.run.file("teardown.batch")
            with open(path, "w") as f:
                f.writelines(f"link set dev {name} group {group}\n" for name in owned)
                f.write(f"link del group {group}\n")
            subprocess.run(["ip", "-force", "-batch", path], capture_output=True, check=False)
        args = []
        for bridge in (s.name for s in net.switches):
            args += ["--", "--if-exists", "del-br", bridge]
        if args:
            started = time.monotonic()
            with ExpeditedRcu(self.run.path):  # one RCU grace period per port, forced: lab.emulation.rcu
                subprocess.run(["ovs-vsctl", "--timeout=120", *args[1:]], capture_output=True, check=False)
            self.timings["teardownBridges"] = time.monotonic() - started  # Open vSwitch removing every port
        net.links, net.hosts, net.switches, net.controllers = [], [], [], []


def node_port_routing(index: int) -> str:
    """Shell commands that send a node's own connections to its NodePorts into its bridge.

    In iptables mode kube-proxy's nat OUTPUT rule (``KUBE-SERVICES`` -> ``KUBE-NODEPORTS``, ``addrtype
    LOCAL``, with ``route_localnet=1`` for 127.0.0.1) DNATs a node process's connection to its own IP or
    127.0.0.1 before routing, so it never takes the loopback. Here kube-proxy lives in Open vSwitch, so the
    node's routing must hand such connections to the bridge instead: policy rules, ahead of the local
    table, route what the node itself sends (``iif lo``) to its own IP or 127.0.0.1 in the NodePort range
    out of eth0 (``accept_local`` and ``route_localnet`` let the replies, which carry those addresses,
    back in). The bridge then does what the OUTPUT chain does: DNAT, masquerade (the source is LOCAL).
    Everything else stays on the loopback.
    """
    low, high = NODE_PORT_RANGE
    ip = addr.node_ip(index)
    rules = "; ".join(f"ip rule add pref 10 iif lo to {dst} ipproto {proto} dport {low}-{high} "
                      f"lookup {NODE_PORT_TABLE}"
                      for dst in (ip, "127.0.0.1") for proto in ("tcp", "udp"))
    return (f"ip rule add pref 100 lookup local; ip rule del pref 0 lookup local; "
            f"ip route add default via {addr.ROUTER_UNDERLAY_IP} dev eth0 src {ip} table {NODE_PORT_TABLE}; "
            f"{rules}; sysctl -qw net.ipv4.conf.eth0.accept_local=1 net.ipv4.conf.eth0.route_localnet=1 "
            "net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0")
