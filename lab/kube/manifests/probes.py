"""A container's ``readinessProbe`` and the pod's ``terminationGracePeriodSeconds``: what kubelet needs
to decide when a pod is an endpoint (``lab.emulation.kubelet`` runs the probes).

``httpGet`` (HTTP only) and ``tcpSocket`` probes are run against the pod's real server; ``exec``,
``grpc`` and HTTPS probes are not (the lab runs no container image), with a warning: such a pod counts
as Ready. Defaults are the API's: period 10 s, timeout 1 s, success threshold 1, failure threshold 3.
"""

from __future__ import annotations

from lab.errors import Origin, shown
from lab.kube import names
from lab.kube.manifests.fields import integer, mapping, port_number, string, warn
from lab.kube.model import ContainerPort, Probe

GRACE_DEFAULT_S = 30  # k8s.io/api: terminationGracePeriodSeconds default


def readiness_probe(container: dict, ports: list[ContainerPort], origin: Origin, field: str,
                    warnings: list[str]) -> Probe | None:
    raw = mapping(container, "readinessProbe", origin, f"{field}.readinessProbe")
    if not raw:
        return None
    field = f"{field}.readinessProbe"
    timing = {key: integer(raw, key, origin, f"{field}.{key}")
              for key in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold",
                          "failureThreshold")}
    for key, value in timing.items():
        minimum = 0 if key == "initialDelaySeconds" else 1
        if value is not None and value < minimum:
            raise origin.error(f"{field}.{key}", f"{value} is below {minimum}", f"use {minimum} or more")
    kinds = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in raw]
    if len(kinds) != 1:
        raise origin.error(field, f"has {len(kinds)} handlers ({', '.join(kinds) or 'none'})",
                           "give exactly one of httpGet, tcpSocket, exec or grpc")
    kind = kinds[0]
    handler = mapping(raw, kind, origin, f"{field}.{kind}")
    if kind in ("exec", "grpc") or (kind == "httpGet" and (string(handler, "scheme", origin, f"{field}.httpGet.scheme")
                                                         or "HTTP").upper() == "HTTPS"):
        warn(warnings, origin, f"{field}.{kind}", "is not run: the lab runs no container image, so this "
             "container counts as Ready", "use an httpGet (HTTP) or tcpSocket probe to have readiness modelled")
        return None
    port = _probe_port(handler, ports, origin, f"{field}.{kind}.port")
    return Probe(kind=kind, port=port,
                 path=(string(handler, "path", origin, f"{field}.httpGet.path") or "/") if kind == "httpGet" else "/",
                 initial_delay_s=float(timing["initialDelaySeconds"] or 0),
                 period_s=float(timing["periodSeconds"] or 10), timeout_s=float(timing["timeoutSeconds"] or 1),
                 success_threshold=timing["successThreshold"] or 1, failure_threshold=timing["failureThreshold"] or 3)


def _probe_port(handler: dict, ports: list[ContainerPort], origin: Origin, field: str) -> int | str:
    value = handler.get("port")
    if value is None:
        raise origin.error(field, "is required", "name a container port or give its number")
    if isinstance(value, int) and not isinstance(value, bool):
        return port_number(value, origin, field)
    if isinstance(value, str) and not value.isdigit():
        names.validate_port_name(value, origin, field)
        if not any(p.name == value for p in ports):
            raise origin.error(field, f"{shown(value)} is not a port name of this container",
                               f'name a containerPort "{value}" or use its number')
        return value
    raise origin.error(field, f"{shown(str(value))} is not a port", "use a number or a container port name")


def grace_period(spec: dict, origin: Origin, prefix: str) -> float:
    value = integer(spec, "terminationGracePeriodSeconds", origin, f"{prefix}.terminationGracePeriodSeconds")
    if value is None:
        return float(GRACE_DEFAULT_S)
    if value < 0:
        raise origin.error(f"{prefix}.terminationGracePeriodSeconds", f"{value} is negative", "use 0 or more")
    return float(value)
