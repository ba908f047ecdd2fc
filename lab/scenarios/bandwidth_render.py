"""The bandwidth scenario's report for people: the tables, and the plot of throughputs and round trips.

Pure rendering of the report ``lab.scenarios.bandwidth_analysis`` builds; matplotlib is imported only
when a plot is drawn.
"""

from __future__ import annotations

from lab.measure.report import format_table
from lab.scenarios.bandwidth_cluster import (
    BYSTANDER_RX,
    BYSTANDER_TX,
    IPERF3_NODE_PORT,
    OTHER_NODE,
    POD_NODE,
    RX_NODE,
)


def _num(value, fmt: str = "{:.1f}", missing: str = "-") -> str:
    return missing if value is None else fmt.format(value)


def _pct(value) -> str:
    return _num(value, "{:.0f}%")


def _entry_label(entry: str) -> str:
    return f"{entry} ({'pod' if entry == POD_NODE else 'no pod'})"


def render(report: dict) -> str:
    rate = report["underlay"]["bwMbit"]
    fid = report["fidelity"]
    delay = report["underlay"]["delayMs"]
    shaped = f"{rate:g} Mbit/s" + (f", {delay:g} ms each way" if delay else "")
    rows = []
    for r in report["bulk"]:
        if not r["ok"]:
            rows.append([r["policy"], _entry_label(r["entry"]), "failed", "-", "-", "-", _pct(r["cpuIdlePct"]),
                         _pct(r["ovsCpuPct"]), r["error"]])
            continue
        rows.append([r["policy"], _entry_label(r["entry"]), _num(r["mbps"]), str(r["retransmits"]),
                     _num(r["interNodePerByte"], "{:.2f}"), _num(r["nodeLinkPerByte"], "{:.2f}"),
                     _pct(r["cpuIdlePct"]), _pct(r["ovsCpuPct"]), f"{r['bytes'] / 1e6:.1f} MB delivered"])
    bulk = format_table(["policy", "entry", "Mbit/s", "retransmits", "between nodes /B", "node links /B",
                         "CPU idle", "ovs-vswitchd", "note"], rows)

    rows = []
    for c in report["contention"]:
        nodeport = c["nodePort"]
        what = "none (bystander alone)" if c["entry"] is None else \
            f"{c['policy']}, enters {c['entry']}" + (" (detour over node-a's link)" if c["detour"] else " (no detour)")
        rows.append([what, _flow_mbps(c["bystander"]), _flow_mbps(nodeport) if nodeport else "-",
                     f"{_retrans(c['bystander'])} / {_retrans(nodeport) if nodeport else '-'}",
                     _pct(c["cpuIdlePct"]), _pct(c["ovsCpuPct"])])
    contention = format_table(["nodePort flow", "bystander Mbit/s", "nodePort Mbit/s", "retransmits",
                               "CPU idle", "ovs-vswitchd"], rows)

    rows = []
    for p in report["latency"]["paths"].values():
        rows.append([p["label"], f"{p['ok']}/{p['failed']}", _quantiles(p["connectMs"]), _quantiles(p["ttfbMs"]),
                     f"{p['shapedLinks']} / {p['switches']}"])
    latency = format_table(["path", "ok/failed", "connect ms p50/p90/p99", "TTFB ms p50/p90/p99",
                            "shaped links / switches one way"], rows)
    return "\n".join([
        f"Bulk: iperf3 from the client through nodePort {IPERF3_NODE_PORT} to the Service's one pod on {POD_NODE}, "
        f"{report['seconds']:g} s each; node links shaped to {shaped} (TCP can carry "
        f"{fid['expectedGoodputMbit']:.1f} Mbit/s); per byte delivered",
        bulk, "",
        f"Contention: bystander flow {BYSTANDER_TX} ({OTHER_NODE}) -> {BYSTANDER_RX} ({RX_NODE}), pod to pod, "
        "next to the nodePort flow",
        contention, "",
        f"Latency: {report['latency']['requests']} sequential requests per path, the paths taking turns "
        "(connect = TCP handshake, TTFB = request sent -> first byte)",
        latency,
    ])


def _flow_mbps(flow: dict) -> str:
    return _num(flow["mbps"]) if flow["ok"] else f"failed: {flow['error']}"


def _retrans(flow: dict) -> str:
    return "-" if not flow["ok"] or flow["retransmits"] is None else str(flow["retransmits"])


def _quantiles(q: dict) -> str:
    return "/".join(_num(q[k], "{:.2f}") for k in ("p50", "p90", "p99"))


# --- the plot --------------------------------------------------------------------------------------------

LOCAL_COLOUR, FORWARD_COLOUR, BYSTANDER_COLOUR, FAIL_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"
CONNECT_COLOUR, TTFB_COLOUR = "#4c72b0", "#8c8c8c"


