"""The Mininet CLI with kubectl-like verbs, for ``python -m lab cli``: change pods while traffic flows.

    mininet> pods                      where every pod runs, and its address
    mininet> services                  nodePorts, policies, load balancer addresses
    mininet> delete-pod NAME           delete a pod (kube-proxy stops choosing it first)
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
        """List pods: name, node, IP."""
        for pod in self.lab.cluster.pods:
            print(f"{pod.name:40} {pod.node:16} {pod.ip}")

    def do_services(self, _line: str) -> None:
        """List Services: type, policy, nodePorts, health check port, load balancer address."""
        ips = load_balancer_ips(self.lab.cluster)
        for svc in self.lab.cluster.services:
            ports = ", ".join(f"{p.port}->{p.node_port or '-'}" for p in svc.ports)
            extra = f" healthCheckNodePort {svc.health_check_node_port}" if svc.health_check_node_port else ""
            lb = f" LB {ips[(svc.namespace, svc.name)]}" if (svc.namespace, svc.name) in ips else ""
            print(f"{svc.name}: {svc.type} {svc.external_traffic_policy} nodePort {ports}{extra}{lb}")
        for node in self.lab.cluster.nodes:
            print(f"node {node.name}: {addr.node_ip(node.index)}")

    def do_delete_pod(self, line: str) -> None:
        """delete-pod NAME: delete a pod while traffic flows."""
        self._run(lambda: self.lab.delete_pod(line.strip()))

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
