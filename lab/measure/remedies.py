"""Remedies side by side: from the probes' per-request records and the counters to one row per remedy.

Pure functions; ``lab.scenarios.remedies`` measures, this module reads. A row describes one remedy under
one traffic mix: external requests from the client through the load balancer's address, and in-cluster
requests from a client pod in every zone to the clusterIP. Every figure comes from what real packets did:

- ``extraHops``: node-to-node forwards per answered request beyond the one node every request must
  reach, from the TTL the pod saw on the connection's SYN (``client TTL - routers - synTTL - 1``). Behind
  an L7 proxy the app's connection starts at the proxy pod, so its TTL measures the second leg (proxy pod
  -> app pod); the first leg, under Local, never leaves the node the load balancer chose (Local keeps
  the connection there, which the client address in ``X-Forwarded-For`` confirms), and counts 0.
- ``clientIpKeptPct``: of the answered external requests, the share whose pod saw the client's address
  as the TCP source (behind an L7 proxy: as the first ``X-Forwarded-For`` address, the only place it
  can survive). In-cluster requests keep the client pod's address under every remedy and are left out.
- ``interNodeBytesPerRequest`` and ``crossZoneBytesPerRequest``: the underlay's counters over the whole
  mix, divided by the answered requests; ``crossZoneCostPerMillion`` is the latter priced per GB
  (``lab.measure.zones.cross_zone_cost``) for a million requests.
- ``balance``: every pod of the app's share of the answered requests (pods that got none count),
  ``maxShare`` / ``minShare`` and the chi-square p-value against an even split.
- ``brokenOnReroute``: of the connections held open through the load balancer, how many failed after
  it moved them off a node that left its rotation (``lab.measure.held.broken_on_reroute``).
- ``latencyMs``: nearest-rank p50 and p95 over the mix's answered requests.

``rank`` orders rows for a priority; ``verdict`` says it in sentences with the numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.kube import addressing as addr
from lab.measure.probe import percentiles
from lab.measure.report import format_table
from lab.measure.stats import chi_square

REMEDIES = ("Cluster", "Local", "Local + topology spread", "DSR", "Maglev + DSR", "Ingress with Local",
            "PreferClose")
PRIORITIES = ("client-ip", "cost", "balance", "resilience")
MILLION = 1_000_000


@dataclass
class Part:
    """One part of the mix as measured: the probe's records and the counters' deltas around it.

    ``client_ttl`` is the TTL the sender's packets start with and ``router_hops`` the routers before the
    first node (the edge router for the outside client, none inside); behind an L7 proxy the sender the
    app sees is the proxy pod (``l7``), whose TTL is ``client_ttl``."""

    records: list[dict]
    client_ttl: int
    router_hops: int
    inter_node_bytes: int
    cross_zone_bytes: int | None = None
    l7: bool = False
    client: str | None = None  # the client pod, for in-cluster parts


@dataclass
class RowInput:
    remedy: str
    external: Part
    in_cluster: list[Part] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)  # the app's pods while measured (balance counts them all)
    reroute: dict | None = None  # lab.measure.held.broken_on_reroute: {held, moved, broken}
    note: str | None = None


def answered(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("ok") and isinstance(r.get("response"), dict)]


def node_hops(record: dict, client_ttl: int, router_hops: int) -> int | None:
    ttl = record["response"].get("synTTL")
    return None if ttl is None else client_ttl - router_hops - ttl


def client_seen(record: dict, l7: bool) -> str | None:
    """The client's address as the app saw it: the TCP source, or behind an L7 proxy the first
    ``X-Forwarded-For`` entry."""
    response = record["response"]
    if l7:
        forwarded = response.get("headers", {}).get("x-forwarded-for", "")
        return forwarded.split(",")[0].strip() or None
    return response.get("source", {}).get("ip")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _per_request(total: int | None, requests: int) -> float | None:
    return None if total is None or not requests else round(total / requests, 1)


def _extra_hops(part: Part) -> list[int]:
    hops = (node_hops(r, part.client_ttl, part.router_hops) for r in answered(part.records))
    return [h - 1 for h in hops if h is not None]


def part_summary(part: Part) -> dict:
    ok = answered(part.records)
    seen = Counter(client_seen(r, part.l7) for r in ok)
    summary = {"requests": len(part.records), "answered": len(ok), "failed": len(part.records) - len(ok),
               "errors": dict(Counter(r.get("error") for r in part.records if r not in ok)),
               "extraHops": _mean(_extra_hops(part)),
               "servedBy": dict(sorted(Counter(r["response"]["pod"] for r in ok).items())),
               "clientSeen": dict(sorted(seen.items(), key=lambda kv: str(kv[0]))),
               "interNodeBytes": part.inter_node_bytes, "crossZoneBytes": part.cross_zone_bytes,
               "interNodeBytesPerRequest": _per_request(part.inter_node_bytes, len(ok)),
               "crossZoneBytesPerRequest": _per_request(part.cross_zone_bytes, len(ok))}
    if part.client is not None:
        summary["client"] = part.client
    return summary


def balance(counts: dict[str, int], pods: list[str]) -> dict:
    """Shares of every pod in ``pods`` (and any other that answered), and the fit to an even split."""
    names = list(dict.fromkeys([*pods, *counts]))
    observed = [counts.get(p, 0) for p in names]
    total = sum(observed)
    if not total or len(names) < 2:
        share = 1.0 if total else None
        return {"maxShare": share, "minShare": share, "pValue": None, "pods": len(names)}
    _, p_value = chi_square(observed, [1 / len(names)] * len(names))
    return {"maxShare": round(max(observed) / total, 4), "minShare": round(min(observed) / total, 4),
            "pValue": float(f"{p_value:.3g}"), "pods": len(names)}


def cost_per_million(bytes_per_request: float | None, price_per_gb: float,
                     cost: Callable[[float, float], float] | None) -> float | None:
    """What a million requests' cross-zone bytes cost, with ``cost(bytes, price_per_gb)``."""
    if bytes_per_request is None or cost is None:
        return None
    return float(f"{cost(bytes_per_request * MILLION, price_per_gb):.4g}")