def plot(report: dict, path: str) -> None:
    """Throughput per bulk case, the bystander's throughput per contention case, latency per path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5.6), layout="constrained")
    ax_bulk, ax_cont, ax_lat = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1.1]})
    rate = report["underlay"]["bwMbit"]
    delay = report["underlay"]["delayMs"]
    fig.suptitle(f"The bill of externalTrafficPolicy Cluster: node links shaped to {rate:g} Mbit/s, "
                 + (f"{delay:g} ms each way" if delay else "no delay"), fontsize=12)
    _plot_bulk(ax_bulk, report)
    _plot_contention(ax_cont, report)
    _plot_latency(ax_lat, report)
    for ax in (ax_bulk, ax_cont, ax_lat):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.savefig(path, dpi=110)


def _rate_lines(ax, report: dict) -> list:
    rate, expected = report["underlay"]["bwMbit"], report["fidelity"]["expectedGoodputMbit"]
    ax.set_ylim(0, rate * 1.45)
    ax.set_ylabel("Mbit/s (iperf3 goodput)")
    return [ax.axhline(rate, color="#999999", lw=1, ls=":", label=f"configured {rate:g} Mbit/s"),
            ax.axhline(expected, color="#555555", lw=1, ls="--", label=f"TCP can carry {expected:.1f}")]


def _plot_bulk(ax, report: dict) -> None:
    from matplotlib.patches import Patch

    lines = _rate_lines(ax, report)
    rate = report["underlay"]["bwMbit"]
    for x, r in enumerate(report["bulk"]):
        if not r["ok"]:
            ax.bar(x, rate * 0.04, color=FAIL_COLOUR)
            ax.text(x, rate * 0.06, "dropped:\nno pod on\nthis node", ha="center", va="bottom", fontsize=8,
                    color=FAIL_COLOUR)
            continue
        forwarded = (r["interNodePerByte"] or 0) > 0.5
        ax.bar(x, r["mbps"], color=FORWARD_COLOUR if forwarded else LOCAL_COLOUR)
        ax.text(x, r["mbps"] + rate * 0.01, f"{r['mbps']:.1f}", ha="center", va="bottom", fontsize=9)
        ax.text(x, r["mbps"] / 2, f"per byte\ndelivered:\n{r['interNodePerByte']:.2f} B\nbetween nodes\n"
                f"{r['nodeLinkPerByte']:.2f} B\non node links", ha="center", va="center", fontsize=8, color="white")
    ax.set_xticks(range(len(report["bulk"])),
                  [f"{r['policy']}\nvia {_entry_label(r['entry'])}" for r in report["bulk"]])
    kinds = [Patch(color=LOCAL_COLOUR, label="served on the entry node"),
             Patch(color=FORWARD_COLOUR, label="forwarded to the pod's node")]
    ax.legend(handles=kinds + lines, loc="upper center", fontsize=8, ncols=2)
    ax.set_title("Bulk through the nodePort, one flow at a time")


def _plot_contention(ax, report: dict) -> None:
    lines = _rate_lines(ax, report)
    width = 0.38
    for x, c in enumerate(report["contention"]):
        flows = [("bystander", BYSTANDER_COLOUR)] + ([("nodePort", FORWARD_COLOUR)] if c["nodePort"] else [])
        for i, (role, colour) in enumerate(flows):
            dx = 0 if len(flows) == 1 else (i - 0.5) * width
            mbps = c[role]["mbps"] or 0
            ax.bar(x + dx, mbps, width, color=colour)
            ax.text(x + dx, mbps + 1, f"{mbps:.1f}" if c[role]["ok"] else "failed", ha="center", va="bottom",
                    fontsize=9)
    from matplotlib.patches import Patch
    kinds = [Patch(color=BYSTANDER_COLOUR, label=f"bystander: {BYSTANDER_TX} -> {BYSTANDER_RX}"),
             Patch(color=FORWARD_COLOUR, label="nodePort flow from the client")]
    ax.legend(handles=kinds + lines, loc="upper center", fontsize=8, ncols=2)
    ax.set_xticks(range(len(report["contention"])),
                  ["bystander alone" if c["entry"] is None else
                   f"{c['policy']}, client via {c['entry']}:\n"
                   + (f"detour shares\n{OTHER_NODE}'s link" if c["detour"] else "no link\nin common")
                   for c in report["contention"]])
    ax.set_title(f"Contention: a pod-to-pod flow {OTHER_NODE} -> {RX_NODE}")


def _plot_latency(ax, report: dict) -> None:
    paths = list(report["latency"]["paths"].values())
    width = 0.38
    top = 0.0
    for offset, key, colour, name in ((-width / 2, "connectMs", CONNECT_COLOUR, "connect (TCP handshake)"),
                                      (width / 2, "ttfbMs", TTFB_COLOUR, "TTFB (request sent -> first byte)")):
        p50 = [p[key]["p50"] or 0 for p in paths]
        p90 = [max(p50[i], paths[i][key]["p90"] or 0) for i in range(len(paths))]
        top = max([top] + p90)
        ax.bar([x + offset for x in range(len(paths))], p50, width, color=colour, label=name,
               yerr=[[0] * len(paths), [hi - lo for hi, lo in zip(p90, p50, strict=True)]], capsize=3)
        for x, value in enumerate(p50):
            ax.text(x + offset, value / 2, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white")
    a = report["latency"]["analysis"]
    note = (f"expected +{a['expectedExtraRttMs']:.2f} ms forwarded, measured +{a['measuredExtraRttMs']:.2f}"
            if a["expectedExtraRttMs"] is not None else
            f"no delay: +{a['detourMs']:.2f} ms for {a['extraSwitchesOneWay']} more switches each way"
            if a["detourMs"] is not None else "")
    ax.set_ylim(0, top * 1.35 if top else 1)
    ax.text(0.02, 0.80, note, transform=ax.transAxes, fontsize=8, va="top")
    ax.set_xticks(range(len(paths)), [p["label"].replace(" (", "\n(").replace(", ", "\n") for p in paths])
    ax.set_ylabel("ms (bars: median, whiskers: p90)")
    ax.set_title(f"Round trips: {report['latency']['requests']} short requests per path")
    ax.legend(loc="upper left", fontsize=8)
