"""Probing a running lab: for each NodePort Service and each node, real requests from the outside client.

An "entry" is one (Service port, node) pair: the client sends N new TCP connections to nodeIP:nodePort.
Bytes between nodes are read from the underlay's port counters before and after that entry alone
(``ClusterNetwork.inter_node_bytes``, current at once), so each row of the report is charged only with
its own traffic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from lab.cloud.load_balancer import expected_rotation, health_check_target, load_balancer_services
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.kube.allocation import next_free
from lab.kube.endpoints import leads_to_l7_proxy
from lab.kube.model import Service, ServicePort
from lab.measure.report import Report, entry_result
from lab.polling import wait_for


def _probe_counted(lab: LabNetwork, target: str, requests: int, **probe_args) -> tuple[dict, int, float]:
    """The probe's answer, the bytes that crossed between nodes meanwhile, and how long it took."""
    before = lab.inter_node_bytes()
    t0 = time.monotonic()
    out = lab.probe([target], requests, **probe_args)
    duration = out.get("durationS", time.monotonic() - t0)
    return out, lab.inter_node_bytes() - before, duration


def probe_entry(lab: LabNetwork, service: Service, sp: ServicePort, node_name: str, requests: int,
                client_ttl: int, timeout: float = 1.0, concurrency: int = 8) -> dict:
    node_ip = addr.node_ip(lab.cluster.node(node_name).index)
    out, inter_node_bytes, duration = _probe_counted(lab, f"{node_ip}:{sp.node_port}", requests,
                                                     concurrency=concurrency, timeout=timeout,
                                                     protocol=sp.protocol)
    return entry_result(out["records"], service=service.name, namespace=service.namespace,
                        policy=service.external_traffic_policy, node_port=sp.node_port, node=node_name,
                        node_ip=node_ip, inter_node_bytes=inter_node_bytes, client_ttl=client_ttl,
                        duration_s=duration, port=sp.port, port_name=sp.name)


def probe_cluster_ip(lab: LabNetwork, service: Service, sp: ServicePort, client_pod: str, requests: int,
                     timeout: float = 1.0, concurrency: int = 8) -> dict:
    """Requests from a pod inside the cluster to the Service's clusterIP:port: ``via`` = "clusterIP",
    ``node`` = the client pod's node, plus ``clientPod``, ``clusterIP`` and ``port``."""
    ip = lab.cluster_ip(service.name, service.namespace)
    pod = lab.cluster.pod(client_pod)
    out, inter_node_bytes, duration = _probe_counted(lab, f"{ip}:{sp.port}", requests, concurrency=concurrency,
                                                     timeout=timeout, host=client_pod, protocol=sp.protocol)
    result = entry_result(out["records"], service=service.name, namespace=service.namespace,
                          policy=service.internal_traffic_policy, node_port=sp.node_port, node=pod.node,
                          node_ip=None, inter_node_bytes=inter_node_bytes, client_ttl=lab.pod_ttl(client_pod),
                          duration_s=duration, via="clusterIP", router_hops=0, port=sp.port,
                          port_name=sp.name)
    result.update(clientPod=client_pod, clusterIP=ip, protocol=sp.protocol)
    return result


def probe_load_balancer(lab: LabNetwork, service: Service, sp: ServicePort, requests: int, client_ttl: int,
                        timeout: float = 1.0, concurrency: int = 8, rate: float | None = None) -> dict:
    """Requests from the client to the Service's external address: the cloud load balancer picks the node.

    The result has ``via`` = "loadBalancer" and ``node`` = None, plus ``nodesServed`` (the node of the pod
    that answered) and, with ``rate``, the raw ``records`` (each with its start time ``t``)."""
    vip = lab.load_balancer_ip(service.name, service.namespace)
    out, inter_node_bytes, duration = _probe_counted(lab, f"{vip}:{sp.port}", requests, concurrency=concurrency,
                                                     timeout=timeout, rate=rate)
    result = entry_result(out["records"], service=service.name, namespace=service.namespace,
                          policy=service.external_traffic_policy, node_port=sp.node_port, node=None, node_ip=None,
                          inter_node_bytes=inter_node_bytes, client_ttl=client_ttl, duration_s=duration,
                          via="loadBalancer", port=sp.port, port_name=sp.name)
    result["loadBalancerIP"] = vip
    result["port"] = sp.port
    nodes: dict[str, int] = {}
    for r in out["records"]:
        if r["ok"] and r.get("response"):
            nodes[r["response"]["node"]] = nodes.get(r["response"]["node"], 0) + 1
    result["nodesServed"] = dict(sorted(nodes.items()))
    if rate is not None:
        result["records"] = out["records"]
        result["startedAt"] = out["startedAt"]
    return result


