"""Pods and nodes changing while traffic flows, as the API server and kubelet change them.

``ClusterNetwork`` (``lab.emulation.network``) mixes this in. A pod is a Mininet host on its node's
bridge with its listeners in the pods' server process (``lab.emulation.workload``), a real ``iperf3 -s``
for ports named iperf3 (``lab.emulation.iperf3``) and kubelet's readiness probes
(``lab.emulation.kubelet``). Adding one makes all of that before its endpoints appear; deleting one
follows Kubernetes' order: endpoints first, then a grace period in which its open connections drain,
then its network. Cordoning and deleting a node are here too: they change where pods may go and what
kube-proxy's health check says, not the network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

from controllers.state import write_json_atomic
from lab.emulation.iperf3 import start_iperf3_servers
from lab.emulation.kubelet import Prober
from lab.emulation.pod_sockets import busy_connections, pending_handshakes, read_table
from lab.emulation.resources import start_process, stop_process
from lab.errors import LabError, Origin
from lab.kube import addressing as addr
from lab.kube.endpoints import workload_ports, workload_udp_ports
from lab.kube.model import ContainerPort, Pod
from lab.kube.names import validate_object_name
from lab.polling import wait_for
from topologies.cluster import pod_host_params

TERMINATION_GRACE_S = 30.0  # a pod's terminationGracePeriodSeconds default
HANDSHAKE_S = 1.0  # TCP's initial retransmission timeout: a handshake not done by then has lost a segment

def check_pod_ports(ports) -> None:
    """A pod's container ports as the API server checks them: integers 1-65535, one line if not."""
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise LabError(f"containerPort {str(port)[:20]!r} is not a port number", "use a number from 1 to 65535")


class PodLifecycle:
    """The pods' half of ``ClusterNetwork``; it relies on its ``cluster``, ``run``, ``net``, ``log``,
    ``ops_lock``, the kubelet state it keeps (``prober``, ``_timers``, ``crashed``, ``terminating``),
    ``publish`` and ``_node_pids``."""

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

    def _stop_kubelet(self) -> None:
        """Readiness probes and pending removals of terminating pods stop first."""
        if self.prober is not None:
            prober, self.prober = self.prober, None
            prober.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

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
