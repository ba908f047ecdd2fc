"""Probing a running lab: for each NodePort Service and each node, real requests from the outside client.

An "entry" is one (Service port, node) pair: the client sends N new TCP connections to nodeIP:nodePort.
Bytes between nodes are the underlay's inter-node flow counters read before and after that entry
alone, so each row of the report is charged only with its own traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controllers.pipeline import U_INTERNODE
from lab import addressing as addr
from lab.model import Service, ServicePort
from lab.network import LabNetwork
from lab.report import Report, entry_result


def probe_entry(lab: LabNetwork, service: Service, sp: ServicePort, node_name: str, requests: int,
                client_ttl: int, timeout: float = 1.0, concurrency: int = 8) -> dict:
    node = lab.cluster.node(node_name)
    node_ip = addr.node_ip(node.index)
    before = lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    t0 = time.monotonic()
    out = lab.probe([f"{node_ip}:{sp.node_port}"], requests, concurrency=concurrency, timeout=timeout)
    duration = time.monotonic() - t0
    after = lab.flow_bytes(addr.underlay_bridge(), U_INTERNODE)
    return entry_result(out["records"], service=service.name, namespace=service.namespace,
                        policy=service.external_traffic_policy, node_port=sp.node_port, node=node_name,
                        node_ip=node_ip, inter_node_bytes=after - before, client_ttl=client_ttl,
                        duration_s=out.get("durationS", duration))


def probe_all(lab: LabNetwork, report: Report, requests: int, timeout: float = 1.0,
              progress: Callable[[str], None] = lambda s: None) -> None:
    """Every port of every NodePort Service through every node, in manifest order."""
    client_ttl = lab.client_ttl()
    for service in lab.cluster.services:
        for sp in service.ports:
            for node in lab.cluster.nodes:
                progress(f"probing {service.name}:{sp.node_port} ({service.external_traffic_policy}) "
                         f"via {node.name}, {requests} requests")
                report.results.append(probe_entry(lab, service, sp, node.name, requests, client_ttl, timeout))


def set_policy(lab: LabNetwork, service: Service, policy: str) -> None:
    """Change externalTrafficPolicy in place, as ``kubectl patch`` would, and wait for the data plane."""
    service.external_traffic_policy = policy
    lab.publish()
