"""Seed statistics: seeds are samples, and a difference or a trend is tested across them
(science.md, "Verdict rules (v2)", principle 3). One module, so that the claims and the report
read the same numbers; scipy where it has the test.

- `paired_test`: one-sided test of the mean of paired differences (one per seed): an exact
  sign-flip permutation test up to EXACT_MAX seeds, Student's t with n − 1 degrees of freedom
  above; the mean, its 95 % t interval and the p-value.
- `trend_test`: Spearman's ρ of an axis with a metric within each seed, averaged over the seeds,
  against the null that shuffles the metric within each seed (a stratified permutation test):
  exact up to EXACT_K grid points (the convolution of every seed's k! orders), a fixed-seed Monte
  Carlo above.

Both say whether their design could reach p < α at all (`reachable`): three grid points and one
seed cannot (the smallest p is 1/6). Such a case is *underpowered*, undecided, never failed, and
`seeds_needed` says how many seeds would decide it.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np


@functools.cache
def _stats():
    """scipy.stats, imported on first use: it costs 0.7 s, and most jobs that import this module
    (figures, through rankbias.summaries) never test anything."""
    from scipy import stats

    return stats


ALPHA = 0.05  # one-sided
EXACT_MAX = 10  # seeds up to which the sign-flip test enumerates all 2^n sign patterns
EXACT_K = 8  # grid points up to which the stratified permutation null is exact (8! orders)
ROUND = 9  # decimals: ρ values equal to this precision are one value of the null
MONTE_CARLO = 20_000  # resamples of the stratified permutation test beyond that
RNG_SEED = 20261129  # fixed: the same tables give the same p-values
TIES = 1e-12  # a resampled statistic within this of the observed one counts as extreme


def seeds_for_sign_flip(alpha: float = ALPHA) -> int:
    """The fewest seeds with which an exact one-sided sign-flip test can reach p < alpha."""
    return math.floor(math.log2(1 / alpha)) + 1


def paired_test(differences, alternative: str = "greater", alpha: float = ALPHA) -> dict:
    """Is the mean of `differences` (one per seed) above 0 (`greater`) or below it (`less`)?

    Returns n, `effect` (the mean), `ci` (95 % t interval), `p`, the `test` used, `reachable`
    (could this n reach p < alpha) and `seeds_needed` (for an exact test to be able to)."""
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    # the test does not depend on the seeds' order: sorted values share one cache entry
    return dict(_paired_test(tuple(sorted(values.tolist())), alternative, alpha))


@functools.lru_cache(maxsize=200_000)
def _paired_test(values: tuple, alternative: str, alpha: float) -> dict:
    """Cached: the seed resamples of the stability check repeat the same values often."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    needed = seeds_for_sign_flip(alpha)
    if n == 0:
        nan = math.nan
        return {
            "n": 0,
            "effect": nan,
            "ci": (nan, nan),
            "p": nan,
            "test": "no seed",
            "reachable": False,
            "seeds_needed": needed,
        }
    if n == 1:  # two sign patterns; scipy's permutation test wants two observations
        toward = values[0] > 0 if alternative == "greater" else values[0] < 0
        p, test, smallest_p = 0.5 if toward else 1.0, "exact sign-flip permutation, n = 1", 0.5
    elif n <= EXACT_MAX:
        p, test, smallest_p = (
            sign_flip_p(values, alternative),
            f"exact sign-flip permutation, n = {n}",
            2.0**-n,
        )
    else:
        p = float(_stats().ttest_1samp(values, 0.0, alternative=alternative).pvalue)
        test, smallest_p = f"t-test, {n - 1} df", 0.0
    mean = float(values.mean())
    if n >= 2 and values.std(ddof=1) > 0:
        half = _t_quantile(n - 1) * values.std(ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = mean
    return {
        "n": n,
        "effect": mean,
        "ci": (float(low), float(high)),
        "p": p,
        "test": test,
        "reachable": smallest_p < alpha,
        "seeds_needed": needed,
    }


@functools.cache
def _sign_patterns(n: int) -> np.ndarray:
    """Every one of the 2^n sign patterns, [2^n, n]."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def sign_flip_p(values: np.ndarray, alternative: str) -> float:
    """The exact one-sided sign-flip p-value of the mean: the share of the 2^n sign patterns
    whose mean is at least as extreme, a mean within 100 ulp of the data's scale (the mean
    |value|) counting as a tie, i.e. as extreme. scipy.stats.permutation_test gives the same p
    except where the observed mean is ~0, whose ties its tolerance (relative to the observed mean)
    leaves to rounding; this is 30× faster (the stability check runs it ~50,000 times)."""
    null = (_sign_patterns(len(values)) * values).mean(axis=-1)
    observed = values.mean()
    gamma = np.finfo(float).eps * 100 * max(abs(observed), float(np.abs(values).mean()))
    extreme = null >= observed - gamma if alternative == "greater" else null <= observed + gamma
    return float(extreme.mean())


@functools.cache
def _t_quantile(dof: int) -> float:
    """Student's t 97.5 % quantile: the half-width of a 95 % interval in standard errors."""
    return float(_stats().t.ppf(0.975, dof))


