"""What the bandwidth scenario's measurements mean: the latency analysis, fidelity, the report, the verdict.

Pure: data in, data (and sentences) out, so that every conclusion can be checked on a recorded report
without a network. Fidelity follows Mininet-HiFi's advice: a flow alone on its shaped links must reach
what TCP can carry at the configured rate, and the CPUs must never all be busy, or the machine, not the
links, set the rates.
"""

from __future__ import annotations

from lab.emulation.environment import has_netem
from lab.measure.bulk import expected_goodput_mbit
from lab.scenarios.bandwidth_cluster import OTHER_NODE, POD_NODE, RX_NODE

KEPT_UP_GOODPUT = 0.90  # a flow alone on its shaped links reaches at least this share of what TCP can carry
KEPT_UP_IDLE_PCT = 10.0  # Mininet-HiFi: the emulation kept up while the CPUs were never all busy


def latency_analysis(paths: dict[str, dict], delay_ms: float | None) -> dict:
    """Differences of median round trips, and what the configured delay predicts for them."""
    def p50(name: str, key: str) -> float | None:
        return paths[name][key]["p50"]

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    extra_links = paths["forwarded"]["shapedLinks"] - paths["direct"]["shapedLinks"]
    extra_switches = paths["forwarded"]["switches"] - paths["podNode"]["switches"]
    detour = minus(p50("forwarded", "connectMs"), p50("podNode", "connectMs"))
    expected = round(2 * extra_links * delay_ms, 3) if delay_ms else None
    measured = minus(p50("forwarded", "connectMs"), p50("direct", "connectMs"))
    return {
        "delayPerLinkMs": delay_ms or None,
        "extraShapedLinksOneWay": extra_links,
        "expectedExtraRttMs": expected,
        "measuredExtraRttMs": measured,
        "measuredExtraTtfbMs": minus(p50("forwarded", "ttfbMs"), p50("direct", "ttfbMs")),
        "natMs": minus(p50("podNode", "connectMs"), p50("direct", "connectMs")),
        "detourMs": detour,
        "extraSwitchesOneWay": extra_switches,
        "perExtraSwitchMs": None if detour is None else round(detour / extra_switches, 3),
    }


def fidelity(bulk: list[dict], contention: list[dict], rate_mbit: float) -> dict:
    """Did the machine keep up? Flows that had their shaped links to themselves, and idle CPU."""
    expected = expected_goodput_mbit(rate_mbit)
    alone = [(f"bulk {r['policy']} via {r['entry']}", r["mbps"]) for r in bulk if r["ok"]]
    for case in contention:
        if case["case"] == "alone" and case["bystander"]["ok"]:
            alone.append(("bystander alone", case["bystander"]["mbps"]))
        if case["case"] == "Local":  # no shaped link in common: each should get the whole rate
            alone += [(f"{role} during Local contention", case[role]["mbps"])
                      for role in ("bystander", "nodePort") if case[role] and case[role]["ok"]]
    ratios = {label: round(mbps / expected, 3) for label, mbps in alone}
    idle = [w["cpuIdlePct"] for w in bulk + contention if w["cpuIdlePct"] is not None]
    ovs = [w["ovsCpuPct"] for w in bulk + contention if w["ovsCpuPct"] is not None]
    short = sorted(ratio for ratio in ratios.values() if ratio < KEPT_UP_GOODPUT)
    problems = []
    if short:
        low, high = f"{short[0]:.0%}", f"{short[-1]:.0%}"
        span = low if low == high else f"{low}-{high}"
        problems.append(f"{len(short)} of {len(ratios)} flows that had their shaped links to themselves reached only "
                        f"{span} of the {expected:.1f} Mbit/s TCP can carry")
    if idle and min(idle) < KEPT_UP_IDLE_PCT:
        problems.append(f"CPU idle fell to {min(idle):.0f}% during a bulk run")
    return {"expectedGoodputMbit": round(expected, 2), "goodputRatios": ratios,
            "minCpuIdlePct": min(idle) if idle else None, "maxOvsCpuPct": max(ovs) if ovs else None,
            "keptUp": not problems and bool(ratios), "problems": problems}


