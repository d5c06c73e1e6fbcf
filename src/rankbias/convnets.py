"""Stacked convolutional ReLU nets: M independent networks trained together, as Paper B trains them.

The families and their shapes are in rankbias.convshapes. Parameters follow rankbias.models'
naming with a leading member axis: `W{l}` is the l-th weight in forward order ([M, out, in, k, k]
for a conv, [M, out, in] for the head, always the last), its batch norm `bn_weight{l}`,
`bn_bias{l}`, `bn_mean{l}`, `bn_var{l}`, and the head's bias `b{L}`. Convs followed by batch norm
have no bias (the norm's shift makes it redundant). Members run as the groups of grouped
convolutions: activations are [N, M·C, H, W], member m's channels in block m, so batch norm's
per-channel statistics are per member and one call serves the ensemble (`grouped`); `loop` runs
the same functions one member at a time (members = 1). Training uses autograd (rankbias.convtrain).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from rankbias.convshapes import POOL, ConvArch, Layer
from rankbias.models import BN_EPS, BN_MOMENTUM, NORM_STARTS

NORM_TENSORS = tuple(NORM_STARTS)  # bn_weight, bn_bias, bn_mean, bn_var


def param_names(arch: ConvArch) -> list[str]:
    names = []
    for index, layer in enumerate(arch.layers(), start=1):
        names.append(f"W{index}")
        if layer.role == "head":
            names.append(f"b{index}")
        else:
            names += [f"{kind}{index}" for kind in NORM_TENSORS]
    return names


def init_params(
    arch: ConvArch, seeds: list[int], dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """PyTorch's defaults (`nn.Conv2d`, `nn.Linear`: U(±1/sqrt(fan_in)); batch norm 1 and 0),
    drawn per member from its seed on the CPU in float64, so a seed gives the same net anywhere."""
    stacked: dict[str, list[torch.Tensor]] = {name: [] for name in param_names(arch)}
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        for index, layer in enumerate(arch.layers(), start=1):
            rows, fan_in = layer.matrix_shape
            bound = 1.0 / math.sqrt(fan_in)
            shape = (rows, layer.in_channels) + ((layer.kernel,) * 2 if layer.kernel else ())
            weight = torch.empty(shape, dtype=torch.float64)
            stacked[f"W{index}"].append(weight.uniform_(-bound, bound, generator=generator))
            if layer.role == "head":
                bias = torch.empty(rows, dtype=torch.float64)
                stacked[f"b{index}"].append(bias.uniform_(-bound, bound, generator=generator))
            else:
                for kind, start in NORM_STARTS.items():
                    stacked[f"{kind}{index}"].append(torch.full((rows,), start))
    return {
        name: torch.stack(values).to(device=device, dtype=dtype) for name, values in stacked.items()
    }


def stack_members(images: torch.Tensor) -> torch.Tensor:
    """[M, N, C, H, W] (each member's own batch) -> [N, M·C, H, W], member m in channel block m."""
    members, count = images.shape[:2]
    return images.transpose(0, 1).reshape(count, members * images.shape[2], *images.shape[3:])


def conv_bn_relu(
    params: dict[str, torch.Tensor],
    index: int,
    layer: Layer,
    hidden: torch.Tensor,
    members: int,
    training: bool,
    relu: bool = True,
) -> torch.Tensor:
    """Grouped conv, batch norm and, with `relu`, a ReLU. In `training`, batch norm normalises by
    the batch's statistics and moves the running ones toward them in place, as torch's
    BatchNorm2d does (momentum 0.1, unbiased variance); else it uses the running ones. The
    running statistics are views of the member-stacked buffers, so each member's own move."""
    weight = params[f"W{index}"]
    kernel = weight.reshape(members * weight.shape[1], *weight.shape[2:])
    pre = F.conv2d(hidden, kernel, None, layer.stride, layer.kernel // 2, 1, members)
    scale, shift, mean, var = (params[f"{kind}{index}"].view(-1) for kind in NORM_TENSORS)
    out = F.batch_norm(pre, mean, var, scale, shift, training, BN_MOMENTUM, BN_EPS)
    return F.relu(out, inplace=True) if relu else out  # batch norm's backward keeps its input


def max_pool(hidden: torch.Tensor) -> torch.Tensor:
    """2×2 max pooling, stride 2 (floor). Without autograd (evaluation) as the maximum of the four
    strided quarters: the same values, 10× faster than max_pool2d on this CPU, which spends its
    time on the indices; with autograd max_pool2d, whose backward is 3× faster."""
    if torch.is_grad_enabled():
        return F.max_pool2d(hidden, 2)
    rows, cols = hidden.shape[2] // 2 * 2, hidden.shape[3] // 2 * 2
    quarters = [hidden[:, :, i:rows:2, j:cols:2] for i in (0, 1) for j in (0, 1)]
    return torch.maximum(torch.maximum(*quarters[:2]), torch.maximum(*quarters[2:]))


def forward(
    arch: ConvArch, params: dict[str, torch.Tensor], images: torch.Tensor, training: bool = False
) -> torch.Tensor:
    """Logits [M, N, out] of members' images [M, N, C, H, W] (own batches) or shared [N, C, H, W].
    In `training`, batch norm uses batch statistics and updates the running ones in `params`."""
    members = params["W1"].shape[0]
    if images.dim() == 4:
        images = images.unsqueeze(0).expand(members, *images.shape)
    hidden = stack_members(images)
    layers = arch.layers()
    if arch.name == "resnet18":
        hidden = conv_bn_relu(params, 1, layers[0], hidden, members, training)
        index = 2
        while layers[index - 1].role != "head":
            first, second = layers[index - 1], layers[index]
            out = conv_bn_relu(params, index, first, hidden, members, training)
            out = conv_bn_relu(params, index + 1, second, out, members, training, relu=False)
            index += 2
            if layers[index - 1].role == "shortcut":
                shortcut = layers[index - 1]
                hidden = conv_bn_relu(
                    params, index, shortcut, hidden, members, training, relu=False
                )
                index += 1
            hidden = F.relu(out + hidden)
    else:
        index = 1
        for item in arch.plan():
            if item == POOL:
                hidden = max_pool(hidden)
            else:
                hidden = conv_bn_relu(params, index, layers[index - 1], hidden, members, training)
                index += 1
    pooled = hidden.mean(dim=(2, 3)) if arch.name == "resnet18" else hidden  # else flattened
    features = pooled.reshape(hidden.shape[0], members, -1).transpose(0, 1)
    head = len(layers)
    return torch.baddbmm(params[f"b{head}"].unsqueeze(1), features, params[f"W{head}"].mT)


def kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """[M, out, in, k, k] -> [M, out, in·k·k] (Paper B's reshape); a matrix passes unchanged."""
    return weight.flatten(2) if weight.dim() > 3 else weight


EIGSH_TOL = 1e-8  # relative accuracy of an operator norm (scipy's Lanczos, ARPACK)


def conv_gram(kernel: torch.Tensor, layer: Layer, vector) -> object:
    """AᵀA v for the conv A of `kernel` [out, in, k, k] at `layer`'s stride, padding and input
    size; v and the result flat float64 numpy vectors (scipy's matvec)."""
    shape = (1, layer.in_channels, layer.in_size, layer.in_size)
    with torch.enable_grad():
        probe = torch.as_tensor(vector, dtype=torch.float64).reshape(shape).requires_grad_()
        image = F.conv2d(probe, kernel, None, layer.stride, layer.kernel // 2)
        (product,) = torch.autograd.grad(0.5 * image.square().sum(), probe)
    return product.reshape(-1).numpy()


@torch.no_grad()
def operator_norms(arch: ConvArch, weights: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The spectral norm [M] of every conv layer as the linear map it applies (zero padding,
    stride, at its input size): the norm a Lipschitz or spectral bound needs. It is not the
    spectral norm of the reshaped kernel (out × in·k·k), which ignores that the kernel is applied
    at every position. The largest eigenvalue of AᵀA by Lanczos (AᵀA v by autograd through the
    conv, float64, a fixed start); the head's is its matrix's spectral norm."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    norms = {}
    for index, layer in enumerate(arch.layers(), start=1):
        weight = weights[f"W{index}"].double()
        if layer.role == "head":
            norms[index] = torch.linalg.matrix_norm(weight, ord=2)
            continue
        size = layer.in_channels * layer.in_size**2
        values = []
        for kernel in weight:
            matvec = functools.partial(conv_gram, kernel, layer)
            operator = LinearOperator((size, size), matvec=matvec, dtype="float64")
            start = torch.ones(size, dtype=torch.float64).numpy()
            top = eigsh(operator, k=1, which="LA", tol=EIGSH_TOL, v0=start)[0][0]
            values.append(math.sqrt(max(top, 0.0)))
        norms[index] = torch.tensor(values, dtype=torch.float64)
    return norms