def _mean_rho(x_ranks: np.ndarray, y_ranks: np.ndarray) -> np.ndarray:
    """Mean over strata (axis −2) of Pearson's r of ranks, i.e. Spearman's ρ; 0 for a constant."""
    x = x_ranks - x_ranks.mean(axis=-1, keepdims=True)
    y = y_ranks - y_ranks.mean(axis=-1, keepdims=True)
    scale = np.sqrt((x**2).sum(-1) * (y**2).sum(-1))
    rho = np.divide((x * y).sum(-1), scale, out=np.zeros_like(scale), where=scale > 0)
    return rho.mean(axis=-1)


def trend_test(strata: list[tuple], alternative: str = "less", alpha: float = ALPHA) -> dict:
    """Seed-combined Spearman trend. `strata`: one (axis values, metric values) pair per seed,
    each over the same number k >= 2 of grid points. `less`: the metric falls as the axis grows.

    Returns n (seeds), k, `effect` (mean ρ), `p` (and `p_opposite`, the other direction), the
    `test`, `reachable` and `seeds_needed`."""
    key = tuple(  # the strata's order does not matter: sorted, they share one cache entry
        sorted(
            (tuple(np.asarray(x, float).tolist()), tuple(np.asarray(y, float).tolist()))
            for x, y in strata
        )
    )
    return dict(_trend_test(key, alternative, alpha))


@functools.lru_cache(maxsize=50_000)
def _trend_test(strata: tuple, alternative: str, alpha: float) -> dict:
    strata = [(np.asarray(x, float), np.asarray(y, float)) for x, y in strata]
    strata = [(x, y) for x, y in strata if len(x) >= 2 and np.isfinite(y).all()]
    sizes = {len(x) for x, _ in strata}
    if len(sizes) != 1:
        return {
            "n": len(strata),
            "k": 0,
            "effect": math.nan,
            "p": math.nan,
            "test": "no complete seed" if not strata else "seeds over different grids",
            "reachable": False,
            "seeds_needed": None,
        }
    k, seeds = sizes.pop(), len(strata)
    x_ranks = np.stack([_stats().rankdata(x) for x, _ in strata])
    y_ranks = np.stack([_stats().rankdata(y) for _, y in strata])
    observed = float(_mean_rho(x_ranks, y_ranks))
    if k <= EXACT_K:
        values, probabilities = _sum_null(
            [(tuple(x), tuple(sorted(y))) for x, y in zip(x_ranks, y_ranks, strict=True)]
        )
        total = round(observed * seeds, ROUND)  # on the null's grid of rounded sums
        slack = 10.0 ** (1 - ROUND)
        p_less = float(probabilities[values <= total + slack].sum())
        p_greater = float(probabilities[values >= total - slack].sum())
        test = "exact stratified permutation"
    else:
        keys = np.random.default_rng(RNG_SEED).random((MONTE_CARLO, seeds, k))
        orders = keys.argsort(axis=-1)
        null = _mean_rho(x_ranks[None], np.take_along_axis(y_ranks[None], orders, axis=-1))
        p_less = float((null <= observed + TIES).mean())
        p_greater = float((null >= observed - TIES).mean())
        test = f"stratified permutation, {MONTE_CARLO} resamples"
    p, p_opposite = (p_less, p_greater) if alternative == "less" else (p_greater, p_less)
    needed = next(s for s in range(1, 64) if math.factorial(k) ** -s < alpha)
    return {
        "n": seeds,
        "k": k,
        "effect": observed,
        "p": p,
        "p_opposite": p_opposite,  # the other direction, from the same null
        "test": test,
        "reachable": math.factorial(k) ** -seeds < alpha,  # the design, ties aside
        "seeds_needed": needed,
    }


