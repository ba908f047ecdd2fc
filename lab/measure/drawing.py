"""Pictures of the cluster and of what was measured (networkx + matplotlib; pure: data in, figure out).

``draw_entry`` draws one probe: the client, the edge router, every node as a box holding its pods, and
on top the path the requests took, from the measured result (``lab.api.measure_entry``)::

    client ──► edge router ──► entry node ──► pod                 (blue, then green: served locally)
                                    └──── forwarded ────► node ──► pod   (orange: a second node)
                                    ✕ no answer                          (red: dropped or refused)

Every link's width is the bytes it carried during that probe (both directions, from port counters),
on one scale for all panels of a figure so they can be compared. ``draw_results`` puts many probes in a
grid (a row per Service and policy, a column per entry node); ``plot_measurements`` plots the numbers
(node hops, source addresses, bytes between nodes, latency); ``draw_cluster`` draws the cluster alone.

Figures are built without pyplot, so drawing never opens a window or touches global state; they show
themselves in a notebook (``Picture``), and ``save`` writes a PNG. A path is what the measurement says:
the entry node is where the client sent the requests, the pod and its node are who answered, and the
node hops the pods counted from the TTL are printed above each drawing beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from lab.kube.addressing import UNDERLAY_CIDR
from lab.measure.report import request_paths

ROUTER = "edge router"
ENTRY, LOCAL, FORWARD, DROP = "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728"
UNKNOWN = "#7f7f7f"  # answered behind a load balancer, entry node not known per request
LINK, BOX, INK = "#b8b8b8", "#eef2f7", "#333333"

POD_SPACING, BOX_PAD, BOX_GAP, MIN_BOX = 1.35, 0.45, 0.6, 2.2
Y_CLIENT, Y_ROUTER, Y_NODE, Y_POD, Y_BOX_TOP, Y_BOX_BOTTOM = 5.0, 3.7, 1.7, 0.5, 2.15, -0.95
PANEL_SIZE = (5.4, 4.8)  # inches per drawing


class Picture(Figure):
    """A matplotlib figure that shows itself in a notebook (built without pyplot, so it has no backend)."""

    def _repr_png_(self) -> bytes:
        buffer = BytesIO()
        self.savefig(buffer, format="png", dpi=100, facecolor="white")
        return buffer.getvalue()


# --- what was measured, as paths (pure) --------------------------------------------------------------------

# --- layout (pure) --------------------------------------------------------------------------------------

def cluster_graph(topology: dict) -> nx.Graph:
    """Client, edge router, nodes and pods as a graph: one edge per link, named like ``linkBytes``."""
    g = nx.Graph()
    g.add_node(topology["client"]["name"], kind="client", ip=topology["client"]["ip"])
    g.add_node(ROUTER, kind="router")
    g.add_edge(topology["client"]["name"], ROUTER, link=topology["client"]["name"])
    for node in topology["nodes"]:
        g.add_node(node["name"], kind="node", ip=node["ip"], cidr=node.get("podCIDR"))
        g.add_edge(ROUTER, node["name"], link=node["name"])
    for pod in topology["pods"]:
        g.add_node(pod["name"], kind="pod", ip=pod["ip"], node=pod["node"])
        g.add_edge(pod["node"], pod["name"], link=pod["name"])
    return g


def layout(topology: dict) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Positions of every graph node, and each Kubernetes node's box as (left, right)."""
    pods_on = {n["name"]: [p for p in topology["pods"] if p["node"] == n["name"]] for n in topology["nodes"]}
    widths = {name: max(MIN_BOX, len(pods) * POD_SPACING + BOX_PAD) for name, pods in pods_on.items()}
    total = sum(widths.values()) + BOX_GAP * (len(widths) - 1)
    pos: dict[str, tuple[float, float]] = {}
    boxes: dict[str, tuple[float, float]] = {}
    left = -total / 2
    for name, width in widths.items():
        centre = left + width / 2
        boxes[name] = (left, left + width)
        pos[name] = (centre, Y_NODE)
        pods = pods_on[name]
        for i, pod in enumerate(pods):
            pos[pod["name"]] = (centre + (i - (len(pods) - 1) / 2) * POD_SPACING, Y_POD)
        left += width + BOX_GAP
    pos[ROUTER] = (0.0, Y_ROUTER)
    pos[topology["client"]["name"]] = (0.0, Y_CLIENT)
    return pos, boxes


