"""Which Service ports the node forwards by DSR: Cilium's ``loadBalancer.mode`` and its per-Service annotation.

Cilium's kube-proxy replacement forwards north-south traffic (nodePort, load balancer addresses) in one of
two modes: ``snat`` (the default: the entry node masquerades, replies come back through it) or ``dsr``
(the entry node DNATs without SNAT and carries the Service address to the backend's node, which answers
the client directly). The lab-wide mode is ``Cluster.proxy_mode`` (``--proxy-mode``); with Cilium 1.16+'s
``bpf-lb-mode-annotation`` a Service picks its own with ``service.cilium.io/forwarding-mode: snat|dsr``.
Cilium's ``hybrid`` (DSR for TCP, SNAT for UDP) is not modelled: the lab's DSR carries UDP too.
"""

from __future__ import annotations

from lab.errors import LabError
from lab.kube.model import Service

FORWARDING_MODES = ("snat", "dsr")
FORWARDING_ANNOTATION = "service.cilium.io/forwarding-mode"


def check_proxy_mode(mode: str) -> str:
    if mode not in FORWARDING_MODES:
        raise LabError(f"proxy mode {mode!r} is not one of Cilium's load balancer modes",
                       f"use {' or '.join(FORWARDING_MODES)}")
    return mode


def forwarding_mode(proxy_mode: str, service: Service) -> str:
    """The Service's forwarding mode: its annotation if it has one, else the lab's."""
    value = service.annotations.get(FORWARDING_ANNOTATION)
    if value is None:
        return check_proxy_mode(proxy_mode)
    if value not in FORWARDING_MODES:
        raise LabError(f'Service "{service.namespace}/{service.name}": annotation {FORWARDING_ANNOTATION} is '
                       f"{value!r}", f"use {' or '.join(FORWARDING_MODES)}")
    return value
