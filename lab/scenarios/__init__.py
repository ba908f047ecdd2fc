"""Scenarios: named experiments, each a module with ``add_arguments(parser)`` and ``run(args, progress)``.

``run`` builds what it needs, measures, tears down, and returns an ``Outcome``: the report as plain data
(the ``--json`` document), a table and verdict lines for people, and optionally a plot function.
``python -m lab run NAME`` runs one; ``python -m lab`` runs ``cluster-vs-local``. To add a scenario,
write a module here and list it in ``SCENARIOS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

SCENARIOS = {
    "cluster-vs-local": "lab.scenarios.cluster_vs_local",
    "imbalance": "lab.scenarios.imbalance",
    "healthcheck": "lab.scenarios.healthcheck",
    "bandwidth": "lab.scenarios.bandwidth",
    "faults": "lab.scenarios.faults",
    "ingress": "lab.scenarios.ingress",
    "remedies": "lab.scenarios.remedies",
}
DEFAULT = "cluster-vs-local"


@dataclass
class Outcome:
    report: dict
    table: str
    verdict: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plot: Callable[[str], None] | None = None  # writes a PNG to the given path


def load(name: str) -> ModuleType:
    return importlib.import_module(SCENARIOS[name])
