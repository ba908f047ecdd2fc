"""kube-proxy's topology filter of a Service's endpoints, from their EndpointSlice hints (pure).

As ``CategorizeEndpoints`` and ``topologyModeFromHints`` in kube-proxy (``pkg/proxy/topology.go``):

- Hints count only when EVERY ready endpoint has them (an endpoint without hints means hints are being
  added or removed: filtering then would be dangerous, so all endpoints are used).
- ``forNodes`` first (PreferSameNode): if every ready endpoint has a node hint and one is for this node,
  only those hinted for this node are used; otherwise
- ``forZones`` (PreferClose / PreferSameZone / topology-mode Auto): if every ready endpoint has a zone
  hint and one is for this node's zone, only those hinted for this zone; otherwise
- every ready endpoint (the cluster-wide fall-back: no endpoint for this zone, or a node with no zone).

The filter applies to the Cluster-policy endpoints only: ``internalTrafficPolicy: Local`` and
``externalTrafficPolicy: Local`` choose among the node's own endpoints and take precedence over it. The
fall-back to serving terminating endpoints (when none is ready anywhere) ignores topology, as there.
"""

from __future__ import annotations

from collections.abc import Sequence

from controllers.state import EndpointInfo

SAME_NODE = "PreferSameNode"
SAME_ZONE = "PreferSameZone"


def topology_mode(endpoints: Sequence[EndpointInfo], node: str, zone: str | None) -> str:
    """``topologyModeFromHints``: "PreferSameNode", "PreferSameZone" or "" (no filter)."""
    ready = [e for e in endpoints if e.ready]
    if not ready:
        return ""
    if all(e.for_nodes for e in ready) and any(node in e.for_nodes for e in ready):
        return SAME_NODE
    if all(e.for_zones for e in ready) and zone and any(zone in e.for_zones for e in ready):
        return SAME_ZONE
    return ""


def available(endpoint: EndpointInfo, mode: str, node: str, zone: str | None) -> bool:
    """``availableForTopology``: is this endpoint used on this node under ``mode``."""
    if mode == SAME_NODE:
        return node in (endpoint.for_nodes or ())
    if mode == SAME_ZONE:
        return zone in (endpoint.for_zones or ())
    return True


def by_topology(ready: Sequence[EndpointInfo], endpoints: Sequence[EndpointInfo], node: str,
                zone: str | None) -> tuple[EndpointInfo, ...]:
    """The ``ready`` endpoints this node uses for Cluster-policy traffic, the mode chosen from all of
    the Service port's ``endpoints``."""
    mode = topology_mode(endpoints, node, zone)
    if not mode:  # no hints, the common case: every ready endpoint (one check, not one per endpoint)
        return tuple(ready)
    return tuple(e for e in ready if available(e, mode, node, zone))
