"""Generalization bounds of science.md, one number per trained model, every constant written out.

- `bound_paramcount_full`  = sqrt(p · ln m · ln N / N), p = m·n (all of V, m × n), N samples;
- `bound_paramcount_rank2` = the same with p = 2·(m + n) (a rank-2 factorisation of V), and
  `bound_paramcount_rankr` with p = r·(m + n), r = the measured `rank_galanti` of V. These are the
  complexity terms Paper A's Cor 3.9 / Thm 3.11 compare; their constants are unknown, so they are
  compared as ratios and by rank correlation with the gap, never called vacuous or not.
- `bound_grs` (Golowich, Rakhlin & Shamir 2018) = B_x · (sqrt(2 · ln 2 · d) + 1) · prod_j ||W_j||_F
  / sqrt(N), B_x = max_i ||x_i||, d = depth.
- `bound_spectral` (Bartlett, Foster & Telgarsky 2017), classifiers only =
  (prod_j ||W_j||_2) · (sum_j (||W_j^T||_{2,1} / ||W_j||_2)^(2/3))^(3/2) · ||X||_F / (gamma · N),
  ||W^T||_{2,1} = sum of the Euclidean norms of the rows of W (out × in), gamma = the 10th
  percentile of the training margins f(x)_y − max_{k != y} f(x)_k (infinite when gamma <= 0).

Biases are absorbed exactly: a ReLU net with biases equals a bias-free one on x~ = [x, 1] whose
hidden layers carry one more unit that stays 1, W~_l = [[W_l, b_l], [0, 1]] (hidden layers) and
W~_L = [W_L, b_L]; the norms above are of the W~_l, and B_x, ||X||_F of the x~_i. A batch-norm net
is first folded, in evaluation mode (running statistics), into the same plain form.
"""

from __future__ import annotations

import math

import torch

from rankbias.models import BN_EPS, forward

MARGIN_QUANTILE = 0.1


def fold_batch_norm(params: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Plain ReLU-net weights computing what the batch-norm net computes in evaluation mode:
    scale·(W x + b − mean)/sqrt(var + eps) + shift = W' x + b'."""
    folded = {}
    for layer in range(1, depth + 1):
        weight = params[f"W{layer}"]
        bias = params.get(f"b{layer}", torch.zeros(weight.shape[:2], dtype=weight.dtype))
        if f"bn_weight{layer}" in params:
            factor = params[f"bn_weight{layer}"] * torch.rsqrt(params[f"bn_var{layer}"] + BN_EPS)
            weight = weight * factor.unsqueeze(-1)
            bias = (bias - params[f"bn_mean{layer}"]) * factor + params[f"bn_bias{layer}"]
        folded[f"W{layer}"] = weight
        if f"b{layer}" in params or f"bn_weight{layer}" in params:
            folded[f"b{layer}"] = bias
    return folded


def augmented_weights(params: dict[str, torch.Tensor], depth: int) -> list[torch.Tensor]:
    """W~_l [M, out(+1), in+1] of the bias-free net on [x, 1] (module docstring)."""
    augmented = []
    for layer in range(1, depth + 1):
        weight = params[f"W{layer}"]
        members, rows, _ = weight.shape
        bias = params.get(f"b{layer}", torch.zeros(members, rows, dtype=weight.dtype))
        block = torch.cat([weight, bias.unsqueeze(-1)], dim=2)
        if layer < depth:
            constant_unit = torch.zeros(members, 1, block.shape[2], dtype=weight.dtype)
            constant_unit[:, 0, -1] = 1.0
            block = torch.cat([block, constant_unit], dim=1)
        augmented.append(block)
    return augmented


def paramcount_terms(width: int, n_inputs: int, n_train: int, rank: torch.Tensor) -> dict:
    """sqrt(p · ln m · ln N / N) for p = m·n, 2·(m + n) and r·(m + n)."""

    def term(params: torch.Tensor | float) -> torch.Tensor:
        scale = math.log(width) * math.log(n_train) / n_train
        return torch.sqrt(torch.as_tensor(params, dtype=torch.float64) * scale)

    full = torch.full_like(rank, float(width * n_inputs), dtype=torch.float64)
    return {
        "bound_paramcount_full": term(full),
        "bound_paramcount_rank2": term(torch.full_like(full, 2.0 * (width + n_inputs))),
        "bound_paramcount_rankr": term(rank.double() * (width + n_inputs)),
    }


def bound_grs(weights: list[torch.Tensor], x_max_norm: float, n_train: int) -> torch.Tensor:
    depth = len(weights)
    product = torch.stack([w.flatten(1).norm(dim=1) for w in weights]).prod(dim=0)
    return x_max_norm * (math.sqrt(2 * math.log(2) * depth) + 1) * product / math.sqrt(n_train)


def bound_spectral(
    weights: list[torch.Tensor], x_fro_norm: float, gamma: torch.Tensor, n_train: int
) -> torch.Tensor:
    spectral = torch.stack([torch.linalg.matrix_norm(w, ord=2) for w in weights])
    rows_21 = torch.stack([w.norm(dim=2).sum(dim=1) for w in weights])  # ||W^T||_{2,1}
    complexity = spectral.prod(dim=0) * ((rows_21 / spectral) ** (2 / 3)).sum(dim=0) ** 1.5
    bound = complexity * x_fro_norm / (gamma * n_train)
    return torch.where(gamma > 0, bound, torch.inf)


def margins(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, depth: int):
    """f(x)_y − max_{k != y} f(x)_k per member and training sample, [M, N]."""
    outputs = forward(params, x, depth)
    picked = outputs.gather(-1, y.expand(outputs.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    others = outputs.scatter(-1, y.expand(outputs.shape[0], -1).unsqueeze(-1), -torch.inf)
    return picked - others.amax(dim=-1)


@torch.no_grad()
def model_bounds(
    params: dict[str, torch.Tensor],
    depth: int,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss: str,
    rank_first: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Every bound of the module docstring, per member, in float64 (params: stacked, [M, ...])."""
    params = {k: v.double() for k, v in params.items()}
    x_train = x_train.double()
    plain = fold_batch_norm(params, depth)
    weights = augmented_weights(plain, depth)
    n_train, n_inputs = x_train.shape
    x_norms = (x_train.square().sum(dim=1) + 1).sqrt()  # ||[x, 1]||
    bounds = paramcount_terms(params["W1"].shape[1], n_inputs, n_train, rank_first)
    bounds["bound_grs"] = bound_grs(weights, x_norms.max().item(), n_train)
    nan = torch.full_like(bounds["bound_grs"], float("nan"))
    bounds["margin_gamma"], bounds["bound_spectral"] = nan, nan.clone()
    if loss == "ce":
        gamma = torch.quantile(margins(plain, x_train, y_train, depth), MARGIN_QUANTILE, dim=1)
        bounds["margin_gamma"] = gamma
        bounds["bound_spectral"] = bound_spectral(weights, x_norms.norm().item(), gamma, n_train)
    return bounds
