"""Benchmark results as data (``Figure``, the results document), then rendered as a table: pure functions.

A ``Figure`` is one number the bench quotes: its samples (one per run), its median, and the issue's
goal beside it when there is one. The JSON document is the contract (``bench/results/*.json``); the
table is only a view of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import median, spread
from lab.measure.report import format_table

SCHEMA = "nodeport-lab-bench/1"


@dataclass(frozen=True)
class Goal:
    op: str  # "<=" (at most) or ">=" (at least)
    value: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"goal operator must be <= or >=, got {self.op!r}")

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.value if self.op == "<=" else value >= self.value

    def __str__(self) -> str:
        return f"{self.op} {format_value(self.value)}"


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float | None]
    goal: Goal | None = None
    note: str = ""

    @property
    def value(self) -> float | None:
        return median(self.samples)

    @property
    def met(self) -> bool | None:
        return self.goal.met(self.value) if self.goal else None

    def to_dict(self) -> dict[str, Any]:
        lo_hi = spread(self.samples)
        return {
            "name": self.name, "unit": self.unit, "median": _round(self.value),
            "min": _round(lo_hi[0]) if lo_hi else None, "max": _round(lo_hi[1]) if lo_hi else None,
            "runs": len([s for s in self.samples if s is not None]),
            "samples": [_round(s) for s in self.samples],
            "goal": {"op": self.goal.op, "value": self.goal.value} if self.goal else None,
            "met": self.met, "note": self.note,
        }


@dataclass
class BenchResult:
    """What one benchmark returns: its figures, the raw details behind them, and what went wrong."""

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"figures": [f.to_dict() for f in self.figures], "details": self.details,
                "warnings": self.warnings, "error": self.error,
                "durationS": _round(self.duration_s)}


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return round(value, digits) if abs(value) < 1000 else round(value, 1)


def format_value(value: float | None) -> str:
    """Three significant figures or so, thousands separated: 0.0123, 1.23, 12.3, 1,234."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[met]


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per figure: benchmark, figure, median, min-max over the runs, runs, goal, goal met."""
    header = ["benchmark", "figure", "median", "min-max", "runs", "goal", "met"]
    rows = []
    for bench, result in results.items():
        if result.get("error"):
            rows.append([bench, f"FAILED: {result['error']}"[:100], "", "", "", "", ""])
        for fig in result.get("figures", []):
            unit = f" {fig['unit']}" if fig["unit"] else ""
            lo, hi = fig["min"], fig["max"]
            goal = fig["goal"]
            rows.append([
                bench, fig["name"], format_value(fig["median"]) + unit,
                "" if lo is None or fig["runs"] < 2 else f"{format_value(lo)}-{format_value(hi)}",
                str(fig["runs"]),
                f"{goal['op']} {format_value(goal['value'])}{unit}" if goal else "",
                _met_text(fig["met"])])
    return format_table(header, rows)


def render_machine(machine: dict[str, Any]) -> str:
    """One line naming the machine and commit the figures belong to."""
    commit = machine.get("commit") or "?"
    if machine.get("dirty"):
        commit += " (with uncommitted changes)"
    load = machine.get("loadAverage", {})
    return (f"{machine.get('cores')} cores ({machine.get('cpuModel', '?')}), {machine.get('memoryGiB')} GiB, "
            f"kernel {machine.get('kernel')}, Open vSwitch {machine.get('ovsVersion', '?')} "
            f"({machine.get('ovsDatapath')} datapath), commit {commit}, "
            f"load average {load.get('start', '?')} at start, {load.get('end', '?')} at end"
            + (f", Python {machine['pythonLoopS']} s per 10^7 additions" if machine.get("pythonLoopS") else ""))


def new_document(machine: dict[str, Any], config: dict[str, Any], started_at: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "startedAt": started_at, "machine": machine, "config": config, "benchmarks": {}}


def busy_warning(other_cores: float | None, cores: int | None) -> str | None:
    """A warning when other work shared the machine: more than a quarter of a core, on average, used by
    processes that are neither the bench's nor Open vSwitch's (``bench.machine.CpuMeter``)."""
    if other_cores is None or cores is None or other_cores <= 0.25:
        return None
    return (f"the machine was busy with other work ({other_cores:.2f} of {cores} cores on average): absolute "
            "times are noisy, ratios measured side by side less so")
