"""The remedies scenario's live changes: each remedy is a patch of the running cluster, as kubectl would make it.

One network serves every remedy. Between rows the app's Service is patched (``externalTrafficPolicy``,
Cilium's per-Service annotations ``service.cilium.io/forwarding-mode: dsr`` and
``service.cilium.io/lb-algorithm: maglev``, ``spec.trafficDistribution: PreferClose``) and kube-proxy
reprograms the switches; the spread variant is a rollout: the new replicas start where the scheduler puts
the variant's pods, then the old ones are deleted. Before a row is measured the load balancer's rotation
must agree with the policy, as a client arriving a little later would find it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.kube.endpoints import selected_pods
from lab.kube.manifests.workloads import generated_pod_name
from lab.kube.model import Cluster, Service
from lab.measure.experiment import set_policy
from lab.polling import wait_for

ROLLOUT_GRACE_S = 1.0
FORWARDING_MODE = "service.cilium.io/forwarding-mode"
LB_ALGORITHM = "service.cilium.io/lb-algorithm"


@dataclass(frozen=True)
class Remedy:
    """What one row changes on the app's Service, and how its external traffic arrives."""

    name: str
    policy: str = "Cluster"
    annotations: dict[str, str] = field(default_factory=dict)
    traffic_distribution: str | None = None
    spread: bool = False  # roll the app out as its topology-spread variant first
    via_ingress: bool = False  # external requests go through the ingress controller's load balancer


REMEDY_CHANGES = {r.name: r for r in (
    Remedy("Cluster"),
    Remedy("Local", policy="Local"),
    Remedy("Local + topology spread", policy="Local", spread=True),
    Remedy("DSR", annotations={FORWARDING_MODE: "dsr"}),
    Remedy("Maglev + DSR", annotations={FORWARDING_MODE: "dsr", LB_ALGORITHM: "maglev"}),
    Remedy("Ingress with Local", via_ingress=True),
    Remedy("PreferClose", traffic_distribution="PreferClose"),
)}


def apply(net: LabNetwork, service: Service, remedy: Remedy, original: dict[str, str]) -> None:
    """Patch the Service to the remedy's settings (from the manifest's own, not the last row's) and wait
    for the switches (``set_policy`` publishes)."""
    service.annotations = {**original, **remedy.annotations}
    service.traffic_distribution = remedy.traffic_distribution
    set_policy(net, service, remedy.policy)


def roll_out(net: LabNetwork, service: Service, variant: Cluster, variant_file: Path) -> list[str]:
    """A Deployment rollout to the variant's pod template: its pods start where the scheduler placed them
    in ``variant`` (under a new pod-template-hash, from the variant's text), then the old pods go.
    Returns the new pods' names."""
    template_hash = hashlib.sha256(variant_file.read_bytes()).hexdigest()[:10]
    old = [p.name for p in selected_pods(net.cluster, service)]
    new = []
    for index, pod in enumerate(selected_pods(variant, variant.service(service.name, service.namespace))):
        name = generated_pod_name(f"{pod.owner or service.name}-{template_hash}-", f"{pod.namespace}/{index}")
        net.add_pod(name, pod.node, labels=pod.labels, ports=tuple(p.port for p in pod.ports),
                    namespace=pod.namespace)
        new.append(name)
    for name in old:
        # A short grace period: the old pods are killed after it, as kubelet does when it runs out. The
        # connections held through earlier rows' reroutes (some broken, so never closed) would otherwise
        # keep each old pod draining for 30 s.
        net.delete_pod(name, grace_s=ROLLOUT_GRACE_S)
    wait_for(lambda: not set(old) & {p.name for p in net.cluster.pods}, timeout=ROLLOUT_GRACE_S + 30,
             what="the rollout's old pods to be gone")
    return new