def pod_label(name: str) -> str:
    """Deployment pods have long names; keep the start and the unique suffix."""
    if len(name) <= 15:
        return name
    return f"{name[:7]}…{name.rsplit('-', 1)[-1][-6:]}"


def human_bytes(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


# --- one drawing ----------------------------------------------------------------------------------------

def draw_cluster(topology: dict, ax: Axes | None = None, title: str | None = "the cluster") -> Figure:
    """The cluster alone: client, edge router, nodes with their pods and addresses."""
    ax = ax or _new_axes()
    _draw_base(ax, topology, link_bytes={}, max_bytes=0)
    if title:
        ax.set_title(title, fontsize=10, color=INK)
    return ax.figure


def draw_entry(result: dict, ax: Axes | None = None, max_bytes: float | None = None,
               topology: dict | None = None) -> Figure:
    """One probe: the cluster as it was, link widths = bytes per link, and the path the requests took.

    ``result`` comes from ``lab.api.measure_entry`` (it carries its topology, link bytes and paths); a
    plain report row works too, given the ``topology``, and is drawn without link widths.
    """
    own = ax is None
    ax = ax or _new_axes()
    topo = result.get("topology") or topology
    if topo is None:
        raise ValueError("this result carries no topology: pass topology= (lab.api.topology(cluster))")
    links = result.get("linkBytes", {})
    paths = result.get("paths") or request_paths(result, {p["name"]: p["node"] for p in topo["pods"]})
    scale = max_bytes if max_bytes is not None else max(links.values(), default=0)
    pos = _draw_base(ax, topo, links, scale)
    _draw_paths(ax, pos, result, paths, topo)
    ax.set_title(_entry_title(result, topo), fontsize=9, color=INK, loc="left")
    if own:
        ax.figure.legend(handles=_legend_handles([result]), loc="outside lower center", ncols=2, fontsize=7,
                         frameon=False)
    return ax.figure


def draw_results(results: Sequence[dict], title: str | None = None, topology: dict | None = None,
                 columns: int | None = None) -> Figure:
    """Many probes on one byte scale: a row per run of (Service, port, policy) and a column per entry node,
    or simply ``columns`` drawings per row, in order."""
    rows = _rows(results) if columns is None else [list(results[i:i + columns])
                                                   for i in range(0, len(results), columns)]
    ncols = max(len(r) for r in rows)
    fig = Picture(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    scale = max((b for r in results for b in r.get("linkBytes", {}).values()), default=0)
    for row, entries in zip(axes, rows, strict=True):
        for ax, result in zip(row, entries, strict=False):
            draw_entry(result, ax=ax, max_bytes=scale, topology=topology)
        for ax in row[len(entries):]:
            ax.set_axis_off()
    fig.legend(handles=_legend_handles(results), loc="outside lower center", ncols={1: 2, 2: 3}.get(ncols, 5),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def plot_results(results: Sequence[dict], path: str | Path, topology: dict | None = None) -> None:
    """For the command line (``--plot FILE``): the drawings of every probe, as one PNG."""
    save(draw_results(results, topology=topology), path)


# --- plots of the numbers --------------------------------------------------------------------------------

def plot_measurements(results: Sequence[dict], topology: dict | None = None) -> Figure:
    """Four panels, one bar per probe: node hops, source address seen, bytes between nodes, latency."""
    fig = Picture(figsize=(12, 7.5), layout="constrained")
    (hops_ax, src_ax), (bytes_ax, lat_ax) = fig.subplots(2, 2)
    labels = [f"{r['policy']}\n{r['node'] or r['via']}" for r in results]
    x = list(range(len(results)))
    unanswered = [i for i, r in enumerate(results) if not r["ok"]]

    one = [r["nodeHops"].get("1", 0) for r in results]
    two = [r["nodeHops"].get("2", 0) for r in results]
    failed = [r["failed"] for r in results]
    _stacked(hops_ax, x, [(one, "1 node hop", LOCAL), (two, "2 node hops (forwarded)", FORWARD),
                          (failed, "no answer", DROP)])
    hops_ax.set_title("Where each request was answered (TTL seen by the pod)", fontsize=10)
    hops_ax.set_ylabel("requests")

    kinds = [_source_kinds(r, topology) for r in results]
    _stacked(src_ax, x, [([k["client"] for k in kinds], "the client's address", LOCAL),
                         ([k["node"] for k in kinds], "a node's address (SNAT)", "#9467bd"),
                         ([k["gateway"] for k in kinds], "a node's pod gateway (SNAT)", "#8c564b"),
                         ([k["other"] for k in kinds], "another address", LINK)])
    src_ax.set_title("Source address the pods saw", fontsize=10)
    src_ax.set_ylabel("answered requests")

    per_request = [r["interNodeBytesPerRequest"] for r in results]
    bars = bytes_ax.bar(x, [b or 0 for b in per_request], color=[FORWARD if b else LINK for b in per_request])
    bytes_ax.bar_label(bars, labels=["n/a" if b is None else f"{b:,.0f}" for b in per_request], fontsize=8)
    bytes_ax.set_title("Bytes between nodes per answered request", fontsize=10)
    bytes_ax.set_ylabel("bytes")
    bytes_ax.set_ylim(0, max([b or 0 for b in per_request] + [1]) * 1.15)

    p50 = [r["latencyMs"]["p50"] or 0 for r in results]
    p95 = [r["latencyMs"]["p95"] or 0 for r in results]
    lat_ax.bar([i - 0.2 for i in x], p50, width=0.4, color=ENTRY, label="p50")
    lat_ax.bar([i + 0.2 for i in x], p95, width=0.4, color="#aec7e8", label="p95")
    lat_ax.set_title("Latency of answered requests", fontsize=10)
    lat_ax.set_ylabel("ms")
    lat_ax.set_ylim(0, max(p95 + [1]) * 1.3)
    lat_ax.legend(fontsize=8, frameon=False, loc="upper center", ncols=2)

    for ax in (hops_ax, src_ax, bytes_ax, lat_ax):
        ax.set_xticks(x, labels, fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in (src_ax, lat_ax):
        for i in unanswered:
            ax.text(i, 0, " no answer", ha="center", va="bottom", fontsize=8, color=DROP, rotation=90)
    return fig


def plot_shares(results: Sequence[dict], expected: Sequence[dict[str, float]] | None = None,
                titles: Sequence[str] | None = None) -> Figure:
    """Per probe, the share of answered requests each pod served (bars), and what was expected (outlines)."""
    fig = Picture(figsize=(4.2 * len(results), 3.8), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False, sharey=True)[0]
    for i, (ax, r) in enumerate(zip(axes, results, strict=True)):
        pod_node = {p["pod"]: p["podNode"] for p in r.get("paths", []) if p["pod"]}
        want = expected[i] if expected else {}
        pods = sorted(set(r["servedBy"]) | set(want))
        measured = [r["servedBy"].get(p, 0) / r["ok"] if r["ok"] else 0 for p in pods]
        bars = ax.bar(range(len(pods)), measured, color=ENTRY, width=0.6, label="measured")
        ax.bar_label(bars, labels=[f"{m:.0%}" for m in measured], fontsize=8)
        if want:
            ax.bar(range(len(pods)), [want.get(p, 0) for p in pods], width=0.8, fill=False, edgecolor=INK,
                   linestyle="--", label="expected")
        ax.set_xticks(range(len(pods)), [f"{pod_label(p)}\n{pod_node.get(p, '')}" for p in pods], fontsize=7)
        ax.set_title(titles[i] if titles else f"{r['policy']} · {r['node'] or 'load balancer'}", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    axes[0].set_ylabel("share of answered requests")
    axes[0].legend(fontsize=8, frameon=False)
    return fig


def _stacked(ax: Axes, x, series: list[tuple[list[int], str, str]]) -> None:
    bottom = [0] * len(series[0][0])
    for values, label, color in series:
        if not any(values):
            continue
        bars = ax.bar(x, values, bottom=bottom, color=color, label=label)
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center", fontsize=8,
                     color="white")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylim(0, max(bottom + [1]) * 1.4)  # room for the legend above the bars
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncols=2)


def _source_kinds(result: dict, topology: dict | None) -> dict[str, int]:
    topo = result.get("topology") or topology
    kind_of = {topo["client"]["ip"]: "client"}
    for n in topo["nodes"]:
        kind_of[n["ip"]] = "node"
        kind_of[n.get("podGateway")] = "gateway"
    kinds = {"client": 0, "node": 0, "gateway": 0, "other": 0}
    for ip, count in result["sourcesSeen"].items():
        kinds[kind_of.get(ip, "other")] += count
    return kinds


# --- drawing helpers -------------------------------------------------------------------------------------

def _new_axes() -> Axes:
    fig = Picture(figsize=PANEL_SIZE, layout="constrained")
    return fig.add_subplot()


def _draw_base(ax: Axes, topology: dict, link_bytes: dict[str, int], max_bytes: float) -> dict:
    g = cluster_graph(topology)
    pos, boxes = layout(topology)
    for node in topology["nodes"]:
        left, right = boxes[node["name"]]
        ax.add_patch(FancyBboxPatch((left, Y_BOX_BOTTOM), right - left, Y_BOX_TOP - Y_BOX_BOTTOM,
                                    boxstyle="round,pad=0.02,rounding_size=0.15", facecolor=BOX,
                                    edgecolor="#9aa7b8", linewidth=1, zorder=0))
        ax.text((left + right) / 2, Y_BOX_BOTTOM + 0.12, f"{node['name']}\n{node['ip']}",
                ha="center", va="bottom", fontsize=8, fontweight="bold", color=INK, zorder=5)

    edges = list(g.edges)
    widths = [_width(link_bytes.get(g.edges[e]["link"], 0), max_bytes) for e in edges]
    drawn = nx.draw_networkx_edges(g, pos, edgelist=edges, width=widths, edge_color=LINK, ax=ax)
    drawn.set_zorder(1)
    if link_bytes:
        for e in edges:
            n = link_bytes.get(g.edges[e]["link"], 0)
            if n:
                (x1, y1), (x2, y2) = pos[e[0]], pos[e[1]]
                t = 0.55 if g.nodes[e[1]]["kind"] != "pod" else 0.6
                ax.text(x1 + (x2 - x1) * t, y1 + (y2 - y1) * t, human_bytes(n), fontsize=6.5, color="#555555",
                        ha="center", va="center", zorder=6,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})

    kinds = nx.get_node_attributes(g, "kind")
    style = {"client": ("o", "#7f7f7f", 420), "router": ("h", "#4d4d4d", 650), "node": ("s", "#5b7fa8", 380),
             "pod": ("o", "#8fbf8f", 360)}
    for kind, (shape, color, size) in style.items():
        names = [n for n, k in kinds.items() if k == kind]
        drawn = nx.draw_networkx_nodes(g, pos, nodelist=names, node_shape=shape, node_color=color,
                                       node_size=size, edgecolors="white", linewidths=1.2, ax=ax)
        drawn.set_zorder(4)
    client = topology["client"]
    ax.text(pos[client["name"]][0] + 0.35, Y_CLIENT, f"client\n{client['ip']}", ha="left", va="center",
            fontsize=8, color=INK, zorder=5)
    router = f"edge router\n(underlay {UNDERLAY_CIDR})"
    if topology.get("loadBalancers"):
        router += "\nload balancer " + ", ".join(lb["ip"] for lb in topology["loadBalancers"])
    ax.text(0.45, Y_ROUTER + 0.05, router, ha="left", va="center", fontsize=7.5, color=INK, zorder=5)
    for pod in topology["pods"]:
        x, y = pos[pod["name"]]
        ax.text(x, y - 0.32, f"{pod_label(pod['name'])}\n{pod['ip']}", ha="center", va="top", fontsize=6.5,
                color=INK, zorder=5)

    xs = [x for x, _ in pos.values()] + [v for b in boxes.values() for v in b]
    ax.set_xlim(min(xs) - 0.3, max(max(xs) + 0.3, 2.6))
    ax.set_ylim(Y_BOX_BOTTOM - 0.15, Y_CLIENT + 0.45)
    ax.set_axis_off()
    return pos


def _width(n: float, max_bytes: float) -> float:
    return 1.0 + 11.0 * n / max_bytes if max_bytes else 1.5


def _arrow(ax: Axes, a, b, color: str, rad: float = 0.0, lw: float = 2.0) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=13, color=color, lw=lw,
                                 shrinkA=11, shrinkB=11, connectionstyle=f"arc3,rad={rad}", zorder=3))


