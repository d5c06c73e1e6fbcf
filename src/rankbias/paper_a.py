"""Paper A's quantities: Assumption 2.5's eps_batch, Theorem 2.6's bound, hidden-unit states.

Definitions are science.md's. eps_batch is the largest Frobenius norm of the gradient of the
*regularized* mini-batch loss with respect to V = W1, over every batch of freshly shuffled epochs of
the training batch size: a lower bound on the sup over all B-subsets that the assumption needs.
Theorem 2.6's constant is the reviewers' reading (2·B/µ_V); the paper's own is unknown.
"""

from __future__ import annotations

import torch

from rankbias.models import backward, forward, losses_and_gradient
from rankbias.vocabulary import UNIT_STATES

EPS_SEED_OFFSET = 2_000_029  # eps batches are drawn apart from the training order
COLLAPSE_TOL = 1e-6
KINK_TOL = 1e-6  # metrics.kink_tol: |z_j(x)| below this share of the unit's scale
EPS_SAMPLES = 512  # samples of mini-batches per forward pass in eps_batch (fastest of 128-4096)


def applies(spec: dict) -> bool:
    """Paper A's theory is about two-layer nets U relu(V x + b); deeper or batch-normalised
    networks get no Paper A columns (their eps would need another definition)."""
    return spec["depth"] == 2 and not spec.get("batch_norm", False)


def first_layer_gradient(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, depth: int, loss: str
) -> torch.Tensor:
    """dL_data/dV [M, m, n] of the mean loss on x: per-member batches [M, B, n] or shared [N, n]."""
    cache: list = []
    outputs = forward(params, x, depth, cache)
    targets = y if x.dim() == 3 else y.expand(outputs.shape[0], *y.shape)
    _, delta = losses_and_gradient(outputs, targets, loss)
    gradient: list[torch.Tensor] = []

    def keep_first(layer: int, delta_layer: torch.Tensor, inputs: torch.Tensor, _norm) -> None:
        if layer == 1:
            gradient.append(torch.matmul(delta_layer.mT, inputs))

    backward(params, cache, delta, keep_first)
    return gradient[0]


@torch.no_grad()
def regularized_gradient_norms(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    batch_size: int,
    batch_wd: torch.Tensor,
    volume_sq: torch.Tensor,
) -> torch.Tensor:
    """||dL_S'/dV + wd_V(S')·V||_F [M, k] of a two-layer net for k consecutive batches S' of
    `batch_size` samples in x [M, k·B, n] (targets y [M, k·B, ...]), in float64.

    Near a stationary point the data gradient G and the decay term wd·V nearly cancel, so the
    norm is a small difference of large numbers: it is computed in float64 from float64
    activations (float32 loses half the digits of ε at full batch). With D = dL_S'/d(pre-
    activation) [B, m] of one batch, G = Dᵀ X. Small batches take the Gram route, never forming
    an m×n gradient: ||G||² = Σ_ij (d_i·d_j)(x_i·x_j) (two B×B Gram matrices) and
    ⟨G, V⟩ = Σ_i d_i·(V x_i); batches with B·(m + n) > m·n form G, which is then cheaper.
    Batches do not interact (the weights are fixed), so one forward pass serves k of them.
    `batch_wd` [M, k] is each batch's weight decay, `volume_sq` ||V||_F² per member.
    """
    params = {name: value.double() for name, value in params.items()}
    x = x.double()
    y = y if y.dtype == torch.long else y.double()
    members, samples = x.shape[:2]
    batches = samples // batch_size
    volume = params["W1"]
    volume_x = torch.bmm(x, volume.mT)  # V x_i, the pre-activation less the bias
    hidden = torch.relu(volume_x + params["b1"].unsqueeze(1) if "b1" in params else volume_x)
    outputs = torch.bmm(hidden, params["W2"].mT)  # U relu(V x + b) (+ an output bias)
    outputs = outputs + params["b2"].unsqueeze(1) if "b2" in params else outputs
    per_batch = (members * batches, batch_size)
    _, delta = losses_and_gradient(
        outputs.reshape(*per_batch, -1), y.reshape(*per_batch, *y.shape[2:]), loss
    )
    upstream = torch.bmm(delta.reshape(members, samples, -1), params["W2"])
    d = torch.ops.aten.threshold_backward(upstream, hidden, 0.0)
    d = d.reshape(members, batches, batch_size, -1)
    inputs = x.reshape(members, batches, batch_size, -1)
    wd = batch_wd.double()
    rows, cols = volume.shape[1:]
    if batch_size * (rows + cols) > rows * cols:  # form G = Dᵀ X of every batch
        gradient = d.mT @ inputs + wd.view(members, batches, 1, 1) * volume.unsqueeze(1)
        return gradient.flatten(2).norm(dim=2)
    gradient_sq = (d @ d.mT * (inputs @ inputs.mT)).sum(dim=(2, 3))
    cross = (d * volume_x.reshape(d.shape)).sum(dim=(2, 3))
    norm_sq = gradient_sq + 2 * wd * cross + wd.square() * volume_sq.unsqueeze(1)
    return norm_sq.clamp_min(0).sqrt()