def row(data: RowInput, price_per_gb: float, cost: Callable[[float, float], float] | None) -> dict:
    """The row of one remedy (the JSON contract's keys first, then the parts it was made of)."""
    parts = [data.external, *data.in_cluster]
    ok = [r for p in parts for r in answered(p.records)]
    hops = [h for p in parts for h in _extra_hops(p)]
    external = answered(data.external.records)
    kept = sum(1 for r in external if client_seen(r, data.external.l7) == addr.CLIENT_IP)
    zone_bytes = [p.cross_zone_bytes for p in parts]
    cross = None if any(b is None for b in zone_bytes) else sum(zone_bytes)
    cross_per_request = _per_request(cross, len(ok))
    q = percentiles([r["latencyMs"] for r in ok if r.get("latencyMs") is not None], (50, 95))
    reroute = data.reroute
    return {
        "remedy": data.remedy, "available": True, "note": data.note,
        "extraHops": _mean(hops),
        "clientIpKeptPct": round(100 * kept / len(external), 1) if external else None,
        "interNodeBytesPerRequest": _per_request(sum(p.inter_node_bytes for p in parts), len(ok)),
        "crossZoneBytesPerRequest": cross_per_request,
        "crossZoneCostPerMillion": cost_per_million(cross_per_request, price_per_gb, cost),
        "balance": balance(Counter(r["response"]["pod"] for r in ok), data.pods),
        "brokenOnReroute": None if reroute is None else reroute.get("broken"),
        "latencyMs": {"p50": q[50], "p95": q[95]},
        "reroute": reroute,
        "requests": {"sent": sum(len(p.records) for p in parts), "answered": len(ok)},
        "external": part_summary(data.external),
        "inCluster": [part_summary(p) for p in data.in_cluster],
    }


# --- ranking ------------------------------------------------------------------------------------------

def _or_worst(value: float | None) -> float:
    return math.inf if value is None else value


def imbalance(r: dict) -> float | None:
    """Busiest over least busy pod's share (1 is even; inf when a pod got nothing)."""
    b = r["balance"]
    if b["maxShare"] is None:
        return None
    return math.inf if not b["minShare"] else b["maxShare"] / b["minShare"]


def broken_fraction(r: dict) -> float | None:
    reroute = r.get("reroute") or {}
    if r["brokenOnReroute"] is None:
        return None
    held = reroute.get("held") or 0
    return r["brokenOnReroute"] / held if held else float(r["brokenOnReroute"])


def _keys(r: dict) -> dict[str, tuple]:
    kept = r["clientIpKeptPct"]
    zone = r["crossZoneBytesPerRequest"]
    return {
        "client-ip": (-kept if kept is not None else math.inf, _or_worst(broken_fraction(r)),
                      _or_worst(imbalance(r))),
        # Cost is proportional to the bytes that cross zones; without zone counters, bytes between nodes.
        "cost": (_or_worst(zone), _or_worst(r["interNodeBytesPerRequest"]), _or_worst(r["extraHops"])),
        "balance": (_or_worst(imbalance(r)), -(r["balance"]["pValue"] or 0.0)),
        "resilience": (_or_worst(broken_fraction(r)), -(kept or 0.0)),
    }