def build_report(base: dict, measured: dict, *, rate_mbit: float, seconds: float, requests: int,
                 delay_requested: float | None, delay_applied: float | None, warnings: list[str],
                 timings: dict) -> dict:
    bulk, contention = measured["bulk"], measured["contention"]
    fid = fidelity(bulk, contention, rate_mbit)
    warnings = list(warnings)
    if fid["problems"]:
        warnings.append("the machine did not keep up with the emulation (" + "; ".join(fid["problems"]) +
                        "): these throughputs are partly CPU-bound, not link-bound; try a lower --underlay-mbit")
    return {
        **{k: base[k] for k in ("client", "nodes", "pods")},
        "scenario": "bandwidth",
        "underlay": {"bwMbit": rate_mbit, "delayMs": delay_applied, "delayRequestedMs": delay_requested,
                     "netem": has_netem()},
        "seconds": seconds,
        "bulk": bulk,
        "contention": contention,
        "latency": {"requests": requests, "paths": measured["latencyPaths"],
                    "analysis": latency_analysis(measured["latencyPaths"], delay_applied)},
        "fidelity": fid,
        "warnings": warnings,
        "timings": timings,
    }


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def verdict(report: dict) -> list[str]:
    lines = []
    bulk, fid = report["bulk"], report["fidelity"]
    fwd = _find(bulk, policy="Cluster", entry=OTHER_NODE)
    same = _find(bulk, policy="Cluster", entry=POD_NODE)
    local = _find(bulk, policy="Local", entry=POD_NODE)
    dropped = _find(bulk, policy="Local", entry=OTHER_NODE)
    if fwd and fwd["ok"] and same and same["ok"]:
        lines.append(
            f"Bandwidth bill: entering {OTHER_NODE} (no pod) under Cluster, {fwd['interNodePerByte']:.2f} bytes "
            f"crossed between nodes per byte delivered (every payload byte once, plus headers and ACKs); entering "
            f"{POD_NODE} {same['interNodePerByte']:.2f}"
            + (f", and under Local {local['interNodePerByte']:.2f}" if local and local["ok"] else "") + ". "
            f"On the nodes' links the detour used {fwd['nodeLinkPerByte']:.2f} bytes per byte delivered against "
            f"{same['nodeLinkPerByte']:.2f}: {fwd['nodeLinkPerByte'] - same['nodeLinkPerByte']:.2f} more, because "
            f"every byte crosses {OTHER_NODE}'s link twice more (in, and back out to {POD_NODE}).")
        lines.append(
            f"Throughput: alone, the forwarded flow got {fwd['mbps']:.1f} Mbit/s ({fwd['retransmits']} retransmits) "
            f"and the direct one {same['mbps']:.1f} ({same['retransmits']}); TCP can carry "
            f"{fid['expectedGoodputMbit']:.1f} on {report['underlay']['bwMbit']:g} Mbit/s links. "
            + ("A lone flow hardly notices the detour: its cost is the link capacity it takes from other traffic."
               if fwd["mbps"] >= KEPT_UP_GOODPUT * same["mbps"] else
               f"The detour cost this flow {1 - fwd['mbps'] / same['mbps']:.0%} of its rate"
               + ("." if fid["keptUp"] else ", but here the machine, not the links, set the rates (Fidelity).")))
    if dropped and not dropped["ok"]:
        lines.append(f"Local: entering {OTHER_NODE}, which has no pod, iperf3 could not even connect "
                     f"({dropped['error']}): the price of Local is that only nodes with a pod may get traffic.")
    alone = _find(report["contention"], case="alone")
    c_cluster = _find(report["contention"], case="Cluster")
    c_local = _find(report["contention"], case="Local")
    if alone and c_cluster and c_local and all(c["bystander"]["ok"] for c in (alone, c_cluster, c_local)):
        np_cluster = c_cluster["nodePort"]
        lines.append(
            f"Contention: the bystander pod-to-pod flow ({OTHER_NODE} -> {RX_NODE}) kept "
            f"{c_cluster['bystander']['mbps']:.1f} Mbit/s while the Cluster flow detoured over {OTHER_NODE}'s link"
            + (f" (which got {np_cluster['mbps']:.1f})" if np_cluster and np_cluster["ok"] else "")
            + f", against {c_local['bystander']['mbps']:.1f} under Local (no detour) and "
            f"{alone['bystander']['mbps']:.1f} alone.")
    lines += _latency_lines(report)
    if fid["keptUp"]:
        lines.append(
            f"Fidelity: every flow that had its shaped links to itself reached at least "
            f"{min(fid['goodputRatios'].values()):.0%} of what TCP can carry, and CPU idle stayed at or above "
            f"{fid['minCpuIdlePct']:.0f}% (ovs-vswitchd at up to {fid['maxOvsCpuPct']:.0f}% of a core): the machine "
            "kept up, the links were the bottleneck.")
    else:
        lines.append("Fidelity: the machine did not keep up: " + "; ".join(fid["problems"]) + ".")
    return lines


def _latency_lines(report: dict) -> list[str]:
    paths, a = report["latency"]["paths"], report["latency"]["analysis"]
    if a["measuredExtraRttMs"] is None:
        return ["Latency: not every path answered; see the table."]
    direct, fwd = paths["direct"]["connectMs"]["p50"], paths["forwarded"]["connectMs"]["p50"]
    line = (f"Latency: median handshake {direct:.3f} ms direct, {paths['podNode']['connectMs']['p50']:.3f} ms via "
            f"{POD_NODE}'s nodePort, {fwd:.3f} ms forwarded from {OTHER_NODE}: the detour adds "
            f"{a['measuredExtraRttMs']:.3f} ms per round trip over direct (TTFB {a['measuredExtraTtfbMs']:+.3f} ms).")
    if a["expectedExtraRttMs"] is not None:
        line += (f" With {a['delayPerLinkMs']:g} ms on every node link each way, the forwarded path crosses "
                 f"{a['extraShapedLinksOneWay']} more delayed links each way: expected "
                 f"+{a['expectedExtraRttMs']:.3f} ms, measured +{a['measuredExtraRttMs']:.3f} ms.")
    else:
        reason = ("this kernel has no netem qdisc, so no delay was configured (none is faked)"
                  if report["underlay"]["delayRequestedMs"] and not report["underlay"]["netem"]
                  else "no delay was configured (--delay-ms)")
        line += (f" {reason[0].upper()}{reason[1:]}: what is measured is processing, "
                 f"{a['detourMs']:.3f} ms for {a['extraSwitchesOneWay']} more switches each way, about "
                 f"{a['perExtraSwitchMs']:.3f} ms of round trip per switch on the path; NAT on the pod's node "
                 f"costs {a['natMs']:+.3f} ms.")
    return [line]
