"""Paper B's quantities: Theorem 3.3's rank bound (claim B7) and the norm ratio (claim B8).

Theorem 3.3: for large T, W_T/||W_T|| is within eps of a matrix of rank at most
m_l·B·log(2/eps)/(2·lr·λ) (m_l = 1 for a dense layer, the number of patches, i.e. output
positions, for a conv layer), with λ = wd/2 in our convention (science.md).
We compare it with two measured counts: the singular values of W/||W||_F above eps, and the smallest
rank r whose best approximation is within eps of W/||W||_F in Frobenius norm.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from rankbias.vocabulary import GALANTI_EPS


def galanti_bound(
    batch_size: int, lr: torch.Tensor, weight_decay: torch.Tensor, eps: float, positions: int = 1
) -> torch.Tensor:
    """m_l·B·log(2/eps)/(2·lr·λ), λ = wd/2, m_l = `positions` (a conv layer's output positions,
    1 for a dense layer); infinite without weight decay."""
    lam = weight_decay.double() / 2
    bound = positions * batch_size * math.log(2 / eps) / (2 * lr.double() * lam)
    return torch.where(lam > 0, bound, torch.inf)


def bound_columns(
    sigma: torch.Tensor,
    batch_size: int,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
    positions: int = 1,
) -> dict[str, torch.Tensor]:
    """Per eps: the bound, #{sigma_i/||W||_F > eps}, and the Frobenius eps-rank of W/||W||_F;
    a conv kernel's sigma are those of its (out × in·k·k) reshape."""
    energy = sigma.double().square()
    fro = energy.sum(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    tail = torch.cat([energy.flip(1).cumsum(1).flip(1), torch.zeros_like(fro)], dim=1).sqrt()
    columns = {}
    for eps in GALANTI_EPS:
        columns[f"galanti_bound_{eps}"] = galanti_bound(
            batch_size, lr, weight_decay, eps, positions
        )
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
