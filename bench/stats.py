"""Statistics for benchmark figures: medians of runs, nearest-rank percentiles, side-by-side ratios.

Every figure the bench quotes is the median of several runs; a comparison is the median of per-run
ratios, each ratio taken between two measurements of the same run (so a busy machine slows both sides
of a ratio alike), never a ratio of two medians taken at different times.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from lab.measure.probe import percentiles


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (a value some sample really had), as ``lab.measure.probe.percentiles``."""
    return percentiles(values, (q,))[q]


def ratio(part: float | None, whole: float | None) -> float | None:
    """``part / whole``, or None when either is missing or ``whole`` is not positive."""
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def paired_ratios(parts: Sequence[float | None], wholes: Sequence[float | None]) -> list[float | None]:
    """One ratio per run: ``parts[i] / wholes[i]``, both measured in run ``i``."""
    if len(parts) != len(wholes):
        raise ValueError(f"paired ratios need as many runs on each side ({len(parts)} != {len(wholes)})")
    return [ratio(p, w) for p, w in zip(parts, wholes, strict=True)]


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(min, max) of the values that are not None."""
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else None


def rotate(items: Sequence, k: int) -> list:
    """``items`` starting at index ``k`` (modulo its length): run ``k`` measures in a different order,
    so no variant always goes first (warm caches) or last (a machine getting busier)."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def sandwich(base, items: Sequence) -> list:
    """The measuring order ``base, item1, base, item2, ..., base``: every item between two baselines."""
    order = [base]
    for item in items:
        order += [item, base]
    return order


def sandwich_ratios(measured: Sequence[tuple[str, float | None]], base: str) -> dict[str, float | None]:
    """Each item's value over the mean of the two baselines measured just before and after it.

    ``measured`` is (name, value) in measuring order, as ``sandwich`` lays it out. Averaging the two
    neighbours cancels a machine that gets steadily busier or quieter during the run."""
    ratios: dict[str, float | None] = {}
    for i, (name, value) in enumerate(measured):
        if name == base:
            continue
        neighbours = [v for j in (i - 1, i + 1) if 0 <= j < len(measured) and measured[j][0] == base
                      for v in [measured[j][1]] if v is not None]
        ratios[name] = ratio(value, sum(neighbours) / len(neighbours)) if neighbours else None
    return ratios
