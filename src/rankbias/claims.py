"""Verdicts (v2): measured tables -> supported / contradicted / mixed / inconclusive, per claim,
and borne out / not borne out / undecided, per reviewers' concern (science.md, "Verdict rules").

A check (config/claims.yaml) forms *cases* from the tables: a setting, a slice of a grid, a matched
pair of settings, a data set. A case keeps, per seed, the numbers it is decided on, and decides
by a test across the seeds (rankbias.statistics), never by a median against a hard line:

- `pass` / `fail`: the test rejects at one-sided alpha in the claim's / the opposite direction;
- `undecided`: outside the claim's regime (collapsed, diverged, not plateaued, decay horizon too
  short, trivial bound, weights that barely moved, ...), or the seeds do not settle it; with the
  reason, never counted as a failure;
- `underpowered`: the design cannot reach p < alpha (too few seeds or grid points); the case says
  how many seeds would decide it.

A claim's verdict pools the decided cases of its deciding checks (`context` checks are shown, never
counted): all pass -> supported, none -> contradicted, some -> mixed with a *scope* (the one setting
axis that best separates passing from failing cases), none decided -> inconclusive. A claim with
`combine: all` needs every deciding check to hold (a conjunction the claim itself states, e.g.
A7). Stability: every verdict is recomputed on resamples of the seeds (with replacement, within
each experiment, so pairs stay paired); below `STABLE` agreement it reads "unstable".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rankbias import statistics
from rankbias.generalization import kendall_tau
from rankbias.plan import format_number
from rankbias.registry import (
    CONDITION,
    CONDITION_OPS,
    MIN_TREND_SETTINGS,
    claim_experiments,
    id_order,
)
from rankbias.summaries import benefit_on_validation, matched_errors, with_derived
from rankbias.vocabulary import AXIS_LABEL, HYPER_COLUMNS

RESAMPLES = 200  # seed resamples of the stability check (science.md: at least 200)
STABLE = 0.8  # share of resamples that must agree with the verdict
RESAMPLE_SEED = 20261201  # fixed: the same tables give the same stability
EQUAL_STEPS = 1.1  # a slice has "equal numbers of steps" when max/min steps <= this
SCOPE_AXES = ("dataset", "experiment", "layer", *AXIS_LABEL)  # tie-break order of the scope
SCOPE_SLACK = 0.05  # a scope holds on another run when it fits within 5 % of that run's best


# ---------------------------------------------------------------- selecting rows and regimes


def _condition(rows: pd.DataFrame, column: str, condition) -> pd.Series:
    match = CONDITION.match(condition) if isinstance(condition, str) else None
    if match:
        return CONDITION_OPS[match.group(1)](rows[column].astype(float), float(match.group(2)))
    if isinstance(condition, list):
        return rows[column].isin(condition)
    return rows[column] == condition


def select(rows: pd.DataFrame, check: dict) -> pd.DataFrame:
    """The rows a check looks at: its layers and its `where` conditions."""
    layers = check.get("layers", "first")
    if layers == "first":
        rows = rows[rows["layer"] == 1]
    elif layers == "hidden":
        rows = rows[rows["layer"] < rows["depth"]]
    elif layers == "output":
        rows = rows[rows["layer"] == rows["depth"]]
    for column, condition in check.get("where", {}).items():
        if column not in rows:  # e.g. Paper A's eps columns in a table of deep nets
            return rows.iloc[0:0]
        rows = rows[_condition(rows, column, condition)]
    return rows


def regime_reasons(rows: pd.DataFrame, regime: dict) -> pd.Series:
    """Per row, why the member is outside the claim's regime ("" when inside): science.md's
    principle 2. Keys: `plateaued` (metrics that must have levelled off), `min_horizon` (decay
    horizon h), `min_movement` (‖W_T − W_0‖/‖W_0‖), `max_norm_change` (|norm_ratio − 1|),
    `nontrivial_bound` (the Galanti bound of this ε below the layer's smaller side)."""
    reasons = pd.Series("", index=rows.index, dtype=object)

    def flag(mask: pd.Series, text: str) -> None:
        mask = mask & (reasons == "")
        reasons[mask] = text

    flag(rows["status"] != "ok", rows["status"].astype(str))
    for metric in regime.get("plateaued", []):
        column = rows.get(f"plateaued_{metric}", pd.Series(np.nan, index=rows.index))
        flag(column.isna(), f"plateau of {metric} undecided")
        flag(column == 0, f"{metric} not plateaued")
    if "min_horizon" in regime:
        flag(rows["decay_horizon"] < regime["min_horizon"], f"h < {regime['min_horizon']:g}")
    if "nontrivial_bound" in regime:  # the design's property first, then training's
        bound = rows[f"galanti_bound_{regime['nontrivial_bound']}"]
        flag(~(bound < rows[["rows", "cols"]].min(axis=1)), "trivial bound")
    if "min_movement" in regime:
        flag(rows["movement"] < regime["min_movement"], "weights barely moved")
    if "max_norm_change" in regime:
        change = (rows["norm_ratio"] - 1).abs()
        flag(~(change <= regime["max_norm_change"]), "norm not stabilised")
    return reasons


def _setting_keys(rows: pd.DataFrame) -> list[str]:
    """What makes a setting: every hyper-parameter but the seed; not `epochs`, which follows from
    the batch size when a run fixes its number of steps."""
    return ["experiment", *(c for c in HYPER_COLUMNS if c in rows and c != "epochs"), "layer"]


def _varying(rows: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    return [a for a in AXIS_LABEL if a in rows and a not in exclude and rows[a].nunique() > 1]


def label(row: pd.Series | dict, varying: list[str], layers: str) -> str:
    """A case's name: experiment, data set, the axes that vary there, and the layer."""
    parts = list(dict.fromkeys([str(row["experiment"]), str(row["dataset"])]))
    for axis in varying:
        value = row[axis]
        text = value if isinstance(value, str) else format_number(float(value))
        parts.append(f"{AXIS_LABEL.get(axis, axis)}={text}")
    if layers != "first" and "layer" in row:
        parts.append(f"W{int(row['layer'])}")
    return " · ".join(parts)


def _setting(row: pd.Series | dict, keys: list[str]) -> dict:
    """The case's coordinates, for the scope of a mixed verdict."""
    out = {}
    for key in keys:
        value = row[key]
        out[key] = value if isinstance(value, str) else _plain(value)
    return out


def _plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _excluded_text(reasons: pd.Series) -> str:
    counts = Counter(r for r in reasons if r)
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


# ---------------------------------------------------------------- deciding a case


@dataclass
class Case:
    """One case: its name and coordinates, the numbers it is decided on per seed, and how.
    `decide(seeds)` returns the outcome on those seeds (repeats allowed: a resample)."""

    name: str
    setting: dict
    seeds: list
    decide: Callable[[list], dict]
    extra: dict = field(default_factory=dict)

    def outcome(self, seeds: list | None = None) -> dict:
        return self.decide(self.seeds if seeds is None else [s for s in seeds if s in self.seeds])


def _undecided(reason: str, by_design: bool = False) -> dict:
    """`by_design`: no seeds or training could decide this case on this grid (too few grid
    points, batch size confounded with steps, no power): it counts against reachability."""
    return {"outcome": "undecided", "reason": reason, "by_design": by_design}


def _direction(comparison: str) -> int:
    """+1 when a case passes above the threshold, −1 when below."""
    return 1 if comparison.startswith(">") else -1


def decide_values(values, comparison: str, threshold: float, alpha: float) -> dict:
    """Pass when the seeds' mean is significantly on the claim's side of the threshold, fail
    when significantly on the other (paired_test on value − threshold); a value exactly on the
    line counts on the failing side of a strict comparison and the passing side otherwise."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return _undecided("no finite value")
    sign = _direction(comparison)
    distance = sign * (values - threshold)
    tie = -1e-300 if comparison in ("<", ">") else 1e-300
    distance = np.where(distance == 0, tie, distance)
    for_claim = statistics.paired_test(distance, "greater", alpha)
    against = statistics.paired_test(distance, "less", alpha)
    low, high = (sign * np.array(for_claim["ci"]) + threshold)[::sign]
    result = {
        "value": float(values.mean()),
        "median": float(np.median(values)),
        "ci": [_finite_or_none(low), _finite_or_none(high)],
        "n": len(values),
        "test": for_claim["test"],
    }
    if for_claim["p"] < alpha:
        return {**result, "outcome": "pass", "p": for_claim["p"]}
    if against["p"] < alpha:
        return {**result, "outcome": "fail", "p": against["p"]}
    if not for_claim["reachable"]:
        return {
            **result,
            "outcome": "underpowered",
            "p": min(for_claim["p"], against["p"]),
            "seeds_needed": for_claim["seeds_needed"],
            "reason": f"{len(values)} seed{'s' * (len(values) > 1)} cannot reach p < {alpha:g}; "
            f"{for_claim['seeds_needed']} would",
        }
    return {
        **result,
        "outcome": "undecided",
        "p": min(for_claim["p"], against["p"]),
        "reason": "the seeds straddle the threshold",
    }


def decide_band(values, low: float, high: float, alpha: float) -> dict:
    """B6's rule: pass when the effect is not significantly below `low` and its upper 95 % bound
    is <= `high`; fail when significantly below `low` or significantly above `high`."""
    below = decide_values(values, ">=", low, alpha)
    if below["outcome"] in ("underpowered", "undecided") and "value" not in below:
        return below
    above = decide_values(values, "<=", high, alpha)
    result = {k: below[k] for k in ("value", "median", "ci", "n", "test") if k in below}
    if below["outcome"] == "fail":
        return {**result, "outcome": "fail", "p": below["p"], "reason": f"significantly < {low:g}"}
    if above["outcome"] == "fail":
        return {**result, "outcome": "fail", "p": above["p"], "reason": f"significantly > {high:g}"}
    if below["outcome"] == "underpowered":
        return below
    upper = result["ci"][1]
    if upper is not None and upper <= high:
        return {**result, "outcome": "pass", "p": above["p"]}
    return {
        **result,
        "outcome": "undecided",
        "p": above["p"],
        "reason": f"95 % CI reaches > {high:g}",
    }


def with_control(main: dict, control: dict, control_reason: str) -> dict:
    """A case whose claim needs a second metric to agree (the learned part beside W, residual_1
    beside residual_2): it passes only when both pass; when W passes but the control fails, it
    fails for `control_reason` (e.g. explained by forgetting the initialisation)."""
    out = {
        **main,
        "control": {k: control.get(k) for k in ("outcome", "value", "ci", "p", "reason")},
    }
    if main["outcome"] != "pass" or control["outcome"] == "pass":
        return out
    if control["outcome"] == "fail":
        return {**out, "outcome": "fail", "reason": control_reason}
    return {**out, "outcome": control["outcome"], "reason": f"control: {control.get('reason', '')}"}


# ---------------------------------------------------------------- the kinds of check


def _value_column(rows: pd.DataFrame, check: dict, metric: str) -> pd.Series:
    value = rows[metric].astype(float)
    if "target" in check:
        value = (value - check["target"]).abs()
    if "relative_to" in check:
        value = value / rows[check["relative_to"]].astype(float)
    return value


def _in_regime(rows: pd.DataFrame, check: dict) -> tuple[pd.DataFrame, str]:
    reasons = regime_reasons(rows, check.get("regime", {}))
    return rows[reasons == ""], _excluded_text(reasons)


def level_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per setting and layer: the seeds' values of the metric (optionally its distance
    to `target` or its ratio to `relative_to`) against the threshold; `control_metric` must
    agree."""
    rows = select(table, check)
    rows = rows.assign(_value=_value_column(rows, check, check["metric"]))
    if "control_metric" in check:
        rows["_control"] = _value_column(rows, check, check["control_metric"])
    varying = _varying(rows)
    keys = _setting_keys(rows)
    cases = []
    for _, group in rows.groupby(keys, sort=True):
        inside, excluded = _in_regime(group, check)
        per_seed = dict(zip(inside["seed"], inside["_value"], strict=True))
        control = (
            dict(zip(inside["seed"], inside["_control"], strict=True))
            if "_control" in inside
            else None
        )
        extra = {"excluded": excluded, "members": len(group)}
        if "relative_to" in check:
            extra["relative_to_median"] = _finite_or_none(group[check["relative_to"]].median())
        cases.append(
            Case(
                label(group.iloc[0], varying, check.get("layers", "first")),
                _setting(group.iloc[0], keys),
                sorted(per_seed),
                _level_decider(check, per_seed, excluded, alpha, control),
                extra,
            )
        )
    return cases


def _level_decider(check, per_seed, excluded, alpha, control=None):
    def decide(seeds: list) -> dict:
        if not seeds:
            return _undecided(f"no member in the regime ({excluded or 'no pair or value'})")
        values = [per_seed[s] for s in seeds]
        main = decide_values(values, check["comparison"], check["threshold"], alpha)
        if "control_metric" in check:
            other = check.get("control_comparison", check["comparison"])
            threshold = check.get("control_threshold", check["threshold"])
            second = decide_values([control[s] for s in seeds], other, threshold, alpha)
            main = with_control(main, second, check.get("control_reason", "the control disagrees"))
        return _regime_limited(main, excluded)

    return decide


def _always(result: dict) -> Callable[[list], dict]:
    """A decider whose outcome no seed can change (the case is undecided by design)."""
    return lambda seeds: result


def _regime_limited(result: dict, excluded: str) -> dict:
    """Too few seeds *because* members fell outside the regime is undecided, not underpowered:
    the design had the seeds, the training did not reach the claim's regime."""
    if result["outcome"] == "underpowered" and excluded:
        return {**result, "outcome": "undecided", "reason": f"outside the regime: {excluded}"}
    return result


def wd_effect_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per setting with wd > 0 and layer: per seed, the metric over its value at wd = 0
    in the same setting and seed (same initialisation and data order)."""
    rows = select(table, check)
    keys = [k for k in _setting_keys(rows) if k != "weight_decay"] + ["seed"]
    base = rows[(rows["weight_decay"] == 0) & (rows["status"] == "ok")].set_index(keys)
    decayed = rows[rows["weight_decay"] > 0]
    varying = sorted(set(_varying(decayed)) | {"weight_decay"}, key=list(AXIS_LABEL).index)
    setting_keys = _setting_keys(decayed)
    cases = []
    for _, group in decayed.groupby(setting_keys, sort=True):
        inside, excluded = _in_regime(group, check)
        per_seed, control = {}, {}
        for record in inside.to_dict(orient="records"):
            key = tuple(record[k] for k in keys)
            if key not in base.index:
                continue
            without = base.loc[key]
            per_seed[record["seed"]] = record[check["metric"]] / without[check["metric"]]
            if "control_metric" in check:
                metric = check["control_metric"]
                control[record["seed"]] = record[metric] / without[metric]
        cases.append(
            Case(
                label(group.iloc[0], varying, check.get("layers", "first")),
                _setting(group.iloc[0], setting_keys),
                sorted(per_seed),
                _level_decider(check, per_seed, excluded, alpha, control),
                {"excluded": excluded, "members": len(group)},
            )
        )
    return cases


def wd_benefit_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per matched setting (same data, lr, B, depth, width, g): per seed, test error at
    wd = 0 minus test error at the best wd > 0, the best picked by mean *validation* error over
    the seeds (no peeking, principle 5). Classification errors in [0, 1]; regression test loss."""
    rows = select(table, {**check, "layers": "first"})
    rows = rows[rows["status"] == "ok"]
    keys = [k for k in _setting_keys(rows) if k not in ("weight_decay", "layer")]
    varying = _varying(rows, exclude=("weight_decay",))
    return [
        Case(
            label(group.iloc[0], varying, "first"),
            _setting(group.iloc[0], keys),
            sorted(errors.index),
            _benefit_decider(check, errors, alpha),
            {"members": len(group)},
        )
        for group, errors in matched_errors(rows, keys)
    ]


def _benefit_decider(check: dict, errors: pd.DataFrame, alpha: float):
    def decide(seeds: list) -> dict:
        benefit = benefit_on_validation(errors, seeds)
        if benefit is None:
            return _undecided("no validation split: the best wd cannot be picked without peeking")
        differences = benefit.pop("differences")
        if "band" in check:
            return {**decide_band(differences, *check["band"], alpha), **benefit}
        decided = decide_values(differences, check["comparison"], check["threshold"], alpha)
        return {**decided, **benefit}

    return decide


def _blocks(rows: pd.DataFrame, axes: list[str]) -> tuple[list[str], list[pd.DataFrame]]:
    """The blocks over which `axes` vary with every other setting key fixed, and those keys."""
    keys = [k for k in _setting_keys(rows) if k not in axes]
    return keys, [block for _, block in rows.groupby(keys, sort=True)]


def _common_grid(block: pd.DataFrame, axes: list[str], check: dict, metric: str) -> tuple:
    """Grid points where every seed is inside the regime, and the seeds complete over them."""
    inside, excluded = _in_regime(block, check)
    table = inside.pivot_table(index="seed", columns=axes, values=metric, aggfunc="first")
    every_seed = block["seed"].nunique()
    points = [c for c in table.columns if table[c].notna().sum() == every_seed]
    table = table[points].dropna()
    return table, excluded


def trend_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per slice (data set, layer, every other axis fixed): the seed-combined Spearman
    trend of the metric with `axis` (statistics.trend_test), and how far the rank moves at all
    (`min_spread`: a significant trend over 125 vs 124 is no low-rank bias)."""
    axis = check["axis"]
    rows = select(table, check)
    keys, blocks = _blocks(rows, [axis])
    varying = _varying(rows, exclude=(axis,))
    cases = []
    for block in blocks:
        values = block[axis].nunique()
        if values < 2:
            continue  # the axis is not swept in this block: no trend to test
        main, excluded = _common_grid(block, [axis], check, check["metric"])
        control = None
        if "control_metric" in check:
            control, _ = _common_grid(block, [axis], check, check["control_metric"])
            control = control.reindex(index=main.index, columns=main.columns)
        steps = block.groupby(axis)["steps"].median() if "steps" in block else None
        reason, by_design = None, True
        if values < MIN_TREND_SETTINGS:
            reason = f"fewer than {MIN_TREND_SETTINGS} values of {axis}"
        elif check.get("equal_steps") and (
            steps is None or steps.max() > EQUAL_STEPS * steps.min()
        ):
            reason = (
                f"{axis} varies at equal epochs, not equal steps: confounded with the step count"
            )
        elif main.shape[1] < values:  # a trend over the part of the grid left would be biased
            reason = (
                f"outside the regime: {values - main.shape[1]} of {values} grid points lost "
                f"({excluded})"
            )
            by_design = False
        extra = {"settings": int(values), "grid_points": int(main.shape[1]), "excluded": excluded}
        cases.append(
            Case(
                label(block.iloc[0], varying, check.get("layers", "first")),
                _setting(block.iloc[0], keys),
                sorted(main.index),
                _trend_decider(check, main, control, (reason, by_design), excluded, alpha),
                extra,
            )
        )
    return cases


def _spread(values: np.ndarray) -> float:
    top = np.max(values)
    return float((top - np.min(values)) / top) if top > 0 else float("nan")


def _decide_trend(check: dict, grid: pd.DataFrame, seeds: list, alpha: float) -> dict:
    axis_values = np.array([float(c) for c in grid.columns])
    strata = [(axis_values, grid.loc[s].to_numpy(dtype=float)) for s in seeds]
    claimed = "less" if check["comparison"].startswith("<") else "greater"
    for_claim = statistics.trend_test(strata, claimed, alpha)
    spread = _spread(grid.loc[seeds].median().to_numpy())
    result = {
        "value": _finite_or_none(for_claim["effect"]),
        "n": for_claim["n"],
        "k": for_claim["k"],
        "test": for_claim["test"],
        "grid_spread": _finite_or_none(spread),
    }
    minimum = check.get("min_spread", 0.0)
    if not for_claim["reachable"]:
        return {
            **result,
            "outcome": "underpowered",
            "p": for_claim["p"],
            "seeds_needed": for_claim["seeds_needed"],
            "reason": f"{for_claim['n']} seed(s) of {for_claim['k']} grid points cannot reach "
            f"p < {alpha:g}; {for_claim['seeds_needed']} would",
        }
    if for_claim["p"] < alpha and spread >= minimum:
        return {**result, "outcome": "pass", "p": for_claim["p"]}
    if for_claim["p_opposite"] < alpha:
        return {
            **result,
            "outcome": "fail",
            "p": for_claim["p_opposite"],
            "reason": "the opposite trend",
        }
    if not spread >= minimum:
        return {
            **result,
            "outcome": "fail",
            "p": for_claim["p"],
            "reason": f"no effect: the rank moves by {spread:.1%} (< {minimum:.0%})",
        }
    return {**result, "outcome": "undecided", "p": for_claim["p"], "reason": "no significant trend"}


def _trend_decider(check, main, control, why_not, excluded, alpha):
    reason, by_design = why_not

    def decide(seeds: list) -> dict:
        if reason:
            return _undecided(reason, by_design=by_design)
        if not seeds:
            return _undecided("no seed complete over the grid")
        result = _decide_trend(check, main, seeds, alpha)
        if control is not None:
            second = _decide_trend(check, control, seeds, alpha)
            result = with_control(
                result, second, check.get("control_reason", "the control disagrees")
            )
        return _regime_limited(result, excluded)

    return decide


def spread_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per block where the `axes` vary and everything else is fixed: per seed, how far
    the metric moves over the block, (max − min)/max, against the threshold (B5: minimal effect).
    `power_where`: the same block under these conditions (with weight decay) must show an effect
    beyond the threshold, else the case has no power to say "no effect" and stays undecided."""
    axes = check["axes"]
    rows = select(table, check)
    keys, blocks = _blocks(rows, axes)
    varying = _varying(rows, exclude=tuple(axes))
    powered = _power_blocks(table, check, axes, alpha)
    cases = []
    for block in blocks:
        grid, excluded = _common_grid(block, axes, check, check["metric"])
        if grid.shape[1] < 2:
            reason = f"fewer than 2 grid points in the regime ({excluded or 'a single setting'})"
        else:
            reason = powered(block.iloc[0])
        per_seed = {s: _spread(grid.loc[s].to_numpy()) for s in grid.index}
        decide = _level_decider(check, per_seed, excluded, alpha)
        cases.append(
            Case(
                label(block.iloc[0], varying, check.get("layers", "first")),
                _setting(block.iloc[0], keys),
                sorted(per_seed),
                _always(_undecided(reason, by_design=True)) if reason else decide,
                {"grid_points": int(grid.shape[1]), "excluded": excluded},
            )
        )
    return cases


def _power_blocks(table: pd.DataFrame, check: dict, axes: list[str], alpha: float):
    """For `spread`: a function of a block's first row -> None when the same block under
    `power_where` shows a detectable effect (> threshold), else the reason it has no power."""
    if "power_where" not in check:
        return lambda row: None
    other = select(table, {**check, "where": {**check.get("where", {}), **check["power_where"]}})
    free = set(check["power_where"]) | set(check.get("where", {}))
    keys = [k for k in _setting_keys(other) if k not in axes and k not in free]
    detected = set()
    for key, block in other.groupby(keys + sorted(free & set(other)), sort=True):
        grid, _ = _common_grid(block, axes, check, check["metric"])
        if grid.shape[1] < 2:
            continue
        spreads = [_spread(grid.loc[s].to_numpy()) for s in grid.index]
        if decide_values(spreads, ">", check["threshold"], alpha)["outcome"] == "pass":
            detected.add(key[: len(keys)])

    def reason(row: pd.Series) -> str | None:
        key = tuple(row[k] for k in keys)
        if key in detected:
            return None
        return "the same grid with weight decay shows no detectable effect either: no power"

    return reason


def tau_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per experiment and data set: per seed, Kendall's τ of the metric with the gap
    over that seed's healthy models; with `versus`, τ minus the best τ of those bounds (does the
    metric order the models like the gap no worse than the norm-based bounds?)."""
    rows = select(table, {**check, "layers": "first"})
    rows = rows[rows["status"] == "ok"]
    versus = check.get("versus", [])
    cases = []
    for _, part in rows.groupby(["experiment", "dataset"], sort=True):
        per_seed = {}
        for seed, models in part.groupby("seed"):
            if len(models) < MIN_TREND_SETTINGS:
                continue
            tau = kendall_tau(models[check["metric"]], models["gap"])
            others = [kendall_tau(models[name], models["gap"]) for name in versus if name in models]
            others = [t for t in others if np.isfinite(t)]
            if versus and not others:
                continue
            per_seed[seed] = tau - max(others) if versus else tau
        per_seed = {s: v for s, v in per_seed.items() if np.isfinite(v)}
        excluded = "" if per_seed else f"fewer than {MIN_TREND_SETTINGS} healthy models per seed"
        cases.append(
            Case(
                label(part.iloc[0], [], "first"),
                _setting(part.iloc[0], ["experiment", "dataset"]),
                sorted(per_seed),
                _level_decider(check, per_seed, excluded, alpha),
                {"models": len(part)},
            )
        )
    return cases


def share_cases(table: pd.DataFrame, check: dict, alpha: float) -> list[Case]:
    """One case per experiment and data set: the share of its members (first-layer rows that
    pass `where`) for which every `condition` holds, against the threshold by a binomial test
    (C1: how many members reach the regime at all)."""
    rows = select(table, {**check, "layers": "first"})
    meets = pd.Series(True, index=rows.index)
    for column, condition in check["condition"].items():
        meets &= _condition(rows, column, condition).fillna(False)
    rows = rows.assign(_meets=meets)
    cases = []
    for _, part in rows.groupby(["experiment", "dataset"], sort=True):
        per_seed = {s: m["_meets"].to_numpy() for s, m in part.groupby("seed")}
        cases.append(
            Case(
                label(part.iloc[0], [], "first"),
                _setting(part.iloc[0], ["experiment", "dataset"]),
                sorted(per_seed),
                _share_decider(check, per_seed, alpha),
                {"members": len(part)},
            )
        )
    return cases


def _share_decider(check: dict, per_seed: dict, alpha: float):
    def decide(seeds: list) -> dict:
        flags = np.concatenate([per_seed[s] for s in seeds]) if seeds else np.array([])
        return statistics.share_test(flags, check["comparison"], check["threshold"], alpha)

    return decide


KINDS = {
    "level": level_cases,
    "wd_effect": wd_effect_cases,
    "wd_benefit": wd_benefit_cases,
    "trend": trend_cases,
    "spread": spread_cases,
    "tau": tau_cases,
    "share": share_cases,
}


# ---------------------------------------------------------------- verdicts


def verdict_of(outcomes: list[str]) -> str:
    decided = [o for o in outcomes if o in ("pass", "fail")]
    if not decided:
        return "inconclusive"
    if all(o == "pass" for o in decided):
        return "supported"
    return "contradicted" if all(o == "fail" for o in decided) else "mixed"


def all_of(check_verdicts: list[str]) -> str:
    """`combine: all`: every deciding check must hold; one contradicted check contradicts."""
    if "contradicted" in check_verdicts:
        return "contradicted"
    if all(v == "supported" for v in check_verdicts):
        return "supported"
    return "mixed" if "mixed" in check_verdicts else "inconclusive"


def scope(cases: list[dict]) -> dict | None:
    """The one setting axis that best separates passing from failing cases, as a sentence and as
    a rule another run's cases can be checked against (`scope_fit`): for a category, the values
    where most cases pass against the rest; for a number, a threshold."""
    decided = [c for c in cases if c["outcome"] in ("pass", "fail")]
    if not decided or all(c["outcome"] == decided[0]["outcome"] for c in decided):
        return None
    best = None
    axes = [a for a in SCOPE_AXES if all(a in c["setting"] for c in decided)]
    for axis in axes:
        values = [c["setting"][axis] for c in decided]
        if len(set(values)) < 2:
            continue
        for rule in _splits(axis, values):
            fits, _ = scope_fit(rule, decided)
            if best is None or fits > best[1]:
                best = (rule, fits)
    passing = sum(c["outcome"] == "pass" for c in decided)
    if best is None or best[1] < max(passing, len(decided) - passing):
        # every split fits fewer cases than "holds everywhere" (or "nowhere"): say so, name no axis
        failing = [c["case"] for c in decided if c["outcome"] == "fail"]
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        return {
            "axis": None,
            "text": f"no one setting axis separates the cases: {passing} of {len(decided)} "
            f"decided cases pass; it fails at {'; '.join(failing[:3])}{more}",
            "fits": max(passing, len(decided) - passing),
            "decided": len(decided),
            "holds_where": "no one axis",
            "rule": None,
            "cases_inside": [c["case"] for c in decided if c["outcome"] == "pass"],
        }
    rule, fits = best
    return {
        "axis": rule["axis"],
        "text": f"holds {rule['where']}; fails {rule['elsewhere']} "
        f"({fits} of {len(decided)} decided cases fit this split)",
        "fits": fits,
        "decided": len(decided),
        "holds_where": rule["where"],
        "rule": rule,
        "cases_inside": [c["case"] for c in decided if _inside(rule, c["setting"])],
    }


def _inside(rule: dict, setting: dict) -> bool:
    value = setting.get(rule["axis"])
    if "values" in rule:
        return value in rule["values"]
    if value is None:
        return False
    return value >= rule["at_least"] if "at_least" in rule else value < rule["below"]


def scope_fit(rule: dict, cases: list[dict]) -> tuple[int, int]:
    """How many of the decided cases a scope rule fits (passing inside, failing outside)."""
    decided = [c for c in cases if c["outcome"] in ("pass", "fail")]
    fits = sum(_inside(rule, c["setting"]) == (c["outcome"] == "pass") for c in decided)
    return fits, len(decided)


def _splits(axis: str, values: list) -> list[dict]:
    """Candidate rules on one axis: value sets for categories, thresholds for numbers."""
    name = {"dataset": "on", "experiment": "in", "layer": "in"}.get(axis)
    if isinstance(values[0], str) or axis in ("experiment", "dataset", "layer"):
        unique = sorted(set(values), key=str)
        shown = {u: f"W{u}" if axis == "layer" else str(u) for u in unique}
        prefix = name or f"at {AXIS_LABEL.get(axis, axis)} ="
        rules = []
        for size in range(1, len(unique)):
            for chosen in _subsets(unique, size):
                rules.append(
                    {
                        "axis": axis,
                        "values": list(chosen),
                        "where": f"{prefix} {', '.join(shown[u] for u in chosen)}",
                        "elsewhere": f"{prefix} "
                        + ", ".join(shown[u] for u in unique if u not in chosen),
                    }
                )
        return rules
    short = AXIS_LABEL.get(axis, axis)
    rules = []
    for high in sorted(set(values))[1:]:
        cut = format_number(high)
        above, below = f"at {short} ≥ {cut}", f"at {short} < {cut}"
        rules.append({"axis": axis, "at_least": high, "where": above, "elsewhere": below})
        rules.append({"axis": axis, "below": high, "where": below, "elsewhere": above})
    return rules


def _subsets(items: list, size: int) -> list[tuple]:
    from itertools import combinations

    return list(combinations(items, size))[:64]


# ---------------------------------------------------------------- evaluating the registry


def _cases_of(check: dict, experiments: list[str], tables: dict, alpha: float) -> list[Case]:
    cases = []
    for name in experiments:
        table = tables[name]
        needed = [check[k] for k in ("metric", "control_metric") if k in check]
        if any(metric not in table for metric in needed):
            continue  # e.g. Paper A's eps columns do not exist for deep nets
        cases += KINDS[check["kind"]](table, check, alpha)
    return cases


def _case_record(case: Case, outcome: dict) -> dict:
    record = {"case": case.name, "setting": case.setting, **case.extra, **outcome}
    record["passes"] = {"pass": True, "fail": False}.get(outcome["outcome"])
    for key in ("value", "median", "p", "grid_spread"):
        if key in record:
            record[key] = _finite_or_none(record[key])
    return record


def rule_text(check: dict) -> str:
    """The rule in one line, as the report shows it."""
    kind = check["kind"]
    test = f"{check['comparison']} {check.get('threshold', 0):g}"
    metric = check.get("metric", "test error")
    if "target" in check:
        metric = f"|{metric} − {check['target']:g}|"
    if "relative_to" in check:
        metric = f"{metric} / {check['relative_to']}"
    text = {
        "level": f"seed mean of {metric} {test}, per setting",
        "wd_effect": f"seed mean of {metric}(wd)/{metric}(wd = 0), paired by seed, {test}",
        "wd_benefit": "test error at wd = 0 minus at the best wd > 0 (picked on validation), "
        + (f"in [{check['band'][0]:g}, {check['band'][1]:g}]" if "band" in check else test),
        "trend": f"seed-combined Spearman trend of {metric} with {check.get('axis')} "
        f"({'falling' if check['comparison'].startswith('<') else 'rising'}), moving ≥ "
        f"{check.get('min_spread', 0):.0%}",
        "spread": f"per seed, (max − min)/max of {metric} over "
        f"{', '.join(check.get('axes', []))} {test}",
        "tau": f"per seed, Kendall τ({metric}, gap)"
        + (f" − best τ of {', '.join(check['versus'])}" if check.get("versus") else "")
        + f" {test}",
        "share": "share of members with "
        + ", ".join(f"{k} {v}" for k, v in check.get("condition", {}).items())
        + f" {test}",
    }[kind]
    if "control_metric" in check and kind == "trend":
        text += f"; and the same for {check['control_metric']}"
    elif "control_metric" in check:
        text += (
            f"; and {check['control_metric']} "
            f"{check.get('control_comparison', check['comparison'])} "
            f"{check.get('control_threshold', check['threshold']):g}"
        )
    conditions = []
    for column, condition in check.get("where", {}).items():
        if isinstance(condition, str) and CONDITION.match(condition):
            conditions.append(f"{column} {condition.strip()}")
        elif isinstance(condition, list):
            conditions.append(f"{column} in {{{', '.join(map(str, condition))}}}")
        else:
            conditions.append(f"{column} = {condition}")
    if conditions:
        text += "; where " + ", ".join(conditions)
    regime = check.get("regime", {})
    if regime:
        text += "; regime: " + ", ".join(
            f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in regime.items()
        )
    layers = check.get("layers", "first")
    if kind not in ("wd_benefit", "tau", "share") and layers != "first":
        text += f"; {layers} layers"
    return text


def excluded_members(tables: dict[str, pd.DataFrame], experiments: list[str]) -> list[dict]:
    """Members left out of every case (status not ok), with their reason."""
    rows = []
    for name in experiments:
        first = tables[name][tables[name]["layer"] == 1]
        for record in first[first["status"] != "ok"].to_dict(orient="records"):
            rows.append(
                {
                    "experiment": name,
                    "member": f"{record['group']}/{record['member']}",
                    "setting": label(record, ["batch_size", "lr", "weight_decay"], "first"),
                    "seed": int(record["seed"]),
                    "status": record["status"],
                    "reason": record["status_reason"],
                }
            )
    return rows


def _deciding(item: dict) -> bool:
    return item["check"].get("role", "decides") == "decides"


@dataclass
class Subject:
    """A claim or a concern: its checks' cases, and how their outcomes make one verdict."""

    kind: str  # "claim" or "concern"
    entry: dict
    checks: list[dict]  # {"check", "experiments", "cases": [Case]}

    def outcomes(self, chosen: dict | None = None) -> list[list[dict]]:
        """Every case's outcome, check by check: on all seeds, or on `chosen` seeds per
        experiment (a resample)."""
        return [
            [
                case.outcome(None if chosen is None else chosen[case.setting["experiment"]])
                for case in item["cases"]
            ]
            for item in self.checks
        ]

    def judge(self, outcomes: list[list[dict]]) -> tuple[str, str, str | None]:
        """The verdict, the headline the report leads with (a claim: its verdict; a concern: its
        finding) and, for a mixed verdict, where its scope says it holds: what stability
        resamples."""
        deciding = [
            {"outcome": result["outcome"], "setting": case.setting, "case": case.name}
            for item, results in zip(self.checks, outcomes, strict=True)
            if _deciding(item)
            for case, result in zip(item["cases"], results, strict=True)
        ]
        per_check = [
            verdict_of([r["outcome"] for r in results])
            for item, results in zip(self.checks, outcomes, strict=True)
            if _deciding(item)
        ]
        if self.entry.get("combine") == "all" and per_check:
            verdict = all_of(per_check)
        else:
            verdict = verdict_of([d["outcome"] for d in deciding])
        where = (scope(deciding) or {}).get("holds_where") if verdict == "mixed" else None
        if self.kind == "claim":
            return verdict, verdict, where
        if not self.entry.get("checks"):
            return verdict, "context", None
        decided = [d for d in deciding if d["outcome"] in ("pass", "fail")]
        return verdict, finding_of(verdict, decided, self.entry), where


def finding_of(verdict: str, decided: list[dict], entry: dict) -> str:
    """A concern's finding from its checks' verdict: `borne_out_when` names the verdict that
    bears it out; a mixed verdict bears it out when at least `borne_out_share` of the decided
    cases point that way."""
    if verdict == "inconclusive":
        return "undecided"
    when = entry.get("borne_out_when", "supported")
    if verdict != "mixed":
        return "borne out" if verdict == when else "not borne out"
    toward = "pass" if when == "supported" else "fail"
    share = sum(c["outcome"] == toward for c in decided) / len(decided)
    return "borne out" if share >= entry.get("borne_out_share", 0.5) else "not borne out"


def _subjects(registry, config, tables, alpha) -> list[Subject]:
    by_claim = claim_experiments(registry, config)
    subjects = []
    for kind, group in (("claim", registry["claims"]), ("concern", registry["concerns"])):
        for subject_id in sorted(group, key=id_order):
            entry = group[subject_id]
            checks = []
            for check in entry.get("checks", []):
                wanted = check.get("experiments") or by_claim.get(subject_id, [])
                experiments = [e for e in tables if e in wanted]  # the tables' (config) order
                checks.append(
                    {
                        "check": check,
                        "experiments": experiments,
                        "cases": _cases_of(check, experiments, tables, alpha),
                    }
                )
            subjects.append(Subject(kind, {"id": subject_id, **entry}, checks))
    return subjects


def reachable_outcomes(checks: list[dict]) -> list[str]:
    """What the rule could return on this run's grid: a case whose design can reach p < alpha
    (with every seed of its setting in the regime) can pass or fail; a claim with one such case
    can be supported or contradicted, with two also mixed; inconclusive always."""
    powered = 0
    for item in checks:
        if _deciding(item):
            powered += sum(case["design_powered"] for case in item["cases"])
    reach = ["supported", "contradicted"] if powered else []
    return reach + (["mixed"] if powered >= 2 else []) + ["inconclusive"]


def _design_powered(outcome: dict) -> bool:
    """Could this case be decided on this grid, had every member reached the regime?"""
    return outcome["outcome"] != "underpowered" and not outcome.get("by_design", False)


def stability(
    subjects: list[Subject], observed: list[tuple], tables: dict, resamples: int, seed: int
) -> list[dict]:
    """Per subject: the share of seed resamples (with replacement, within each experiment, so
    pairs stay paired) whose headline (a claim's verdict, a concern's finding) agrees with the
    `observed` one, the most common other one, and for a mixed verdict the share whose scope
    holds where the observed scope does."""
    rng = np.random.default_rng(seed)
    experiment_seeds = {name: sorted(table["seed"].unique()) for name, table in tables.items()}
    counts = [Counter() for _ in subjects]
    scopes = [Counter() for _ in subjects]
    for _ in range(resamples):
        chosen = {
            name: list(rng.choice(seeds, size=len(seeds), replace=True))
            for name, seeds in experiment_seeds.items()
        }
        for index, subject in enumerate(subjects):
            _, headline, where = subject.judge(subject.outcomes(chosen))
            counts[index][headline] += 1
            scopes[index][where] += 1
    result = []
    for (_, headline, where), count, scope_count in zip(observed, counts, scopes, strict=True):
        share = count[headline] / resamples if resamples else 1.0
        others = [(n, v) for v, n in count.items() if v != headline]
        record = {
            "agreement": share,
            "resamples": resamples,
            "stable": share >= STABLE,
            "competing": max(others)[1] if others else None,
            "counts": dict(count),
            "scope_agreement": None,
            "scope_stable": True,
            "competing_scope": None,
        }
        if where is not None:
            scope_share = scope_count[where] / resamples if resamples else 1.0
            rivals = [(n, w) for w, n in scope_count.items() if w not in (where, None)]
            record |= {
                "scope_agreement": scope_share,
                "scope_stable": scope_share >= STABLE,
                "competing_scope": max(rivals)[1] if rivals else None,
            }
        result.append(record)
    return result


def check_record(item: dict, results: list, alpha: float) -> dict:
    """One check of a subject as claims.json holds it: its rule in words, every case's record,
    the counts, the check's own verdict and scope, and the statistic it reads."""
    records = []
    for case, outcome in zip(item["cases"], results, strict=True):
        record = _case_record(case, outcome)
        record["design_powered"] = _design_powered(outcome)
        records.append(record)
    check_verdict = verdict_of([r["outcome"] for r in records])
    return {
        "rule": rule_text(item["check"]),
        "explain": item["check"].get("explain", ""),
        "role": item["check"].get("role", "decides"),
        "check": item["check"],
        "experiments": item["experiments"],
        "cases": records,
        "counts": dict(Counter(r["outcome"] for r in records)),
        "verdict": check_verdict,
        "scope": scope(records) if check_verdict == "mixed" else None,
        "statistic": statistic_words(item["check"]),
        "needs": needs_words(item["check"], alpha),
        "observed": values_words(item["check"], records),
    }


def subject_record(
    subject: Subject,
    outcomes: list,
    judged: tuple,
    steady: dict,
    context: dict,
) -> dict:
    """One claim's or concern's record: its checks, counts, scope, stability and case closest
    to flipping, then the claim's (paper, verdict, evidence, excluded members) or the concern's
    (reviewers, finding) own fields. `context`: registry, by_claim, tables and alpha."""
    verdict, headline, _ = judged
    alpha, entry = context["alpha"], subject.entry
    checks = [
        check_record(item, results, alpha)
        for item, results in zip(subject.checks, outcomes, strict=True)
    ]
    used = list(dict.fromkeys(e for item in subject.checks for e in item["experiments"]))
    deciding = [c for ch in checks if ch["role"] == "decides" for c in ch["cases"]]
    record = {
        "id": entry["id"],
        "checks": checks,
        "experiments": used,
        "stability": steady,
        "counts": dict(Counter(c["outcome"] for c in deciding)),
        "reachable": reachable_outcomes(checks),
        "scope": scope(deciding) if verdict == "mixed" else None,
        "flip": closest_to_flipping(subject, outcomes, alpha),
    }
    if subject.kind == "concern":
        return record | {
            "reviewers": entry["reviewers"],
            "concern": entry["concern"],
            "context": entry.get("context", ""),
            "borne_out_when": entry.get("borne_out_when", "supported"),
            "borne_out_share": entry.get("borne_out_share", 0.5),
            "verdict": verdict,
            "finding": headline,
            "evidence": evidence_line(checks) if entry.get("checks") else "",
        }
    registry = context["registry"]
    bears = context["by_claim"].get(entry["id"]) or used
    return record | {
        "paper": entry["paper"],
        "source": entry["source"],
        "claim": entry["claim"],
        "note": entry.get("note", ""),
        "paper_setting": entry.get("paper_setting", ""),
        "concerns": [{"id": c, **_concern_text(registry, c)} for c in entry["concerns"]],
        "figures": entry.get("figures", []),
        "verdict": verdict,
        "shown_verdict": verdict if steady["stable"] else "unstable",
        "scope_note": _scope_note(steady),
        "evidence": evidence_line(checks) if bears else "no experiment of this config bears on it",
        "excluded": excluded_members(context["tables"], used),
    }


def evaluate_claims(
    registry: dict,
    config: dict,
    tables: dict[str, pd.DataFrame],
    resamples: int = RESAMPLES,
    alpha: float = statistics.ALPHA,
) -> dict:
    """Every claim's verdict and every concern's finding, with checks, cases (decided,
    undecided with reason, underpowered with the seeds needed), scope, stability and excluded
    members; `results/claims.json` is this dict."""
    tables = {name: with_derived(table) for name, table in tables.items()}
    subjects = _subjects(registry, config, tables, alpha)
    outcomes_of = [subject.outcomes() for subject in subjects]
    judged = [s.judge(o) for s, o in zip(subjects, outcomes_of, strict=True)]
    stable = stability(subjects, judged, tables, resamples, RESAMPLE_SEED)
    context = {
        "registry": registry,
        "by_claim": claim_experiments(registry, config),
        "tables": tables,
        "alpha": alpha,
    }
    out = {"papers": registry["papers"], "claims": [], "concerns": [], "alpha": alpha}
    for subject, outcomes, verdict, steady in zip(
        subjects, outcomes_of, judged, stable, strict=True
    ):
        record = subject_record(subject, outcomes, verdict, steady, context)
        out["claims" if subject.kind == "claim" else "concerns"].append(record)
    answered: dict[str, list[str]] = {}
    for claim in out["claims"]:
        for concern in claim["concerns"]:
            answered.setdefault(concern["id"], []).append(claim["id"])
    for concern in out["concerns"]:
        concern["claims"] = answered.get(concern["id"], [])
    out["summary"] = summary(out)
    return out


def _scope_note(steady: dict) -> str:
    """'' when the scope is stable; else how often resamples put it elsewhere."""
    if steady["scope_stable"]:
        return ""
    return f"scope unstable: {steady['scope_agreement']:.0%} of resamples agree" + (
        f"; the competing scope holds {steady['competing_scope']}"
        if steady["competing_scope"]
        else ""
    )


def _concern_text(registry: dict, concern_id: str) -> dict:
    entry = registry["concerns"][concern_id]
    return {"reviewers": entry["reviewers"], "concern": entry["concern"]}


def evidence_line(checks: list[dict]) -> str:
    """One line for the summary table: the deciding cases by outcome, and the scope."""
    parts = []
    for check in checks:
        if check["role"] != "decides":
            continue
        tally = Counter(c["outcome"] for c in check["cases"])
        metric = check["check"].get("metric") or {"share": "share of members"}.get(
            check["check"]["kind"], "test error"
        )
        if not check["cases"]:
            parts.append(f"{metric}: no case")
            continue
        text = f"{metric}: {tally['pass']} pass, {tally['fail']} fail"
        rest = [f"{tally[o]} {o}" for o in ("undecided", "underpowered") if tally[o]]
        parts.append(
            text + (f" ({', '.join(rest)})" if rest else "") + f" of {len(check['cases'])}"
        )
    return "; ".join(parts) if parts else "no deciding check"


def summary(result: dict) -> dict:
    """The "how sure are we" numbers: stable verdicts, verdicts resting on underpowered or
    undecided cases, and the seeds a paper-scale run would need."""
    claims = result["claims"]
    stable = [c["id"] for c in claims if c["stability"]["stable"]]
    weak = [c["id"] for c in claims if c["counts"].get("underpowered")]
    undecided = []  # more cases undecided by regime or power than decided (design gaps aside)
    for claim in claims:
        cases = [
            case
            for check in claim["checks"]
            if check["role"] == "decides"
            for case in check["cases"]
        ]
        open_cases = sum(
            case["outcome"] == "underpowered"
            or (case["outcome"] == "undecided" and not case.get("by_design"))
            for case in cases
        )
        if open_cases > sum(case["outcome"] in ("pass", "fail") for case in cases):
            undecided.append(claim["id"])
    needed = max(
        (
            case.get("seeds_needed") or 0
            for c in claims
            for check in c["checks"]
            for case in check["cases"]
            if case["outcome"] == "underpowered"
        ),
        default=0,
    )
    return {
        "claims": len(claims),
        "resamples": claims[0]["stability"]["resamples"] if claims else 0,
        "stable_at": STABLE,
        "stable": stable,
        "unstable": [c["id"] for c in claims if not c["stability"]["stable"]],
        "scope_unstable": [c["id"] for c in claims if not c["stability"]["scope_stable"]],
        "with_underpowered_cases": weak,
        "mostly_undecided": undecided,
        "seeds_needed": needed or None,
        "verdicts": dict(Counter(c["verdict"] for c in claims)),
        "findings": dict(Counter(c["finding"] for c in result["concerns"])),
    }


def _deciding_cases(entry: dict) -> list[dict]:
    return [
        c for ch in entry["checks"] if ch.get("role", "decides") == "decides" for c in ch["cases"]
    ]


def _scopes_agree(first: dict, second: dict) -> bool:
    """Both runs' scopes hold in both runs: each scope rule fits the other run's decided cases
    within SCOPE_SLACK of the split that run found best (the same sentence, or two near-equal
    descriptions of the same cases)."""
    one, two = first.get("scope"), second.get("scope")
    if not one or not two:
        return one == two
    if one["holds_where"] == two["holds_where"]:
        return True
    if one["rule"] is None or two["rule"] is None:
        return False
    for rule, run in ((one["rule"], second), (two["rule"], first)):
        fits, decided = scope_fit(rule, _deciding_cases(run))
        if fits < run["scope"]["fits"] - math.ceil(SCOPE_SLACK * decided):
            return False
    return True


def compare(first: dict, second: dict) -> list[dict]:
    """Two runs' claims.json (e.g. disjoint seed sets on the same grids), claim by claim and
    concern by concern: `agree` (same verdict; a mixed one with the same scope), `flagged`
    (different, but unstable in at least one run: the report warned), or `flip` (different and
    stable in both: a verdict that moved silently) and `scope differs` (mixed in both, scoped
    differently)."""
    rows = []
    for group, key in (("claims", "verdict"), ("concerns", "finding")):
        other = {entry["id"]: entry for entry in second[group]}
        for entry in first[group]:
            twin = other.get(entry["id"])
            if twin is None:
                continue
            steady = entry["stability"]["stable"] and twin["stability"]["stable"]
            scopes = [(e.get("scope") or {}).get("text") for e in (entry, twin)]
            if entry[key] != twin[key]:
                status = "flip" if steady else "flagged"
            elif entry["verdict"] == "mixed" and not _scopes_agree(entry, twin):
                scoped = entry["stability"]["scope_stable"] and twin["stability"]["scope_stable"]
                status = "scope differs" if steady and scoped else "flagged"
            else:
                status = "agree"
            rows.append(
                {
                    "id": entry["id"],
                    "first": entry[key],
                    "second": twin[key],
                    "first_agreement": entry["stability"]["agreement"],
                    "second_agreement": twin["stability"]["agreement"],
                    "first_scope": scopes[0],
                    "second_scope": scopes[1],
                    "status": status,
                }
            )
    return rows


# ---------------------------------------------------------------- words for the report


def statistic_words(check: dict) -> str:
    """What a check's cases measure, in words, with the statistic's name."""
    kind, metric = check["kind"], check.get("metric", "test error")
    if "target" in check:
        metric = f"|{metric} − {check['target']:g}|"
    if "relative_to" in check:
        metric = f"{metric} / {check['relative_to']}"
    return {
        "level": f"seed mean of {metric}",
        "wd_effect": f"seed mean of {metric}(wd) / {metric}(wd = 0)",
        "wd_benefit": "test error at wd = 0 − at the best wd > 0 (picked on validation)",
        "trend": f"seed-combined Spearman ρ({check.get('axis')}, {metric})",
        "spread": f"(max − min)/max of {metric} over {', '.join(check.get('axes', []))}",
        "tau": f"Kendall τ({metric}, gap)"
        + (f" − best τ of {', '.join(check['versus'])}" if check.get("versus") else ""),
        "share": "share of members with "
        + ", ".join(f"{k} {v}" for k, v in check.get("condition", {}).items()),
    }[kind]


SYMBOL = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def needs_words(check: dict, alpha: float) -> str:
    """The threshold a case must clear, with every condition of the rule."""
    kind = check["kind"]
    check = {**check, "comparison": SYMBOL.get(check.get("comparison"), check.get("comparison"))}
    if "control_comparison" in check:
        check["control_comparison"] = SYMBOL[check["control_comparison"]]
    if kind == "trend":
        sign = "< 0 (falling)" if check["comparison"] in ("<", "≤") else "> 0 (rising)"
        text = f"ρ {sign} at p < {alpha:g} and a grid spread ≥ {check.get('min_spread', 0):.0%}"
    elif "band" in check:
        low, high = check["band"]
        text = f"not significantly < {low:g} and a 95 % CI upper bound ≤ {high:g}"
    elif kind == "share":
        text = f"{check['comparison']} {check['threshold']:g} (binomial test, p < {alpha:g})"
    else:
        test = f"sign-flip test over seeds, p < {alpha:g}"
        text = f"{check['comparison']} {check['threshold']:g} ({test})"
    if "control_metric" in check:
        if kind == "trend":
            text += f"; the same for {check['control_metric']}"
        else:
            comparison = check.get("control_comparison", check["comparison"])
            threshold = check.get("control_threshold", check["threshold"])
            text += f"; and {check['control_metric']} {comparison} {threshold:g}"
    return text


def _span(values: list[float], fmt) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)} to {fmt(high)}"


