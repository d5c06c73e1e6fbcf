"""Stacked ReLU MLPs: M independent networks held as tensors with a leading member axis.

Weights use the `nn.Linear` layout, W_l of shape [M, out, in], so that W1 of a two-layer net is
Paper A's V (m × n) and the last weight is U. A forward pass is one batched matmul per layer for
all members at once, which is what makes a sweep of many small models fast.

With `batch_norm`, every hidden layer is Linear (no bias: batch norm's shift makes it redundant)
→ BatchNorm1d → ReLU, Paper B's MLP-BN-L-H (its code, `models/mlp.py`). Batch-norm scale and shift
are parameters `bn_weight{l}`, `bn_bias{l}`; running statistics `bn_mean{l}`, `bn_var{l}` are
buffers updated as torch does (momentum 0.1, unbiased variance) and used for evaluation.
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
    batch_norm: bool = False

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each weight matrix, first layer first."""
        dims = [self.in_dim] + [self.width] * (self.depth - 1) + [self.out_dim]
        return [(dims[i + 1], dims[i]) for i in range(self.depth)]

    def step_flops(self, batch: int) -> int:
        """GEMM FLOPs of one SGD step of one model: 2·B·W each for the forward pass and the
        weight gradients, and 2·B·W_l for the input gradient of every layer but the first (the
        data need none, and neither our trainer nor autograd computes it). This is the work the
        step cannot avoid; the common 6·B·W overstates it by up to 1.5× when layer 1 holds most
        weights. Biases, ReLU and batch norm, O(B·width), are left out."""
        sizes = [fan_out * fan_in for fan_out, fan_in in self.layer_shapes()]
        return 2 * batch * (2 * sum(sizes) + sum(sizes[1:]))

    def has_bias(self, layer: int) -> bool:
        return (layer < self.depth and not self.batch_norm) or (
            layer == self.depth and self.output_bias
        )


BN_EPS = 1e-5  # torch.nn.BatchNorm1d defaults
BN_MOMENTUM = 0.1
NORM_PARAMS = ("bn_weight", "bn_bias")  # trained, with the biases' weight decay
NORM_BUFFERS = ("bn_mean", "bn_var")  # running statistics, not trained
NORM_STARTS = dict(zip(NORM_PARAMS + NORM_BUFFERS, (1.0, 0.0, 0.0, 1.0), strict=True))  # torch's


def param_names(arch: Arch) -> list[str]:
    names = []
    for layer in range(1, arch.depth + 1):
        names.append(f"W{layer}")
        if arch.has_bias(layer):
            names.append(f"b{layer}")
        if arch.batch_norm and layer < arch.depth:
            names += [f"{kind}{layer}" for kind in NORM_PARAMS + NORM_BUFFERS]
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
            if arch.batch_norm and layer < arch.depth:
                for kind, start in NORM_STARTS.items():
                    stacked[f"{kind}{layer}"].append(torch.full((fan_out,), start))
    return {
        name: torch.stack(values).to(device=device, dtype=dtype) for name, values in stacked.items()
    }


