"""One SGD step of an ensemble of conv nets (rankbias.convnets), with autograd, and Paper B's
augmentation.

The step is the MLP trainer's in every rule that matters (rankbias.train): each member's own
mini-batch, learning rate and weight decay, coupled decay held exactly as a float64 scale per
member (rankbias.decay), a member whose batch loss is not finite frozen from then on, and nothing
random that does not come from the member's own generator, so a checkpoint resumes bit-identically
and a member trained in an ensemble equals itself trained alone (in `loop` mode, exactly).
Gradients come from autograd on the actual tensors scale·stored; the stored tensors take
-lr·grad / (new scale). `grouped` runs every member in one grouped-convolution call, `loop` one
member at a time; `auto` (`ensemble_mode`) picks `grouped` on a GPU, where one small model leaves
the device idle, and on a CPU, where it measured 1.03–1.60× one model at a time and the loop
0.92–1.03× (benchmarks/conv_ensemble.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rankbias import convnets
from rankbias.convshapes import ConvArch
from rankbias.decay import ExactDecay
from rankbias.models import member_losses

ENSEMBLE_MODES = ("auto", "loop", "grouped")
AUGMENTATIONS = ("crop", "flip", "rotate")  # Paper B's RandomCrop(32, 4), flip, RandomRotation(15)


def ensemble_mode(requested: str) -> str:
    """`auto` is `grouped`: on a GPU one small model leaves the device idle, and on this CPU the
    grouped step measured no slower than one model at a time at every batch (8 to 64)."""
    if requested not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble {requested!r}; allowed: {', '.join(ENSEMBLE_MODES)}")
    return "grouped" if requested == "auto" else requested


def augment(
    images: torch.Tensor, options: dict, generators: list[torch.Generator], fill: torch.Tensor
) -> torch.Tensor:
    """Paper B's training transforms on each member's batch [M, B, C, H, W], every draw from that
    member's generator (on the CPU, so any device draws the same): rotation by U(-rotate, rotate)
    degrees (nearest pixel, torchvision's default), a random crop after zero padding by `crop`
    pixels, a horizontal flip with probability 1/2, in torchvision's order (crop, flip, rotate).
    Padding and the corners a rotation uncovers take `fill` [C], the standardised black pixel."""
    members, batch, channels, size = images.shape[:4]
    crop, flip, rotate = (options.get(name, 0) for name in AUGMENTATIONS)
    draws = []
    for generator in generators:
        offsets = torch.randint(0, 2 * crop + 1, (batch, 2), generator=generator) if crop else None
        flips = torch.rand(batch, generator=generator) < 0.5 if flip else None
        angles = (torch.rand(batch, generator=generator) * 2 - 1) * rotate if rotate else None
        draws.append((offsets, flips, angles))
    device, flat = images.device, images.reshape(members * batch, channels, size, size)
    fill = fill.to(device=device, dtype=images.dtype).view(1, -1, 1, 1)
    if crop:
        padded = F.pad(flat - fill, (crop,) * 4) + fill
        offsets = torch.cat([draw[0] for draw in draws]).to(device)
        rows = (offsets[:, 0:1] + torch.arange(size, device=device)).view(-1, 1, size, 1)
        cols = (offsets[:, 1:2] + torch.arange(size, device=device)).view(-1, 1, 1, size)
        picked = torch.arange(len(flat), device=device).view(-1, 1, 1, 1)
        flat = padded.permute(0, 2, 3, 1)[picked, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    if flip:
        flips = torch.cat([draw[1] for draw in draws]).to(device).view(-1, 1, 1, 1)
        flat = torch.where(flips, flat.flip(-1), flat)
    if rotate:
        radians = torch.cat([draw[2] for draw in draws]).to(device=device, dtype=images.dtype)
        radians = radians * (math.pi / 180)
        cos, sin = torch.cos(radians), torch.sin(radians)
        zero = torch.zeros_like(cos)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
        flat = F.grid_sample(flat - fill, grid, "nearest", "zeros", align_corners=False) + fill
    return flat.reshape(images.shape)


def member_gradients(
    arch: ConvArch,
    actual: dict[str, torch.Tensor],
    names: list[str],
    images: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    mode: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-member batch losses [M] and gradients of `names` [M, ...], from one grouped pass or
    one pass per member; batch norm's running statistics in `actual` move in place."""
    members = images.shape[0]
    slices = [slice(0, members)] if mode == "grouped" else [slice(m, m + 1) for m in range(members)]
    losses, grads = [], [[] for _ in names]
    for part in slices:
        leaves = {
            name: value[part].detach().requires_grad_(name in names)
            for name, value in actual.items()
        }
        with torch.enable_grad():
            outputs = convnets.forward(arch, leaves, images[part], training=True)
            part_losses = member_losses(outputs, targets[part], loss)
            part_grads = torch.autograd.grad(part_losses.sum(), [leaves[n] for n in names])
        losses.append(part_losses.detach())
        for collected, grad in zip(grads, part_grads, strict=True):
            collected.append(grad)
    return torch.cat(losses), [torch.cat(grad) for grad in grads]


@torch.no_grad()
def sgd_step(
    arch: ConvArch,
    params: dict[str, torch.Tensor],
    decay: ExactDecay,
    images: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    step_lr: torch.Tensor,
    alive: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """W <- (1 - lr·wd) W - lr·grad for every member on its batch; returns the batch losses [M]
    and freezes (in `alive`) a member whose loss is not finite. `step_lr` [M] in the training
    precision."""
    actual = decay.actual(params)
    names = decay.names
    running = {name: params[name].clone() for name in params if name not in decay.index}
    losses, grads = member_gradients(arch, actual, names, images, targets, loss, mode)
    alive &= torch.isfinite(losses)
    for name, before in running.items():  # a frozen member keeps its running statistics
        params[name].copy_(torch.where(alive.view(-1, 1), params[name], before))
    decay.step(alive)
    for name, grad in zip(names, grads, strict=True):
        rows = (-1,) + (1,) * (grad.dim() - 1)
        rate = torch.where(alive, step_lr, 0).view(rows)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        params[name].sub_(grad.mul_(rate * decay.inverse_scale(name, grad)))
    decay.after_step(params)
    return losses
