"""The chi-square p-values the imbalance scenario reports, checked against known table values."""

import pytest

from lab.measure.stats import chi2_sf, chi_square


@pytest.mark.parametrize("x,df,p", [(3.841, 1, 0.05), (6.635, 1, 0.01), (13.816, 2, 0.001),
                                    (7.815, 3, 0.05), (16.266, 3, 0.001), (0.0, 4, 1.0), (30.0, 10, 0.000857)])
def test_survival_function_matches_tables(x, df, p):
    assert chi2_sf(x, df) == pytest.approx(p, rel=2e-3, abs=1e-6)


def test_a_fair_split_fits_and_a_skewed_one_does_not():
    _, p_fair = chi_square([167, 166, 168, 499], [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert p_fair > 0.9
    _, p_uniform = chi_square([167, 166, 168, 499], [0.25] * 4)
    assert p_uniform < 1e-10


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        chi_square([0, 0], [0.5, 0.5])