def _draw_paths(ax: Axes, pos: dict, result: dict, paths: list[dict], topology: dict) -> None:
    entry = result["node"]  # None through a load balancer: the router chose the node
    if entry is not None and entry not in pos:
        return
    offset = 0.12  # the request arrows run beside the links, so the link widths stay visible
    cx, cy = pos[topology["client"]["name"]]
    rx, ry = pos[ROUTER]
    _arrow(ax, (cx - offset, cy), (rx - offset, ry), ENTRY)
    ax.text(cx - 0.35, (cy + ry) / 2, f"{result['requests']} requests", ha="right", va="center", fontsize=8,
            color=ENTRY, zorder=5)
    if entry is not None:
        ex, ey = pos[entry]
        _arrow(ax, (rx - offset, ry), (ex - offset, ey), ENTRY)
    forwarded = int(result["nodeHops"].get("2", 0))
    # Through a load balancer the aggregate says which nodes answered and how many requests crossed a
    # second node, but not which node each request entered; the drawing claims no more than that.
    behind_lb = LOCAL if entry is not None or not forwarded else UNKNOWN
    if entry is None:
        for node in _load_balanced_nodes(result, paths, topology):
            _arrow(ax, (rx, ry), pos[node], ENTRY)
        if forwarded:
            ax.text(rx + 0.45, ry - 0.55, f"{forwarded} of them crossed a second node (TTL);\n"
                    "which node each entered is not recorded", ha="left", va="top", fontsize=7, color=FORWARD,
                    zorder=6, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                    "alpha": 0.85})
    for path in paths:
        if path["pod"] is None:
            wx, wy = pos[entry] if entry is not None else (rx, ry)
            ax.plot(wx, wy, marker="X", markersize=16, color=DROP, zorder=6, markeredgecolor="white")
            kinds = ", ".join(f"{v} {k}" for k, v in path.get("errors", {}).items())
            box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": DROP}
            if not any(p["node"] == entry for p in topology["pods"]):  # an empty node: below, in its box
                ax.text(wx, wy - 0.45, f"no answer:\n{kinds}", ha="center", va="top", fontsize=7.5, color=DROP,
                        zorder=6, bbox=box)
            else:  # beside the marker, away from the arrow coming in from the router
                side = -1 if wx <= rx else 1
                ax.text(wx + side * 0.3, wy, f"no answer:\n{kinds}", ha="right" if side < 0 else "left",
                        va="center", fontsize=7.5, color=DROP, zorder=6, bbox=box)
            continue
        if path["pod"] not in pos or path["podNode"] not in pos:
            continue
        px, py = pos[path["pod"]]
        nx_, ny_ = pos[path["podNode"]]
        if entry is None:
            _arrow(ax, (nx_, ny_), (px, py), behind_lb)
            color = behind_lb
        elif path["podNode"] == entry:
            _arrow(ax, (nx_, ny_), (px, py), LOCAL)
            color = LOCAL
        else:
            ex, ey = pos[entry]
            rad = -0.28 if nx_ > ex else 0.28  # bend upwards, towards the underlay it crosses
            _arrow(ax, (ex, ey), (nx_, ny_), FORWARD, rad=rad)
            _arrow(ax, (nx_, ny_), (px, py), FORWARD)
            color = FORWARD
        ax.text(px + 0.24, py, str(path["requests"]), ha="left", va="center", fontsize=8, color=color,
                fontweight="bold", zorder=6)


