"""Controls: what weight decay does besides learning low rank (science.md, "Controls").

Coupled weight decay shrinks the random, full-rank initialisation W_0 to s_T·W_0; that alone
lowers every rank metric of W_T. The learned part L = W_T − s_T·W_0 is what training added, and
its rank metrics (suffix `_learned`) tell a learned low-rank structure from a fading init. The
plateau check tells whether a metric had levelled off by the end of training, the regime that
"after sufficient training" claims speak of.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rankbias.spectra import rank_metrics, singular_values

PLATEAU_SHARE = 0.25  # the last quarter of the logged epochs
# A change relative to a value near 0 is ill-conditioned (a residual of 0.012 moving to 0.013 is
# 8 %): the change is taken relative to max(|value|, floor). residual_2: the 0.05 below which V
# is "approximately rank two" (A1); train_loss: a share of the loss at the first logged epoch.
PLATEAU_FLOOR = {"residual_2": 0.05}
LOSS_FLOOR_SHARE = 0.05
PLATEAU_TOL = 0.05  # metrics.plateau_tol: relative change that still counts as levelled off


def learned_part(
    weights: torch.Tensor, init_weights: torch.Tensor, init_factor: torch.Tensor
) -> torch.Tensor:
    """L = W_T − s_T·W_0 [M, out, in] in float64: what training added beyond the surviving
    share s_T of the random initialisation (science.md, Controls)."""
    factor = init_factor.to(device=weights.device, dtype=torch.float64).view(-1, 1, 1)
    return weights.double() - factor * init_weights.to(weights.device).double()


def control_columns(
    weights: torch.Tensor,
    init_weights: torch.Tensor,
    init_factor: torch.Tensor,
    horizon: torch.Tensor,
    tolerances: dict,
) -> dict[str, torch.Tensor]:
    """Per member: `init_factor` s_T, `decay_horizon` h, `movement` ||W_T − W_0|| / ||W_0||, and
    every rank metric of the learned part L (suffix `_learned`)."""
    moved = (weights.double() - init_weights.to(weights.device).double()).flatten(1).norm(dim=1)
    start = init_weights.double().flatten(1).norm(dim=1).to(moved.device)
    learned = rank_metrics(
        singular_values(learned_part(weights, init_weights, init_factor)), **tolerances
    )
    return {
        "init_factor": init_factor.cpu(),
        "decay_horizon": horizon.cpu(),
        "movement": (moved / start).cpu(),
        **{f"{name}_learned": value for name, value in learned.items()},
    }


def plateau(history: pd.DataFrame, metric: str, tolerance: float) -> pd.DataFrame:
    """Per (member, layer): `plateau_change_<metric>`, the relative change (max − min over the
    logged epochs of the last quarter of training, over max(|value at the end|, floor): see
    PLATEAU_FLOOR), and `plateaued_<metric>` (change <= tolerance; NaN when fewer than two logged
    epochs fall in the last quarter, so the question cannot be decided)."""
    keys = ["member", "layer"]
    last = history["epoch"].max()
    window = history[history["epoch"] >= (1 - PLATEAU_SHARE) * last]
    final = window[window["epoch"] == last].set_index(keys)[metric].abs()
    if metric == "train_loss":
        first = history[history["epoch"] == history["epoch"].min()].set_index(keys)[metric]
        floor = LOSS_FLOOR_SHARE * first.abs().reindex(final.index)
    else:
        floor = PLATEAU_FLOOR.get(metric, 0.0)
    scale = np.maximum(final, floor)
    grouped = window.groupby(keys)[metric]
    spread = grouped.max() - grouped.min()
    change = spread / scale.where(scale > 0)
    change = change.where(grouped.count() >= 2)
    decided = change.notna()
    frame = pd.DataFrame(
        {
            f"plateau_change_{metric}": change,
            f"plateaued_{metric}": np.where(decided, (change <= tolerance).astype(float), np.nan),
        }
    )
    return frame.reset_index()
