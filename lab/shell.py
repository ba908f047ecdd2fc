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

USAGE_ADD_POD = "add-pod NAME NODE [KEY=VALUE ...] [--port N]"


def parse_words(line: str, usage: str, count: int) -> list[str]:
    """Exactly ``count`` words, or one line naming the usage (before anything is touched)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise LabError(f"cannot read {line!r}: {e}", f"usage: {usage}") from None
    if len(words) != count:
        raise LabError(f"expected {count} argument{'s' if count > 1 else ''}, got {len(words)}", f"usage: {usage}")
    return words


def parse_port(text: str) -> int:
    if not (text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise LabError(f"--port {text[:20]!r} is not a port number", "use a number from 1 to 65535")
    return int(text)


def parse_add_pod(line: str) -> tuple[str, str, dict]:
    """``add-pod`` arguments as (name, node, keyword arguments of ``add_pod``); every word is checked."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise LabError(f"cannot read {line!r}: {e}", f"usage: {USAGE_ADD_POD}") from None
    positional, labels, ports = [], {}, []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--port":
            if i + 1 == len(words):
                raise LabError("--port needs a number", f"usage: {USAGE_ADD_POD}")
            ports.append(parse_port(words[i + 1]))
            i += 2
            continue
        if word.startswith("-"):
            raise LabError(f"unknown option {word[:20]!r}", f"usage: {USAGE_ADD_POD}")
        if len(positional) < 2:
            positional.append(word)
        elif "=" in word and word.split("=", 1)[0]:
            key, value = word.split("=", 1)
            labels[key] = value
        else:
            raise LabError(f"{word[:20]!r} is not a KEY=VALUE label", f"usage: {USAGE_ADD_POD}")
        i += 1
    if len(positional) < 2:
        raise LabError("add-pod needs a pod name and a node", f"usage: {USAGE_ADD_POD}")
    return positional[0], positional[1], {"labels": labels, "ports": tuple(ports) or (8080,)}


class LabShell(CLI):
    prompt = "nodeport-lab> "

    def __init__(self, lab, **kwargs):
        self.lab = lab
        super().__init__(lab.net, **kwargs)

    def _run(self, action) -> None:
        try:
            action()
        except KeyError as e:
            print(f"error: no such pod or node: {e.args[0]}")
        except (LabError, ManifestError, ValueError) as e:
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
            ports = ", ".join(f"{p.port}/{p.protocol}->{p.node_port or '-'}" for p in svc.ports)
            extra = f" healthCheckNodePort {svc.health_check_node_port}" if svc.health_check_node_port else ""
            lb = f" LB {ips[(svc.namespace, svc.name)]}" if (svc.namespace, svc.name) in ips else ""
            vip = vips.get((svc.namespace, svc.name), "None (headless)")
            print(f"{svc.name}: {svc.type} clusterIP {vip} {svc.external_traffic_policy} ports {ports}{extra}{lb}")
        for node in self.lab.cluster.nodes:
            print(f"node {node.name}: {addr.node_ip(node.index)}")

    def do_delete_pod(self, line: str) -> None:
        """delete-pod NAME [--grace S]: delete a pod while traffic flows (Terminating for its grace period)."""
        def delete():
            words = line.split()
            grace = None
            if "--grace" in words:
                at = words.index("--grace")
                value = words[at + 1] if at + 1 < len(words) else ""
                try:
                    grace = float(value)
                except ValueError:
                    raise LabError(f"--grace {value[:20]!r} is not a number of seconds", "e.g. --grace 5") from None
                del words[at:at + 2]
            self.lab.delete_pod(*parse_words(" ".join(words), "delete-pod NAME [--grace SECONDS]", 1), grace)
        self._run(delete)

    def do_ready_pod(self, line: str) -> None:
        """ready-pod NAME: the pod passes readiness again."""
        self._run(lambda: self.lab.set_pod_ready(*parse_words(line, "ready-pod NAME", 1), True))

    def do_unready_pod(self, line: str) -> None:
        """unready-pod NAME: the pod fails readiness (its server fails its httpGet probe)."""
        self._run(lambda: self.lab.set_pod_ready(*parse_words(line, "unready-pod NAME", 1), False))

    def do_cordon(self, line: str) -> None:
        """cordon NODE: no new pods there."""
        self._run(lambda: self.lab.cordon_node(*parse_words(line, "cordon NODE", 1)))

    def do_uncordon(self, line: str) -> None:
        """uncordon NODE."""
        self._run(lambda: self.lab.cordon_node(*parse_words(line, "uncordon NODE", 1), False))

    def do_delete_node(self, line: str) -> None:
        """delete-node NODE: mark the node for deletion (kube-proxy's /healthz there answers 503)."""
        self._run(lambda: self.lab.delete_node(*parse_words(line, "delete-node NODE", 1)))

    def do_add_pod(self, line: str) -> None:
        """add-pod NAME NODE [KEY=VALUE ...] [--port N]: start a pod with these labels (default port 8080)."""
        def add():
            name, node, options = parse_add_pod(line)
            self.lab.add_pod(name, node, **options)
        self._run(add)

    def do_move_pod(self, line: str) -> None:
        """move-pod NAME NODE: reschedule a pod to another node (new IP, same labels)."""
        self._run(lambda: self.lab.move_pod(*parse_words(line, "move-pod NAME NODE", 2)))

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