def _load_balanced_nodes(result: dict, paths: list[dict], topology: dict) -> list[str]:
    """Nodes the load balancer sent requests to: those whose pods answered, and those whose address the
    pods saw (SNAT by the entry node, under Cluster)."""
    owner = {n["ip"]: n["name"] for n in topology["nodes"]} | {n.get("podGateway"): n["name"]
                                                               for n in topology["nodes"]}
    nodes = {p["podNode"] for p in paths if p["pod"]} | {owner[ip] for ip in result["sourcesSeen"] if ip in owner}
    return [n["name"] for n in topology["nodes"] if n["name"] in nodes]


def _entry_title(result: dict, topology: dict) -> str:
    hops = ", ".join(f"{k} hop{'s' if k != '1' else ''}: {v}" for k, v in sorted(result["nodeHops"].items()))
    owners = {topology["client"]["ip"]: "client"}
    for n in topology["nodes"]:
        owners[n["ip"]] = n["name"]
        owners[n.get("podGateway")] = f"{n['name']} gateway"
    seen = ", ".join(f"{owners.get(ip, ip)}: {c}" for ip, c in sorted(result["sourcesSeen"].items(),
                                                                       key=lambda kv: -kv[1]))
    entry = f"entry {result['node']}" if result["node"] else f"via {result['via']}"
    return (f"{result['policy']} · {result['service']} · {entry} · answered {result['ok']}/{result['requests']}\n"
            f"node hops (TTL): {hops or '-'} · between nodes: {human_bytes(result['interNodeBytes'])}\n"
            f"pods saw: {seen or '-'}")


def _rows(results: Sequence[dict]) -> list[list[dict]]:
    """Consecutive probes of one (Service, port, policy) share a row; a repeated entry node starts a new one."""
    rows: list[list[dict]] = []
    key = None
    for r in results:
        k = (r["service"], r["nodePort"], r["policy"])
        if not rows or k != key or any(x["node"] == r["node"] for x in rows[-1]):
            rows.append([])
            key = k
        rows[-1].append(r)
    return rows


def _legend_handles(results: Sequence[dict]) -> list[Line2D]:
    handles = [Line2D([], [], color=ENTRY, lw=2, label="request into the entry node"),
               Line2D([], [], color=LOCAL, lw=2, label="answered by a pod on the entry node"),
               Line2D([], [], color=FORWARD, lw=2, label="forwarded to a pod on another node"),
               Line2D([], [], color=DROP, marker="X", lw=0, markersize=9, label="no answer"),
               Line2D([], [], color=LINK, lw=6, label="width: bytes on the link during the probe")]
    if any(r["node"] is None and r["nodeHops"].get("2") for r in results):
        handles.insert(3, Line2D([], [], color=UNKNOWN, lw=2, label="answered; entry node not known"))
    return handles
