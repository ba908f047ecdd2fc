"""The Mininet CLI with kubectl-like verbs, for ``python -m lab cli``: change pods while traffic flows.

    mininet> pods                      where every pod runs, and its address
    mininet> services                  nodePorts, policies, load balancer addresses
    mininet> delete-pod NAME [--grace S]  delete a pod: Terminating for its grace period, then gone
    mininet> unready-pod NAME / ready-pod NAME   make a pod fail / pass readiness
    mininet> cordon NODE / uncordon NODE / delete-node NODE
    mininet> add-pod NAME NODE [LABEL=VALUE ...] [--port N]
    mininet> move-pod NAME NODE        reschedule a pod to another node
    mininet> lb                        the load balancer's health verdicts per node
    mininet> client curl -s http://172.18.0.11:30007/    any Mininet command, hosts named after objects
"""

from __future__ import annotations

import shlex

from mininet.cli import CLI

from lab.cloud.load_balancer import load_balancer_ips
from lab.errors import LabError, ManifestError
from lab.kube import addressing as addr
from lab.kube.cluster_ips import cluster_ips


class LabShell(CLI):
    prompt = "nodeport-lab> "

    def __init__(self, lab, **kwargs):
        self.lab = lab
        super().__init__(lab.net, **kwargs)

    def _run(self, action) -> None:
        try:
            action()
        except (LabError, ManifestError, KeyError, ValueError) as e:
            print(f"error: {e}")

    def do_pods(self, _line: str) -> None:
        """List pods: name, node, IP, readiness."""
        for pod in self.lab.cluster.pods:
            state = "Terminating" if pod.terminating else ("Ready" if pod.ready else "NotReady")
            print(f"{pod.name:40} {pod.node:16} {pod.ip:14} {state}")

    def do_services(self, _line: str) -> None:
        """List Services: type, policy, nodePorts, health check port, load balancer address."""
        ips = load_balancer_ips(self.lab.cluster)
        vips = cluster_ips(self.lab.cluster)
        for svc in self.lab.cluster.services:
            ports = ", ".join(f"{p.port}/{p.protocol}" + (f"->{p.node_port}" if p.node_port else "") for p in svc.ports)
            extra = f" healthCheckNodePort {svc.health_check_node_port}" if svc.health_check_node_port else ""
            lb = f" LB {ips[(svc.namespace, svc.name)]}" if (svc.namespace, svc.name) in ips else ""
            vip = vips.get((svc.namespace, svc.name), "None (headless)")
            print(f"{svc.name}: {svc.type} clusterIP {vip} {svc.external_traffic_policy} ports {ports}{extra}{lb}")
        for node in self.lab.cluster.nodes:
            print(f"node {node.name}: {addr.node_ip(node.index)}")

    def do_delete_pod(self, line: str) -> None:
        """delete-pod NAME [--grace S]: delete a pod while traffic flows (Terminating for its grace period)."""
        def delete():
            words = shlex.split(line)
            if not words:
                raise ValueError("usage: delete-pod NAME [--grace SECONDS]")
            grace = float(words[words.index("--grace") + 1]) if "--grace" in words else None
            self.lab.delete_pod(words[0], grace)
        self._run(delete)

    def do_ready_pod(self, line: str) -> None:
        """ready-pod NAME: the pod passes readiness again."""
        self._run(lambda: self.lab.set_pod_ready(line.strip(), True))

    def do_unready_pod(self, line: str) -> None:
        """unready-pod NAME: the pod fails readiness (its server fails its httpGet probe)."""
        self._run(lambda: self.lab.set_pod_ready(line.strip(), False))

    def do_cordon(self, line: str) -> None:
        """cordon NODE: no new pods there."""
        self._run(lambda: self.lab.cordon_node(line.strip()))

    def do_uncordon(self, line: str) -> None:
        """uncordon NODE."""
        self._run(lambda: self.lab.cordon_node(line.strip(), False))

    def do_delete_node(self, line: str) -> None:
        """delete-node NODE: mark the node for deletion (kube-proxy's /healthz there answers 503)."""
        self._run(lambda: self.lab.delete_node(line.strip()))

    def do_add_pod(self, line: str) -> None:
        """add-pod NAME NODE [KEY=VALUE ...] [--port N]: start a pod with these labels (default port 8080)."""
        def add():
            words = shlex.split(line)
            if len(words) < 2:
                raise ValueError("usage: add-pod NAME NODE [KEY=VALUE ...] [--port N]")
            ports = tuple(int(words[i + 1]) for i, w in enumerate(words) if w == "--port") or (8080,)
            labels = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            self.lab.add_pod(words[0], words[1], labels=labels, ports=ports)
        self._run(add)

    def do_move_pod(self, line: str) -> None:
        """move-pod NAME NODE: reschedule a pod to another node (new IP, same labels)."""
        self._run(lambda: self.lab.move_pod(*shlex.split(line)))

    def do_lb(self, _line: str) -> None:
        """The cloud load balancer's health verdicts."""
        for service, entry in self.lab.lb_health().get("services", {}).items():
            for node, state in entry["nodes"].items():
                print(f"{service} {node}: {'in rotation' if state['healthy'] else 'out'} "
                      f"(last check {state['lastStatus']})")

    # Mininet's CLI dispatches "delete-pod" to do_delete (cmd splits at the first non-identifier char).
    def default(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        handler = getattr(self, "do_" + verb.replace("-", "_"), None)
        if handler and "-" in verb:
            handler(rest)
        else:
            super().default(line)
