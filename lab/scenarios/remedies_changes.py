"""The remedies scenario's live changes: each remedy is a patch of the running cluster, as kubectl would make it.

One network serves every remedy. Between rows the app's Service is patched (``externalTrafficPolicy``,
Cilium's per-Service annotations ``service.cilium.io/forwarding-mode: dsr`` and
``service.cilium.io/lb-algorithm: maglev``, ``spec.trafficDistribution: PreferClose``) and kube-proxy
reprograms the switches; the spread variant is a rollout: the new replicas start where the scheduler puts
the variant's pods, then the old ones are deleted. Before a row is measured the load balancer's rotation
must agree with the policy, as a client arriving a little later would find it.

Which mechanisms this lab has is read from the code itself (``missing_mechanisms``), so the scenario runs
with the rows that exist and says what the others need.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from controllers.state import EndpointInfo, ServicePortInfo
from lab.cloud.network import LabNetwork
from lab.kube.endpoints import selected_pods
from lab.kube.manifests.workloads import generated_pod_name
from lab.kube.model import Cluster, Service
from lab.measure.experiment import set_policy
from lab.polling import wait_for

FORWARDING_MODE = "service.cilium.io/forwarding-mode"
LB_ALGORITHM = "service.cilium.io/lb-algorithm"
TRAFFIC_DISTRIBUTION = "traffic_distribution"  # lab.kube.model.Service's field for spec.trafficDistribution


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


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def missing_mechanisms() -> dict[str, str]:
    """Remedy -> what the lab lacks for it (the remedies it has are not listed)."""
    missing = {}
    dsr = "annotations" in _fields(Service) and "forwarding" in _fields(ServicePortInfo)
    maglev = "algorithm" in _fields(ServicePortInfo)
    if not dsr:
        missing["DSR"] = "needs DSR in kube-proxy: the dsr branch"
    if not (dsr and maglev):
        missing["Maglev + DSR"] = "needs Maglev and DSR in kube-proxy: the maglev and dsr branches"
    if TRAFFIC_DISTRIBUTION not in _fields(Service) or "for_zones" not in _fields(EndpointInfo):
        missing["PreferClose"] = "needs trafficDistribution and topology hints: the zones branch"
    return missing


def can_reroute(net: LabNetwork) -> bool:
    return hasattr(net, "reroute") and _has_module("lab.measure.held")


def can_count_zones(net: LabNetwork) -> bool:
    return hasattr(net, "cross_zone_bytes")


def network_options(lb_delivery: str | None) -> dict:
    """``LabNetwork`` keyword arguments this lab accepts: the load balancer delivering its own address to
    the node (``vip``: GCP's pass-through NLB, MetalLB with BGP), which DSR and Maglev need for a moved
    connection to keep its 5-tuple, where the lab has it."""
    if "lb_delivery" in inspect.signature(LabNetwork.__init__).parameters and lb_delivery:
        return {"lb_delivery": lb_delivery}
    return {}


def apply(net: LabNetwork, service: Service, remedy: Remedy, original: dict[str, str]) -> None:
    """Patch the Service to the remedy's settings (from the manifest's own, not the last row's) and wait
    for the switches (``set_policy`` publishes)."""
    if "annotations" in _fields(Service):
        service.annotations = {**original, **remedy.annotations}
    if TRAFFIC_DISTRIBUTION in _fields(Service):
        setattr(service, TRAFFIC_DISTRIBUTION, remedy.traffic_distribution)
    set_policy(net, service, remedy.policy)


def rotation_nodes(cluster: Cluster, service: Service) -> set[str]:
    """Where the load balancer's health checks pass: every node under Cluster (kube-proxy's healthz),
    the nodes with a ready endpoint under Local (the healthCheckNodePort)."""
    if service.external_traffic_policy != "Local":
        return {n.name for n in cluster.nodes}
    return {p.node for p in selected_pods(cluster, service) if p.ready and not p.terminating}


def wait_rotation(net: LabNetwork, service: Service) -> list[str]:
    key = f"{service.namespace}/{service.name}"
    want = rotation_nodes(net.cluster, service)
    wait_for(lambda: set(net.lb_rotation().get(key, [])) == want, timeout=30,
             what=f"the load balancer's rotation for {key} to be {sorted(want)}", last=net.lb_rotation)
    return [n.name for n in net.cluster.nodes if n.name in want]


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
        net.delete_pod(name, grace_s=0)
    return new
