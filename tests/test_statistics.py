"""Seed statistics (rankbias.statistics): each test against its definition, in both directions,
and its power bookkeeping (a design that cannot reach p < alpha is named underpowered)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rankbias.statistics import (
    ALPHA,
    paired_test,
    seeds_for_sign_flip,
    sign_flip_p,
    trend_test,
)


def test_sign_flip_p_value_is_the_share_of_sign_patterns_at_least_as_extreme():
    differences = np.array([0.3, 0.1, 0.5, -0.05, 0.2])
    means = [
        np.mean(differences * np.array(signs))
        for signs in itertools.product((1, -1), repeat=len(differences))
    ]
    expected = np.mean(np.array(means) >= differences.mean() - 1e-12)
    got = paired_test(differences, "greater")
    assert got["p"] == pytest.approx(expected) and got["test"].startswith("exact sign-flip")
    assert got["effect"] == pytest.approx(differences.mean())
    low, high = got["ci"]
    assert low < differences.mean() < high
    assert got["reachable"]  # 5 seeds: the smallest p is 1/32 < 0.05


def test_paired_test_decides_both_ways_and_knows_when_it_cannot():
    improving = paired_test([0.4, 0.5, 0.3, 0.6, 0.45], "greater")
    assert improving["p"] < ALPHA
    worsening = paired_test([0.4, 0.5, 0.3, 0.6, 0.45], "less")
    assert worsening["p"] > 0.9
    four = paired_test([0.4, 0.5, 0.3, 0.6], "greater")  # all positive, yet p = 1/16
    assert four["p"] == pytest.approx(1 / 16) and not four["reachable"]
    assert four["seeds_needed"] == seeds_for_sign_flip() == 5


def test_many_seeds_use_the_t_test_with_n_minus_one_degrees_of_freedom():
    values = np.random.default_rng(0).normal(0.2, 1.0, 30)
    got = paired_test(values, "greater")
    expected = scipy_stats.ttest_1samp(values, 0.0, alternative="greater").pvalue
    assert got["p"] == pytest.approx(expected) and got["test"] == "t-test, 29 df"
    half = scipy_stats.t.ppf(0.975, 29) * scipy_stats.sem(values)
    assert got["ci"] == pytest.approx((values.mean() - half, values.mean() + half))


def test_trend_test_exact_p_with_two_seeds_of_three_points():
    x = [1, 2, 3]
    falling = trend_test([(x, [3.0, 2.0, 1.0]), (x, [2.5, 2.4, 0.1])], "less")
    assert falling["effect"] == pytest.approx(-1.0)
    assert falling["p"] == pytest.approx(1 / 36)  # one of 3!·3! orderings is as extreme
    assert falling["reachable"] and falling["test"] == "exact stratified permutation"
    rising = trend_test([(x, [1.0, 2.0, 3.0]), (x, [0.1, 0.2, 0.3])], "less")
    assert rising["p"] == pytest.approx(1.0) and rising["p_opposite"] == pytest.approx(1 / 36)
    assert (
        rising["p_opposite"]
        == trend_test([(x, [1.0, 2.0, 3.0]), (x, [0.1, 0.2, 0.3])], "greater")["p"]
    )


def test_a_trend_over_three_points_and_one_seed_is_underpowered():
    got = trend_test([([1, 2, 3], [3.0, 2.0, 1.0])], "less")
    assert got["p"] == pytest.approx(1 / 6) and not got["reachable"]
    assert got["seeds_needed"] == 2  # (1/6)^2 = 1/36 < 0.05


def test_the_exact_null_equals_enumerating_every_stratified_ordering():
    """The convolution of single-seed nulls against brute force over all 24^3 orderings, with
    ties in one seed's metric."""
    x = np.arange(4.0)
    ys = [np.array([4.0, 3.0, 1.0, 2.0]), np.array([2.0, 2.0, 1.0, 0.0]), np.array([1.0, 3, 2, 4])]
    got = trend_test([(x, y) for y in ys], "less")

    def rho(a, b):
        return scipy_stats.spearmanr(a, b).statistic

    observed = np.mean([rho(x, y) for y in ys])
    orders = list(itertools.permutations(range(4)))
    single = [[rho(x, y[list(order)]) for order in orders] for y in ys]
    means = np.add.outer(np.add.outer(single[0], single[1]), single[2]).ravel() / 3
    assert got["effect"] == pytest.approx(observed)
    assert got["p"] == pytest.approx(np.mean(means <= observed + 1e-12))
    assert got["test"] == "exact stratified permutation"
    flat = trend_test([(x, np.ones(4)) for _ in range(5)], "less")  # a constant metric
    assert flat["p"] == flat["p_opposite"] == pytest.approx(1.0) and flat["reachable"]


def test_large_designs_use_a_seeded_monte_carlo_that_repeats():
    rng = np.random.default_rng(3)
    strata = [(np.arange(9), -np.arange(9) + rng.normal(0, 2, 9)) for _ in range(3)]
    first, second = trend_test(strata, "less"), trend_test(strata, "less")
    assert first["p"] == second["p"] and first["test"].startswith("stratified permutation")
    assert first["p"] < ALPHA and first["effect"] < -0.5
    unrelated = [(np.arange(9), rng.normal(0, 1, 9)) for _ in range(3)]
    assert trend_test(unrelated, "less")["p"] > ALPHA


def test_p_values_of_a_true_null_are_not_too_small():
    """Under no trend, p < alpha in at most about alpha of the designs (a valid test)."""
    rng = np.random.default_rng(5)
    small = [
        trend_test([(np.arange(4), rng.normal(size=4)) for _ in range(2)], "less")["p"]
        for _ in range(300)
    ]
    assert np.mean(np.array(small) < ALPHA) < 0.09
    flips = [paired_test(rng.normal(size=6), "greater")["p"] for _ in range(300)]
    assert np.mean(np.array(flips) < ALPHA) < 0.09


def test_grids_of_different_sizes_or_no_seed_cannot_be_tested():
    assert trend_test([], "less")["test"] == "no complete seed"
    mixed = trend_test([([1, 2, 3], [3, 2, 1]), ([1, 2], [2, 1])], "less")
    assert mixed["test"] == "seeds over different grids" and not mixed["reachable"]
    assert paired_test([np.nan], "greater")["test"] == "no seed"


def test_the_fast_sign_flip_p_is_scipys_exact_permutation_test():
    """On integer differences (sums exact in floating point, ties exact) both count the same sign
    patterns; the fast one exists because the stability check runs it ~50,000 times."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        values = rng.integers(-5, 6, rng.integers(2, 11)).astype(float)
        for alternative in ("greater", "less"):
            reference = scipy_stats.permutation_test(
                (values,),
                np.mean,
                permutation_type="samples",
                alternative=alternative,
                n_resamples=math.inf,
            ).pvalue
            assert sign_flip_p(values, alternative) == pytest.approx(reference, abs=1e-12)
