"""A Service's topology-aware routing fields, as the API server takes them (``lab.kube.topology`` uses them).

- ``spec.trafficDistribution``: ``PreferClose``, ``PreferSameZone`` (its newer name, 1.33+) or
  ``PreferSameNode`` (1.33+; both on by default since 1.34, the PreferSameTrafficDistribution gate); any
  other value is refused, as the API server's validation refuses it.
- ``service.kubernetes.io/topology-mode`` (and the older ``service.kubernetes.io/topology-aware-hints``):
  an annotation, so the API server takes any value; the EndpointSlice controller acts on ``Auto``/``auto``
  only. ``Disabled``/``disabled`` and the empty string are its "off"; anything else gets a warning here
  (the controller would only record a "not supported" event and write no hints).
"""

from __future__ import annotations

from lab.errors import Origin, shown
from lab.kube.manifests.fields import string, warn
from lab.kube.topology import TOPOLOGY_AWARE_HINTS, TOPOLOGY_MODE, TRAFFIC_DISTRIBUTIONS

OFF = ("", "Disabled", "disabled")


def traffic_distribution(spec: dict, origin: Origin) -> str | None:
    value = string(spec, "trafficDistribution", origin, "spec.trafficDistribution")
    if value is not None and value not in TRAFFIC_DISTRIBUTIONS:
        raise origin.error("spec.trafficDistribution", f"{shown(value)} is not a traffic distribution",
                           f"use {', '.join(TRAFFIC_DISTRIBUTIONS)}")
    return value


def check_topology_annotations(annotations: dict[str, str], origin: Origin, warnings: list[str]) -> None:
    for key in (TOPOLOGY_AWARE_HINTS, TOPOLOGY_MODE):
        value = annotations.get(key)
        if value is not None and value not in ("Auto", "auto", *OFF):
            warn(warnings, origin, f"metadata.annotations[{key}]", f"{shown(value)} is not a topology mode "
                 "kube-controller-manager knows, so no endpoint gets a hint", "use Auto, or Disabled")
