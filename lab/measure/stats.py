"""Goodness of fit for shares of connections: did the measured split match the expected one?

Pearson's chi-square statistic against expected proportions and its p-value (the chance that a fair
process with those proportions gives a statistic at least this large). The survival function of the
chi-square distribution is the regularized upper incomplete gamma function, computed here with the
usual series / continued fraction (Numerical Recipes, 6.2) so the lab needs no SciPy.
"""

from __future__ import annotations

import math


def chi_square(observed: list[int], expected_shares: list[float]) -> tuple[float, float]:
    """(statistic, p-value) of ``observed`` counts against ``expected_shares`` (which sum to 1)."""
    total = sum(observed)
    if total == 0 or len(observed) != len(expected_shares) or len(observed) < 2:
        raise ValueError("need at least two categories with counts and one expected share each")
    stat = sum((o - total * p) ** 2 / (total * p) for o, p in zip(observed, expected_shares, strict=True))
    return stat, chi2_sf(stat, len(observed) - 1)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with ``df`` degrees of freedom."""
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    if x < a + 1:
        return 1.0 - _gamma_p_series(a, x)
    return _gamma_q_fraction(a, x)


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    n = a
    for _ in range(1000):
        n += 1
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h
