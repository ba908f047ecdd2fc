"""The lab's network: the cluster (``lab.emulation.network``) and the cloud load balancer around it.

The load balancer's data plane is the edge router, which kube-proxy's controller programs with the
rotation the health checker decides; the health checker is a real HTTP client, ``lab.cloud.health_checker``,
run in the ``lb`` host outside the cluster once the first LoadBalancer Service exists, and told of every
change the cluster goes through. ``LabNetwork`` is what the API, the CLI and the scenarios run.

L7 proxies run here too: NGINX in every ingress controller and Gateway pod (``lab.ingress.runtime``),
started once the pods' servers are up and reloaded as the cluster changes. With ``lb_mode="proxy-protocol"``
the ingress controller's Service is fronted by a proxying load balancer instead (``lab.cloud.haproxy``) and
its NGINX expects the PROXY protocol; ``ingress_upstream`` chooses endpoints or clusterIP upstreams.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

from controllers.flows import LB_ZONE
from controllers.state import write_json_atomic
from lab.cloud import reroute as rr
from lab.cloud.haproxy import ProxyLoadBalancer
from lab.cloud.load_balancer import PROFILES, HealthCheckProfile, checker_config
from lab.emulation.network import ClusterNetwork
from lab.emulation.resources import start_process, stop_process
from lab.emulation.supervisor import Daemon, Supervisor
from lab.errors import LabError
from lab.ingress.runtime import Proxies
from lab.ingress.site import ENDPOINTS
from lab.kube import addressing as addr
from lab.kube.l7_proxies import proxy_services
from lab.kube.load_balancers import load_balancer_ips, load_balancer_services
from lab.kube.model import Cluster
from lab.polling import wait_for
from topologies.cluster import LinkShape

PASS_THROUGH, PROXY_PROTOCOL = "pass-through", "proxy-protocol"
LB_MODES = (PASS_THROUGH, PROXY_PROTOCOL)
# How the pass-through load balancer hands a connection to a node: DNATed to nodeIP:nodePort (AWS NLB
# instance targets), or still addressed to its own IP (GCP passthrough network LB, MetalLB BGP/ECMP),
# which kube-proxy's ``-d lbIP`` rule on the node takes.
NODE_PORT_DELIVERY, VIP_DELIVERY = "node-port", "vip"
LB_DELIVERIES = (NODE_PORT_DELIVERY, VIP_DELIVERY)


class LabNetwork(ClusterNetwork):
    def __init__(self, cluster: Cluster, underlay: LinkShape = LinkShape(),  # noqa: B008
                 log=lambda msg: None, lb_profile: str | HealthCheckProfile = "gce", grace_scale: float = 1.0,
                 lb_mode: str = PASS_THROUGH, ingress_upstream: str = ENDPOINTS,
                 lb_delivery: str = NODE_PORT_DELIVERY):
        if lb_mode not in LB_MODES:
            raise LabError(f"unknown load balancer mode {lb_mode!r}", f"use {' or '.join(LB_MODES)}")
        if lb_delivery not in LB_DELIVERIES:
            raise LabError(f"unknown load balancer delivery {lb_delivery!r}", f"use {' or '.join(LB_DELIVERIES)}")
        super().__init__(cluster, underlay=underlay, log=log, grace_scale=grace_scale)
        self.lb_profile = PROFILES[lb_profile] if isinstance(lb_profile, str) else lb_profile
        self.lb_mode = lb_mode
        self.ingress_upstream = ingress_upstream
        self.checker: subprocess.Popen | None = None
        self.checker_started_at: float | None = None
        self.proxies: Proxies | None = None
        self.proxy_lb: ProxyLoadBalancer | None = None
        self.lb_delivery = lb_delivery
        self.out_of_rotation: dict[str, list[str]] = {}  # namespace/name -> nodes taken out (reroute)

    def _around(self, state):
        underlay = replace(state.underlay, lb_delivery=self.lb_delivery,
                           lb_out_of_rotation={k: list(v) for k, v in self.out_of_rotation.items()})
        return replace(state, underlay=underlay)

    def reroute(self, service: str, node: str, namespace: str = "default") -> int:
        """The load balancer takes ``node`` out of the Service's rotation and moves the live connections it
        had sent there to the other nodes (``lab.cloud.reroute``); returns how many it moved."""
        key = f"{namespace}/{service}"
        svc = next((s for s in load_balancer_services(self.cluster) if (s.namespace, s.name) == (namespace, service)),
                   None)
        if svc is None:
            raise LabError(f"Service {key} is not a LoadBalancer Service", "reroute a LoadBalancer Service")
        index = self.cluster.node(node).index
        with self.ops_lock:
            self.out_of_rotation[key] = sorted({*self.out_of_rotation.get(key, ()), node})
            self.publish()  # new connections avoid the node from here on
        dump = subprocess.run(["ovs-appctl", "dpctl/dump-conntrack", f"zone={LB_ZONE}"], capture_output=True,
                              text=True, check=True, timeout=10).stdout
        entries = rr.parse_conntrack(dump)
        lb_ip = self.load_balancer_ip(service, namespace)
        moved = [e for sp in svc.ports
                 for e in rr.on_node(entries, sp.protocol, lb_ip, sp.port, self.lb_delivery, index,
                                     addr.node_ip(index), sp.node_port or 0)]
        for entry in moved:
            subprocess.run(rr.flush_argv(LB_ZONE, entry), capture_output=True, check=False, timeout=10)
        return len(moved)

    def restore_rotation(self, service: str, namespace: str = "default") -> None:
        """Back to the rotation the health checks decide."""
        with self.ops_lock:
            if self.out_of_rotation.pop(f"{namespace}/{service}", None) is not None:
                self.publish()

    def _started(self) -> None:
        self.proxies = Proxies(self, self.ingress_upstream, proxy_protocol=self.lb_mode == PROXY_PROTOCOL)
        self.proxies.start()
        self._sync_health_checker()
        if self.lb_mode == PROXY_PROTOCOL:
            self._start_proxy_lb()

    def _start_proxy_lb(self) -> None:
        services = proxy_services(self.cluster, "ingress")
        if not services:
            raise LabError("the PROXY-protocol load balancer fronts the ingress controller's Service, "
                           "and the manifests have none", "add Ingress objects or an ingress controller")
        self.proxy_lb = ProxyLoadBalancer(self.run, self.net.get(addr.LB_NAME), self.net.get(addr.CLIENT_NAME),
                                          self.cluster, services[0])
        self.proxy_lb.start()

    def set_lb_mode(self, mode: str) -> None:
        """Switch the ingress controller's load balancer between pass-through and PROXY protocol while the
        network runs: NGINX and the load balancer switch together, as they must (kubernetes/kubernetes#57250)."""
        if mode not in LB_MODES:
            raise LabError(f"unknown load balancer mode {mode!r}", f"use {' or '.join(LB_MODES)}")
        if mode == self.lb_mode:
            return
        self.lb_mode = mode
        self.proxies.proxy_protocol = mode == PROXY_PROTOCOL
        self.proxies.sync()
        if mode == PROXY_PROTOCOL:
            self._start_proxy_lb()
        elif self.proxy_lb is not None:
            self.proxy_lb.stop()
            self.proxy_lb = None

    @property
    def ingress_entry_lb(self) -> str | None:
        """Where clients reach the ingress controller through the PROXY-protocol load balancer, if it runs."""
        return self.proxy_lb.address if self.proxy_lb is not None else None

    def _published(self) -> None:
        if self.proxies is not None:
            self.proxies.sync()
        if self.checker is not None:
            self._sync_health_checker()

    def _supervised(self, supervisor: Supervisor) -> None:
        supervisor.watch(Daemon("load balancer health checker", lambda: self.checker, self._restart_checker,
                                self._forget))

    def _restart_checker(self) -> None:
        """A new checker from the profile's initial verdicts; the controller follows its first verdicts."""
        self.checker = None
        if os.path.exists(self.controller.lb_health_path):
            os.unlink(self.controller.lb_health_path)
        self._sync_health_checker()

    def _stop_beside(self, errors: list[Exception]) -> None:
        if self.proxy_lb is not None:
            try:
                self.proxy_lb.stop()
            except Exception as e:  # keep tearing down
                errors.append(e)
            self.proxy_lb = None
        if self.proxies is not None:
            errors += self.proxies.stop()
            self.proxies = None
        if self.checker is not None:
            try:
                stop_process(self.run, self.checker)
            except Exception as e:  # keep tearing down
                errors.append(e)
            self.checker = None

    def _sync_health_checker(self) -> None:
        """Tell the load balancer's health checker what to check; start it when the first LB Service exists."""
        if not load_balancer_services(self.cluster):
            return
        config = self.run.file("lb-checker.json")
        write_json_atomic(config, checker_config(self.cluster, self.lb_profile, self.controller.lb_health_path))
        if self.checker is not None:
            return
        host = self.net.get(addr.LB_NAME)
        self.checker = start_process(
            self.run,
            ["mnexec", "-a", str(host.pid), sys.executable, "-m", "lab.cloud.health_checker", "--config", config],
            self.run.file("lb-checker.log"), "load balancer health checker")
        self.checker_started_at = time.time()
        wait_for(lambda: os.path.exists(self.controller.lb_health_path), timeout=10,
                 what="the load balancer's first health verdicts")

    def lb_health(self) -> dict:
        """The health checker's current verdicts and its history of changes (see lab.cloud.health_checker)."""
        try:
            with open(self.controller.lb_health_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"services": {}, "events": []}

    def lb_rotation(self) -> dict[str, list[str]]:
        """The nodes each load balancer's data plane sends new connections to (``namespace/name`` ->
        nodes), as the underlay switch has confirmed; it follows ``lb_health()`` within a sync. An
        empty list means the checks pass nowhere, and the load balancer fails open to every node."""
        return self.controller.lb_rotation()

    def load_balancer_ip(self, service: str, namespace: str = "default") -> str:
        return load_balancer_ips(self.cluster)[(namespace, service)]
