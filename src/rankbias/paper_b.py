"""Paper B's quantities: Theorem 3.3's rank bound (claim B7) and the norm ratio (claim B8).

Theorem 3.3: for large T, W_T/||W_T|| is within eps of a matrix of rank at most
m_l·B·log(2/eps)/(2·lr·λ) (m_l = 1 for a dense layer), with λ = wd/2 in our convention (science.md).
We compare it with two measured counts: the singular values of W/||W||_F above eps, and the smallest
rank r whose best approximation is within eps of W/||W||_F in Frobenius norm.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from rankbias.registry import GALANTI_EPS


def galanti_bound(
    batch_size: int, lr: torch.Tensor, weight_decay: torch.Tensor, eps: float
) -> torch.Tensor:
    """B·log(2/eps)/(2·lr·λ), λ = wd/2; infinite without weight decay."""
    lam = weight_decay.double() / 2
    return torch.where(lam > 0, batch_size * math.log(2 / eps) / (2 * lr.double() * lam), torch.inf)


def bound_columns(
    sigma: torch.Tensor, batch_size: int, lr: torch.Tensor, weight_decay: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per eps: the bound, #{sigma_i/||W||_F > eps}, and the Frobenius eps-rank of W/||W||_F."""
    energy = sigma.double().square()
    fro = energy.sum(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    tail = torch.cat([energy.flip(1).cumsum(1).flip(1), torch.zeros_like(fro)], dim=1).sqrt()
    columns = {}
    for eps in GALANTI_EPS:
        columns[f"galanti_bound_{eps}"] = galanti_bound(batch_size, lr, weight_decay, eps)
        columns[f"sv_above_{eps}"] = (sigma / fro > eps).sum(dim=1).double()
        columns[f"rank_eps_{eps}"] = (tail / fro > eps).sum(dim=1).double()
    return columns


def norm_ratios(history: pd.DataFrame) -> pd.DataFrame:
    """||W||_F at the previous logged epoch over ||W||_F at the last, per (member, layer);
    NaN when only one epoch was logged."""
    epochs = sorted(history["epoch"].unique())
    keys = ["member", "layer"]
    last = history[history["epoch"] == epochs[-1]].set_index(keys)["fro_norm"]
    if len(epochs) < 2:
        return (last * float("nan")).rename("norm_ratio").reset_index()
    previous = history[history["epoch"] == epochs[-2]].set_index(keys)["fro_norm"]
    return (previous / last).rename("norm_ratio").reset_index()


# Paper B's directions (claims B2-B4): rank rises with batch size, falls with lr and with wd.
PREDICTED_SIGN = {"batch_size": 1, "lr": -1, "weight_decay": -1}
CORRELATION_AXES = ("batch_size", "lr", "weight_decay", "depth")
STRONG_RHO = 0.5  # science.md's verdict threshold for "larger X gives lower rank"
B5_SPREAD = 0.1  # "minimal effect" without wd: the rank moves by at most 10 % over the grid


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rho: Pearson's correlation of average ranks (ties share their mean rank)."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(x.rank().corr(y.rank()))


def paper_b_reading(axis: str, subset: str, rho: float, spread: float) -> dict[str, str]:
    """What Paper B predicts for this correlation, and whether the measurement agrees.

    With wd > 0 (B2-B4) the predicted sign must hold with |rho| >= 0.5. With wd = 0 (B5) the
    prediction is "minimal effect": agreement means the rank moves by at most B5_SPREAD of its
    largest value over the grid, whatever rho's sign."""
    sign = PREDICTED_SIGN.get(axis)
    if sign is None or np.isnan(rho):
        return {"paper_b_direction": "–", "agrees": "–"}
    if subset == "wd = 0":
        return {"paper_b_direction": "≈ 0 (B5)", "agrees": "yes" if spread <= B5_SPREAD else "no"}
    agrees = (
        "yes" if sign * rho >= STRONG_RHO else "opposite" if sign * rho <= -STRONG_RHO else "weak"
    )
    return {"paper_b_direction": "+" if sign > 0 else "−", "agrees": agrees}


def within_slices(grid: pd.DataFrame, axis: str, metric: str, others: list[str]) -> dict:
    """Spearman rho of `axis` with `metric` inside each slice where the other varied axes are
    fixed: the median over slices (`rho_within`) and their number. Pooling over the other axes
    can hide an effect that holds at every fixed value of them (or show one that holds at none)."""
    if not others:
        return {"rho_within": np.nan, "slices": 0}
    values = [spearman(part[axis], part[metric]) for _, part in grid.groupby(others)]
    values = [v for v in values if not np.isnan(v)]
    return {"rho_within": float(np.median(values)) if values else np.nan, "slices": len(values)}


def rank_correlations(
    table: pd.DataFrame, metrics: tuple[str, ...] = ("rank_galanti", "effective_rank")
) -> pd.DataFrame:
    """Spearman rho of each swept axis with each rank metric, per hidden layer, over the grid.

    One point per grid setting (median over seeds of members with status ok), so seeds do not
    count as independent settings; computed separately over the settings with wd > 0 and with
    wd = 0 (claim B5: without weight decay batch size and lr should barely matter). rho says
    whether the order agrees; `grid_spread` = (max - min)/max of the per-setting medians says how
    much the rank moves at all (a perfect rho over 125 vs 124 is no effect)."""
    metrics = tuple(m for m in metrics if m in table)
    hidden = table[(table["layer"] < table["depth"]) & (table["status"] == "ok")]
    axes = [a for a in CORRELATION_AXES if hidden[a].nunique() > 1]
    keys = ["dataset", "width", *axes, *(["weight_decay"] if "weight_decay" not in axes else [])]
    rows = []
    for (dataset, layer), here in hidden.groupby(["dataset", "layer"]):
        grid = here.groupby(keys)[list(metrics)].median().reset_index()
        for subset, part in (
            ("wd > 0", grid[grid["weight_decay"] > 0]),
            ("wd = 0", grid[grid["weight_decay"] == 0]),
        ):
            for axis in axes:
                if axis == "weight_decay" and subset == "wd = 0":
                    continue
                others = [a for a in axes if a != axis and part[a].nunique() > 1]
                for metric in metrics:
                    rho = spearman(part[axis], part[metric])
                    top = part[metric].max()
                    spread = (top - part[metric].min()) / top if top > 0 else np.nan
                    rows.append(
                        {
                            "dataset": dataset,
                            "layer": int(layer),
                            "subset": subset,
                            "axis": axis,
                            "metric": metric,
                            "rho": rho,
                            "settings": len(part),
                            "grid_spread": spread,
                            **within_slices(part, axis, metric, others),
                            **paper_b_reading(axis, subset, rho, spread),
                        }
                    )
    return pd.DataFrame(rows)
