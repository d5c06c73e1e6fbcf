"""The statistics tables of one experiment (`results/statistics/<experiment>.json`): what the
report shows beside the verdicts, computed once by the workflow's `statistics` rule so the report
only renders. Seeds are samples here too (science.md, principle 3):

- `trends`: per hidden layer (W1 of a two-layer net), swept axis, rank metric and slice (every
  other axis fixed), the seed-combined Spearman trend (rankbias.statistics.trend_test) with its
  p-value in each direction and how far the rank moves over the grid;
- `tau`: Kendall's τ (and granulated τ) of each measure with the gap over the healthy models;
- `wd_benefit`: per matched setting, the wd > 0 with the lowest mean validation error against
  wd = 0, paired by seed on the test error: effect, 95 % interval and one-sided p.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankbias import statistics
from rankbias.generalization import tau_table
from rankbias.registry import AXIS_LABEL, HYPER_COLUMNS

TREND_AXES = ("batch_size", "lr", "weight_decay", "depth")
TREND_METRICS = ("effective_rank", "effective_rank_learned", "rank_galanti")
MIN_POINTS = 3  # a rank correlation over two points is always ±1


def with_derived(table: pd.DataFrame) -> pd.DataFrame:
    """Columns the rules read that are functions of measured ones (documented in config/README):
    `eps_rel` = eps_batch_max / (wd·‖V‖_F), the batch gradient over the decay term's size at
    stationarity; `units_switching` = 1 − units_dead − units_linear, V's units that switch on
    the training set; `test_error` / `val_error` = 1 − accuracy (classification) or the loss."""
    table = table.copy()
    if "eps_batch_max" in table:
        scale = table["weight_decay"].astype(float) * table["fro_norm"].astype(float)
        table["eps_rel"] = table["eps_batch_max"].astype(float) / scale.where(scale > 0)
    if {"units_dead", "units_linear"} <= set(table):
        table["units_switching"] = 1 - table["units_dead"] - table["units_linear"]
    return with_errors(table)


def _healthy(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def _slice_name(row: pd.Series, fixed: list[str]) -> str:
    return ", ".join(f"{AXIS_LABEL.get(a, a)}={row[a]:g}" for a in fixed) or "–"


def trend_rows(table: pd.DataFrame) -> list[dict]:
    """Seed-combined Spearman trends of every rank metric with every swept axis, per slice."""
    rows_in = _healthy(table)
    rows_in = rows_in[rows_in["layer"] < rows_in["depth"]]
    axes = [a for a in TREND_AXES if a in rows_in and rows_in[a].nunique() >= MIN_POINTS]
    metrics = [m for m in TREND_METRICS if m in rows_in]
    out = []
    for axis in axes:
        subsets = [
            ("wd > 0", rows_in[rows_in["weight_decay"] > 0]),
            ("wd = 0", rows_in[rows_in["weight_decay"] == 0]),
        ]
        if axis == "weight_decay":
            subsets = [("all", rows_in)]
        for subset, part in subsets:
            keys = [c for c in HYPER_COLUMNS if c in part and c not in (axis, "epochs")]
            varied = [a for a in AXIS_LABEL if a in keys and part[a].nunique() > 1]
            for _, block in part.groupby([*keys, "layer"], sort=True):
                for metric in metrics:
                    grid = block.pivot_table(index="seed", columns=axis, values=metric).dropna()
                    if grid.shape[1] < MIN_POINTS or grid.empty:
                        continue
                    values = np.array([float(c) for c in grid.columns])
                    strata = [(values, grid.loc[s].to_numpy(float)) for s in grid.index]
                    falling = statistics.trend_test(strata, "less")
                    medians = grid.median().to_numpy()
                    top = medians.max()
                    out.append(
                        {
                            "dataset": block["dataset"].iloc[0],
                            "layer": f"W{int(block['layer'].iloc[0])}",
                            "subset": subset,
                            "slice": _slice_name(block.iloc[0], varied),
                            "axis": axis,
                            "metric": metric,
                            "rho": falling["effect"],
                            "p_falling": falling["p"],
                            "p_rising": falling["p_opposite"],
                            "seeds": falling["n"],
                            "points": falling["k"],
                            "grid_spread": float((top - medians.min()) / top) if top > 0 else None,
                        }
                    )
    return out


def with_errors(table: pd.DataFrame) -> pd.DataFrame:
    """`test_error` and `val_error`: 1 − accuracy for classifiers, the loss for regressors."""
    table = table.copy()
    classify = table["loss"] == "ce"
    for split in ("test", "val"):
        if f"{split}_acc" in table:
            loss = table.get(f"{split}_loss", np.nan)
            table[f"{split}_error"] = np.where(classify, 1 - table[f"{split}_acc"], loss)
    return table


def matched_errors(rows: pd.DataFrame, keys: list[str]):
    """Per matched setting (`keys` fixed) with wd = 0 and wd > 0: its first row and a seed x
    (split, wd) table of test and validation errors (same seed: same init and data order)."""
    for _, group in rows.groupby(keys, sort=True):
        if (group["weight_decay"] == 0).any() and (group["weight_decay"] > 0).any():
            errors = group.pivot_table(
                index="seed", columns="weight_decay", values=["val_error", "test_error"]
            )
            yield group, errors


def benefit_on_validation(errors: pd.DataFrame, seeds: list) -> dict | None:
    """The wd > 0 with the lowest mean validation error over `seeds` (repeats allowed), and per
    seed the test error at wd = 0 minus at that wd; None without a validation split."""
    chosen = errors.loc[seeds]
    validation = chosen["val_error"].drop(columns=0.0, errors="ignore").mean()
    if validation.isna().all():
        return None
    best = float(validation.idxmin())
    return {
        "best_wd": best,
        "differences": (chosen["test_error"][0.0] - chosen["test_error"][best]).to_numpy(),
        "error_wd0": float(chosen["test_error"][0.0].mean()),
        "error_best": float(chosen["test_error"][best].mean()),
    }


def wd_benefit_rows(table: pd.DataFrame) -> list[dict]:
    """Best wd > 0 on validation against wd = 0, paired by seed on the test error."""
    rows_in = _healthy(table[table["layer"] == 1])
    if "val_acc" not in rows_in:
        return []
    rows_in = with_errors(rows_in)
    keys = [c for c in HYPER_COLUMNS if c in rows_in and c not in ("weight_decay", "epochs")]
    out = []
    for group, errors in matched_errors(rows_in, keys):
        benefit = benefit_on_validation(errors, list(errors.index))
        if benefit is None:
            continue
        test = statistics.paired_test(benefit.pop("differences"), "greater")
        out.append(
            {
                **{k: group[k].iloc[0] for k in keys if group[k].nunique() == 1},
                **benefit,
                "improvement": test["effect"],
                "ci_low": test["ci"][0],
                "ci_high": test["ci"][1],
                "p": test["p"],
                "seeds": test["n"],
                "test": test["test"],
            }
        )
    return out


def _plain(records: list[dict]) -> list[dict]:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    out = []
    for record in records:
        clean = {}
        for key, value in record.items():
            if isinstance(value, (np.generic,)):
                value = value.item()
            if isinstance(value, float) and not np.isfinite(value):
                value = None
            clean[key] = value
        out.append(clean)
    return out


def experiment_statistics(table: pd.DataFrame) -> dict:
    """Everything `results/statistics/<experiment>.json` holds."""
    return {
        "trends": _plain(trend_rows(table)),
        "tau": _plain(tau_table(table).to_dict(orient="records")),
        "wd_benefit": _plain(wd_benefit_rows(table)),
    }