@torch.no_grad()
def eps_batch(
    params: dict[str, torch.Tensor],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    depth: int,
    loss: str,
    batch_size: int,
    weight_decay: torch.Tensor,
    seeds: list[int],
    epochs: int,
    decay_weights: torch.Tensor | None = None,
    chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """max and mean over batches of ||dL_S'/dV||_F, and the full-batch value, per member.

    The regularized gradient is dL_data/dV + wd_V(S')·V, with wd_V(S') = wd · mean of the
    data-dependent decay weights over the batch (1 for ordinary weight decay). Batches are those
    of `epochs` freshly shuffled epochs, evaluated EPS_SAMPLES samples at a time; the full-batch
    gradient `chunk` samples at a time. Everything in float64 (see regularized_gradient_norms):
    at B = N the batch value equals the full-batch one to 1e-12.
    """
    if depth != 2:
        raise ValueError(f"eps_batch is Paper A's, for two-layer nets; got depth {depth}")
    params = {name: value.double() for name, value in params.items()}
    x_train = x_train.double()
    y_train = y_train if y_train.dtype == torch.long else y_train.double()
    weight_decay = weight_decay.double()
    members, n_train = params["W1"].shape[0], len(x_train)
    device = x_train.device
    volume = params["W1"]
    volume_sq = volume.square().sum(dim=(1, 2))
    generators = [torch.Generator().manual_seed(s + EPS_SEED_OFFSET) for s in seeds]
    norms = []
    whole = n_train // batch_size * batch_size  # the last, smaller batch goes on its own
    step = max(1, EPS_SAMPLES // batch_size) * batch_size
    for _ in range(epochs):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(device)
        spans = [(a, min(a + step, whole)) for a in range(0, whole, step)]
        for begin, end in spans + ([(whole, n_train)] if whole < n_train else []):
            index = order[:, begin:end]
            size = min(batch_size, end - begin)
            batch_wd = weight_decay.view(-1, 1).expand(-1, (end - begin) // size)
            if decay_weights is not None:
                picked = torch.gather(decay_weights, 1, index).reshape(members, -1, size)
                batch_wd = weight_decay.view(-1, 1) * picked.mean(dim=2)
            norms.append(
                regularized_gradient_norms(
                    params, x_train[index], y_train[index], loss, size, batch_wd, volume_sq
                )
            )
    norms = torch.cat(norms, dim=1)
    full = torch.zeros_like(volume)
    for start in range(0, n_train, chunk):
        part = slice(start, start + chunk)
        share = len(x_train[part]) / n_train
        full += share * first_layer_gradient(params, x_train[part], y_train[part], depth, loss)
    full_norm = (full + weight_decay.view(-1, 1, 1) * volume).flatten(1).norm(dim=1)
    return {
        "eps_batch_max": norms.amax(dim=1).cpu(),
        "eps_batch_mean": norms.mean(dim=1).cpu(),
        "eps_full": full_norm.cpu(),
    }


def theorem_26(
    eps_max: torch.Tensor, weight_decay: torch.Tensor, batch_size: int, fro_norm: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Reviewers' reading of Thm 2.6: dist(V, rank 2) <= 2·B·eps/µ_V, µ_V = wd/2; and its ratio.

    Infinite where wd = 0. A ratio >= 1 is vacuous: the zero matrix is already that close.
    """
    mu_v = weight_decay.double() / 2
    bound = torch.where(mu_v > 0, 2 * batch_size * eps_max / mu_v, torch.inf)
    return {"thm26_bound": bound, "thm26_ratio": bound / fro_norm}


@torch.no_grad()
def unit_states(
    params: dict[str, torch.Tensor],
    x_train: torch.Tensor,
    kink_tol: float = KINK_TOL,
    chunk: int = 2048,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Fractions of the first layer's m hidden units that are collapsed, dead, linear, or live
    and at their kink for some training input (concerns C7, C8), and the live mask [M, m]
    (neither collapsed nor dead), in float64 (science.md's definitions).

    At the kink means |z_j(x)| < kink_tol·(||V_j||·||x|| + |b_j|): relative to the unit's own
    scale, so a unit that weight decay shrank to nothing is collapsed, not "at its kink"."""
    weight = params["W1"].double()
    bias = params["b1"].double() if "b1" in params else torch.zeros(weight.shape[:2])
    bias = bias.to(weight.device)
    row_norm = weight.norm(dim=2)
    size = row_norm + bias.abs()
    collapsed = size < COLLAPSE_TOL * size.amax(dim=1, keepdim=True)
    never_positive = torch.ones_like(collapsed)
    always_positive = torch.ones_like(collapsed)
    at_kink = torch.zeros_like(collapsed)
    for start in range(0, len(x_train), chunk):
        x = x_train[start : start + chunk].double()
        pre = torch.matmul(x, weight.mT) + bias.unsqueeze(1)
        scale = x.norm(dim=1).view(1, -1, 1) * row_norm.unsqueeze(1) + bias.abs().unsqueeze(1)
        never_positive &= (pre <= 0).all(dim=1)
        always_positive &= (pre > 0).all(dim=1)
        at_kink |= (pre.abs() < kink_tol * scale).any(dim=1)
    live = ~collapsed & ~never_positive
    states = (collapsed, never_positive, always_positive, at_kink & live)
    fractions = {
        name: state.double().mean(dim=1).cpu()
        for name, state in zip(UNIT_STATES, states, strict=True)
    }
    return fractions, live.cpu()
