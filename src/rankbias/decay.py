"""Weight decay applied exactly, at every lr·wd a config allows (science.md, "Exactness").

A float32 factor (1 − lr·wd) rounds to 1 below lr·wd ≈ 3e-8 and is off by up to ×2 near it, and
float32 weights cannot hold a per-step relative change below ~6e-8 at all: at lr = 0.01,
wd = 1e-6 a float32 `W.mul_(1 - lr*wd)` does nothing. So every trained tensor is held as
scale·stored, with a float64 scale per member: a step multiplies the scale by (1 − lr·wd), in
float64, and adds the gradient step divided by the new scale to the stored tensor. That also
saves the weight-sized multiply of every step. The scales of all tensors are one [tensors,
members] array, so a step's decay is a handful of small operations however deep the net. A scale
that has fallen below FOLD_BELOW is folded into its tensor (one float32 rounding, its exact
remainder kept in the scale) every `fold_every` steps, long before it could underflow.

Beside the scales it keeps, per tensor, the controls of science.md: `init_factor`
s_T = Π_t (1 − lr_t·wd_t), the share of the initialisation W_0 that survives in W_T, and the
decay horizon h = Σ_t lr_t·wd_t (e^−h ≈ s_T). Neither is ever folded.
"""

from __future__ import annotations

import torch

from rankbias.models import NORM_BUFFERS

FOLD_BELOW = 2.0**-6  # a scale below this is folded into its stored tensor
FOLD_DECAY = 1.0  # fold checks come before any scale can shrink by more than about e^-FOLD_DECAY
RATE_KINDS = ("weight", "bias", "first")  # which decay rate a tensor takes (`set_rates`)


def decayed(name: str) -> bool:
    """Weights, biases and batch norm's scale and shift decay; running statistics do not."""
    return not name.startswith(NORM_BUFFERS)


def fold_interval(max_rate: float) -> int:
    """Steps between fold checks when no step decays any tensor by more than `max_rate`."""
    return max(1, int(FOLD_DECAY / max_rate)) if max_rate > 0 else 2**62


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [M] row as [M, 1, ...], broadcastable against `like` [M, ...]."""
    return values.view(-1, *[1] * (like.dim() - 1))


class ExactDecay:
    """The float64 decay state of an ensemble's tensors; `params` always hold the stored ones."""

    def __init__(self, params: dict[str, torch.Tensor], dtype: torch.dtype, fold_every: int):
        self.names = [name for name in params if decayed(name)]
        self.index = {name: row for row, name in enumerate(self.names)}
        kinds = ["first" if n == "W1" else "weight" if n[0] == "W" else "bias" for n in self.names]
        members, device = params["W1"].shape[0], params["W1"].device
        self.kinds = torch.tensor([RATE_KINDS.index(kind) for kind in kinds], device=device)
        self.scales = torch.ones(len(self.names), members, dtype=torch.float64, device=device)
        self.init_factor = torch.ones_like(self.scales)
        self.horizon = torch.zeros_like(self.scales)
        self.dtype, self.fold_every, self.steps = dtype, fold_every, 0
        self._refresh()

    def _refresh(self) -> None:
        """The scales and their inverses in the training precision, as new tensors: a forward
        pass that took the old ones keeps them through its backward pass."""
        self.cast = self.scales.to(self.dtype, copy=True)  # never the scales themselves
        self.inverse = self.scales.reciprocal().to(self.dtype)

    def set_rates(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """This epoch's decay rates lr·wd [M] (float64): `weight` for the weight matrices, `bias`
        for biases and batch norm's scale and shift; once an epoch, so a step costs one product."""
        self.rate_table = torch.stack((weight, bias, weight))[self.kinds]

    def step(self, alive: torch.Tensor, first: torch.Tensor | None = None) -> None:
        """Decay every tensor of the `alive` members by its rate; `first` [M], when given,
        replaces W1 = V's rate (Paper A's data-dependent g), already zero for frozen members."""
        rates = self.rate_table * alive
        if first is not None:
            rates[self.index["W1"]] = first
        factor = 1 - rates
        self.scales.mul_(factor)
        self.init_factor.mul_(factor)
        self.horizon.add_(rates)
        self._refresh()

    def inverse_scale(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """1 / (tensor `name`'s current scale), shaped to multiply `like` [M, ...]."""
        return _rows(self.inverse[self.index[name]], like)

    def actual(self, params: dict[str, torch.Tensor], weights: bool = True) -> dict:
        """The tensors as they actually are, scale·stored in the training precision (with
        `weights` False, the weight matrices stay stored): an autograd step's leaves."""
        actual = dict(params)
        for name, row in self.index.items():
            if weights or name[0] != "W":
                actual[name] = params[name] * _rows(self.cast[row], params[name])
        return actual

    def forward_inputs(self, params: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """What a hand-written training step's forward and backward passes take: the stored
        weight matrices with their scales apart (`weight_scales`), every other tensor as it
        actually is."""
        weight_scales = {name: self.cast[row] for name, row in self.index.items() if name[0] == "W"}
        return self.actual(params, weights=False), weight_scales

    def effective(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's actual tensors, scale·stored (products in float64, cast back)."""
        actual = dict(params)
        for name, row in self.index.items():
            product = params[name].double() * _rows(self.scales[row], params[name])
            actual[name] = product.to(params[name].dtype)
        return actual

    def controls(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(init_factor, decay_horizon) [M] of tensor `name`."""
        row = self.index[name]
        return self.init_factor[row], self.horizon[row]

    def after_step(self, params: dict[str, torch.Tensor]) -> None:
        """Count the step; every `fold_every` steps fold the scales below FOLD_BELOW."""
        self.steps += 1
        if self.steps % self.fold_every:
            return
        factor = torch.where(self.scales < FOLD_BELOW, self.scales, 1.0).to(self.dtype)
        for name, row in self.index.items():
            params[name].mul_(_rows(factor[row], params[name]))  # by 1: bit-identical
        self.scales.div_(factor.double())  # what the float32 factor missed stays in the scale
        self._refresh()

    def state(self) -> dict:
        tensors = {key: getattr(self, key).cpu() for key in ("scales", "init_factor", "horizon")}
        return {**tensors, "steps": self.steps}

    def load(self, state: dict) -> None:
        for key in ("scales", "init_factor", "horizon"):
            getattr(self, key).copy_(state[key])
        self.steps = state["steps"]
        self._refresh()