@functools.lru_cache(maxsize=10_000)
def _stratum_null(x_ranks: tuple, y_ranks: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Every value Spearman's ρ takes when one seed's metric is permuted over its k grid points
    (all k! orders, ties kept), with its probability."""
    k = len(x_ranks)
    orders = np.array(list(itertools.permutations(range(k))))
    y = np.asarray(y_ranks)[orders]
    rho = _mean_rho(np.asarray(x_ranks)[None, None], y[:, None])
    values, counts = np.unique(np.round(rho, ROUND), return_counts=True)
    return values, counts / len(orders)


def _sum_null(strata: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The exact null distribution of the sum of the seeds' ρ: the seeds are permuted
    independently, so it is the convolution of their single-seed distributions (sorted)."""
    values, probabilities = np.zeros(1), np.ones(1)
    for x_ranks, y_ranks in strata:
        step_values, step_probabilities = _stratum_null(x_ranks, y_ranks)
        sums = np.round((values[:, None] + step_values[None]).ravel(), ROUND)
        weights = (probabilities[:, None] * step_probabilities[None]).ravel()
        values, inverse = np.unique(sums, return_inverse=True)
        probabilities = np.bincount(inverse, weights=weights)
    return values, probabilities


def share_test(flags, comparison: str, threshold: float, alpha: float = ALPHA) -> dict:
    """Is the share of True among `flags` (one per member) above (`>`, `>=`) or below the
    threshold? An exact binomial test each way (scipy); pass / fail / undecided, with the share,
    its 95 % Clopper-Pearson interval and p."""
    flags = np.asarray(flags, dtype=bool)
    n, k = len(flags), int(flags.sum())
    if n == 0:
        return {"outcome": "undecided", "reason": "no member", "n": 0}
    greater = comparison.startswith(">")
    up = _stats().binomtest(k, n, threshold, alternative="greater")
    down = _stats().binomtest(k, n, threshold, alternative="less")
    interval = up.proportion_ci(0.95)
    p_claim, p_other = (up.pvalue, down.pvalue) if greater else (down.pvalue, up.pvalue)
    result = {
        "value": k / n,
        "ci": [float(interval.low), float(interval.high)],
        "n": n,
        "test": f"exact binomial, {k} of {n}",
    }
    if p_claim < alpha:
        return {**result, "outcome": "pass", "p": float(p_claim)}
    if p_other < alpha:
        return {**result, "outcome": "fail", "p": float(p_other)}
    if min(threshold**n, (1 - threshold) ** n) >= alpha:  # not even all-or-none is rare enough
        return {
            **result,
            "outcome": "underpowered",
            "p": float(min(p_claim, p_other)),
            "reason": f"{n} members cannot reach p < {alpha:g}",
        }
    return {
        **result,
        "outcome": "undecided",
        "p": float(min(p_claim, p_other)),
        "reason": f"share {k}/{n} not significantly different from {threshold:g}",
    }
