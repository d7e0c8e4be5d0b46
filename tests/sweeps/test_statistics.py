"""Means, confidence intervals and the paired test of scripts/sweep_stats.py against scipy.stats and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sweep_stats import mean_ci, paired_test


def t_quantile_df2(q: float) -> float:
    """Student t quantile with 2 degrees of freedom, in closed form."""
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_mean_and_ci_by_hand_and_with_scipy():
    e = mean_ci([0.40, 0.42, 0.44])
    # by hand: mean 0.42, sd 0.02, half-width t_{0.975,2} * 0.02 / sqrt(3) with t_{0.975,2} = 0.95 / sqrt(0.04875)
    half = t_quantile_df2(0.975) * 0.02 / math.sqrt(3)
    assert t_quantile_df2(0.975) == pytest.approx(4.302653, abs=1e-6)
    assert (e.n, e.mean, e.sd) == (3, pytest.approx(0.42), pytest.approx(0.02))
    assert (e.low, e.high) == (pytest.approx(0.42 - half), pytest.approx(0.42 + half))
    assert half == pytest.approx(0.0496827, abs=1e-6)
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        x = rng.normal(0.4, 0.05, n)
        e = mean_ci(list(x), confidence=0.9)
        low, high = stats.t.interval(0.9, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert (e.mean, e.sd, e.low, e.high) == pytest.approx((x.mean(), x.std(ddof=1), low, high))


def test_mean_ci_with_one_or_no_value_has_no_interval():
    one, none = mean_ci([0.5]), mean_ci([math.nan])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.sd) and math.isnan(one.low)
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_test_by_hand_df2_and_df1():
    # differences 0.01, 0.02, 0.02: mean 1/60, sd 0.01/sqrt(3), t = 5, p = 1 - t / sqrt(t^2 + 2) (df = 2)
    c = paired_test({0: 0.41, 1: 0.44, 2: 0.46}, {0: 0.40, 1: 0.42, 2: 0.44})
    assert (c.n, c.seeds) == (3, [0, 1, 2])
    assert (c.diff, c.sd, c.t) == (pytest.approx(1 / 60), pytest.approx(0.01 / math.sqrt(3)), pytest.approx(5.0))
    assert c.p == pytest.approx(1 - 5 / math.sqrt(27)) and c.p == pytest.approx(0.037750, abs=1e-6)
    assert c.significant(0.05) and not c.significant(0.01)
    half = t_quantile_df2(0.975) * (0.01 / math.sqrt(3)) / math.sqrt(3)
    assert (c.low, c.high) == (pytest.approx(1 / 60 - half), pytest.approx(1 / 60 + half))
    # differences -0.10, -0.06: t = -4 with 1 df (Cauchy): p = 1 - (2 / pi) * atan(4) = 0.156 (not significant)
    c = paired_test({0: 0.30, 1: 0.36}, {0: 0.40, 1: 0.42, 2: 0.44})
    assert (c.n, c.diff, c.t) == (2, pytest.approx(-0.08), pytest.approx(-4.0))
    assert c.p == pytest.approx(1 - 2 / math.pi * math.atan(4)) and not c.significant(0.05)
    half = math.tan(math.pi * 0.475) * 0.02  # t_{0.975,1} = tan(0.475 pi) = 12.706, se = 0.02
    assert (c.low, c.high) == (pytest.approx(-0.08 - half), pytest.approx(-0.08 + half))


def test_paired_test_equals_scipy_ttest_rel_on_matched_seeds():
    rng = np.random.default_rng(1)
    for n in (2, 3, 4, 8):
        b = rng.normal(0.4, 0.03, n)
        x = b + rng.normal(0.01, 0.01, n)
        # the seeds are matched by key, not by position: shuffle one side and add an unmatched seed
        order = rng.permutation(n)
        values = {int(s): float(x[s]) for s in order} | {99: 0.9}
        c = paired_test(values, {s: float(b[s]) for s in range(n)})
        expected = stats.ttest_rel(x, b)
        assert c.n == n and c.t == pytest.approx(expected.statistic) and c.p == pytest.approx(expected.pvalue)


def test_paired_test_edge_cases():
    assert paired_test({0: 0.5}, {1: 0.4}).n == 0
    single = paired_test({0: 0.5}, {0: 0.4})
    assert single.n == 1 and single.diff == pytest.approx(0.1) and math.isnan(single.p) and not single.significant()
    same = paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert (same.diff, same.p) == (0.0, 1.0)
    shifted = paired_test({0: 0.625, 1: 0.75}, {0: 0.5, 1: 0.625})  # exactly +0.125 each: no spread
    assert shifted.p == 0.0 and shifted.t == math.inf
    assert paired_test({0: math.nan, 1: 0.5, 2: 0.6}, {0: 0.4, 1: 0.4, 2: 0.5}).n == 2
