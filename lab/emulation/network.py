"""Bring a placed ``Cluster`` up as a real network, and always take it down again.

``ClusterNetwork`` is a context manager: on enter it checks the machine, takes the machine lock, starts
kube-proxy (the os-ken controller process), builds the Mininet network (one Open vSwitch bridge per
node, one host per pod and per node, the client and the underlay), waits until every switch holds the
cluster's flows, and starts the pods' HTTP servers. On exit, also after an error or Ctrl-C, it stops
them in reverse order and removes exactly what it recorded (``lab.emulation.resources``).

The cloud around the cluster (the load balancer's health checker in the ``lb`` host) is added on top by
``lab.cloud.network.LabNetwork``, which is what the lab runs; this module knows nothing of clouds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from functools import partial

from controllers.state import write_json_atomic
from lab.emulation.controller_process import ControllerProcess
from lab.emulation.counters import interface_bytes
from lab.emulation.environment import datapath, has_netem, preflight
from lab.emulation.faults import Supervised
from lab.emulation.interrupts import InterruptGuard
from lab.emulation.iperf3 import start_iperf3_servers
from lab.emulation.kubelet import Prober
from lab.emulation.pod_sockets import busy_connections, pending_handshakes, read_table
from lab.emulation.proxy_state import build_proxy_state
from lab.emulation.rcu import ExpeditedRcu
from lab.emulation.resources import (
    MachineLock,
    RunDir,
    clean_stale_runs,
    remove_recorded,
    start_process,
    still_present,
    stop_process,
)
from lab.emulation.supervisor import Supervisor
from lab.emulation.zone_switches import install_zone_flows, read_counters, zone_link_delay_ms
from lab.errors import LabError, Origin
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips
from lab.kube.endpoints import workload_ports, workload_udp_ports
from lab.kube.model import NODE_PORT_RANGE, Cluster, ContainerPort, Pod
from lab.kube.names import validate_object_name
from lab.polling import wait_for
from topologies.cluster import (
    ClusterTopo,
    LinkShape,
    bridge_names,
    pod_host_params,
    root_interfaces,
    static_neighbours,
)
from topologies.zones import cross_zone_bytes, inter_node_bytes, zone_bridges

OFFLOADS_OFF = "tx off tso off gso off"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where ``lab`` is
TEARDOWN_GROUP_BASE = 0x4E500000  # interface groups of the lab's teardown: "NP" + the run's pid
TERMINATION_GRACE_S = 30.0  # a pod's terminationGracePeriodSeconds default
HANDSHAKE_S = 1.0  # TCP's initial retransmission timeout: a handshake not done by then has lost a segment
FABRIC_MTU = 1504  # node uplinks: a 1500-byte packet plus a DSR label (controllers.pipeline_dsr)


def check_pod_ports(ports) -> None:
    """A pod's container ports as the API server checks them: integers 1-65535, one line if not."""
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise LabError(f"containerPort {str(port)[:20]!r} is not a port number", "use a number from 1 to 65535")


