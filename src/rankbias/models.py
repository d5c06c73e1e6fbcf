"""Stacked ReLU MLPs: M independent networks held as tensors with a leading member axis.

Weights use the `nn.Linear` layout, W_l of shape [M, out, in], so that W1 of a two-layer net is
Paper A's V (m × n) and the last weight is U. A forward pass is one batched matmul per layer for
all members at once, which is what makes a sweep of many small models fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Arch:
    in_dim: int
    width: int
    depth: int  # number of weight matrices; 2 is Paper A's U relu(V x + b)
    out_dim: int
    output_bias: bool = False

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each weight matrix, first layer first."""
        dims = [self.in_dim] + [self.width] * (self.depth - 1) + [self.out_dim]
        return [(dims[i + 1], dims[i]) for i in range(self.depth)]

    def has_bias(self, layer: int) -> bool:
        return layer < self.depth or self.output_bias


def param_names(arch: Arch) -> list[str]:
    names = []
    for layer in range(1, arch.depth + 1):
        names.append(f"W{layer}")
        if arch.has_bias(layer):
            names.append(f"b{layer}")
    return names


def init_params(
    arch: Arch, seeds: list[int], dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """PyTorch's `nn.Linear` default init, U(±1/sqrt(fan_in)), drawn per member from its seed.

    Drawn on the CPU in float64 and then cast, so the same seed gives the same network on every
    device and in every ensemble it is part of.
    """
    stacked: dict[str, list[torch.Tensor]] = {name: [] for name in param_names(arch)}
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        for layer, (fan_out, fan_in) in enumerate(arch.layer_shapes(), start=1):
            bound = 1.0 / math.sqrt(fan_in)
            weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
            stacked[f"W{layer}"].append(weight.uniform_(-bound, bound, generator=generator))
            if arch.has_bias(layer):
                bias = torch.empty(fan_out, dtype=torch.float64)
                stacked[f"b{layer}"].append(bias.uniform_(-bound, bound, generator=generator))
    return {
        name: torch.stack(values).to(device=device, dtype=dtype) for name, values in stacked.items()
    }


def forward(
    params: dict[str, torch.Tensor], x: torch.Tensor, depth: int, cache: list | None = None
) -> torch.Tensor:
    """Outputs [M, N, out] for inputs [M, N, in] (own batch per member) or [N, in] (shared).

    With `cache`, appends (layer input, pre-activation) per layer for a manual backward pass.
    """
    hidden = x
    for layer in range(1, depth + 1):
        weight, bias = params[f"W{layer}"], params.get(f"b{layer}")
        if bias is not None and hidden.dim() == 3:
            pre = torch.baddbmm(bias.unsqueeze(1), hidden, weight.mT)
        else:
            pre = torch.matmul(hidden, weight.mT)
            pre = pre + bias.unsqueeze(1) if bias is not None else pre
        if cache is not None:
            cache.append((hidden, pre))
        hidden = torch.relu(pre) if layer < depth else pre
    return hidden


def backward(
    params: dict[str, torch.Tensor],
    cache: list,
    delta: torch.Tensor,
    visit: Callable[[int, torch.Tensor, torch.Tensor], None],
) -> None:
    """Backpropagate dLoss/d(output) `delta` [M, N, out] through the cached forward pass.

    Calls `visit(layer, delta_l, input_l)` from the last layer down, where delta_l = dLoss/d(pre-
    activation of layer l), so that the weight gradient is delta_l^T input_l and the bias gradient
    delta_l summed over samples. The next delta is computed *before* `visit`, which may therefore
    update the layer's weights in place (a fused SGD step).
    """
    for layer in range(len(cache), 0, -1):
        inputs, _ = cache[layer - 1]
        below = None
        if layer > 1:
            below = torch.bmm(delta, params[f"W{layer}"]) * (cache[layer - 2][1] > 0)
        visit(layer, delta, inputs)
        delta = below


def losses_and_gradient(
    outputs: torch.Tensor, targets: torch.Tensor, loss: str, gradient: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean loss per member [M] and its gradient w.r.t. the outputs [M, N, out].

    `mse` is Paper A's (1/2)|f(x) - y|^2 per sample; `ce` is the cross-entropy of the logits.
    """
    batch = outputs.shape[1]
    if loss == "mse":
        residual = outputs - targets
        losses = 0.5 * residual.square().sum(dim=-1).mean(dim=-1)
        return losses, residual / batch if gradient else None
    if loss == "ce":
        log_probs = torch.log_softmax(outputs, dim=-1)
        picked = targets.unsqueeze(-1)
        losses = -log_probs.gather(-1, picked).squeeze(-1).mean(dim=-1)
        if not gradient:
            return losses, None
        grad = log_probs.exp()
        grad.scatter_add_(
            -1, picked, torch.full(picked.shape, -1.0, dtype=grad.dtype, device=grad.device)
        )
        return losses, grad / batch
    raise ValueError(f"unknown loss {loss!r}; allowed: mse, ce")


def member_losses(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    return losses_and_gradient(outputs, targets, loss, gradient=False)[0]