def rank(rows: list[dict], priority: str) -> list[dict]:
    """Rows best first for ``priority``."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    return sorted(rows, key=lambda r: _keys(r)[priority])


def _figure(r: dict, priority: str) -> str:
    if priority == "client-ip":
        return f"client IP kept {_pct(r['clientIpKeptPct'])}"
    if priority == "cost":
        if r["crossZoneBytesPerRequest"] is None:
            return f"{_num(r['interNodeBytesPerRequest'])} bytes between nodes per request (no zone counters)"
        return (f"{_num(r['crossZoneBytesPerRequest'])} bytes across zones per request, "
                f"{_money(r['crossZoneCostPerMillion'])} per million requests")
    if priority == "balance":
        ratio = imbalance(r)
        return f"busiest pod {'-' if ratio is None else f'{ratio:.2f}'}x the least busy, p = {r['balance']['pValue']}"
    reroute = r.get("reroute") or {}
    return f"{_num(r['brokenOnReroute'])} of {reroute.get('held', '-')} held connections broken on reroute"


def verdict(rows: list[dict], priority: str) -> list[str]:
    ranked = rank(rows, priority)
    lines = [f"Priority {priority}: " + "; ".join(f"{i}. {r['remedy']} ({_figure(r, priority)})"
                                                  for i, r in enumerate(ranked, 1)) + "."]
    best = ranked[0]
    lines.append(f"{best['remedy']} ranks first; what it costs elsewhere: " + _costs(best, ranked) + ".")
    return lines


def _costs(r: dict, rows: list[dict]) -> str:
    """The chosen row's figures, each next to the best any row reached; figures not measured are left out."""
    parts = []
    kept = r["clientIpKeptPct"]
    if kept is not None:
        parts.append(f"client IP kept {_pct(kept)} (best {_pct(max(x['clientIpKeptPct'] or 0 for x in rows))})")
    for key, what in (("interNodeBytesPerRequest", "bytes between nodes"), ("crossZoneBytesPerRequest",
                                                                           "bytes across zones")):
        if r[key] is not None:
            best = min(_or_worst(x[key]) for x in rows)
            parts.append(f"{_num(r[key])} {what} per request (best {_num(best)})")
    ratio = imbalance(r)
    if ratio is not None:
        parts.append(f"busiest pod {ratio:.2f}x the least busy (p = {r['balance']['pValue']})")
    if r["brokenOnReroute"] is not None:
        best = min(_or_worst(x["brokenOnReroute"]) for x in rows)
        parts.append(f"{r['brokenOnReroute']} held connections broken on reroute (best {_num(best)})")
    parts.append(f"p95 {_ms(r['latencyMs']['p95'])} ms")
    return ", ".join(parts)


# --- rendering ----------------------------------------------------------------------------------------

def _num(value) -> str:
    if value is None or value == math.inf:
        return "-"
    return f"{value:,.0f}" if isinstance(value, float) and abs(value) >= 100 else f"{value:g}"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _money(value) -> str:
    return "-" if value is None else f"${value:.3g}"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


HEADER = ["remedy", "extra hops", "client IP kept", "bytes between nodes/req", "across zones/req",
          "cross-zone $/M req", "pod shares max/min (p)", "broken/moved on reroute", "p50/p95 ms"]


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        b, reroute = r["balance"], r.get("reroute") or {}
        shares = "-" if b["maxShare"] is None else f"{b['maxShare']:.0%}/{b['minShare']:.0%} (p {b['pValue']})"
        broken = "-" if r["brokenOnReroute"] is None else \
            f"{r['brokenOnReroute']}/{reroute.get('moved', '?')} of {reroute.get('held', '?')}"
        out.append([r["remedy"], "-" if r["extraHops"] is None else f"{r['extraHops']:.2f}",
                    _pct(r["clientIpKeptPct"]), _num(r["interNodeBytesPerRequest"]),
                    _num(r["crossZoneBytesPerRequest"]), _money(r["crossZoneCostPerMillion"]), shares, broken,
                    f"{_ms(r['latencyMs']['p50'])}/{_ms(r['latencyMs']['p95'])}"])
    return out


def render(rows: list[dict]) -> str:
    """The table, then one line per row that has a note (what was not measured)."""
    notes: dict[str, list[str]] = {}
    for r in rows:
        if r.get("note"):
            notes.setdefault(r["note"], []).append(r["remedy"])
    return format_table(HEADER, table_rows(rows)) + "".join(f"\n  {', '.join(names)}: {note}"
                                                           for note, names in notes.items())
