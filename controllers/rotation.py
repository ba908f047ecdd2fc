"""The nodes a load balancer sends new connections to: its health checks' verdicts, less the nodes taken out by hand.

A cloud load balancer's rotation follows its health checks; an operator (or the lab's ``reroute``) can
also take a target out, as deregistering an instance from a target group does. The controller programs
the underlay with this effective rotation, and reports it back as what the load balancer really does.
A Service the health checker has no verdict for is sent to every node (cloud load balancers fail open),
and so is one whose every healthy node was taken out: then to every node not taken out.
"""

from __future__ import annotations

from controllers.state import ProxyState


def effective_rotation(state: ProxyState, lb_healthy: dict[str, list[str]]) -> dict[str, list[str]]:
    out = state.underlay.lb_out_of_rotation
    if not out:
        return lb_healthy
    every = [n.name for n in state.nodes]
    rotation = dict(lb_healthy)
    for service, removed in out.items():
        healthy = [n for n in (lb_healthy.get(service) or every) if n not in removed]
        rotation[service] = healthy or [n for n in every if n not in removed]
    return rotation
