"""Rank and spectrum metrics of weight matrices, exactly as defined in science.md.

All metrics are computed from float64 singular values. A zero matrix has rank 0 and undefined
(NaN) ratios: it is a dead network, not evidence of low rank.
"""

from __future__ import annotations

import torch


def rank_tolerances(metrics_config: dict) -> dict[str, float]:
    """The tolerances of `rank_galanti`, `rank_rel` and `rank_cut` from the config's `metrics`
    block."""
    return {
        "rank_tol": metrics_config.get("rank_tol", 1e-3),
        "rel_tol": metrics_config.get("rel_tol", 1e-3),
        "rank_cut": metrics_config.get("rank_cut", 0.1),
    }


def singular_values(weights: torch.Tensor) -> torch.Tensor:
    """Batched singular values [M, min(m, n)], descending, in float64 on the CPU."""
    return torch.linalg.svdvals(weights.detach().to(device="cpu", dtype=torch.float64))


def rank_metrics(
    sigma: torch.Tensor, rank_tol: float = 1e-3, rel_tol: float = 1e-3, rank_cut: float = 0.1
) -> dict[str, torch.Tensor]:
    """Every metric of the "Rank and spectrum metrics" table, per member, from sigma [M, r].

    `rank_cut` is the count of singular values above a tenth (by default) of the largest: the
    number of directions that carry weight, what the planted-rank control compares with k
    (rank_rel's 1e-3 also counts the noise floor of a trained matrix)."""
    sigma = sigma.to(torch.float64)
    finite = torch.isfinite(sigma).all(dim=1)
    sigma = torch.where(finite.unsqueeze(1), sigma, torch.zeros_like(sigma))
    energy = sigma.square()
    fro = energy.sum(dim=1).sqrt()
    top = sigma[:, 0]
    nonzero = fro > 0
    nan = torch.full_like(fro, float("nan"))
    safe_fro = torch.where(nonzero, fro, torch.ones_like(fro))
    safe_top = torch.where(top > 0, top, torch.ones_like(top))
    share = sigma / sigma.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -(share * torch.log(share.clamp_min(torch.finfo(torch.float64).tiny))).sum(dim=1)
    tail = energy.flip(1).cumsum(1).flip(1)  # tail[:, k] = sum_{i >= k} sigma_i^2 (0-based)
    metrics = {
        "fro_norm": fro,
        "spectral_norm": top,
        "rank_galanti": (sigma / safe_fro.unsqueeze(1) > rank_tol).sum(dim=1).to(torch.float64),
        "rank_rel": (sigma / safe_top.unsqueeze(1) > rel_tol).sum(dim=1).to(torch.float64),
        "rank_cut": (sigma / safe_top.unsqueeze(1) > rank_cut).sum(dim=1).to(torch.float64),
        "stable_rank": torch.where(nonzero, energy.sum(dim=1) / safe_top.square(), nan),
        "effective_rank": torch.where(nonzero, entropy.exp(), nan),
    }
    for k in (1, 2):
        residual = tail[:, k].sqrt() if sigma.shape[1] > k else torch.zeros_like(fro)
        metrics[f"residual_{k}"] = torch.where(nonzero, residual / safe_fro, nan)
    return {
        name: torch.where(finite, value, torch.full_like(value, float("nan")))
        for name, value in metrics.items()
    }