def probe_all_load_balancers(lab: LabNetwork, report: Report, requests: int, timeout: float = 1.0,
                             progress: Callable[[str], None] = lambda s: None) -> None:
    client_ttl = lab.client_ttl()
    for service in load_balancer_services(lab.cluster):
        for sp in service.ports:
            if sp.protocol != "TCP" or leads_to_l7_proxy(lab.cluster, service, sp):
                continue  # the emulated cloud load balancer forwards TCP; an L7 proxy's: per route (lab.measure.routes)
            progress(f"probing {service.name} through its load balancer "
                     f"{lab.load_balancer_ip(service.name, service.namespace)}:{sp.port}, {requests} requests")
            report.results.append(probe_load_balancer(lab, service, sp, requests, client_ttl, timeout))


def health_checks(lab: LabNetwork) -> list[dict]:
    """What every node answers on each LoadBalancer Service's health check port, read by a real HTTP GET
    from the load balancer's host, as its health checker would."""
    rows = []
    for service in load_balancer_services(lab.cluster):
        port, path = health_check_target(service)
        for node in lab.cluster.nodes:
            url = f"http://{addr.node_ip(node.index)}:{port}{path}"
            out = lab.run_in(addr.LB_NAME, ["curl", "-s", "-m", "2", "-w", "\n%{http_code}", url], timeout=10)
            body, _, code = out.stdout.rpartition("\n")
            try:
                local = json.loads(body).get("localEndpoints")
            except ValueError:
                local = None
            rows.append({"service": service.name, "namespace": service.namespace, "node": node.name,
                         "port": port, "path": path, "status": int(code) if code.isdigit() else None,
                         "localEndpoints": local})
    return rows


def set_policy(lab: LabNetwork, service: Service, policy: str) -> None:
    """Change externalTrafficPolicy in place, as ``kubectl patch`` would, and wait for the data plane.

    A LoadBalancer Service switched to Local gets a healthCheckNodePort, as the API server allocates one."""
    service.external_traffic_policy = policy
    if service.type == "LoadBalancer" and policy == "Local" and not service.health_check_node_port:
        used = {p.node_port for s in lab.cluster.services for p in s.node_ports}
        used |= {s.health_check_node_port for s in lab.cluster.services if s.health_check_node_port}
        service.health_check_node_port = next_free(used, f"{service.namespace}/{service.name}:healthCheckNodePort")
    lab.publish()


def wait_rotation(lab: LabNetwork, service: Service, timeout: float = 30.0) -> list[str]:
    """Wait until the load balancer sends to the nodes its health checks will settle on, as a client
    arriving a little later finds it; those nodes, in cluster order."""
    key = f"{service.namespace}/{service.name}"
    want = expected_rotation(lab.cluster, service)
    wait_for(lambda: set(lab.lb_rotation().get(key, [])) == want, timeout=timeout,
             what=f"the load balancer's rotation for {key} to be {sorted(want)}", last=lab.lb_rotation)
    return [n.name for n in lab.cluster.nodes if n.name in want]


def settle_load_balancers(lab: LabNetwork, progress: Callable[[str], None] = lambda s: None) -> float | None:
    """Before probing through the load balancers: wait until each one's rotation is what its health
    checks settle on. A new load balancer sends to every node until its checks fail on the nodes without
    a pod (``run healthcheck`` measures that window); a user asking what their Service does wants the
    steady state. Returns the seconds waited, or None when there is no load balancer."""
    services = load_balancer_services(lab.cluster)
    if not services:
        return None
    started = time.monotonic()
    profile = lab.lb_profile
    bound = profile.removal_bound_s + profile.healthy_threshold * profile.interval_s + profile.timeout_s
    for service in services:
        key = f"{service.namespace}/{service.name}"
        if set(lab.lb_rotation().get(key, [])) != expected_rotation(lab.cluster, service):
            progress(f"waiting for the load balancer of {key} to follow its health checks ({profile.name}: "
                     f"{profile.interval_s:g} s apart, out after {profile.unhealthy_threshold} failures)")
            wait_rotation(lab, service, timeout=max(bound - (time.monotonic() - started), 1.0) + 5.0)
    return time.monotonic() - started
