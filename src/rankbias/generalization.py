"""Does a measure track the generalization gap, and does weight decay buy test error?

Per experiment, over the models that trained normally (status ok; one row per model, the first
layer's rank metrics): Kendall's tau-b between each measure and the gap, and the granulated tau of
Jiang et al. (2019, "Fantastic generalization measures"): for each varied hyper-parameter, tau
within every group of models that differ only in it, averaged over groups, then over
hyper-parameters. A bound is vacuous for a model when it is at least the trivial value of what it
bounds: 1 for a classifier's error gap, the constant predictor's loss for a regressor's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankbias.vocabulary import MODEL_AXES

MEASURES = (
    "rank_galanti",
    "effective_rank",
    "stable_rank",
    "residual_2",
    "bound_paramcount_full",
    "bound_paramcount_rank2",
    "bound_paramcount_rankr",
    "bound_grs",
    "bound_spectral",
)
VACUITY_BOUNDS = ("bound_grs", "bound_spectral")


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either variable handled as scipy does); NaN below 2 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    upper = np.triu_indices(len(x), k=1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    tied_x, tied_y = (dx == 0).sum(), (dy == 0).sum()
    pairs = len(dx)
    denominator = np.sqrt((pairs - tied_x) * (pairs - tied_y))
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def models(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model that trained normally: its first-layer row."""
    return table[(table["layer"] == 1) & (table["status"] == "ok")]


def granulated_tau(rows: pd.DataFrame, measure: str, target: str = "gap") -> float:
    axes = [a for a in MODEL_AXES if a in rows and rows[a].nunique() > 1]
    per_axis = []
    for axis in axes:
        fixed = [a for a in (*axes, "seed") if a != axis and a in rows]
        groups = rows.groupby(fixed) if fixed else [(None, rows)]
        taus = [kendall_tau(g[measure], g[target]) for _, g in groups if g[axis].nunique() > 1]
        taus = [t for t in taus if np.isfinite(t)]
        if taus:
            per_axis.append(float(np.mean(taus)))
    return float(np.mean(per_axis)) if per_axis else float("nan")


def trivial_value(rows: pd.DataFrame) -> pd.Series:
    """What a vacuous bound is at least: 1 (error gap) or the constant predictor's loss."""
    return pd.Series(np.where(rows["loss"] == "ce", 1.0, rows["const_loss"]), index=rows.index)


def tau_table(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau and granulated tau of each measure with the gap, and vacuity counts."""
    rows = models(table)
    result = []
    for measure in MEASURES:
        if measure not in rows or rows[measure].isna().all():
            continue
        finite = rows[np.isfinite(rows[measure])]
        entry = {
            "measure": measure,
            "models": len(finite),
            "tau": kendall_tau(finite[measure], finite["gap"]),
            "granulated_tau": granulated_tau(finite, measure),
            "vacuous": "–",
        }
        if measure in VACUITY_BOUNDS:
            vacuous = (rows[measure] >= trivial_value(rows)) & rows[measure].notna()
            entry["vacuous"] = f"{int(vacuous.sum())}/{int(rows[measure].notna().sum())}"
        result.append(entry)
    return pd.DataFrame(result)