class ClusterNetwork(Supervised):
    def __init__(self, cluster: Cluster, underlay: LinkShape = LinkShape(),  # noqa: B008
                 log=lambda msg: None, grace_scale: float = 1.0):
        self.cluster = cluster
        self.grace_scale = grace_scale  # terminationGracePeriodSeconds x this (0: pods go at once)
        self.prober: Prober | None = None
        self._timers: dict[str, threading.Timer] = {}  # terminating pod -> its removal
        self.underlay = underlay
        self.zone_link = LinkShape()  # the inter-zone links' shape, set at start (netem where the kernel has it)
        self.log = log
        self.lock = MachineLock()
        self.run: RunDir | None = None
        self.controller: ControllerProcess | None = None
        self.net = None
        self.workload: subprocess.Popen | None = None
        self.real_servers: dict[str, list[subprocess.Popen]] = {}  # pod -> its iperf3 servers (lab.measure.bulk)
        self.generation = 0
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self.interrupts = InterruptGuard()
        self.crashed: dict[str, threading.Timer | None] = {}  # pod -> kubelet's restart, its container dead
        self.container_restarts: list[dict] = []
        self.terminating: set[str] = set()  # deleted pods whose connections are draining: no endpoints
        self._restart_counts: dict[str, int] = {}
        self.ops_lock = threading.RLock()  # one change at a time: the caller's, or a supervisor's restart
        self.supervisor: Supervisor | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> ClusterNetwork:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        preflight()
        self.interrupts.install()  # Ctrl-C, SIGTERM, SIGHUP: stop at once, then a teardown without a break
        try:
            self.lock.acquire()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        t0 = time.monotonic()
        # Holding the machine lock, any other run's record is a crashed run's: remove what it left first.
        for line in clean_stale_runs():
            self.log(f"earlier runs: {line}")
        self.run = RunDir.create()
        self.log(f"this run's bridges and interfaces: {addr.prefix()}* (the underlay {addr.underlay_bridge()}, "
                 f"node bridges {addr.node_bridge(1)} ...)")
        if self.underlay.delay_ms and not has_netem():
            self.warnings.append("this kernel has no netem qdisc: links run without delay "
                                 f"(asked for {self.underlay.delay_ms} ms); no delay is faked")
            self.underlay = LinkShape(bw_mbit=self.underlay.bw_mbit)
        self.zone_link = LinkShape(delay_ms=zone_link_delay_ms(self.cluster, has_netem(), self.warnings))
        self.log("starting kube-proxy")
        self.controller = ControllerProcess(self.run)
        self.generation = 1
        for pod in self.cluster.pods:  # kubelet: a pod with a readinessProbe starts not Ready
            pod.ready = pod.readiness_probe is None
        # It imports os-ken while the network is built beside it; _build_mininet waits before switches connect.
        self.controller.start(self._around(build_proxy_state(self.cluster, self.generation)), wait=False)
        self.timings["controller"] = time.monotonic() - t0

        t1 = time.monotonic()
        self.log("building the network")
        self._build_mininet()
        self.timings["network"] = time.monotonic() - t1

        t2 = time.monotonic()
        self.controller.wait_applied(self.dpids, timeout=self._flow_budget_s())  # the state _build_mininet sent
        self._published()
        self.timings["flows"] = time.monotonic() - t2

        t3 = time.monotonic()
        self.log("starting the pods' servers")
        self._start_workload()
        self._start_real_servers(self.cluster.pods)
        self._start_prober()
        self.timings["servers"] = time.monotonic() - t3
        self._started()
        self._supervise()
        self.log(f"cluster up in {time.monotonic() - t0:.1f} s ({datapath()} datapath, "
                 f"{len(self.cluster.nodes)} nodes, {len(self.cluster.pods)} pods)")

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

    def _started(self) -> None:
        """Called once the cluster is up: what runs beside it (``lab.cloud.network``) starts here."""

    def _published(self) -> None:
        """Called after every state kube-proxy has applied: what runs beside it follows here."""

    def _around(self, state):
        """The state kube-proxy gets, with what runs around the cluster (``lab.cloud.network``: the load
        balancer's delivery and rotation) filled in."""
        return state

    def _stop_beside(self, errors: list[Exception]) -> None:
        """Called first at teardown: stop what ``_started`` started, adding failures to ``errors``."""

    def _tune_command(self, host_name: str) -> str:
        """What a host runs when it is configured: offloads off (the userspace datapath drops TCP
        otherwise), IPv6 off (its chatter costs CPU), and on a node the route to its own pods."""
        extra = ""
        if host_name in self._node_names:
            index = self.cluster.node(host_name).index
            extra = f"; ip route add {addr.pod_cidr(index)} dev eth0; {node_port_routing(index)}"
        from lab.emulation.fast_nodes import write_sysctls  # builtins, no sysctl process: 1,100 hosts at 100 nodes

        ipv6_off = write_sysctls({"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
        return f"{ipv6_off}; ethtool -K eth0 {OFFLOADS_OFF} >/dev/null 2>&1{extra}"

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

    @property
    def dpids(self) -> list[int]:
        return [addr.underlay_dpid()] + [addr.node_dpid(n.index) for n in self.cluster.nodes]

    def _listeners(self, pod: Pod) -> list[dict]:
        host = self.net.get(pod.name)
        return [{"pod": pod.name, "namespace": pod.namespace, "node": pod.node, "podIP": pod.ip, "port": port,
                 "netnsPid": host.pid, "bind": "0.0.0.0", "protocol": protocol}
                for protocol, ports in (("TCP", workload_ports(self.cluster, pod)),
                                        ("UDP", workload_udp_ports(self.cluster, pod)))
                for port in ports]

    def _start_workload(self) -> None:
        listeners = [item for pod in self.cluster.pods if pod.name not in self.crashed for item in self._listeners(pod)]
        config = self.run.file("workload.json")
        ready = self.run.file("workload.ready")
        write_json_atomic(config, {"listeners": listeners, "ready": ready,
                                   "control": self.run.file("workload.sock")})
        self.workload = start_process(self.run, [sys.executable, "-m", "lab.emulation.workload", "--config", config],
                                      self.run.file("workload.log"), "pod HTTP servers")

        def up():
            if self.workload.poll() is not None:
                raise LabError(f"the pods' HTTP servers exited (code {self.workload.returncode}); "
                               f"see {self.run.file('workload.log')}")
            return os.path.exists(ready)
        wait_for(up, timeout=30, what="the pods' HTTP servers")

    def _start_real_servers(self, pods: list[Pod]) -> None:
        """Ports named iperf3 get a real, foreground iperf3 server (lab.emulation.iperf3), owned by this run."""
        for pod in pods:
            procs = start_iperf3_servers(self.run, self.net.get(pod.name), pod)
            if procs:
                self.real_servers[pod.name] = procs

    def _start_prober(self) -> None:
        """Kubelet's readiness probes (``lab.emulation.kubelet``): one round now, then on their periods."""
        self.prober = Prober(node_pid=lambda node: self._node_pids().get(node), changed=lambda pod: self.publish())
        for pod in self.cluster.pods:
            self.prober.add(pod)
        if self.prober.states:
            self.prober.round()
            self.publish()
        self.prober.start()

    def _stop_real_servers(self, pod_name: str) -> None:
        for proc in self.real_servers.pop(pod_name, []):
            stop_process(self.run, proc)

    def stop(self) -> None:
        """Idempotent, and tolerant: each step runs even if an earlier one failed, and none can be
        interrupted (signals wait, ``lab.emulation.interrupts``). Raises if anything recorded is left."""
        self.interrupts.begin_teardown()
        errors: list[BaseException] = []
        if self.run is not None:
            self.log("tearing down")
        for step in self._teardown_steps():
            try:
                step()
            except BaseException as e:  # keep tearing down; reported below
                errors.append(e)
        left: list[str] = []
        if self.run is not None:
            remove_recorded(self.run.resources)  # whatever Mininet did not remove
            left = still_present(self.run.resources)
            if left:
                self.log(f"kept {self.run.path}: its record lists what is left, for `python -m lab clean`")
            elif os.environ.get("NPL_KEEP_RUN_DIR"):
                self.log(f"kept {self.run.path}")
            else:
                subprocess.run(["rm", "-rf", self.run.path], check=False)
            self.run = None
        self.lock.release()
        try:
            self.interrupts.restore()
        finally:
            if left:
                raise LabError(f"teardown left {len(left)} things behind ({', '.join(left[:3])}"
                               f"{', ...' if len(left) > 3 else ''})", "run `python -m lab clean` as root")
            if errors:
                raise LabError(f"teardown: {errors[0]!r}" if not str(errors[0]) else f"teardown: {errors[0]}")

    def _teardown_steps(self) -> list:
        """The teardown in order: what runs beside the cluster, servers, the network, the controller."""
        def stop_real_servers():
            for pod_name in list(self.real_servers):
                self._stop_real_servers(pod_name)

        def stop_beside():
            errors: list[Exception] = []
            self._stop_beside(errors)
            if errors:
                raise errors[0]

        def stop_workload():
            if self.workload is not None:
                workload, self.workload = self.workload, None
                stop_process(self.run, workload)

        def stop_net():
            if self.net is not None:
                net, self.net = self.net, None
                self._stop_mininet(net)

        def stop_controller():
            if self.controller is not None:
                controller, self.controller = self.controller, None
                controller.stop()
        return [self._stop_kubelet, self._stop_supervisor, stop_real_servers, stop_beside, stop_workload, stop_net,
                stop_controller]

    def _stop_kubelet(self) -> None:
        """Readiness probes and pending removals of terminating pods stop first."""
        if self.prober is not None:
            prober, self.prober = self.prober, None
            prober.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

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

    # --- operations -----------------------------------------------------------------------------------

    def publish(self) -> None:
        """Tell kube-proxy about the current cluster state and wait until every switch obeys it."""
        with self.ops_lock:
            if self.controller is None:  # torn down meanwhile (a probe round or a removal timer)
                return
            self._publish()

    def _publish(self, wait: bool = True) -> None:
        self.generation += 1
        down = set(self.crashed) | self.terminating
        ready = {p.name for p in self.cluster.pods} - down if down else None
        self.controller.publish(self._around(build_proxy_state(self.cluster, self.generation, ready_pods=ready,
                                                               netns_pids=self._node_pids())),
                                self.dpids, timeout=self._flow_budget_s(), wait=wait)
        if wait:
            self._published()

    def _flow_budget_s(self) -> float:
        """How long switches may take to hold a state: every node holds about three flows per endpoint
        of every Service, and the controller and Open vSwitch install some 5,000 flows a second here
        (bench/), so a 100-node cluster needs far longer than a 3-node one."""
        endpoints = sum(len(s.ports) for s in self.cluster.services) * max(1, len(self.cluster.pods))
        return 30 + len(self.cluster.nodes) * 3 * endpoints / 5000

    def _node_pids(self) -> dict[str, int]:
        if self.net is None:
            return {}
        return {n.name: self.net.get(n.name).pid for n in self.cluster.nodes}

    def add_pod(self, name: str, node: str, labels: dict[str, str] | None = None,
                ports: tuple[int, ...] = (8080,), namespace: str = "default") -> Pod:
        """Start a pod on a node while traffic flows: host, link, server first, then its endpoints.
        Everything is checked before anything is made, so a refused pod leaves nothing behind."""
        check_pod_ports(ports)
        with self.ops_lock:
            return self._add_pod(name, node, labels, ports, namespace)

    def _add_pod(self, name: str, node: str, labels: dict[str, str] | None, ports: tuple[int, ...],
                 namespace: str) -> Pod:
        validate_object_name("Pod", name, Origin("Pod", name))
        if self.cluster.node(node).unschedulable:
            raise LabError(f"node {node} is cordoned (unschedulable)", "uncordon it or choose another node")
        taken = {p.name for p in self.cluster.pods} | {n.name for n in self.cluster.nodes}
        if name in taken:
            raise LabError(f"pod name {name!r} is already used in this cluster", "choose another name")
        index = self.cluster.node(node).index
        used = {p.ip for p in self.cluster.pods_on(node)}
        host_number = next(h for h in range(2, 2 + addr.MAX_PODS_PER_NODE) if addr.pod_ip(index, h) not in used)
        pod = Pod(name=name, node=node, namespace=namespace, labels=dict(labels or {}),
                  ports=tuple(ContainerPort(p) for p in ports), ip=addr.pod_ip(index, host_number),
                  serial=max((p.serial for p in self.cluster.pods), default=0) + 1)
        self.run.own_interfaces([addr.pod_intf(pod.serial)])
        bridge = self.net.get(addr.node_bridge(index))
        host = self.net.addHost(pod.name, **pod_host_params(index, pod))
        self.run.own_process(host.pid, f"mininet {pod.name}")
        link = self.net.addLink(host, bridge, port2=addr.pod_ofport(pod.ip), intfName1="eth0",
                                intfName2=addr.pod_intf(pod.serial))
        subprocess.run(["ovs-vsctl", "--timeout=10", "add-port", bridge.name, link.intf2.name, "--", "set",
                        "Interface", link.intf2.name, f"ofport_request={addr.pod_ofport(pod.ip)}"], check=True)
        host.configDefault()  # tuned too (_tune_command)
        host.waitOutput()
        self._tune_interfaces([], [link.intf2.name])
        subprocess.run(["ip", "link", "set", link.intf2.name, "up"], check=True)
        self.cluster.pods.append(pod)
        for listener in self._listeners(pod):
            self._workload_command({"op": "add", "listener": listener})
        self.publish()
        return pod

    def delete_pod(self, name: str, grace_s: float | None = None) -> None:
        """Delete a pod as the API server and kubelet do: it is Terminating for its grace period
        (``terminationGracePeriodSeconds`` x ``grace_scale``, or ``grace_s``): out of the endpoints for
        new connections, its server still running, established connections flowing; then it is removed
        (by a timer: this returns at once). With no grace it is removed now, after its connections end
        (up to TERMINATION_GRACE_S)."""
        with self.ops_lock:
            pod = self.cluster.pod(name)
            grace = pod.termination_grace_s * self.grace_scale if grace_s is None else grace_s
            if grace <= 0 or pod.terminating:
                self._delete_pod(name)
                return
            pod.terminating = True
            self.publish()
        timer = threading.Timer(grace, self._remove_terminated, args=(name,))
        timer.daemon = True
        self._timers[name] = timer
        timer.start()

    def _remove_terminated(self, name: str) -> None:
        """The grace period is over: kubelet kills the container; its connections go with it."""
        self._timers.pop(name, None)
        try:
            with self.ops_lock:
                if self.net is not None:
                    self._delete_pod(name, drain_s=0)
        except (KeyError, LabError) as e:  # the lab went down meanwhile, or the pod went another way
            self.log(f"removing terminated pod {name}: {e}")

    def set_pod_ready(self, name: str, ready: bool) -> None:
        """Make a pod fail or pass readiness. With an httpGet readinessProbe its real server answers 503 on
        the probe's path (kubelet notices after failureThreshold periods); without one (or with tcpSocket
        or exec) the Ready condition is set directly, as a readiness gate would."""
        pod = self.cluster.pod(name)
        probe = pod.readiness_probe
        if probe is not None and probe.kind == "httpGet":
            self._workload_command({"op": "readiness", "pod": name, "path": probe.path, "failing": not ready})
            return
        with self.ops_lock:
            pod.ready = ready
            self.publish()

    def cordon_node(self, name: str, cordoned: bool = True) -> None:
        """kubectl cordon/uncordon: no new pods are placed there (``add_pod`` refuses it)."""
        self.cluster.node(name).unschedulable = cordoned

    def delete_node(self, name: str) -> None:
        """kubectl delete node, while it drains: the Node gets a deletionTimestamp, so kube-proxy's
        ``:10256/healthz`` on it answers 503 (``/livez`` stays 200) and load balancers checking it
        (Cluster policy) take it out of rotation. Its pods keep running."""
        with self.ops_lock:
            node = self.cluster.node(name)
            node.deleting = node.unschedulable = True
            self.publish()

    def _delete_pod(self, name: str, drain_s: float = TERMINATION_GRACE_S) -> None:
        """As Kubernetes does: the endpoints go (kube-proxy stops choosing the pod), the pod's open
        connections get up to ``drain_s``, and only then does its network go; removing its routes with
        its endpoints stalled every connection it was still serving."""
        if self.prober is not None:
            self.prober.remove(name)
        pod = self.cluster.pod(name)
        self.terminating.add(name)
        self.publish()
        if name in self.crashed:  # its container is down already: nothing listens
            timer = self.crashed.pop(name)
            if timer is not None:
                timer.cancel()
        else:
            if drain_s > 0:
                self._await_handshakes(pod, drain_s)
            self._workload_command({"op": "remove", "pod": name})
        if drain_s > 0:
            self._drain_connections(name, drain_s)
        self.cluster.pods.remove(pod)
        self.terminating.discard(name)
        self.publish()
        self._stop_real_servers(name)
        host = self.net.get(name)
        bridge = self.net.get(addr.node_bridge(self.cluster.node(pod.node).index))
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-port", bridge.name,
                        addr.pod_intf(pod.serial)], check=True)
        for link in self.net.linksBetween(host, bridge):
            self.net.delLink(link)
        pid = host.pid
        self.net.delHost(host)
        self.run.disown_process(pid)

    def _await_handshakes(self, pod: Pod, drain_s: float) -> None:
        """Its endpoints are gone from every switch, so no new connection is sent to the pod; but one the
        data plane sent just before may still be in its handshake, or in a listener's accept queue, and
        closing the listener would reset it (lab.emulation.pod_sockets). Its listeners close once none is,
        or after HANDSHAKE_S: a client whose handshake stalls that long is retransmitting into a pod that
        is going anyway (one whose ACK never comes keeps a half-open socket for a minute)."""
        pid, ports = self.net.get(pod.name).pid, set(workload_ports(self.cluster, pod))
        budget = min(drain_s, HANDSHAKE_S)
        try:
            wait_for(lambda: not pending_handshakes(read_table(pid), ports), timeout=budget, interval=0.005,
                     what=f"pod {pod.name}'s handshakes under way to end",
                     last=lambda: pending_handshakes(read_table(pid), ports))
        except LabError:
            self.log(f"pod {pod.name}: handshakes still under way after {budget:.1f} s; its listeners close anyway")

    def _drain_connections(self, name: str, drain_s: float = TERMINATION_GRACE_S) -> None:
        """A pod removed without a grace period still gets up to ``drain_s`` to finish what it serves
        before its network goes: wait for its open connections as long, then remove it anyway."""
        pid = self.net.get(name).pid

        def drained():  # the server is done with them, and the kernel has delivered what it wrote
            return self._workload_command({"op": "connections", "pod": name})["open"] == 0 and not busy_connections(
                read_table(pid))
        try:
            wait_for(drained, timeout=drain_s, interval=0.05, what=f"pod {name}'s connections to end")
        except LabError:
            self.log(f"pod {name}: connections still open after {drain_s:.0f} s; removed anyway")

    def move_pod(self, name: str, node: str) -> Pod:
        """Reschedule a pod to another node (a new pod with the same name, labels and ports, new IP)."""
        old = self.cluster.pod(name)
        self.cluster.node(node)  # an unknown node is refused before the pod is touched
        self.delete_pod(name, grace_s=0)  # the new pod takes the name, so the old one goes at once
        return self.add_pod(name, node, labels=old.labels, ports=tuple(p.port for p in old.ports),
                            namespace=old.namespace)

    def _workload_command(self, command: dict) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.run.file("workload.sock"))
            s.sendall((json.dumps(command) + "\n").encode())
            answer = json.loads(s.makefile().readline())
        if not answer.get("ok"):
            raise LabError(f"the pods' server refused {command['op']}: {answer.get('error')}")
        return answer

    def host(self, name: str):
        return self.net.get(name)

    def cluster_ip(self, service: str, namespace: str = "default") -> str:
        """The Service's clusterIP (``spec.clusterIP``); KeyError for a headless Service."""
        return cluster_ips(self.cluster)[(namespace, service)]

    def run_in(self, host_name: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a program inside a host's network namespace (mnexec -a: attach to the host's namespaces)."""
        host = self.net.get(host_name)
        return subprocess.run(["mnexec", "-a", str(host.pid), *argv], capture_output=True, text=True,
                              timeout=timeout)

    def probe(self, targets: list[str], requests: int, concurrency: int = 8, timeout: float = 1.0,
              path: str = "/", rate: float | None = None, host: str = addr.CLIENT_NAME,
              protocol: str = "TCP", http_host: str | None = None, tls: bool = False,
              headers: tuple[tuple[str, str], ...] = ()) -> dict:
        """Requests from ``host`` (the outside client, a pod or a node for in-cluster requests);
        ``http_host``, ``tls`` and ``headers`` address an L7 proxy (the Host header and SNI name).

        The probe needs only the standard library: without site (-S) it starts in a third of the time
        (no .pth files run), which a scenario of a dozen probes feels; the lab is found by PYTHONPATH."""
        site = () if tls else ("-S",)  # reading a peer's certificate needs cryptography, from site-packages
        argv = ["env", f"PYTHONPATH={REPO}", sys.executable, *site, "-m", "lab.measure.probe", "--targets", *targets,
                "--requests", str(requests), "--concurrency", str(concurrency), "--timeout", str(timeout),
                "--path", path]
        if rate is not None:
            argv += ["--rate", str(rate)]
        if protocol != "TCP":
            argv += ["--protocol", protocol.lower()]
        if http_host:
            argv += ["--host", http_host]
        if tls:
            argv.append("--tls")
        for name, value in headers:
            argv += ["--header", f"{name}:{value}"]
        budget = 30 + requests * timeout + (requests / rate if rate else 0)
        result = self.run_in(host, argv, timeout=budget)
        if result.returncode != 0:
            raise LabError(f"the probe failed (code {result.returncode}): {result.stderr.strip()[-300:]}")
        return json.loads(result.stdout)

    def flow_bytes(self, bridge: str, table: int) -> int:
        """Sum of the byte counters of one table's flows, after the datapath has pushed its statistics."""
        subprocess.run(["ovs-appctl", "revalidator/wait"], capture_output=True, timeout=10)
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, f"table={table}"],
                             capture_output=True, text=True, check=True).stdout
        total = 0
        for field in out.replace(",", " ").split():
            if field.startswith("n_bytes="):
                total += int(field.split("=", 1)[1])
        return total

    def inter_node_bytes(self) -> int:
        """Bytes that have crossed between nodes so far, from the underlay's port counters, read at once.

        Every frame the underlay takes in from a node either goes to another node or, through the edge
        router, to an outside host (client, load balancer), and nothing else sends to outside hosts. So
        what the node ports received (on the core, or on the nodes' zone switches) less what the outside
        ports sent is the traffic between nodes (``topologies.zones.inter_node_bytes``). (Frames from
        outside are not used: the load balancer drops some, e.g. a late ACK of a connection its conntrack
        has closed.) Port counters are the interfaces' own and current when read; the INTERNODE flow
        counters (``flow_bytes``) hold the same bytes only after Open vSwitch's revalidators pushed them
        (~0.4 s per read). ARP would break the sum (a node's request to the router's responder is
        received and never sent on), which is why every host has static ARP entries for its underlay
        neighbours (``_pin_neighbours``); tests/integration/test_counters.py checks both readings agree
        on the same traffic."""
        return inter_node_bytes(self.cluster, read_counters(self.cluster, dump_ports))

    def cross_zone_bytes(self) -> int:
        """Bytes between nodes of different zones so far (0 in one zone), from the core's zone-port
        counters, read at once (``topologies.zones.cross_zone_bytes``); tests/integration/test_zones.py
        checks they equal the core's INTERNODE flow counters on the same traffic."""
        return cross_zone_bytes(self.cluster, {addr.underlay_bridge(): dump_ports(addr.underlay_bridge())})

    def interface_bytes(self, names: list[str]) -> dict[str, int]:
        """Bytes (rx + tx) each named root-namespace interface has carried: a bridge port's own counters."""
        return interface_bytes(names)

    def port_bytes(self, bridge: str) -> dict[int, int]:
        """Bytes each OpenFlow port of a bridge has carried so far, both directions (rx + tx)."""
        return {port: rx + tx for port, (rx, tx) in dump_ports(bridge).items()}

    def client_ttl(self) -> int:
        return self.pod_ttl(addr.CLIENT_NAME)

    def pod_ttl(self, host: str) -> int:
        """The TTL a host's packets start with (its ``ip_default_ttl``)."""
        out = self.run_in(host, ["cat", "/proc/sys/net/ipv4/ip_default_ttl"], timeout=5)
        return int(out.stdout.strip())


def dump_ports(bridge: str) -> dict[int, tuple[int, int]]:
    """(received, sent) bytes of each OpenFlow port of a bridge, as the bridge sees them."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge],
                         capture_output=True, text=True, check=True).stdout
    totals: dict[int, tuple[int, int]] = {}
    for block in re.split(r"^\s*port\s+", out, flags=re.M)[1:]:  # "port  1: rx pkts=.., bytes=.." + "tx .."
        port, _, counts = block.partition(":")
        rx = re.search(r"\brx\b[^\n]*?\bbytes=(\d+)", counts)
        tx = re.search(r"\btx\b[^\n]*?\bbytes=(\d+)", counts)
        if port.strip().isdigit() and rx and tx:  # not LOCAL, the bridge's own interface
            totals[int(port)] = (int(rx.group(1)), int(tx.group(1)))
    return totals


NODE_PORT_TABLE = 100


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