def forward(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    depth: int,
    cache: list | None = None,
    batch_stats: bool = False,
    weight_scales: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Outputs [M, N, out] for inputs [M, N, in] (own batch per member) or [N, in] (shared).

    With `cache` (a training step), appends (layer input, batch-norm state or None) per layer for
    the manual backward pass; hidden layers' inputs are post-ReLU, so they are also the ReLU masks,
    and are made finite in place (non-finite -> 0): only a member that is diverging can have
    non-finite activations, and this keeps its zero step zero. Batch norm uses the batch's
    statistics when `batch_stats` (training) and the running ones otherwise (evaluation).
    With `weight_scales` {"W{l}": [M]} (training), layer l's weight is scale·W{l}: the scale is
    applied to the layer's output, an activation-sized product instead of a weight-sized one.
    """
    hidden = x
    for layer in range(1, depth + 1):
        weight, bias = params[f"W{layer}"], params.get(f"b{layer}")
        scale = None if weight_scales is None else weight_scales[f"W{layer}"].view(-1, 1, 1)
        if scale is not None and bias is not None:  # (x W~^T + b/scale)·scale
            pre = torch.baddbmm(bias.unsqueeze(1) / scale, hidden, weight.mT).mul_(scale)
        elif scale is not None:
            pre = torch.bmm(hidden, weight.mT).mul_(scale)
        elif bias is not None and hidden.dim() == 3:
            pre = torch.baddbmm(bias.unsqueeze(1), hidden, weight.mT)
        else:
            pre = torch.matmul(hidden, weight.mT)
            pre = pre + bias.unsqueeze(1) if bias is not None else pre
        norm = None
        if layer < depth and f"bn_weight{layer}" in params:
            pre, norm = batch_norm(params, layer, pre, batch_stats)
        if cache is not None:
            cache.append((hidden, norm))
        if layer < depth:  # pre is a fresh tensor: ReLU in place
            pre.relu_()
            if cache is not None:
                pre.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        hidden = pre
    return hidden


@dataclass
class NormState:
    """What batch norm's backward pass needs, and the batch statistics for the running ones."""

    normalised: torch.Tensor  # x_hat [M, N, H]
    inv_std: torch.Tensor  # [M, 1, H]
    mean: torch.Tensor  # [M, H] batch mean (running mean in evaluation)
    var: torch.Tensor  # [M, H] biased batch variance


def batch_norm(
    params: dict[str, torch.Tensor], layer: int, pre: torch.Tensor, batch_stats: bool
) -> tuple[torch.Tensor, NormState]:
    """scale * x_hat + shift (before the ReLU), and the state for the backward pass."""
    if batch_stats:
        var, mean = torch.var_mean(pre, dim=1, correction=0)
    else:
        mean, var = params[f"bn_mean{layer}"], params[f"bn_var{layer}"]
    inv_std = torch.rsqrt(var + BN_EPS).unsqueeze(1)
    normalised = (pre - mean.unsqueeze(1)) * inv_std
    scale, shift = params[f"bn_weight{layer}"].unsqueeze(1), params[f"bn_bias{layer}"].unsqueeze(1)
    output = torch.addcmul(shift, normalised, scale)
    return output, NormState(normalised, inv_std, mean, var)


def update_running_stats(
    params: dict[str, torch.Tensor], cache: list, batch: int, alive: torch.Tensor
) -> None:
    """torch's rule: running <- (1 - momentum)·running + momentum·batch, unbiased variance; a
    frozen (not `alive`) member keeps its running statistics."""
    keep = ~alive.view(-1, 1)
    for layer, (_, norm) in enumerate(cache, start=1):
        if norm is not None:
            unbiased_var = norm.var * (batch / (batch - 1))
            for kind, batch_value in (("mean", norm.mean), ("var", unbiased_var)):
                running = params[f"bn_{kind}{layer}"]
                running.copy_(torch.where(keep, running, running.lerp(batch_value, BN_MOMENTUM)))


def backward(
    params: dict[str, torch.Tensor],
    cache: list,
    delta: torch.Tensor,
    visit: Callable[[int, torch.Tensor, torch.Tensor, tuple | None], None],
    weight_scales: dict[str, torch.Tensor] | None = None,
) -> None:
    """Backpropagate `delta` [M, N, out], dLoss/d(output) or any per-member multiple of it (the
    pass is linear in it), through the cached forward pass.

    Calls `visit(layer, delta_l, input_l, norm_grads_l)` from the last layer down, where delta_l =
    dLoss/d(pre-activation of layer l), so that the weight gradient is delta_l^T input_l and the
    bias gradient delta_l summed over samples; norm_grads_l is (d scale, d shift) of the layer's
    batch norm, or None. Everything a layer's `visit` may change in place (a fused SGD step) has
    been used before it is called. `weight_scales` as in `forward`.
    """
    norm_grads = None
    for layer in range(len(cache), 0, -1):
        inputs = cache[layer - 1][0]
        below, below_grads = None, None
        if layer > 1:
            upstream = torch.bmm(delta, params[f"W{layer}"])
            if weight_scales is not None:
                upstream.mul_(weight_scales[f"W{layer}"].view(-1, 1, 1))
            # ReLU's backward, in place: the post-ReLU inputs are > 0 where the unit is active
            below = torch.ops.aten.threshold_backward.grad_input(
                upstream, inputs, 0.0, grad_input=upstream
            )
            norm = cache[layer - 2][1]
            if norm is not None:
                below, below_grads = batch_norm_backward(
                    below, norm, params[f"bn_weight{layer - 1}"]
                )
        visit(layer, delta, inputs, norm_grads)
        delta, norm_grads = below, below_grads


def batch_norm_backward(
    grad_output: torch.Tensor, norm: NormState, scale: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """dLoss/d(pre) and (d scale, d shift) from dLoss/d(batch-norm output), training mode.

    Non-finite values (only possible for a member already frozen as diverged) become 0 so that
    its zero step stays zero."""
    grad_scale = (grad_output * norm.normalised).sum(dim=1)
    grad_shift = grad_output.sum(dim=1)
    grad_normalised = grad_output * scale.unsqueeze(1)
    grad_pre = norm.inv_std * (
        grad_normalised
        - grad_normalised.mean(dim=1, keepdim=True)
        - norm.normalised * (grad_normalised * norm.normalised).mean(dim=1, keepdim=True)
    )
    clean = (
        torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        for g in (grad_pre, grad_scale, grad_shift)
    )
    grad_pre, grad_scale, grad_shift = clean
    return grad_pre, (grad_scale, grad_shift)


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