def _short(value: float) -> str:
    return f"{value:.3g}"


def values_words(check: dict, records: list[dict]) -> str:
    """The decided cases' values (range), and for trends their grid spread."""
    decided = [r for r in records if r["outcome"] in ("pass", "fail")]
    shown = decided or [r for r in records if r.get("value") is not None]
    if not shown:
        return "no case has a value"
    text = _span([r.get("value") for r in shown], _short)
    if check["kind"] == "trend":
        text = (
            f"{text}, grid spread {_span([r.get('grid_spread') for r in shown], '{:.1%}'.format)}"
        )
    return text + ("" if decided else " (none decided)")


def conditions(check: dict, record: dict, alpha: float) -> list[dict]:
    """Every condition a decided case was judged on, with how far it is from its line (`margin`,
    |log(value / line)|: 0 is on the line). The p-value is one; a trend's grid spread, a band's
    upper bound and the control's p are the others."""
    out = []
    if record.get("p") is not None and record["p"] > 0:
        out.append({"name": "p", "value": record["p"], "line": alpha})
    if check["kind"] == "trend" and record.get("grid_spread"):
        out.append(
            {"name": "grid spread", "value": record["grid_spread"], "line": check["min_spread"]}
        )
    if "band" in check and record.get("ci") and record["ci"][1] is not None:
        high = check["band"][1]
        upper = record["ci"][1]
        if upper > 0 and high > 0:
            out.append({"name": "95 % CI upper bound", "value": upper, "line": high})
    control = record.get("control") or {}
    if control.get("p"):
        out.append(
            {"name": f"p of {check['control_metric']}", "value": control["p"], "line": alpha}
        )
    for item in out:
        if item["value"] > 0 and item["line"] > 0:
            item["margin"] = abs(math.log(item["value"] / item["line"]))
    return [item for item in out if "margin" in item]


def closest_to_flipping(subject: Subject, outcomes: list[list[dict]], alpha: float) -> dict | None:
    """The decided case nearest its line over every condition of its rule, and the verdict if
    that one case came out the other way: how close the verdict is to flipping."""
    verdict = subject.judge(outcomes)[0]
    best = None
    for index, (item, results) in enumerate(zip(subject.checks, outcomes, strict=True)):
        if not _deciding(item):
            continue
        for position, (case, result) in enumerate(zip(item["cases"], results, strict=True)):
            if result["outcome"] not in ("pass", "fail"):
                continue
            for condition in conditions(item["check"], result, alpha):
                if best is None or condition["margin"] < best[0]:
                    best = (condition["margin"], index, position, case.name, condition)
    if best is None:
        return None
    _, index, position, name, condition = best
    changed = [list(results) for results in outcomes]
    flipped = {"pass": "fail", "fail": "pass"}[changed[index][position]["outcome"]]
    changed[index][position] = {**changed[index][position], "outcome": flipped}
    then = subject.judge(changed)[0]
    return {
        "case": name,
        "check": index + 1,
        "condition": condition["name"],
        "value": condition["value"],
        "line": condition["line"],
        "outcome": outcomes[index][position]["outcome"],
        "verdict_if_flipped": then,
        "text": f"Closest to its line: {name} (rule {index + 1}), {condition['name']} "
        f"{condition['value']:.3g} against {condition['line']:.3g}; were it to {flipped}, the "
        + (f"verdict would be {then}" if then != verdict else f"verdict would stay {verdict}"),
    }
