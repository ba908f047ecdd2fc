"""Bring a placed ``Cluster`` up as a real network, and always take it down again.

``ClusterNetwork`` is a context manager: on enter it checks the machine, takes the machine lock, starts
kube-proxy (the os-ken controller process), builds the Mininet network (one Open vSwitch bridge per
node, one host per pod and per node, the client and the underlay), waits until every switch holds the
cluster's flows, and starts the pods' HTTP servers. On exit, also after an error or Ctrl-C, it stops
them in reverse order and removes exactly what it recorded (``lab.emulation.resources``).

What it is made of lives beside it, one mixin each: building and removing the Mininet network
(``lab.emulation.building``), pods and nodes changing (``lab.emulation.pods``), looking into the network
(``lab.emulation.observing``) and its own parts failing (``lab.emulation.faults``). This module holds
the order of it all, and the one channel to kube-proxy: every change is published as a whole state.

The cloud around the cluster (the load balancer's health checker in the ``lb`` host) is added on top by
``lab.cloud.network.LabNetwork``, which is what the lab runs; this module knows nothing of clouds.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from lab.emulation.building import MininetBuild
from lab.emulation.controller_process import ControllerProcess
from lab.emulation.environment import datapath, has_netem, preflight
from lab.emulation.faults import Supervised
from lab.emulation.interrupts import InterruptGuard
from lab.emulation.kubelet import Prober
from lab.emulation.observing import Observing
from lab.emulation.pods import PodLifecycle
from lab.emulation.proxy_state import build_proxy_state
from lab.emulation.resources import MachineLock, RunDir, clean_stale_runs, remove_recorded, still_present, stop_process
from lab.emulation.supervisor import Supervisor
from lab.emulation.zone_switches import zone_link_delay_ms
from lab.errors import LabError
from lab.kube import addressing as addr
from lab.kube.model import Cluster
from topologies.cluster import LinkShape


class ClusterNetwork(MininetBuild, PodLifecycle, Observing, Supervised):
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

    @property
    def dpids(self) -> list[int]:
        return [addr.underlay_dpid()] + [addr.node_dpid(n.index) for n in self.cluster.nodes]

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

    # --- kube-proxy -----------------------------------------------------------------------------------

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
