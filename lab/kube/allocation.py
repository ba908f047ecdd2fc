"""Which nodePort each Service port gets: kube-apiserver's allocator, made deterministic.

kube-apiserver (``pkg/registry/core/service/portallocator``) keeps a bitmap of the NodePort range
(``--service-node-port-range``, default 30000-32767):

- an explicit ``nodePort`` must lie in the range and be free, or the request fails;
- an omitted one is allocated at a random offset, scanning forward with wrap-around to the first free
  port. Since v1.29 (KEP-3668, ServiceNodePortStaticSubrange) the range is split: the lower *static* band
  of ``min(max(16, size // 32), 128)`` ports (86 for the default range: 30000-30085) is left for people
  who pick ports by hand, and dynamic allocation uses the upper band (30086-32767) first, falling back to
  the lower band only when the upper band is full. Ranges of 16 ports or fewer have no static band.

The lab differs in one way on purpose: the "random" start comes from sha256 of the port's key
(``namespace/name:portname``), so the same manifests always get the same ports, and every explicit port
of every Service is reserved before anything is allocated, so no manifest order can make a dynamic port
take a number that a later Service asks for explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from lab.kube.model import NODE_PORT_RANGE

PortRange = tuple[int, int]  # inclusive, as in --service-node-port-range

# KEP-3668: offset = min(max(_BAND_MIN, size // _BAND_STEP), _BAND_MAX); no band at or below _BAND_MIN.
_BAND_MIN = 16
_BAND_STEP = 32
_BAND_MAX = 128


@dataclass(frozen=True)
class PortRequest:
    """One port to allocate. ``key`` names it (``namespace/name:portname``) and seeds its start offset."""

    key: str
    explicit: int | None = None


class PortConflict(Exception):
    """An explicit port that is out of range or taken, or no free port left.

    ``holder`` is the request that already has ``port`` (for "already allocated"), else ``None``.
    """

    def __init__(
        self,
        request: PortRequest,
        problem: str,
        fix: str,
        port: int | None = None,
        holder: PortRequest | None = None,
    ) -> None:
        self.request = request
        self.problem = problem
        self.fix = fix
        self.port = port
        self.holder = holder
        super().__init__(f"{request.key}: {problem}: {fix}")


def range_size(port_range: PortRange = NODE_PORT_RANGE) -> int:
    low, high = port_range
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"bad nodePort range {low}-{high}")
    return high - low + 1


def band_offset(size: int) -> int:
    """Size of the static (lower) band, as kube-apiserver's ``calculateRangeOffset``."""
    if size <= _BAND_MIN:
        return 0
    return min(max(_BAND_MIN, size // _BAND_STEP), _BAND_MAX)


def static_band(port_range: PortRange = NODE_PORT_RANGE) -> PortRange | None:
    """The ports left for explicit use first (30000-30085 by default); ``None`` for tiny ranges."""
    offset = band_offset(range_size(port_range))
    return (port_range[0], port_range[0] + offset - 1) if offset else None


def range_problem(port: int, port_range: PortRange = NODE_PORT_RANGE) -> str | None:
    low, high = port_range
    if not low <= port <= high:
        return f"{port} is outside {low}-{high}"
    return None


def _starts(key: str) -> tuple[int, int]:
    """Two independent pseudo-random numbers for ``key``: the start in the upper and in the lower band."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")


def _scan(used: AbstractSet[int], low: int, first: int, count: int, start: int) -> int | None:
    """First free port among offsets ``first .. first+count-1`` of the range, from ``start``, wrapping."""
    for step in range(count):
        port = low + first + (start + step) % count
        if port not in used:
            return port
    return None


def next_free(used: AbstractSet[int], key: str, port_range: PortRange = NODE_PORT_RANGE) -> int | None:
    """The port the allocator gives ``key`` when ``used`` are taken: upper band first, then lower."""
    low, _ = port_range
    size = range_size(port_range)
    offset = band_offset(size)
    upper_start, lower_start = _starts(key)
    port = _scan(used, low, offset, size - offset, upper_start % (size - offset))
    if port is None and offset:
        port = _scan(used, low, 0, offset, lower_start % offset)
    return port


def _reserve_explicit(requests: Iterable[PortRequest], port_range: PortRange) -> dict[int, PortRequest]:
    holders: dict[int, PortRequest] = {}
    for request in requests:
        port = request.explicit
        if port is None:
            continue
        problem = range_problem(port, port_range)
        if problem:
            raise PortConflict(
                request, problem, "pick a port in the range or omit it to have one allocated", port
            )
        if port in holders:
            raise PortConflict(
                request,
                f"{port} is already allocated",
                "pick another port or omit it to have one allocated",
                port,
                holders[port],
            )
        holders[port] = request
    return holders


def allocate(requests: Sequence[PortRequest], port_range: PortRange = NODE_PORT_RANGE) -> dict[str, int]:
    """Every request's port, by key. Raises ``PortConflict`` for the first request that cannot have one."""
    keys = [request.key for request in requests]
    if len(set(keys)) != len(keys):
        raise ValueError("port request keys must be unique")
    holders = _reserve_explicit(requests, port_range)
    ports = {request.key: port for port, request in holders.items()}
    used = set(holders)
    for request in requests:
        if request.explicit is not None:
            continue
        port = next_free(used, request.key, port_range)
        if port is None:
            low, high = port_range
            raise PortConflict(
                request,
                f"cannot be allocated: all {range_size(port_range)} ports of {low}-{high} are in use",
                "give fewer Service ports, or remove explicit nodePorts",
            )
        used.add(port)
        ports[request.key] = port
    return ports
