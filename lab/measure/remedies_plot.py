"""The remedies table as a picture: one small bar chart per column, a bar per remedy, the same colours.

A figure the lab could not measure keeps its remedy's place on the chart, labelled "n/a", so the charts
read side by side like the table's rows. matplotlib is imported here only (and with the Agg backend when no
other is chosen), so the scenario does not load it unless a picture is asked for.
"""

from __future__ import annotations

from lab.measure.remedies import imbalance

PANELS = (  # (title, value of a row, format of a bar's label)
    ("extra node hops per request", lambda r: r["extraHops"], "{:.2f}"),
    ("client IP kept (%)", lambda r: r["clientIpKeptPct"], "{:.0f}"),
    ("bytes between nodes per request", lambda r: r["interNodeBytesPerRequest"], "{:,.0f}"),
    ("bytes across zones per request", lambda r: r["crossZoneBytesPerRequest"], "{:,.0f}"),
    ("cross-zone $ per million requests", lambda r: r["crossZoneCostPerMillion"], "{:.3g}"),
    ("busiest / least busy pod", imbalance, "{:.2f}"),
    ("held connections broken on reroute", lambda r: r["brokenOnReroute"], "{:.0f}"),
    ("latency p95 (ms)", lambda r: r["latencyMs"]["p95"], "{:.1f}"),
)
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def plot_remedies(rows: list[dict]):
    """A matplotlib Figure (closed: show it as a cell's value, or ``savefig`` it)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["remedy"] for r in rows]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
    for ax, (title, value, label) in zip(axes.flat, PANELS, strict=True):
        values = [value(r) for r in rows]
        finite = [v for v in values if v is not None and v != float("inf")]
        top = max(finite, default=1) or 1
        for i, v in enumerate(values):
            shown = top * 1.1 if v == float("inf") else (v or 0)
            ax.barh(i, shown, color=COLOURS[i % len(COLOURS)])
            text = "n/a" if v is None else ("inf" if v == float("inf") else label.format(v))
            ax.text(shown + top * 0.02, i, text, va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names if ax in axes[:, 0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.35)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("Remedies side by side: one cluster, one traffic mix (measured)", fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig
