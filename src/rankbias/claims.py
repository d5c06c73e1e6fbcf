"""Verdicts: measured tables -> supported / contradicted / mixed / inconclusive, per claim.

A claim's rule (config/claims.yaml) is a list of checks. Each check forms *cases* from the tables
(a setting, a slice of a grid, a matched pair of settings, ...), gives every case one number (its
statistic) and compares it with the threshold. The verdict pools the decided cases of all checks:
every one passes -> supported, none -> contradicted, some -> mixed (the failing cases are named),
no case decided -> inconclusive. Only members with status `ok` enter a case: a diverged or
collapsed network has no low-rank bias to show, and the members left out are listed with reasons.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rankbias.figures import AXIS_LABEL
from rankbias.generalization import kendall_tau, matched_weight_decay
from rankbias.paper_b import spearman
from rankbias.plan import format_number
from rankbias.registry import (  # noqa: F401 - re-exported: the registry's names are claims'
    COMPARISONS,
    CONDITION,
    CONDITION_OPS,
    HISTORY_METRICS,
    HYPER_COLUMNS,
    METRICS,
    MIN_TREND_SETTINGS,
    STATISTICS,
    VERDICTS,
    ClaimError,
    check_registry,
    claim_experiments,
    id_order,
)

SEED_STATISTICS = {"median": np.median, "mean": np.mean, "max": np.max, "min": np.min}


# ---------------------------------------------------------------- selecting rows


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
        match = CONDITION.match(condition) if isinstance(condition, str) else None
        if match:
            keep = CONDITION_OPS[match.group(1)](rows[column].astype(float), float(match.group(2)))
        elif isinstance(condition, list):
            keep = rows[column].isin(condition)
        else:
            keep = rows[column] == condition
        rows = rows[keep]
    return rows


def _setting_keys(rows: pd.DataFrame) -> list[str]:
    """What makes a setting: every hyper-parameter but the seed; not `epochs`, which follows from
    the batch size when a run fixes its number of steps."""
    return ["experiment", *(c for c in HYPER_COLUMNS if c in rows and c != "epochs"), "layer"]


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


def _varying(rows: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    return [a for a in AXIS_LABEL if a in rows and a not in exclude and rows[a].nunique() > 1]


def _case(name: str, value: float, n: int, **extra) -> dict:
    """`n`: how many numbers the case's statistic summarises (seeds, settings or models)."""
    return {"case": name, "value": _finite_or_none(value), "n": n, **extra}


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- the kinds of check


def level_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per setting and layer: a statistic over seeds of the metric (optionally its
    distance to `target`, or its ratio to `relative_to`)."""
    rows = select(table, check)
    rows = rows[rows["status"] == "ok"].copy()
    value = rows[check["metric"]].astype(float)
    if "target" in check:
        value = (value - check["target"]).abs()
    if "relative_to" in check:
        value = value / rows[check["relative_to"]].astype(float)
    rows["_value"] = value
    extra = (check["metric"], check.get("relative_to"))
    if "relative_to" in check and {"rows", "cols"} <= set(rows):
        # a bound at or above the smaller side holds for every matrix: show both
        rows["min_side"] = rows[["rows", "cols"]].min(axis=1)
        extra += ("min_side",)
    return _over_seeds(rows, check, extra=extra)


def _over_seeds(
    rows: pd.DataFrame, check: dict, extra: tuple = (), named: tuple[str, ...] = ()
) -> list[dict]:
    """One case per setting and layer: the check's statistic over the seeds' `_value`s; `named`
    axes appear in the case's name even where they do not vary."""
    statistic = SEED_STATISTICS[check.get("statistic", "median")]
    shown = set(named) | set(_varying(rows))
    varying = [axis for axis in AXIS_LABEL if axis in shown]
    cases = []
    for _, group in rows.groupby(_setting_keys(rows), sort=True):
        values = group["_value"].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        details = {
            name: _finite_or_none(group[name].median()) for name in extra if name and name in group
        }
        value = statistic(values) if len(values) else float("nan")
        cases.append(
            _case(
                label(group.iloc[0], varying, check.get("layers", "first")),
                value,
                len(values),
                **details,
            )
        )
    return cases


def from_init_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per setting and layer: the metric at the end over its value at initialisation
    (epoch 0 of the history), per member, then a statistic over seeds."""
    metric = check["metric"]
    rows = select(table, check)
    rows = rows[rows["status"] == "ok"]
    keys = ["group", "member", "layer"]
    start = history[history["epoch"] == 0].set_index(keys)[metric].rename("init_value")
    rows = rows.join(start, on=keys, how="inner")
    rows = rows.assign(_value=rows[metric].astype(float) / rows["init_value"].astype(float))
    return _over_seeds(rows, check, extra=(metric, "init_value"))


def wd_effect_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per setting with wd > 0 and layer: the metric over its value at wd = 0 in the
    same setting and seed (same initialisation and data order), then a statistic over seeds."""
    metric = check["metric"]
    rows = select(table, check)
    rows = rows[rows["status"] == "ok"]
    keys = [k for k in _setting_keys(rows) if k != "weight_decay"] + ["seed"]
    without = rows[rows["weight_decay"] == 0].set_index(keys)[metric].rename("wd0_value")
    rows = rows[rows["weight_decay"] > 0].join(without, on=keys, how="inner")
    rows = rows.assign(_value=rows[metric].astype(float) / rows["wd0_value"].astype(float))
    return _over_seeds(rows, check, extra=(metric, "wd0_value"), named=("weight_decay",))


def _grid(table: pd.DataFrame, check: dict) -> pd.DataFrame:
    """Median over seeds of the metric per setting and layer, members with status ok."""
    rows = select(table, check)
    rows = rows[rows["status"] == "ok"]
    return rows.groupby(_setting_keys(rows))[check["metric"]].median().reset_index()


def _spread(values: pd.Series) -> float:
    top = values.max()
    return float((top - values.min()) / top) if top > 0 else float("nan")


def trend_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per slice (data set, layer, and every other varied axis fixed): Spearman's rho of
    `axis` with the metric's per-setting medians. A slice fails as "no effect" when the rank moves
    by less than `min_spread` of its largest value: a perfect rho over 125 vs 124 is no bias."""
    axis, metric = check["axis"], check["metric"]
    grid = _grid(table, check)
    varying = _varying(grid, exclude=(axis,))
    cases = []
    for _, part in grid.groupby([k for k in _setting_keys(grid) if k != axis], sort=True):
        name = label(part.iloc[0], varying, check.get("layers", "first"))
        spread = _spread(part[metric])
        extra = {"settings": len(part), "grid_spread": _finite_or_none(spread)}
        if part[axis].nunique() < MIN_TREND_SETTINGS:
            cases.append(
                _case(
                    name,
                    float("nan"),
                    0,
                    **extra,
                    reason=f"fewer than {MIN_TREND_SETTINGS} values of {axis}",
                )
            )
            continue
        rho = spearman(part[axis], part[metric])
        case = _case(name, rho, len(part), **extra)
        if part[metric].nunique() < 2 or spread < check.get("min_spread", 0):
            case |= {
                "passes": False,
                "reason": f"no effect: the rank moves by {spread:.1%} (< min_spread)",
            }
        cases.append(case)
    return cases


def spread_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per block where the `axes` vary and everything else is fixed: (max − min)/max of
    the metric's per-setting medians over the block (how far the rank moves at all)."""
    axes, metric = check["axes"], check["metric"]
    grid = _grid(table, check)
    varying = _varying(grid, exclude=tuple(axes))
    cases = []
    for _, part in grid.groupby([k for k in _setting_keys(grid) if k not in axes], sort=True):
        name = label(part.iloc[0], varying, check.get("layers", "first"))
        if len(part) < 2:
            cases.append(_case(name, float("nan"), 0, settings=1, reason="a single setting"))
            continue
        cases.append(_case(name, _spread(part[metric]), len(part), settings=len(part)))
    return cases


def wd_benefit_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per matched setting: test error at wd = 0 minus at the best wd > 0, paired by
    seed (`difference`), or that difference over its standard error (`z`)."""
    rows = select(table, {**check, "layers": "first"})
    matched = matched_weight_decay(rows)
    if matched.empty:
        return []
    varying = _varying(
        matched.assign(experiment=rows["experiment"].iloc[0]), exclude=("weight_decay",)
    )
    statistic = check.get("statistic", "difference")
    cases = []
    for record in matched.assign(experiment=rows["experiment"].iloc[0]).to_dict(orient="records"):
        value = record["difference"]
        if statistic == "z":
            se = record["difference_se"]
            value = value / se if se and np.isfinite(se) and se > 0 else float("nan")
        case = _case(
            label(record, varying, "first"),
            value,
            int(record["seeds"]),
            best_wd=record["best_wd"],
            error_wd0=_finite_or_none(record["error_wd0"]),
            error_best=_finite_or_none(record["error_best"]),
        )
        if statistic == "z" and case["value"] is None:
            case["reason"] = "one seed: no standard error"
        cases.append(case)
    return cases


def tau_cases(table: pd.DataFrame, history: pd.DataFrame, check: dict) -> list[dict]:
    """One case per data set: Kendall's tau (or granulated tau) of the metric with the gap over
    the models with status ok and a finite metric."""
    from rankbias.generalization import granulated_tau

    rows = select(table, {**check, "layers": "first"})
    rows = rows[(rows["status"] == "ok") & np.isfinite(rows[check["metric"]].astype(float))]
    cases = []
    for _, part in rows.groupby("dataset", sort=True):
        name = label(part.iloc[0], [], "first")
        if len(part) < MIN_TREND_SETTINGS:
            cases.append(_case(name, float("nan"), len(part), reason="fewer than 3 models"))
            continue
        if check.get("statistic", "tau") == "tau":
            value = kendall_tau(part[check["metric"]], part["gap"])
        else:
            value = granulated_tau(part, check["metric"])
        case = _case(name, value, len(part), models=len(part))
        if case["value"] is None:
            case["reason"] = f"{check['metric']} or the gap is constant over the models"
        cases.append(case)
    return cases


KINDS = {
    "level": level_cases,
    "from_init": from_init_cases,
    "wd_effect": wd_effect_cases,
    "trend": trend_cases,
    "spread": spread_cases,
    "wd_benefit": wd_benefit_cases,
    "tau": tau_cases,
}


# ---------------------------------------------------------------- verdicts


def decide(cases: list[dict], comparison: str, threshold: float) -> list[dict]:
    """Pass or fail per case; a case without a number stays undecided (passes = None)."""
    compare = COMPARISONS[comparison]
    for case in cases:
        if "passes" in case:
            continue
        case["passes"] = None if case["value"] is None else bool(compare(case["value"], threshold))
    return cases


def verdict_of(cases: list[dict]) -> str:
    decided = [case["passes"] for case in cases if case["passes"] is not None]
    if not decided:
        return "inconclusive"
    if all(decided):
        return "supported"
    return "contradicted" if not any(decided) else "mixed"


def flip(cases: list[dict], comparison: str, threshold: float) -> dict:
    """How far the threshold must move to change the verdict: the thresholds at which every case
    would pass and none would, over the cases decided by their value alone; and the case nearest
    the threshold."""
    values = [c["value"] for c in cases if c["value"] is not None and "reason" not in c]
    if not values:
        return {}
    low, high = min(values), max(values)
    nearest = min(
        (c for c in cases if c["value"] is not None and "reason" not in c),
        key=lambda c: abs(c["value"] - threshold),
    )
    upper = comparison.startswith("<")  # pass means value below the threshold
    return {
        "all_pass_at": high if upper else low,
        "none_pass_at": low if upper else high,
        "nearest_case": nearest["case"],
        "nearest_value": nearest["value"],
        "text": (
            f"every case would pass at a threshold {'≥' if upper else '≤'} "
            f"{_short(high if upper else low)} and none {'below' if upper else 'above'} "
            f"{_short(low if upper else high)}; nearest: {nearest['case']} at "
            f"{_short(nearest['value'])} (threshold {_short(threshold)})"
        ),
    }


def _short(value: float) -> str:
    return f"{value:.3g}"


def describe(check: dict) -> str:
    """The rule in one line, as the report shows it."""
    kind, test = check["kind"], f"{check['comparison']} {_short(check['threshold'])}"
    metric = check.get("metric", "test error")
    if "target" in check:
        metric = f"|{metric} − {_short(check['target'])}|"
    if "relative_to" in check:
        metric = f"{metric} / {check['relative_to']}"
    statistic = check.get("statistic", STATISTICS[kind][0])
    spread = f", and the rank moves ≥ {check['min_spread']:.0%}" if check.get("min_spread") else ""
    text = {
        "level": f"{statistic} over seeds of {metric} {test}, per setting",
        "from_init": f"{statistic} over seeds of {metric}(end)/{metric}(init) {test}, per setting",
        "wd_effect": f"{statistic} over seeds of {metric}(wd)/{metric}(wd = 0) {test}, per "
        "setting with wd > 0",
        "trend": f"Spearman rho({check.get('axis')}, {metric}) {test} per slice{spread}",
        "spread": f"(max − min)/max of {metric} over {', '.join(check.get('axes', []))} {test}",
        "wd_benefit": f"{statistic} of test error at wd = 0 minus best wd > 0, by seed, {test}",
        "tau": f"Kendall {statistic}({metric}, gap) {test} over healthy models",
    }[kind]
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
    layers = check.get("layers", "first")
    if kind not in ("wd_benefit", "tau") and layers != "first":
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


def evaluate_check(check: dict, experiments: list[str], tables: dict, histories: dict) -> dict:
    cases = []
    for name in experiments:
        table = tables[name]
        if "metric" in check and check["metric"] not in table:
            continue  # e.g. Paper A's eps columns do not exist for deep nets
        cases += KINDS[check["kind"]](table, histories.get(name), check)
    cases = decide(cases, check["comparison"], check["threshold"])
    decided = [c for c in cases if c["passes"] is not None]
    return {
        "rule": describe(check),
        "explain": check.get("explain", ""),
        "check": check,
        "experiments": experiments,
        "cases": cases,
        "holds_at": [c["case"] for c in decided if c["passes"]],
        "fails_at": [c["case"] for c in decided if not c["passes"]],
        "passed": sum(bool(c["passes"]) for c in decided),
        "decided": len(decided),
        "verdict": verdict_of(cases),
        "flip": flip(cases, check["comparison"], check["threshold"]),
    }


def evidence_line(checks: list[dict]) -> str:
    """One line for the summary table: how many cases pass, and where the claim fails."""
    parts = []
    for check in checks:
        values = [c["value"] for c in check["cases"] if c["value"] is not None]
        low, high = (min(values), max(values)) if values else (None, None)
        span = f" (values {_short(low)} to {_short(high)})" if values else ""
        span = f" (value {_short(low)})" if values and _short(low) == _short(high) else span
        metric = check["check"].get("metric", "test error")
        if not check["decided"]:
            parts.append(f"{metric}: no case could be decided")
            continue
        text = f"{metric}: {check['passed']} of {check['decided']} cases pass{span}"
        failing = [c["case"] for c in check["cases"] if c["passes"] is False]
        if check["passed"] and failing:
            text += (
                "; fails at "
                + ", ".join(failing[:2])
                + (f" and {len(failing) - 2} more" if len(failing) > 2 else "")
            )
        parts.append(text)
    return "; ".join(parts)


def evaluate(
    registry: dict,
    config: dict,
    tables: dict[str, pd.DataFrame],
    histories: dict[str, pd.DataFrame],
) -> dict:
    """Every claim's verdict with its checks, cases, excluded members and flip distances."""
    by_claim = claim_experiments(registry, config)
    claims = []
    for claim_id in sorted(registry["claims"], key=id_order):
        entry = registry["claims"][claim_id]
        checks = []
        used: list[str] = []
        for check in entry["checks"]:
            wanted = check.get("experiments") or by_claim[claim_id]
            experiments = [e for e in tables if e in wanted]  # the tables' (config) order
            used += [e for e in experiments if e not in used]
            checks.append(evaluate_check(check, experiments, tables, histories))
        cases = [case for check in checks for case in check["cases"]]
        verdict = verdict_of(cases)
        claims.append(
            {
                "id": claim_id,
                "paper": entry["paper"],
                "source": entry["source"],
                "claim": entry["claim"],
                "note": entry.get("note", ""),
                "concerns": [{"id": c, **registry["concerns"][c]} for c in entry["concerns"]],
                "figures": entry.get("figures", []),
                "experiments": used,
                "verdict": verdict,
                "evidence": evidence_line(checks)
                if used
                else "no experiment of this config bears on it",
                "checks": checks,
                "excluded": excluded_members(tables, used),
            }
        )
    return {"papers": registry["papers"], "concerns": registry["concerns"], "claims": claims}
